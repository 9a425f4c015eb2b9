//! Damage and failures, one at a time, with exact expectations. They prove that a torn last write is cut
//! off and reported at its offset; that a corrupt record is skipped and reported (file and offset) while
//! the records around it survive, even in the last segment; that a segment with a bad header is skipped
//! and reported; that a newer format version stops the open; and that a failed write or fsync poisons the
//! log, which then makes no further disk call (an fsync is never retried).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{open, shared, Rec, DIR};
use store::format::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use store::sim::{CrashMode, PendingOp, SimDisk};
use store::{Damage, DamageKind, Disk, HeaderFault, Log, LogConfig, RecordFault, StoreError};

fn config() -> LogConfig {
    LogConfig { segment_size_bytes: 1000, write_buffer_bytes_max: 10_000, ..LogConfig::default() }
}

fn seg(n: u64) -> PathBuf {
    Path::new(DIR).join(format!("{n:020}.seg"))
}

/// Appends `payloads` (type = index) and syncs; returns the records.
fn write(disk: &SimDisk, payloads: &[&[u8]]) -> Vec<Rec> {
    let (mut log, mut records, _) = open(disk, config());
    for (i, p) in payloads.iter().enumerate() {
        let id = log.append(i as u8, &[p]).unwrap();
        records.push(Rec { id, record_type: i as u8, payload: p.to_vec() });
    }
    log.close().unwrap();
    records
}

#[test]
fn a_torn_last_write_is_cut_off_and_reported() {
    let disk = SimDisk::new();
    let synced = write(&disk, &[b"one", b"two", b"three"]);
    let (mut log, _, _) = open(&disk, config());
    let torn = log.append(7, &[&[0xAB; 40]]).unwrap();
    log.append(8, &[b"also lost"]).unwrap();
    disk.fail_nth_sync(1);
    assert!(log.flush_and_sync().is_err());
    drop(log);
    let pending = disk.pending();
    assert!(matches!(pending[..], [PendingOp::Write { len_bytes: 89, .. }]), "{pending:?}");
    disk.crash(CrashMode::TearWrite { ops: 0, keep_bytes: 30 });

    let (mut log, records, report) = open(&disk, config());
    assert_eq!(records, synced);
    let kind = DamageKind::TornTail(RecordFault::BeyondEnd { len_bytes: 40 });
    assert_eq!(report.damage, vec![Damage { file: seg(1), offset: torn.offset, len_bytes: 30, kind }]);
    assert_eq!(report.truncated_bytes(), 30);
    assert_eq!(report.skipped_bytes(), 0);
    assert_eq!(disk.read_file(&seg(1)).unwrap().len() as u64, torn.offset, "the file was cut at the torn record");
    let next = log.append(9, &[b"after"]).unwrap();
    assert_eq!(next, torn, "appends resume where the torn record began");
    log.close().unwrap();
    let (_, records, report) = open(&disk, config());
    assert!(report.is_clean());
    assert_eq!(records.len(), 4);
}

#[test]
fn a_torn_record_header_is_cut_off() {
    let disk = SimDisk::new();
    let synced = write(&disk, &[b"one"]);
    let (mut log, _, _) = open(&disk, config());
    let torn = log.append(7, &[b"lost"]).unwrap();
    disk.fail_nth_sync(1);
    assert!(log.flush_and_sync().is_err());
    drop(log);
    disk.crash(CrashMode::TearWrite { ops: 0, keep_bytes: 5 });
    let (_, records, report) = open(&disk, config());
    assert_eq!(records, synced);
    let kind = DamageKind::TornTail(RecordFault::Truncated);
    assert_eq!(report.damage, vec![Damage { file: seg(1), offset: torn.offset, len_bytes: 5, kind }]);
}

#[test]
fn a_tail_of_zeros_is_cut_off() {
    // Some filesystems persist a file's new size before its data: the tail reads back as zeros.
    let disk = SimDisk::new();
    let synced = write(&disk, &[b"one", b"two"]);
    let end = disk.read_file(&seg(1)).unwrap().len() as u64;
    disk.open(&seg(1)).unwrap().append(&[0; 4096]).unwrap();
    let (_, records, report) = open(&disk, config());
    assert_eq!(records, synced);
    let kind = DamageKind::TornTail(RecordFault::BadMarker);
    assert_eq!(report.damage, vec![Damage { file: seg(1), offset: end, len_bytes: 4096, kind }]);
}

#[test]
fn a_torn_segment_creation_is_removed() {
    let disk = SimDisk::new();
    let config = LogConfig { segment_size_bytes: 100, ..config() };
    let (mut log, _, _) = open(&disk, config.clone());
    let first = log.append(0, &[&[1; 50]]).unwrap();
    log.flush_and_sync().unwrap();
    let second = log.append(0, &[&[2; 50]]).unwrap();
    assert_eq!((first.segment, second.segment), (1, 2));
    disk.fail_nth_sync(1);
    assert!(log.flush_and_sync().is_err());
    drop(log);
    let pending = disk.pending();
    assert!(matches!(&pending[..], [PendingOp::Create { .. }, PendingOp::Write { .. }]), "{pending:?}");
    disk.crash(CrashMode::TearWrite { ops: 1, keep_bytes: 10 });
    let (mut log, records, report) = open(&disk, config);
    assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![first]);
    assert_eq!(report.damage, vec![Damage { file: seg(2), offset: 0, len_bytes: 10, kind: DamageKind::TornSegment }]);
    assert_eq!(disk.paths(), vec![seg(1)]);
    let next = log.append(0, &[&[3; 50]]).unwrap();
    assert_eq!(next.segment, 2, "segment 1 is full, so the next record starts a new segment");
}

#[test]
fn a_corrupt_record_in_the_middle_of_the_last_segment_is_skipped_and_the_rest_kept() {
    let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 30]).collect();
    let parts: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    // Each place in a record's bytes fails a different check.
    for (within, fault) in [
        (0, RecordFault::BadMarker),
        (5, RecordFault::HeaderChecksum),
        (8, RecordFault::HeaderChecksum),
        (13, RecordFault::HeaderChecksum),
        (18, RecordFault::HeaderChecksum),
        (RECORD_HEADER_BYTES + 7, RecordFault::PayloadChecksum),
    ] {
        let disk = SimDisk::new();
        let written = write(&disk, &parts);
        let bad = &written[4];
        assert!(written.iter().all(|r| r.id.segment == 1), "all in the last segment");
        assert!(disk.corrupt(&seg(1), bad.id.offset + within, 0x40));

        let (log, records, report) = open(&disk, config());
        let mut expected = written.clone();
        expected.remove(4);
        assert_eq!(records, expected, "byte {within}: the records around the corrupt one survive");
        let len_bytes = RECORD_HEADER_BYTES + 30;
        let kind = DamageKind::CorruptRecords(fault);
        assert_eq!(report.damage, vec![Damage { file: seg(1), offset: bad.id.offset, len_bytes, kind }], "{within}");
        assert_eq!(report.skipped_bytes(), len_bytes);
        assert_eq!(log.size_bytes(), SEGMENT_HEADER_BYTES + 10 * len_bytes, "nothing was truncated");
        assert!(matches!(log.read(bad.id), Err(StoreError::Corrupt { offset, .. }) if offset == bad.id.offset));
        assert!(report.damage[0].to_string().contains("00000000000000000001.seg offset 224"), "{}", report.damage[0]);
    }
}

#[test]
fn a_corrupt_last_record_of_a_sealed_segment_is_skipped_not_truncated() {
    let disk = SimDisk::new();
    let config = LogConfig { segment_size_bytes: 100, ..config() };
    let (mut log, _, _) = open(&disk, config.clone());
    let a = log.append(0, &[&[1; 30]]).unwrap();
    let b = log.append(0, &[&[2; 30]]).unwrap();
    let c = log.append(0, &[&[3; 30]]).unwrap();
    log.close().unwrap();
    assert_eq!((a.segment, b.segment, c.segment), (1, 2, 3));
    let len_before = disk.read_file(&seg(1)).unwrap().len() as u64;
    assert!(disk.corrupt(&seg(1), a.offset + 25, 1));
    let (_, records, report) = open(&disk, config);
    assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b, c]);
    let kind = DamageKind::CorruptRecords(RecordFault::PayloadChecksum);
    assert_eq!(report.damage, vec![Damage { file: seg(1), offset: a.offset, len_bytes: 50, kind }]);
    assert_eq!(disk.read_file(&seg(1)).unwrap().len() as u64, len_before, "a sealed segment is never cut");
}

#[test]
fn a_corrupt_length_does_not_hide_the_records_after_it() {
    // The length of a middle record now points past the end of the file: that must not be taken for a
    // torn tail, or every record after it would be cut off.
    let disk = SimDisk::new();
    let written = write(&disk, &[b"a", b"b", b"c", b"d"]);
    assert!(disk.corrupt(&seg(1), written[1].id.offset + 7, 0x7F));
    let (_, records, report) = open(&disk, config());
    assert_eq!(records, vec![written[0].clone(), written[2].clone(), written[3].clone()]);
    assert_eq!(report.damage.len(), 1);
    assert_eq!(report.damage[0].kind, DamageKind::CorruptRecords(RecordFault::HeaderChecksum));
}

#[test]
fn a_segment_with_a_bad_header_is_skipped_and_reported() {
    let disk = SimDisk::new();
    let small = LogConfig { segment_size_bytes: 100, ..config() };
    let (mut log, _, _) = open(&disk, small.clone());
    let ids: Vec<_> = (0..3u8).map(|i| log.append(i, &[&[i; 30]]).unwrap()).collect();
    log.close().unwrap();
    assert!(disk.corrupt(&seg(2), 12, 0x01), "segment number byte");
    let (mut log, records, report) = open(&disk, small.clone());
    assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[0], ids[2]]);
    let kind = DamageKind::BadSegmentHeader(HeaderFault::Checksum);
    assert_eq!(report.damage, vec![Damage { file: seg(2), offset: 0, len_bytes: 74, kind }]);
    let damaged: Vec<_> = log.segments().into_iter().filter(|s| s.damaged).map(|s| s.number).collect();
    assert_eq!(damaged, vec![2]);
    assert!(matches!(log.read(ids[1]), Err(StoreError::UnknownSegment(2))));
    log.delete_segment(2).unwrap();
    log.close().unwrap();
    assert!(open(&disk, small).2.is_clean());
}

#[test]
fn a_segment_of_a_newer_format_version_stops_the_open() {
    let disk = SimDisk::new();
    write(&disk, &[b"v1"]);
    let mut header = [0u8; 24];
    header[0..8].copy_from_slice(b"WRNLOG\0\0");
    header[8..10].copy_from_slice(&2u16.to_le_bytes());
    header[12..20].copy_from_slice(&2u64.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    let mut f = disk.create(&seg(2)).unwrap();
    f.append(&header).unwrap();
    f.append(&[0; 100]).unwrap();

    let mut recovery = Log::open(DIR, config(), shared(&disk)).unwrap();
    assert!(recovery.next_record().unwrap().is_some());
    let err = recovery.next_record().unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedVersion { version: 2, .. }), "{err}");
    assert!(matches!(recovery.next_record(), Err(StoreError::Poisoned)), "an abandoned recovery stays abandoned");
    assert_eq!(disk.read_file(&seg(2)).unwrap().len(), 124, "nothing of the newer segment was touched");
}

/// Opens a log with one synced record and one buffered, injects a fault, and checks that the flush fails,
/// the log is poisoned, no further disk call is made, and reopening returns the synced record.
fn check_poisoning(inject: impl Fn(&SimDisk), flush_fails: bool) {
    let disk = SimDisk::new();
    let synced = write(&disk, &[b"synced"]);
    let (mut log, _, _) = open(&disk, config());
    let pending = log.append(1, &[b"pending"]).unwrap();
    inject(&disk);
    let failed =
        if flush_fails { log.flush_and_sync().unwrap_err() } else { log.append(2, &[&[0; 20_000]]).unwrap_err() };
    assert!(matches!(failed, StoreError::Io { .. }), "{failed}");
    assert!(log.is_poisoned());
    let ops = disk.ops();
    assert!(matches!(log.append(3, &[b"x"]), Err(StoreError::Poisoned)));
    assert!(matches!(log.flush_and_sync(), Err(StoreError::Poisoned)), "an fsync is never retried");
    assert!(matches!(log.delete_segment(1), Err(StoreError::Poisoned)));
    assert!(matches!(log.close(), Err(StoreError::Poisoned)));
    assert_eq!(disk.ops(), ops, "a poisoned log touches the disk no more");
    disk.crash(CrashMode::DropUnsynced);
    let (_, records, _) = open(&disk, config());
    assert_eq!(records, synced);
    let _ = pending;
}

#[test]
fn an_fsync_failure_poisons_the_log() {
    check_poisoning(|disk| disk.fail_nth_sync(1), true);
}

#[test]
fn a_directory_fsync_failure_poisons_the_log() {
    // A new segment: the flush syncs the file, then the directory.
    let disk = SimDisk::new();
    let config = LogConfig { segment_size_bytes: 100, ..config() };
    let (mut log, _, _) = open(&disk, config.clone());
    log.append(0, &[&[0; 60]]).unwrap();
    disk.fail_nth_sync(2);
    assert!(matches!(log.flush_and_sync(), Err(StoreError::Io { op: "sync directory", .. })));
    assert!(matches!(log.append(0, &[]), Err(StoreError::Poisoned)));
}

#[test]
fn a_write_failure_in_flush_poisons_the_log() {
    check_poisoning(|disk| disk.fail_nth_write(1), true);
}

#[test]
fn a_write_failure_in_append_poisons_the_log() {
    // The 20,000-byte append overflows the write buffer, so append itself writes.
    check_poisoning(|disk| disk.fail_nth_write(1), false);
}

#[test]
fn reads_still_work_on_a_poisoned_log() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, config());
    let a = log.append(1, &[b"a"]).unwrap();
    log.flush_and_sync().unwrap();
    let b = log.append(2, &[b"b"]).unwrap();
    disk.fail_nth_sync(1);
    assert!(log.flush_and_sync().is_err());
    assert_eq!(log.read(a).unwrap(), (1, b"a".to_vec()));
    assert_eq!(log.read(b).unwrap(), (2, b"b".to_vec()));
}
