//! Round trips without faults. They prove that records of any size written across many segments read back
//! exactly, by id and by recovery; that a reopened log returns exactly the records of the closed one and
//! continues where it stopped; and that the bookkeeping (segments, sizes, limits, progress) is right. The
//! main round trip runs on the simulated disk and on the real filesystem.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{open, open_at, payload, shared, small_config, Rec, DIR};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store::format::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use store::sim::SimDisk;
use store::{Disk, FsDisk, Log, LogConfig, StoreError};

fn config_4k() -> LogConfig {
    LogConfig { segment_size_bytes: 4096, write_buffer_bytes_max: 1000, ..LogConfig::default() }
}

/// Appends `count` records of random sizes (a few bigger than a segment), flushing at random, reads each
/// back by id, closes, reopens and checks that recovery returns exactly the same records, ids included.
fn round_trip(dir: &Path, disk: Arc<dyn Disk>, seed: u64, count: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut log, existing, report) = open_at(dir, disk.clone(), config_4k());
    assert!(existing.is_empty() && report.is_clean());
    let mut written = Vec::new();
    for i in 0..count {
        let len = if i % 97 == 50 { rng.gen_range(4097..20_000) } else { rng.gen_range(0..3000) };
        let p = payload(&mut rng, len);
        // Split the payload in up to three parts, as a caller with a header and a body would.
        let a = rng.gen_range(0..=len);
        let b = rng.gen_range(a..=len);
        let record_type = rng.gen();
        let id = log.append(record_type, &[&p[..a], &p[a..b], &p[b..]]).unwrap();
        written.push(Rec { id, record_type, payload: p });
        if rng.gen_bool(0.1) {
            log.flush_and_sync().unwrap();
        }
    }
    for r in &written {
        assert_eq!(log.read(r.id).unwrap(), (r.record_type, r.payload.clone()), "read {:?} before close", r.id);
    }
    let segments = log.segments();
    assert!(segments.len() > 10, "the records must span many segments, got {}", segments.len());
    for pair in written.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        assert!(next.id > prev.id, "ids grow in append order");
        if next.payload.len() as u64 > 4096 {
            assert_eq!(next.id.offset, SEGMENT_HEADER_BYTES, "a record bigger than a segment starts its own");
        }
        if prev.payload.len() as u64 > 4096 {
            assert_ne!(next.id.segment, prev.id.segment, "nothing follows a record bigger than a segment");
        }
    }
    for s in &segments {
        let has_big = written.iter().any(|r| r.id.segment == s.number && r.payload.len() > 4096);
        assert!(has_big || s.len_bytes <= 4096, "segment {} is {} bytes", s.number, s.len_bytes);
    }
    let size = log.size_bytes();
    assert_eq!(size, segments.iter().map(|s| s.len_bytes).sum::<u64>());
    log.close().unwrap();

    let (log, recovered, report) = open_at(dir, disk, config_4k());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, count as u64);
    assert_eq!(recovered, written);
    assert_eq!(log.segments(), segments);
    assert_eq!(log.size_bytes(), size);
}

#[test]
fn records_of_random_sizes_round_trip_across_segments_on_the_simulated_disk() {
    for seed in 0..3 {
        round_trip(Path::new(DIR), shared(&SimDisk::new()), seed, 600);
    }
}

#[test]
fn records_of_random_sizes_round_trip_across_segments_on_the_real_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    round_trip(&tmp.path().join("nested").join("log"), Arc::new(FsDisk), 7, 600);
}

#[test]
fn a_reopened_log_continues_in_its_last_segment() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, config_4k());
    let a = log.append(1, &[b"first"]).unwrap();
    log.close().unwrap();
    let (mut log, records, _) = open(&disk, config_4k());
    assert_eq!(records.len(), 1);
    let b = log.append(2, &[b"second"]).unwrap();
    assert_eq!(b.segment, a.segment, "appends continue in the last segment");
    assert_eq!(b.offset, a.offset + RECORD_HEADER_BYTES + 5);
    log.close().unwrap();
    let (_, records, report) = open(&disk, config_4k());
    assert!(report.is_clean());
    let got: Vec<(u8, &[u8])> = records.iter().map(|r| (r.record_type, &r.payload[..])).collect();
    assert_eq!(got, vec![(1, &b"first"[..]), (2, &b"second"[..])]);
}

#[test]
fn buffered_records_can_be_read_before_they_are_flushed() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, config_4k());
    let a = log.append(1, &[b"on disk"]).unwrap();
    log.flush_and_sync().unwrap();
    let b = log.append(2, &[b"in ", b"memory"]).unwrap();
    assert_eq!(log.read(a).unwrap(), (1, b"on disk".to_vec()));
    assert_eq!(log.read(b).unwrap(), (2, b"in memory".to_vec()));
    let on_disk = disk.read_file(&Path::new(DIR).join("00000000000000000001.seg")).unwrap();
    assert_eq!(on_disk.len() as u64, b.offset, "the second record is only in memory");
}

#[test]
fn empty_payloads_and_every_record_type_round_trip() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, small_config());
    let ids: Vec<_> = (0..=255u8).map(|t| log.append(t, if t % 2 == 0 { &[] } else { &[b"x"] }).unwrap()).collect();
    log.close().unwrap();
    let (log, records, _) = open(&disk, small_config());
    assert_eq!(records.len(), 256);
    for (t, r) in records.iter().enumerate() {
        assert_eq!((r.id, r.record_type, r.payload.len()), (ids[t], t as u8, t % 2));
        assert_eq!(log.read(r.id).unwrap(), (r.record_type, r.payload.clone()));
    }
}

#[test]
fn a_record_over_the_limit_is_refused_and_the_log_stays_usable() {
    let disk = SimDisk::new();
    let config = LogConfig { record_bytes_max: 100, ..config_4k() };
    let (mut log, _, _) = open(&disk, config.clone());
    let big = vec![0u8; 60];
    let err = log.append(1, &[&big, &big]).unwrap_err();
    assert!(matches!(err, StoreError::RecordTooLarge { len_bytes: 120, record_bytes_max: 100 }), "{err}");
    assert!(!log.is_poisoned());
    log.append(1, &[&big]).unwrap();
    log.close().unwrap();
    assert_eq!(open(&disk, config).1.len(), 1);
}

#[test]
fn invalid_configs_are_refused() {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
    for config in [
        LogConfig { segment_size_bytes: SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES, ..LogConfig::default() },
        LogConfig { record_bytes_max: u32::MAX, ..LogConfig::default() },
        LogConfig { write_buffer_bytes_max: 0, ..LogConfig::default() },
        LogConfig { read_handles_max: 0, ..LogConfig::default() },
    ] {
        assert!(matches!(Log::open(DIR, config, disk.clone()), Err(StoreError::InvalidConfig(_))));
    }
}

#[test]
fn reads_work_with_more_segments_than_read_handles() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, small_config());
    let ids: Vec<_> = (0..100u32).map(|i| log.append(0, &[&i.to_le_bytes(), &[0; 100]]).unwrap()).collect();
    log.flush_and_sync().unwrap();
    assert!(log.segments().len() > 20);
    for round in 0..2 {
        for (i, id) in ids.iter().enumerate().rev() {
            let (_, payload) = log.read(*id).unwrap();
            assert_eq!(payload[..4], (i as u32).to_le_bytes(), "round {round}");
        }
    }
}

#[test]
fn reading_an_id_that_is_not_a_record_fails_cleanly() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, config_4k());
    let id = log.append(1, &[b"record"]).unwrap();
    let buffered = log.append(1, &[b"buffered"]).unwrap();
    log.flush_and_sync().unwrap();
    let pending = log.append(1, &[b"pending"]).unwrap();
    let shifted = store::RecordId { offset: id.offset + 1, ..id };
    assert!(matches!(log.read(shifted), Err(StoreError::Corrupt { .. })));
    assert!(matches!(log.read(store::RecordId { segment: 99, offset: 24 }), Err(StoreError::UnknownSegment(99))));
    assert!(matches!(log.read(store::RecordId { offset: 0, ..id }), Err(StoreError::NoRecord { .. })));
    assert!(matches!(log.read(store::RecordId { offset: u64::MAX, ..id }), Err(StoreError::NoRecord { .. })));
    let in_buffer = store::RecordId { offset: pending.offset + 1, ..pending };
    assert!(matches!(log.read(in_buffer), Err(StoreError::Corrupt { .. })));
    assert_eq!(log.read(buffered).unwrap().1, b"buffered");
    // Past the end of a sealed segment.
    let big = log.append(1, &[&[0; 5000]]).unwrap();
    assert_eq!(big.segment, id.segment + 1);
    let past_end = store::RecordId { offset: pending.offset + 100, ..id };
    assert!(matches!(log.read(past_end), Err(StoreError::NoRecord { .. })), "{:?}", log.read(past_end));
}

#[test]
fn recovery_reports_progress() {
    let disk = SimDisk::new();
    let (mut log, _, _) = open(&disk, small_config());
    for _ in 0..20 {
        log.append(0, &[&[1; 100]]).unwrap();
    }
    let segments = log.segments().len() as u64;
    assert!(segments > 5);
    log.close().unwrap();
    let mut recovery = Log::open(DIR, small_config(), shared(&disk)).unwrap();
    let start = recovery.progress();
    assert_eq!((start.segments_scanned, start.bytes_scanned), (0, 0));
    assert_eq!(start.segments_total, segments);
    let mut last = 0;
    while recovery.next_record().unwrap().is_some() {
        let p = recovery.progress();
        assert!(p.bytes_scanned > last, "progress grows with every record");
        last = p.bytes_scanned;
    }
    let end = recovery.progress();
    assert_eq!(end.segments_scanned, segments);
    let (log, _) = recovery.finish().unwrap();
    assert_eq!(end.bytes_scanned, log.size_bytes());
}

/// Reads go through a read-ahead block (one disk read serves the records after it): records read in
/// order, out of order, interleaved with appends and flushes that grow the same segment, and after
/// earlier segments are removed, must all come back exactly.
#[test]
fn read_ahead_serves_sequential_random_and_growing_reads() {
    let disk = SimDisk::new();
    let config = LogConfig { segment_size_bytes: 256 * 1024, write_buffer_bytes_max: 10_000, ..LogConfig::default() };
    let (mut log, _, _) = open(&disk, config);
    let mut rng = StdRng::seed_from_u64(7);
    let mut written = Vec::new();
    for i in 0..3000u32 {
        let len = if i % 500 == 3 { 70_000 } else { rng.gen_range(0..300) };
        let mut p = payload(&mut rng, len);
        p.extend_from_slice(&i.to_le_bytes());
        written.push((log.append(1, &[&p]).unwrap(), p));
        if i % 7 == 0 {
            log.flush_and_sync().unwrap();
        }
        if i % 3 == 0 {
            // Read the newest flushed-or-buffered record and one from a little earlier.
            let (id, p) = &written[rng.gen_range(written.len().saturating_sub(20)..written.len())];
            assert_eq!(&log.read(*id).unwrap().1, p, "record near {i}");
        }
    }
    log.flush_and_sync().unwrap();
    assert!(log.segments().len() > 2);
    for (id, p) in &written {
        assert_eq!(&log.read(*id).unwrap().1, p, "in order");
    }
    for _ in 0..3000 {
        let (id, p) = &written[rng.gen_range(0..written.len())];
        assert_eq!(&log.read(*id).unwrap().1, p, "at random");
    }
    let first = written[0].0.segment;
    log.delete_segment(first).unwrap();
    for (id, p) in written.iter().filter(|(id, _)| id.segment != first) {
        assert_eq!(&log.read(*id).unwrap().1, p, "after removing a segment");
    }
    assert!(log.read(written[0].0).is_err(), "a removed segment's records are gone");
}
