//! The on-disk format is an API. These tests prove that a log written by the version-1 writer and committed
//! under `tests/fixtures/v1/` still opens cleanly and yields the same records, and that today's writer
//! still produces those bytes exactly. When the format moves to version 2, the second test goes (the
//! writer then writes v2 and gets its own fixture); the first must stay, so old logs keep opening.
//!
//! Regenerate the fixture only for a new version, never to make a test pass:
//! `cargo test -p warren-store --test fixture -- --ignored regenerate_v1_fixture`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use store::sim::SimDisk;
use store::{FsDisk, Log, LogConfig};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn fixture_config() -> LogConfig {
    LogConfig { segment_size_bytes: 256, ..LogConfig::default() }
}

/// The fixture's records: every shape the format has (empty payload, type 0 and 255, a payload in parts,
/// a record bigger than a segment, several segments). Deterministic: no randomness, no clock.
fn fixture_records() -> Vec<(u8, Vec<Vec<u8>>)> {
    let mut records = vec![
        (1, vec![b"hello, warren".to_vec()]),
        (0, vec![]),
        (255, vec![b"header|".to_vec(), b"body".to_vec()]),
        (7, vec![(0..=255u8).collect()]),
        (2, vec![vec![0xFE, b'W', b'R', 0xFF], b"a payload that contains the record marker".to_vec()]),
        (3, vec![vec![0x5A; 400]]),
    ];
    for i in 0..6u8 {
        records.push((10 + i, vec![format!("record {i}").into_bytes(); usize::from(i)]));
    }
    records
}

fn write_fixture_records(log: &mut Log) {
    for (record_type, parts) in fixture_records() {
        let parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        log.append(record_type, &parts).unwrap();
    }
}

fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn v1_fixture_still_opens_and_yields_the_same_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    for (name, bytes) in segment_files(&fixture_dir()) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let (log, records, report) = common::open_at(&dir, Arc::new(FsDisk), fixture_config());
    assert!(report.is_clean(), "{report:?}");
    let expected: Vec<(u8, Vec<u8>)> = fixture_records().into_iter().map(|(t, parts)| (t, parts.concat())).collect();
    let got: Vec<(u8, Vec<u8>)> = records.iter().map(|r| (r.record_type, r.payload.clone())).collect();
    assert_eq!(got, expected);
    assert_eq!(records[0].id, store::RecordId { segment: 1, offset: 24 });
    assert_eq!(records.iter().map(|r| r.id.segment).max(), Some(6));
    for r in &records {
        assert_eq!(log.read(r.id).unwrap(), (r.record_type, r.payload.clone()));
    }
}

#[test]
fn the_writer_still_produces_the_v1_fixture_bytes() {
    let disk = SimDisk::new();
    let (mut log, _, _) = common::open(&disk, fixture_config());
    write_fixture_records(&mut log);
    log.close().unwrap();
    let written: Vec<(String, Vec<u8>)> = disk
        .paths()
        .iter()
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_owned(), disk.read_file(p).unwrap()))
        .collect();
    let committed = segment_files(&fixture_dir());
    assert_eq!(written.len(), committed.len());
    for ((name, bytes), (fixture_name, fixture_bytes)) in written.iter().zip(&committed) {
        assert_eq!(name, fixture_name);
        assert!(bytes == fixture_bytes, "{name} differs from the committed v1 fixture");
    }
}

#[test]
#[ignore = "writes the committed fixture; run by hand only when adding a format version"]
fn regenerate_v1_fixture() {
    let dir = fixture_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let (mut log, _, _) = common::open_at(&dir, Arc::new(FsDisk), fixture_config());
    write_fixture_records(&mut log);
    log.close().unwrap();
}
