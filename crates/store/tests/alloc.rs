//! Proves the write path allocates nothing in steady state: once warmed up, appends (including the ones
//! that spill the write buffer) and group commits on the real filesystem make no heap allocation or
//! reallocation. An instrumented global allocator counts them inside the measured window.

#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::sync::Arc;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use store::{FsDisk, Log, LogConfig};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn work(log: &mut Log, header: &[u8], body: &[u8], appends: usize) {
    for i in 0..appends {
        log.append(1, &[header, body]).unwrap();
        if i % 100 == 99 {
            log.flush_and_sync().unwrap();
        }
    }
}

#[test]
fn appends_and_group_commits_do_not_allocate_in_steady_state() {
    let tmp = tempfile::tempdir().unwrap();
    // A buffer smaller than 100 records, so that appends also spill between group commits.
    let config = LogConfig { segment_size_bytes: 64 << 20, write_buffer_bytes_max: 50_000, ..LogConfig::default() };
    let recovery = Log::open(tmp.path(), config, Arc::new(FsDisk)).unwrap();
    let (mut log, _) = recovery.finish().unwrap();
    let header = [7u8; 40];
    let body = [42u8; 1000];
    work(&mut log, &header, &body, 1_000);

    let region = Region::new(GLOBAL);
    work(&mut log, &header, &body, 10_000);
    let change = region.change();

    assert_eq!((change.allocations, change.reallocations), (0, 0), "{change:?}");
    assert_eq!(log.segments().len(), 1, "the measured window stays in one segment");
}
