//! The split group commit (`begin_sync` then `PendingSync::run` without the log): proves that records
//! appended before `begin_sync` survive a crash once the job has run, across segment rolls, while
//! appends made during the job are kept or lost but never corrupt what was synced; and that a
//! failed job poisons the log when reported.

#![allow(clippy::unwrap_used)]

mod common;

use common::open;
use store::sim::{CrashMode, SimDisk};
use store::{LogConfig, StoreError};

fn config() -> LogConfig {
    LogConfig { segment_size_bytes: 200, ..LogConfig::default() }
}

#[test]
fn records_before_begin_sync_survive_a_crash_after_the_job_ran() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, config());
    let mut synced = Vec::new();
    for i in 0..10u8 {
        synced.push(log.append(i, &[&[i; 60]]).unwrap());
    }
    let job = log.begin_sync().unwrap();
    // Appends continue while the job is out.
    for i in 10..13u8 {
        log.append(i, &[&[i; 60]]).unwrap();
    }
    job.run().unwrap();
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let (_, records, _) = open(&disk, config());
    let ids: Vec<_> = records.iter().map(|r| r.id).collect();
    for id in &synced {
        assert!(ids.contains(id), "synced record {id:?} lost");
    }
}

#[test]
fn without_running_the_job_nothing_is_promised_but_nothing_is_invented() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, config());
    for i in 0..5u8 {
        log.append(i, &[&[i; 60]]).unwrap();
    }
    let _job = log.begin_sync().unwrap();
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let (_, records, _) = open(&disk, config());
    assert!(records.len() <= 5);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.payload, vec![i as u8; 60]);
    }
}

#[test]
fn a_failed_job_poisons_the_log_once_reported() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, config());
    log.append(1, &[b"x"]).unwrap();
    disk.fail_nth_sync(1);
    let job = log.begin_sync().unwrap();
    assert!(job.run().is_err());
    log.sync_failed();
    assert!(matches!(log.append(1, &[b"y"]), Err(StoreError::Poisoned)));
}

/// Many group commits on one active segment share its sync handle (opened once per segment, not per
/// commit): each commit still makes every record appended before it durable, and a crash after the
/// last job loses none of them, whichever rounds rolled to a new segment.
#[test]
fn repeated_commits_on_one_segment_keep_every_record_before_each() {
    let disk = SimDisk::new();
    let config = LogConfig { segment_size_bytes: 4096, ..LogConfig::default() };
    let (mut log, _, _) = open(&disk, config.clone());
    let mut synced = Vec::new();
    for round in 0..40u8 {
        for i in 0..3u8 {
            synced.push(log.append(i, &[&[round; 50]]).unwrap());
        }
        let job = log.begin_sync().unwrap();
        log.append(9, &[b"during the job"]).unwrap();
        job.run().unwrap();
    }
    assert!(log.segments().len() > 1, "the rounds crossed a segment boundary");
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let (_, records, _) = open(&disk, config);
    let ids: Vec<_> = records.iter().map(|r| r.id).collect();
    for id in &synced {
        assert!(ids.contains(id), "synced record {id:?} lost");
    }
}

/// `delete_segment_later`: the segment is gone for the log at once, its file goes when the next job
/// runs (outside the caller's lock), and a crash before that brings it back whole.
#[test]
fn a_later_deletion_removes_the_file_when_the_job_runs() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, config());
    let first = log.append(1, &[&[1; 100]]).unwrap();
    log.append(2, &[&[2; 100]]).unwrap();
    log.append(3, &[&[3; 100]]).unwrap();
    log.flush_and_sync().unwrap();
    assert!(log.segments().len() >= 2);
    log.delete_segment_later(first.segment).unwrap();
    assert!(log.read(first).is_err(), "gone for the log at once");
    assert!(log.segments().iter().all(|s| s.number != first.segment));
    let path = std::path::Path::new(common::DIR).join(format!("{:020}.seg", first.segment));
    assert!(disk.read_file(&path).is_some(), "the file stays until the job runs");

    // A crash before the job: the deletion never happened.
    let before = disk.fork();
    before.crash(CrashMode::DropUnsynced);
    let (_, records, _) = open(&before, config());
    assert!(records.iter().any(|r| r.id == first), "a crash before the job brings the segment back");

    let job = log.begin_sync().unwrap();
    job.run().unwrap();
    assert!(disk.read_file(&path).is_none(), "removed by the job");
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let (_, records, _) = open(&disk, config());
    assert!(records.iter().all(|r| r.id.segment != first.segment), "the removal was made durable");
}
