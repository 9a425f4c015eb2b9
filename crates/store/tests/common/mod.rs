//! Helpers shared by the store's integration tests: opening a log on a simulated disk, collecting what
//! recovery returns, scripted workloads, and the model check "recovery returns exactly a prefix of what
//! was appended that includes everything synced". No assertions about a particular scenario live here.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store::sim::SimDisk;
use store::{DamageKind, Disk, Log, LogConfig, RecordId, RecoveryReport};

pub const DIR: &str = "/data/log";

/// A record as the tests see it: where it is, its type and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub id: RecordId,
    pub record_type: u8,
    pub payload: Vec<u8>,
}

/// Small segments and a small write buffer, so that short workloads roll segments and spill buffers.
pub fn small_config() -> LogConfig {
    LogConfig { segment_size_bytes: 256, record_bytes_max: 4096, write_buffer_bytes_max: 150, read_handles_max: 3 }
}

pub fn shared(disk: &SimDisk) -> Arc<dyn Disk> {
    Arc::new(disk.clone())
}

/// Opens the log, drains the recovery and returns the log, the records and the report.
pub fn open_at(dir: &Path, disk: Arc<dyn Disk>, config: LogConfig) -> (Log, Vec<Rec>, RecoveryReport) {
    let mut recovery = Log::open(dir, config, disk).unwrap();
    let mut records = Vec::new();
    while let Some(r) = recovery.next_record().unwrap() {
        records.push(Rec { id: r.id, record_type: r.record_type, payload: r.payload.to_vec() });
    }
    let (log, report) = recovery.finish().unwrap();
    (log, records, report)
}

pub fn open(disk: &SimDisk, config: LogConfig) -> (Log, Vec<Rec>, RecoveryReport) {
    open_at(Path::new(DIR), shared(disk), config)
}

/// Random bytes, deterministic for a seed.
pub fn payload(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    rng.fill(&mut p[..]);
    p
}

#[derive(Debug, Clone)]
pub enum Step {
    Append {
        record_type: u8,
        payload: Vec<u8>,
    },
    Flush,
    /// Delete the oldest segment that is not the active one, if any.
    DeleteOldest,
}

/// A random workload: mostly appends of 0..=300 bytes (some bigger than a small segment), a flush every
/// few appends, now and then a deletion.
pub fn workload(seed: u64, steps: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..steps)
        .map(|_| match rng.gen_range(0..100) {
            0..=64 => {
                let len = if rng.gen_bool(0.05) { rng.gen_range(257..=400) } else { rng.gen_range(0..=120) };
                Step::Append { record_type: rng.gen(), payload: payload(&mut rng, len) }
            }
            65..=94 => Step::Flush,
            _ => Step::DeleteOldest,
        })
        .collect()
}

/// What a workload did, as the caller of the log saw it.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every record appended, in order (including those recovered before the workload started).
    pub records: Vec<Rec>,
    /// `records[..synced]` were covered by a `flush_and_sync` that returned `Ok`.
    pub synced: usize,
    /// Segments whose deletion was followed by a successful `flush_and_sync`.
    pub deleted_durable: BTreeSet<u64>,
    /// Segments deleted since the last successful `flush_and_sync`.
    pub deleted_pending: BTreeSet<u64>,
}

impl History {
    /// A history that starts from records already durable (what a recovery returned).
    pub fn from_durable(records: Vec<Rec>) -> Self {
        let synced = records.len();
        Self { records, synced, ..Self::default() }
    }
}

/// Runs the steps until the first error (the log is then poisoned, as after a crash) and records what the
/// caller saw. Returns whether every step succeeded.
pub fn run(log: &mut Log, steps: &[Step], history: &mut History) -> bool {
    for step in steps {
        match step {
            Step::Append { record_type, payload } => match log.append(*record_type, &[payload]) {
                Ok(id) => history.records.push(Rec { id, record_type: *record_type, payload: payload.clone() }),
                Err(_) => return false,
            },
            Step::Flush => match log.flush_and_sync() {
                Ok(()) => {
                    history.synced = history.records.len();
                    let pending = std::mem::take(&mut history.deleted_pending);
                    history.deleted_durable.extend(pending);
                }
                Err(_) => return false,
            },
            Step::DeleteOldest => {
                let oldest = log.segments().into_iter().find(|s| !s.active);
                if let Some(segment) = oldest {
                    if log.delete_segment(segment.number).is_err() {
                        return false;
                    }
                    history.deleted_pending.insert(segment.number);
                }
            }
        }
    }
    true
}

/// The model check. Recovery must
/// - return no record that was not appended (same id, same type, same payload),
/// - return nothing from a segment whose deletion was durable,
/// - apart from segments whose deletion was pending, return exactly a prefix of the appended records,
/// - and that prefix must include every synced record.
///
/// Returns a description of the first violation.
pub fn check_recovery(history: &History, recovered: &[Rec]) -> Result<(), String> {
    let by_id: std::collections::HashMap<RecordId, &Rec> = history.records.iter().map(|r| (r.id, r)).collect();
    for r in recovered {
        match by_id.get(&r.id) {
            None => return Err(format!("invented record at {:?}", r.id)),
            Some(&appended) if appended != r => {
                return Err(format!("record at {:?} differs from what was appended", r.id))
            }
            Some(_) => {}
        }
        if history.deleted_durable.contains(&r.id.segment) {
            return Err(format!("record at {:?} is in a segment whose deletion was synced", r.id));
        }
    }
    let gone =
        |r: &&Rec| history.deleted_durable.contains(&r.id.segment) || history.deleted_pending.contains(&r.id.segment);
    let expected: Vec<&Rec> = history.records.iter().filter(|r| !gone(r)).collect();
    let got: Vec<&Rec> = recovered.iter().filter(|r| !gone(r)).collect();
    if got.len() > expected.len() || got[..] != expected[..got.len()] {
        return Err(format!(
            "recovered {} records that are not a prefix of the {} appended",
            got.len(),
            expected.len()
        ));
    }
    let must_keep = history.records[..history.synced].iter().filter(|r| !gone(r)).count();
    if got.len() < must_keep {
        return Err(format!("lost synced records: recovered {} of the {} synced", got.len(), must_keep));
    }
    Ok(())
}

/// A crash alone may only cut off torn tails and torn segments, never skip corrupt records.
pub fn check_crash_report(report: &RecoveryReport) -> Result<(), String> {
    for d in &report.damage {
        if !matches!(d.kind, DamageKind::TornTail(_) | DamageKind::TornSegment) {
            return Err(format!("a crash produced damage that is not a torn tail: {d}"));
        }
    }
    Ok(())
}
