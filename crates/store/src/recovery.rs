//! Opening a log: [`Log::open`] returns a [`Recovery`], which reads every segment once, in order, checks
//! every record, hands each valid one to the caller, repairs the tail, and finally becomes the [`Log`].
//!
//! Recovery owns the decisions about damage (the rules are in `docs/storage-format.md`): a torn tail of the
//! last segment is cut off, a last segment too short to hold its header is removed, anything else that
//! fails its checks is skipped and reported, never deleted. It must not guess: a segment of a newer format
//! version stops the open with an error instead of being skipped. Memory stays bounded by one read window
//! (1 MiB, or the largest record) however large the log is.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, DiskFile};
use crate::error::{io_err, Result, StoreError};
use crate::format::{
    self, HeaderCheck, HeaderFault, RecordFault, RECORD_HEADER_BYTES, RECORD_MARKER, SEGMENT_HEADER_BYTES,
};
use crate::log::{Active, Log, LogConfig, Recovered, Sealed};
use crate::RecordId;

/// How much recovery reads from a segment at once.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// A valid record found by recovery. The payload borrows the recovery's read buffer: copy what you keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub id: RecordId,
    pub record_type: u8,
    pub payload: &'a [u8],
}

/// What recovery found wrong and what it did about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid records returned.
    pub records: u64,
    /// Segment files read (damaged ones included, removed torn ones not).
    pub segments: u64,
    /// Every damaged region, in log order.
    pub damage: Vec<Damage>,
}

impl RecoveryReport {
    /// Nothing was damaged, cut off or skipped.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }

    /// Bytes removed from the disk: torn tails and torn segments. Expected after a crash.
    pub fn truncated_bytes(&self) -> u64 {
        self.damage.iter().filter(|d| d.kind.is_truncation()).map(|d| d.len_bytes).sum()
    }

    /// Bytes skipped but left on disk: corrupt records and segments with a bad header. Never expected
    /// from a crash alone; a sign of a failing disk or a bug.
    pub fn skipped_bytes(&self) -> u64 {
        self.damage.iter().filter(|d| !d.kind.is_truncation()).map(|d| d.len_bytes).sum()
    }
}

/// One damaged region of one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub file: PathBuf,
    pub offset: u64,
    pub len_bytes: u64,
    pub kind: DamageKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The last segment ended in a record that is incomplete or fails its checks, with no valid record
    /// after it: a write torn by a crash. The bytes were cut off the file.
    TornTail(RecordFault),
    /// The last segment was shorter than a segment header: its creation was torn by a crash. The file was
    /// removed.
    TornSegment,
    /// Bytes that fail the record checks, followed by a valid record (or in a segment that is not the
    /// last). They were skipped and left on disk; the records after them were kept.
    CorruptRecords(RecordFault),
    /// The segment header failed its checks. None of the segment's records were read; the file was left
    /// on disk.
    BadSegmentHeader(HeaderFault),
}

impl DamageKind {
    fn is_truncation(self) -> bool {
        matches!(self, DamageKind::TornTail(_) | DamageKind::TornSegment)
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, offset, len) = (self.file.display(), self.offset, self.len_bytes);
        match self.kind {
            DamageKind::TornTail(fault) => {
                write!(f, "{file} offset {offset}: cut off a torn tail of {len} bytes ({fault})")
            }
            DamageKind::TornSegment => write!(f, "{file}: removed a torn segment of {len} bytes"),
            DamageKind::CorruptRecords(fault) => {
                write!(f, "{file} offset {offset}: skipped {len} corrupt bytes ({fault}); records after them kept")
            }
            DamageKind::BadSegmentHeader(fault) => {
                write!(f, "{file}: skipped the whole segment of {len} bytes, bad header ({fault})")
            }
        }
    }
}

/// How far a recovery has got, for progress logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryProgress {
    pub segments_scanned: u64,
    pub segments_total: u64,
    pub bytes_scanned: u64,
}

/// A log being opened. Call [`Recovery::next_record`] until it returns `None` (or skip that), then
/// [`Recovery::finish`] to get the [`Log`]. The log cannot be written before every record has been read
/// and the tail repaired.
///
/// If any call returns an error, the recovery is abandoned: later calls return `Poisoned`; open the log
/// again.
#[derive(Debug)]
pub struct Recovery {
    dir: PathBuf,
    config: LogConfig,
    disk: Arc<dyn Disk>,
    /// Segment numbers found at open, ascending.
    numbers: Vec<u64>,
    next_index: usize,
    cursor: Option<Cursor>,
    window: Window,
    sealed: BTreeMap<u64, Sealed>,
    /// The last segment, once scanned: appends continue in it.
    tail: Option<(u64, Box<dyn DiskFile>, u64)>,
    report: RecoveryReport,
    bytes_scanned: u64,
    failed: bool,
}

/// The segment being scanned.
#[derive(Debug)]
struct Cursor {
    number: u64,
    path: PathBuf,
    file: Box<dyn DiskFile>,
    len: u64,
    pos: u64,
    is_last: bool,
}

enum Check {
    Valid {
        record_type: u8,
        payload: Range<usize>,
        end: u64,
    },
    /// `trusted_end` is where the record ends when its header was valid (so its length is trustworthy)
    /// but its payload was not.
    Invalid {
        fault: RecordFault,
        trusted_end: Option<u64>,
    },
}

impl Log {
    /// Opens (or creates) the log in `dir` and starts its recovery. Removes a torn last segment at once;
    /// everything else is read by the returned [`Recovery`].
    ///
    /// Errors: `InvalidConfig`, `Io`.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig, disk: Arc<dyn Disk>) -> Result<Recovery> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let names = match disk.list(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                disk.create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    disk.sync_dir(parent).map_err(io_err("sync directory", parent))?;
                }
                Vec::new()
            }
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut numbers: Vec<u64> =
            names.iter().filter_map(|n| n.to_str()).filter_map(format::parse_segment_file_name).collect();
        numbers.sort_unstable();

        let mut report = RecoveryReport::default();
        // A last segment shorter than its header was being created when the machine died: it holds no
        // record (the header is the start of its first write), so it goes, and the one before is last.
        while let Some(&last) = numbers.last() {
            let path = dir.join(format::segment_file_name(last));
            let len = disk.open(&path).and_then(|f| f.len_bytes()).map_err(io_err("open", &path))?;
            if len >= SEGMENT_HEADER_BYTES {
                break;
            }
            disk.remove(&path).map_err(io_err("remove", &path))?;
            disk.sync_dir(&dir).map_err(io_err("sync directory", &dir))?;
            report.damage.push(Damage { file: path, offset: 0, len_bytes: len, kind: DamageKind::TornSegment });
            numbers.pop();
        }

        Ok(Recovery {
            dir,
            config,
            disk,
            numbers,
            next_index: 0,
            cursor: None,
            window: Window::default(),
            sealed: BTreeMap::new(),
            tail: None,
            report,
            bytes_scanned: 0,
            failed: false,
        })
    }
}

impl Recovery {
    /// The next valid record, in log order, or `None` when every segment has been read.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        let Some((id, record_type, payload)) = self.advance_guarded()? else { return Ok(None) };
        Ok(Some(Record { id, record_type, payload: &self.window.data[payload] }))
    }

    /// Reads whatever records are left (without returning them), repairs the tail and returns the log,
    /// ready for appends, with the report of the damage found.
    pub fn finish(mut self) -> Result<(Log, RecoveryReport)> {
        while self.advance_guarded()?.is_some() {}
        let next_segment = self.numbers.last().map_or(1, |&n| n + 1);
        let active = self.tail.take().map(|(number, file, len_written)| Active {
            number,
            file: Some(file),
            len_written,
            buf: Vec::new(),
            unsynced: false,
            sync_handle: None,
        });
        let log = Log::from_recovered(Recovered {
            dir: self.dir,
            config: self.config,
            disk: self.disk,
            sealed: self.sealed,
            active,
            next_segment,
        });
        Ok((log, self.report))
    }

    /// How far the recovery has got.
    pub fn progress(&self) -> RecoveryProgress {
        RecoveryProgress {
            segments_scanned: self.next_index as u64 - u64::from(self.cursor.is_some()),
            segments_total: self.numbers.len() as u64,
            bytes_scanned: self.bytes_scanned + self.cursor.as_ref().map_or(0, |c| c.pos),
        }
    }

    /// The damage found so far.
    pub fn report(&self) -> &RecoveryReport {
        &self.report
    }

    fn advance_guarded(&mut self) -> Result<Option<(RecordId, u8, Range<usize>)>> {
        if self.failed {
            return Err(StoreError::Poisoned);
        }
        let result = self.advance();
        self.failed = result.is_err();
        result
    }

    fn advance(&mut self) -> Result<Option<(RecordId, u8, Range<usize>)>> {
        loop {
            let Some(cur) = self.cursor.as_mut() else {
                if !self.open_next_segment()? {
                    return Ok(None);
                }
                continue;
            };
            if cur.pos >= cur.len {
                self.close_segment();
                continue;
            }
            let pos = cur.pos;
            match check_record(&mut self.window, cur, pos)? {
                Check::Valid { record_type, payload, end } => {
                    cur.pos = end;
                    self.report.records += 1;
                    return Ok(Some((RecordId { segment: cur.number, offset: pos }, record_type, payload)));
                }
                Check::Invalid { fault, trusted_end } => {
                    let resume = match trusted_end {
                        Some(end) => resync(&mut self.window, cur, end)?,
                        None => resync(&mut self.window, cur, pos + 1)?,
                    };
                    let (file, len) = (cur.path.clone(), cur.len);
                    match resume {
                        Some(next) => {
                            let len_bytes = next - pos;
                            let kind = DamageKind::CorruptRecords(fault);
                            self.report.damage.push(Damage { file, offset: pos, len_bytes, kind });
                            cur.pos = next;
                        }
                        None if cur.is_last => {
                            cur.file.truncate(pos).map_err(io_err("truncate", &cur.path))?;
                            cur.file.sync().map_err(io_err("sync", &cur.path))?;
                            let kind = DamageKind::TornTail(fault);
                            self.report.damage.push(Damage { file, offset: pos, len_bytes: len - pos, kind });
                            cur.len = pos;
                        }
                        None => {
                            let kind = DamageKind::CorruptRecords(fault);
                            self.report.damage.push(Damage { file, offset: pos, len_bytes: len - pos, kind });
                            cur.pos = len;
                        }
                    }
                }
            }
        }
    }

    /// Opens the next segment with a valid header; records segments with a bad one as damaged.
    fn open_next_segment(&mut self) -> Result<bool> {
        while let Some(&number) = self.numbers.get(self.next_index) {
            self.next_index += 1;
            self.report.segments += 1;
            let is_last = self.next_index == self.numbers.len();
            let path = self.dir.join(format::segment_file_name(number));
            let file = self.disk.open(&path).map_err(io_err("open", &path))?;
            let len = file.len_bytes().map_err(io_err("stat", &path))?;
            self.window.reset();
            let check = if len < SEGMENT_HEADER_BYTES {
                HeaderCheck::Fault(HeaderFault::TooShort)
            } else {
                let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
                file.read_at(0, &mut header).map_err(io_err("read", &path))?;
                format::check_segment_header(&header, number)
            };
            match check {
                HeaderCheck::Valid => {
                    let pos = SEGMENT_HEADER_BYTES;
                    self.cursor = Some(Cursor { number, path, file, len, pos, is_last });
                    return Ok(true);
                }
                HeaderCheck::UnsupportedVersion(version) => {
                    return Err(StoreError::UnsupportedVersion { path, version });
                }
                HeaderCheck::Fault(fault) => {
                    let kind = DamageKind::BadSegmentHeader(fault);
                    self.report.damage.push(Damage { file: path, offset: 0, len_bytes: len, kind });
                    self.sealed.insert(number, Sealed { len_bytes: len, damaged: true });
                    self.bytes_scanned += len;
                }
            }
        }
        Ok(false)
    }

    fn close_segment(&mut self) {
        let Some(cur) = self.cursor.take() else { return };
        self.bytes_scanned += cur.len;
        if cur.is_last {
            self.tail = Some((cur.number, cur.file, cur.len));
        } else {
            self.sealed.insert(cur.number, Sealed { len_bytes: cur.len, damaged: false });
        }
    }
}

/// Checks the record at `pos` of the cursor's segment, header and payload.
fn check_record(window: &mut Window, cur: &Cursor, pos: u64) -> Result<Check> {
    if pos + RECORD_HEADER_BYTES > cur.len {
        return Ok(Check::Invalid { fault: RecordFault::Truncated, trusted_end: None });
    }
    let read_err = io_err("read", &cur.path);
    let bytes = window.get(&*cur.file, cur.len, pos, RECORD_HEADER_BYTES as usize).map_err(read_err)?;
    let header: [u8; RECORD_HEADER_BYTES as usize] = bytes.try_into().expect("window returns exactly the bytes asked");
    let h = match format::decode_record_header(cur.number, pos, &header) {
        Ok(h) => h,
        Err(fault) => return Ok(Check::Invalid { fault, trusted_end: None }),
    };
    let payload_pos = pos + RECORD_HEADER_BYTES;
    let end = payload_pos + u64::from(h.len_bytes);
    if end > cur.len {
        return Ok(Check::Invalid { fault: RecordFault::BeyondEnd { len_bytes: h.len_bytes }, trusted_end: None });
    }
    let len = h.len_bytes as usize;
    let payload = window.get(&*cur.file, cur.len, payload_pos, len).map_err(io_err("read", &cur.path))?;
    if crc32c::crc32c(payload) != h.payload_crc {
        return Ok(Check::Invalid { fault: RecordFault::PayloadChecksum, trusted_end: Some(end) });
    }
    let start = (payload_pos - window.start) as usize;
    Ok(Check::Valid { record_type: h.record_type, payload: start..start + len, end })
}

/// The offset of the first valid record at or after `from`, found by looking for the record marker and
/// checking each candidate; `None` if there is none before the end of the segment.
fn resync(window: &mut Window, cur: &Cursor, from: u64) -> Result<Option<u64>> {
    let mut q = from;
    while q + RECORD_HEADER_BYTES <= cur.len {
        let n = ((cur.len - q) as usize).min(READ_CHUNK_BYTES);
        let chunk = window.get(&*cur.file, cur.len, q, n).map_err(io_err("read", &cur.path))?;
        match chunk.windows(RECORD_MARKER.len()).position(|w| w == RECORD_MARKER) {
            // A marker may straddle the chunk's end: look at the last 3 bytes again.
            None => q += (n - (RECORD_MARKER.len() - 1)) as u64,
            Some(i) => {
                let candidate = q + i as u64;
                if let Check::Valid { .. } = check_record(window, cur, candidate)? {
                    return Ok(Some(candidate));
                }
                q = candidate + 1;
            }
        }
    }
    Ok(None)
}

/// A window of one segment file, read in large chunks so that scanning costs few system calls.
#[derive(Debug, Default)]
struct Window {
    start: u64,
    data: Vec<u8>,
}

impl Window {
    /// The `n` bytes at `pos`; the caller guarantees `pos + n <= file_len`.
    fn get(&mut self, file: &dyn DiskFile, file_len: u64, pos: u64, n: usize) -> io::Result<&[u8]> {
        let end = pos + n as u64;
        debug_assert!(end <= file_len);
        if pos < self.start || end > self.start + self.data.len() as u64 {
            let want = (n.max(READ_CHUNK_BYTES) as u64).min(file_len - pos) as usize;
            self.data.clear();
            self.data.resize(want, 0);
            file.read_at(pos, &mut self.data)?;
            self.start = pos;
        }
        let i = (pos - self.start) as usize;
        Ok(&self.data[i..i + n])
    }

    fn reset(&mut self) {
        self.data.clear();
        self.start = 0;
        if self.data.capacity() > 2 * READ_CHUNK_BYTES {
            // A huge record grew the window; give the memory back.
            self.data.shrink_to(READ_CHUNK_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    //! White-box tests of the read window and of the marker search at the edges of a read chunk, which
    //! only show with records around the 1 MiB chunk size.

    use super::*;
    use crate::sim::SimDisk;

    fn records(disk: &SimDisk) -> (Vec<(RecordId, Vec<u8>)>, RecoveryReport) {
        let mut recovery = Log::open("/log", LogConfig::default(), Arc::new(disk.clone())).unwrap();
        let mut out = Vec::new();
        while let Some(r) = recovery.next_record().unwrap() {
            out.push((r.id, r.payload.to_vec()));
        }
        let (_, report) = recovery.finish().unwrap();
        (out, report)
    }

    #[test]
    fn resync_finds_a_marker_that_straddles_a_read_chunk() {
        // The corrupt record's payload is sized so that the next record's marker starts 3, 2 and 1 bytes
        // before the end of the first chunk the search reads.
        for straddle in 1..=3u64 {
            let disk = SimDisk::new();
            let (mut log, _) =
                Log::open("/log", LogConfig::default(), Arc::new(disk.clone())).unwrap().finish().unwrap();
            let a = log.append(0, &[b"a"]).unwrap();
            let len = READ_CHUNK_BYTES as u64 + 1 - RECORD_HEADER_BYTES - straddle;
            let bad = log.append(0, &[&vec![0; len as usize]]).unwrap();
            let c = log.append(0, &[b"c"]).unwrap();
            let d = log.append(0, &[b"d"]).unwrap();
            log.close().unwrap();
            // The search starts one byte after the bad record's start.
            assert_eq!(c.offset, bad.offset + 1 + READ_CHUNK_BYTES as u64 - straddle);
            assert!(disk.corrupt(Path::new("/log/00000000000000000001.seg"), bad.offset, 0xFF));
            let (got, report) = records(&disk);
            let ids: Vec<RecordId> = got.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, vec![a, c, d], "straddle {straddle}");
            assert_eq!(report.damage.len(), 1);
        }
    }

    #[test]
    fn records_bigger_than_the_read_chunk_are_recovered() {
        let disk = SimDisk::new();
        let (mut log, _) = Log::open("/log", LogConfig::default(), Arc::new(disk.clone())).unwrap().finish().unwrap();
        let big: Vec<u8> = (0..3 * READ_CHUNK_BYTES + 5).map(|i| (i % 251) as u8).collect();
        log.append(1, &[b"small"]).unwrap();
        log.append(2, &[&big]).unwrap();
        log.append(3, &[b"after"]).unwrap();
        log.close().unwrap();
        let (got, report) = records(&disk);
        assert!(report.is_clean());
        let payloads: Vec<&[u8]> = got.iter().map(|(_, p)| &p[..]).collect();
        assert_eq!(payloads, vec![&b"small"[..], &big[..], &b"after"[..]]);
    }
}
