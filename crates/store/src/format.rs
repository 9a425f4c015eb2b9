//! The on-disk format of log segments, version 1: constants, the segment header and the record header,
//! encoded and checked here and nowhere else. The byte diagrams are in `docs/storage-format.md`; a change
//! here is a change of that document, of `FORMAT_VERSION` and of the fixtures under `tests/fixtures/`.
//!
//! This module does no I/O and allocates nothing: it turns fixed-size byte arrays into checked values and
//! back. All integers are little-endian.

use thiserror::Error;

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WRNLOG\0\0";
/// The format version this crate writes, and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the segment header; the first record of a segment starts at this offset.
pub const SEGMENT_HEADER_BYTES: u64 = 24;
/// The first 4 bytes of every record, so that recovery can find the next record after a damaged one.
/// `0xFE` and `0xFF` never occur in UTF-8 text, which makes false matches inside text payloads impossible.
pub const RECORD_MARKER: [u8; 4] = [0xFE, b'W', b'R', 0xFF];
/// Size of the record header that precedes every payload.
pub const RECORD_HEADER_BYTES: u64 = 20;

/// Why a segment header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeaderFault {
    #[error("file shorter than the {SEGMENT_HEADER_BYTES}-byte segment header")]
    TooShort,
    #[error("bad magic")]
    BadMagic,
    #[error("header checksum mismatch")]
    Checksum,
    #[error("unknown header flags {0:#06x}")]
    UnknownFlags(u16),
    #[error("header names segment {found}, file name another")]
    WrongNumber { found: u64 },
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordFault {
    #[error("record header cut off by the end of the file")]
    Truncated,
    #[error("no record marker")]
    BadMarker,
    #[error("record header checksum mismatch")]
    HeaderChecksum,
    #[error("reserved record header bytes are not zero")]
    ReservedBytes,
    #[error("record of {len_bytes} payload bytes runs past the end of the file")]
    BeyondEnd { len_bytes: u32 },
    #[error("record payload checksum mismatch")]
    PayloadChecksum,
}

/// The result of checking a segment header whose checksum is valid but whose version is not ours is not a
/// fault (the file is fine, this build is too old), so it is kept apart from [`HeaderFault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Valid,
    Fault(HeaderFault),
    UnsupportedVersion(u16),
}

/// A decoded record header whose own checksum was valid. The payload has not been checked yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub len_bytes: u32,
    pub record_type: u8,
    pub payload_crc: u32,
}

/// Segment header, 24 bytes:
///
/// ```text
/// 0      8  magic "WRNLOG\0\0"
/// 8      2  format version (1)
/// 10     2  flags (0; no flags are defined in version 1)
/// 12     8  segment number (the same as in the file name)
/// 20     4  CRC-32C of bytes 0..20
/// ```
pub(crate) fn encode_segment_header(segment: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&0u16.to_le_bytes());
    h[12..20].copy_from_slice(&segment.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(crate) fn check_segment_header(h: &[u8; SEGMENT_HEADER_BYTES as usize], segment: u64) -> HeaderCheck {
    if h[0..8] != SEGMENT_MAGIC {
        return HeaderCheck::Fault(HeaderFault::BadMagic);
    }
    if crc32c::crc32c(&h[0..20]) != le_u32(&h[20..24]) {
        return HeaderCheck::Fault(HeaderFault::Checksum);
    }
    let version = le_u16(&h[8..10]);
    if version != FORMAT_VERSION {
        return HeaderCheck::UnsupportedVersion(version);
    }
    let flags = le_u16(&h[10..12]);
    if flags != 0 {
        return HeaderCheck::Fault(HeaderFault::UnknownFlags(flags));
    }
    let found = le_u64(&h[12..20]);
    if found != segment {
        return HeaderCheck::Fault(HeaderFault::WrongNumber { found });
    }
    HeaderCheck::Valid
}

/// Record header, 20 bytes, followed by the payload:
///
/// ```text
/// 0      4  marker FE 57 52 FF
/// 4      4  payload length in bytes
/// 8      1  record type (the caller's)
/// 9      3  reserved, zero
/// 12     4  CRC-32C of the payload
/// 16     4  CRC-32C of: segment number (u64) ‖ record offset (u64) ‖ header bytes 0..16
/// ```
///
/// The header checksum covers where the record sits, so a record copied to another place (a stale or
/// misdirected write, or a record-shaped byte string inside another record's payload) does not pass.
pub(crate) fn encode_record_header(
    segment: u64,
    offset: u64,
    record_type: u8,
    len_bytes: u32,
    payload_crc: u32,
) -> [u8; RECORD_HEADER_BYTES as usize] {
    let mut h = [0u8; RECORD_HEADER_BYTES as usize];
    h[0..4].copy_from_slice(&RECORD_MARKER);
    h[4..8].copy_from_slice(&len_bytes.to_le_bytes());
    h[8] = record_type;
    h[12..16].copy_from_slice(&payload_crc.to_le_bytes());
    let crc = header_crc(segment, offset, &h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(crate) fn decode_record_header(
    segment: u64,
    offset: u64,
    h: &[u8; RECORD_HEADER_BYTES as usize],
) -> Result<RecordHeader, RecordFault> {
    if h[0..4] != RECORD_MARKER {
        return Err(RecordFault::BadMarker);
    }
    if header_crc(segment, offset, &h[0..16]) != le_u32(&h[16..20]) {
        return Err(RecordFault::HeaderChecksum);
    }
    if h[9..12] != [0, 0, 0] {
        return Err(RecordFault::ReservedBytes);
    }
    Ok(RecordHeader { len_bytes: le_u32(&h[4..8]), record_type: h[8], payload_crc: le_u32(&h[12..16]) })
}

/// CRC-32C of a payload given in parts, as appended.
pub(crate) fn payload_crc(parts: &[&[u8]]) -> u32 {
    parts.iter().fold(0, |crc, part| crc32c::crc32c_append(crc, part))
}

fn header_crc(segment: u64, offset: u64, header_start: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&segment.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &offset.to_le_bytes());
    crc32c::crc32c_append(crc, header_start)
}

/// Segment files are named by their number, zero-padded to the 20 digits of `u64::MAX`, so that names
/// sort like numbers.
pub(crate) fn segment_file_name(segment: u64) -> String {
    format!("{segment:020}.seg")
}

/// The segment number of a canonical segment file name; `None` for any other file.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    //! Golden bytes and round trips for both headers: these prove the encoders write exactly the
    //! documented layout and that the checks reject every kind of damage they name.

    use super::*;

    #[test]
    fn the_checksum_is_crc32c() {
        // The standard check value of CRC-32C (Castagnoli), as documented in docs/storage-format.md.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn segment_header_golden_bytes() {
        let h = encode_segment_header(0x0102_0304_0506_0708);
        assert_eq!(&h[0..8], b"WRNLOG\0\0");
        assert_eq!(&h[8..10], &[1, 0], "version 1, little-endian");
        assert_eq!(&h[10..12], &[0, 0], "no flags");
        assert_eq!(&h[12..20], &[8, 7, 6, 5, 4, 3, 2, 1], "segment number, little-endian");
        assert_eq!(u32::from_le_bytes([h[20], h[21], h[22], h[23]]), crc32c::crc32c(&h[0..20]));
        assert_eq!(check_segment_header(&h, 0x0102_0304_0506_0708), HeaderCheck::Valid);
    }

    #[test]
    fn segment_header_rejects_damage() {
        let good = encode_segment_header(7);
        assert_eq!(check_segment_header(&good, 8), HeaderCheck::Fault(HeaderFault::WrongNumber { found: 7 }));
        let mut bad = good;
        bad[0] ^= 1;
        assert_eq!(check_segment_header(&bad, 7), HeaderCheck::Fault(HeaderFault::BadMagic));
        for i in 8..24 {
            let mut bad = good;
            bad[i] ^= 0x10;
            assert_eq!(check_segment_header(&bad, 7), HeaderCheck::Fault(HeaderFault::Checksum), "byte {i}");
        }
    }

    #[test]
    fn segment_header_of_a_newer_version_is_not_damage() {
        let mut h = encode_segment_header(7);
        h[8] = 2;
        let crc = crc32c::crc32c(&h[0..20]);
        h[20..24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(check_segment_header(&h, 7), HeaderCheck::UnsupportedVersion(2));
    }

    #[test]
    fn record_header_golden_bytes() {
        let payload_crc = payload_crc(&[b"hello"]);
        assert_eq!(payload_crc, crc32c::crc32c(b"hello"));
        let h = encode_record_header(3, 24, 9, 5, payload_crc);
        assert_eq!(&h[0..4], &[0xFE, 0x57, 0x52, 0xFF]);
        assert_eq!(&h[4..8], &[5, 0, 0, 0]);
        assert_eq!(h[8], 9);
        assert_eq!(&h[9..12], &[0, 0, 0]);
        assert_eq!(&h[12..16], &payload_crc.to_le_bytes());
        let mut covered = Vec::new();
        covered.extend_from_slice(&3u64.to_le_bytes());
        covered.extend_from_slice(&24u64.to_le_bytes());
        covered.extend_from_slice(&h[0..16]);
        assert_eq!(&h[16..20], &crc32c::crc32c(&covered).to_le_bytes());
        assert_eq!(decode_record_header(3, 24, &h), Ok(RecordHeader { len_bytes: 5, record_type: 9, payload_crc }));
    }

    #[test]
    fn payload_crc_does_not_depend_on_how_the_payload_is_split() {
        let whole = payload_crc(&[b"abcdefgh"]);
        assert_eq!(payload_crc(&[b"abc", b"", b"defgh"]), whole);
        assert_eq!(payload_crc(&[]), crc32c::crc32c(b""));
    }

    #[test]
    fn record_header_is_bound_to_its_position() {
        let h = encode_record_header(3, 24, 9, 5, 0);
        assert_eq!(decode_record_header(3, 25, &h), Err(RecordFault::HeaderChecksum));
        assert_eq!(decode_record_header(4, 24, &h), Err(RecordFault::HeaderChecksum));
    }

    #[test]
    fn record_header_rejects_every_flipped_byte() {
        let good = encode_record_header(3, 24, 9, 5, 77);
        for i in 0..20 {
            let mut bad = good;
            bad[i] ^= 0x01;
            let expected = if i < 4 { RecordFault::BadMarker } else { RecordFault::HeaderChecksum };
            assert_eq!(decode_record_header(3, 24, &bad), Err(expected), "byte {i}");
        }
    }

    #[test]
    fn segment_file_names_round_trip_and_reject_others() {
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        assert_eq!(segment_file_name(u64::MAX), "18446744073709551615.seg");
        for n in [0, 1, 42, u64::MAX] {
            assert_eq!(parse_segment_file_name(&segment_file_name(n)), Some(n));
        }
        for bad in ["1.seg", "0000000000000000001.seg", "00000000000000000001.seg.tmp", "99999999999999999999.seg"] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }
}
