//! Segment deletion. These prove that a deleted segment's records are gone for good once a
//! `flush_and_sync` has followed the deletion (and may come back after a crash before it), that the active
//! segment is never deleted, and that sizes and listings follow.

#![allow(clippy::unwrap_used)]

mod common;

use common::{open, Rec};
use store::sim::{CrashMode, SimDisk};
use store::{LogConfig, StoreError};

fn config() -> LogConfig {
    LogConfig { segment_size_bytes: 100, ..LogConfig::default() }
}

/// Five segments of one 50-byte-payload record each.
fn five_segments(disk: &SimDisk) -> Vec<Rec> {
    let (mut log, _, _) = open(disk, config());
    let records: Vec<Rec> = (0..5u8)
        .map(|i| {
            let payload = vec![i; 50];
            Rec { id: log.append(i, &[&payload]).unwrap(), record_type: i, payload }
        })
        .collect();
    log.close().unwrap();
    assert_eq!(records.iter().map(|r| r.id.segment).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    records
}

#[test]
fn deleted_segments_stay_deleted_after_reopen() {
    let disk = SimDisk::new();
    let records = five_segments(&disk);
    let (mut log, _, _) = open(&disk, config());
    let size = log.size_bytes();
    log.delete_segment(1).unwrap();
    log.delete_segment(3).unwrap();
    assert_eq!(log.size_bytes(), size - 2 * 94);
    assert_eq!(log.segments().iter().map(|s| s.number).collect::<Vec<_>>(), vec![2, 4, 5]);
    assert!(matches!(log.read(records[0].id), Err(StoreError::UnknownSegment(1))));
    assert!(matches!(log.delete_segment(3), Err(StoreError::UnknownSegment(3))));
    log.close().unwrap();

    let (log, recovered, report) = open(&disk, config());
    assert!(report.is_clean());
    assert_eq!(recovered, vec![records[1].clone(), records[3].clone(), records[4].clone()]);
    assert_eq!(log.segments().iter().map(|s| s.number).collect::<Vec<_>>(), vec![2, 4, 5]);
}

#[test]
fn the_active_segment_cannot_be_deleted() {
    let disk = SimDisk::new();
    five_segments(&disk);
    let (mut log, _, _) = open(&disk, config());
    let active = log.segments().into_iter().find(|s| s.active).unwrap();
    assert_eq!(active.number, 5);
    assert!(matches!(log.delete_segment(5), Err(StoreError::ActiveSegment(5))));
    assert!(matches!(log.delete_segment(99), Err(StoreError::UnknownSegment(99))));
    assert!(!log.is_poisoned(), "refusing a deletion is not a failure of the disk");
    log.append(0, &[&[9; 50]]).unwrap();
    log.delete_segment(5).unwrap();
    assert!(matches!(log.delete_segment(6), Err(StoreError::ActiveSegment(6))));
}

#[test]
fn a_deletion_is_durable_only_after_the_next_flush() {
    let disk = SimDisk::new();
    let records = five_segments(&disk);
    let (mut log, _, _) = open(&disk, config());
    log.delete_segment(1).unwrap();
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let (mut log, recovered, _) = open(&disk, config());
    assert_eq!(recovered, records, "the deletion was not synced: the segment is back");
    log.delete_segment(1).unwrap();
    log.flush_and_sync().unwrap();
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let (_, recovered, _) = open(&disk, config());
    assert_eq!(recovered, records[1..]);
}

#[test]
fn a_segment_written_but_not_yet_synced_can_be_deleted() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, config());
    let a = log.append(0, &[&[1; 50]]).unwrap();
    let b = log.append(0, &[&[2; 50]]).unwrap();
    assert_eq!((a.segment, b.segment), (1, 2));
    log.delete_segment(1).unwrap();
    log.close().unwrap();
    let (_, recovered, report) = open(&disk, config());
    assert!(report.is_clean());
    assert_eq!(recovered.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);
}
