//! Crash tests against the simulated disk. They prove that, whatever moment the machine dies at and
//! whatever part of the unsynced writes reaches the disk (none, any prefix of them, a prefix with the last
//! write torn at any of several byte counts), recovery returns exactly a prefix of the appended records
//! that includes every record whose `flush_and_sync` returned `Ok`: no synced record is ever lost and no
//! record is ever invented. Each scenario is replayable from the seed printed on failure.

#![allow(clippy::unwrap_used)]

mod common;

use common::{check_crash_report, check_recovery, open, run, small_config, workload, History, Rec, Step};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store::sim::{CrashMode, PendingOp, SimDisk};

/// Every crash mode worth trying from one moment: drop everything unsynced, keep every prefix of the
/// pending operations, and tear each pending write at interesting byte counts (around the record and
/// segment header sizes) and a few random ones.
fn crash_modes(disk: &SimDisk, rng: &mut StdRng) -> Vec<CrashMode> {
    let pending = disk.pending();
    let mut modes = vec![CrashMode::DropUnsynced];
    for ops in 0..=pending.len() {
        modes.push(CrashMode::KeepOps { ops });
    }
    for (ops, op) in pending.iter().enumerate() {
        if let PendingOp::Write { len_bytes, .. } = op {
            let mut keeps =
                vec![0, 1, 3, 4, 19, 20, 21, 23, 24, 25, 43, 44, 45, len_bytes / 2, len_bytes.saturating_sub(1)];
            keeps.extend((0..3).map(|_| rng.gen_range(0..=*len_bytes)));
            keeps.retain(|&k| k < *len_bytes);
            keeps.sort_unstable();
            keeps.dedup();
            modes.extend(keeps.into_iter().map(|keep_bytes| CrashMode::TearWrite { ops, keep_bytes }));
        }
    }
    modes
}

/// Crashes `disk` (a fork of it) with `mode`, recovers, checks the model, then checks that the recovered
/// log still takes appends that survive a clean reopen.
/// Counts of what the crash scenarios produced, so a test can prove it explored torn tails and both lost
/// and surviving unsynced records rather than only trivial cases.
#[derive(Debug, Default)]
struct Coverage {
    scenarios: u64,
    torn_tails: u64,
    torn_segments: u64,
    unsynced_survived: u64,
    unsynced_lost: u64,
}

fn crash_recover_check(
    disk: &SimDisk,
    mode: CrashMode,
    history: &History,
    context: &str,
    coverage: &mut Coverage,
) -> Vec<Rec> {
    let disk = disk.fork();
    disk.crash(mode);
    let (mut log, recovered, report) = open(&disk, small_config());
    let fail = |why: String| -> ! { panic!("{context}, {mode:?}: {why}\nreport: {report:?}") };
    check_recovery(history, &recovered).unwrap_or_else(|e| fail(e));
    check_crash_report(&report).unwrap_or_else(|e| fail(e));
    coverage.scenarios += 1;
    let torn = |kind: fn(&store::DamageKind) -> bool| report.damage.iter().any(|d| kind(&d.kind));
    coverage.torn_tails += u64::from(torn(|k| matches!(k, store::DamageKind::TornTail(_))));
    coverage.torn_segments += u64::from(torn(|k| matches!(k, store::DamageKind::TornSegment)));
    let live = history.records.iter().filter(|r| !history.deleted_pending.contains(&r.id.segment)).count();
    let synced = history.records[..history.synced].iter().filter(|r| !history.deleted_pending.contains(&r.id.segment));
    let recovered_live = recovered.iter().filter(|r| !history.deleted_pending.contains(&r.id.segment)).count();
    let synced = synced.count();
    coverage.unsynced_survived += u64::from(recovered_live > synced);
    coverage.unsynced_lost += u64::from(recovered_live < live);

    let mut after = History::from_durable(recovered.clone());
    let more = [
        Step::Append { record_type: 1, payload: b"after recovery".to_vec() },
        Step::Append { record_type: 2, payload: vec![7; 300] },
        Step::Flush,
    ];
    assert!(run(&mut log, &more, &mut after), "{context}, {mode:?}: the recovered log refused writes");
    drop(log);
    disk.crash(CrashMode::DropUnsynced);
    let (_, reread, report) = open(&disk, small_config());
    assert!(report.is_clean(), "{context}, {mode:?}: second recovery found damage: {report:?}");
    assert_eq!(reread, after.records, "{context}, {mode:?}: records appended after recovery");
    recovered
}

#[test]
fn recovery_returns_the_synced_prefix_after_a_crash_at_every_step() {
    let mut coverage = Coverage::default();
    for seed in 0..40u64 {
        let steps = workload(seed, 40);
        // A dry run counts the disk operations the workload makes.
        let dry = SimDisk::new();
        let (mut log, _, _) = open(&dry, small_config());
        assert!(run(&mut log, &steps, &mut History::default()));
        let total_ops = dry.ops();

        let mut rng = StdRng::seed_from_u64(seed);
        for stop in 0..=total_ops {
            let disk = SimDisk::new();
            let (mut log, _, _) = open(&disk, small_config());
            disk.stop_after_ops(stop);
            let mut history = History::default();
            let completed = run(&mut log, &steps, &mut history);
            assert_eq!(completed, stop == total_ops, "seed {seed} stop {stop}: the workload saw the crash");
            drop(log);
            for mode in crash_modes(&disk, &mut rng) {
                let context = format!("seed {seed}, crash after op {stop}");
                crash_recover_check(&disk, mode, &history, &context, &mut coverage);
            }
        }
    }
    // About 58,000 scenarios when this was written: 27,000 torn tails, 17,000 torn segments, 25,000 with
    // unsynced records surviving.
    assert!(coverage.scenarios > 20_000, "{coverage:?}");
    assert!(coverage.torn_tails > 5_000, "{coverage:?}");
    assert!(coverage.torn_segments > 1_000, "{coverage:?}");
    assert!(coverage.unsynced_survived > 5_000, "{coverage:?}");
    assert!(coverage.unsynced_lost > 5_000, "{coverage:?}");
}

#[test]
fn recovery_survives_being_crashed_itself() {
    // A torn state is recovered while the disk dies at each of recovery's own writes (truncate, sync,
    // remove, directory sync); the next recovery must return what an uninterrupted one returns.
    for seed in 100..130u64 {
        let steps = workload(seed, 30);
        let disk = SimDisk::new();
        let (mut log, _, _) = open(&disk, small_config());
        let mut history = History::default();
        assert!(run(&mut log, &steps, &mut history));
        // Bigger than the write buffer, so append writes it out (unsynced) and there is a tail to tear.
        let spilled = run(&mut log, &[Step::Append { record_type: 9, payload: vec![1; 200] }], &mut history);
        assert!(spilled);
        let pending = disk.pending();
        assert!(!pending.is_empty(), "seed {seed}: the spill left nothing pending");
        let mut rng = StdRng::seed_from_u64(seed);
        for mode in crash_modes(&disk, &mut rng).into_iter().step_by(3) {
            let torn = disk.fork();
            torn.crash(mode);
            let reference = {
                let copy = torn.fork();
                let (_, records, _) = open(&copy, small_config());
                records
            };
            let recovery_ops = {
                let copy = torn.fork();
                let before = copy.ops();
                open(&copy, small_config());
                copy.ops() - before
            };
            for stop in 0..recovery_ops {
                for second in [CrashMode::DropUnsynced, CrashMode::KeepOps { ops: usize::MAX }] {
                    let copy = torn.fork();
                    copy.stop_after_ops(stop);
                    let interrupted =
                        store::Log::open(common::DIR, small_config(), common::shared(&copy)).and_then(|mut r| {
                            while r.next_record()?.is_some() {}
                            r.finish()
                        });
                    assert!(interrupted.is_err(), "seed {seed} {mode:?}: recovery with the disk stopped at op {stop}");
                    copy.crash(second);
                    let (_, records, _) = open(&copy, small_config());
                    assert_eq!(
                        records, reference,
                        "seed {seed}, {mode:?}, recovery crashed after op {stop} then {second:?} (pending {pending:?})"
                    );
                }
            }
        }
    }
}

#[test]
fn repeated_crash_and_recovery_cycles_never_lose_a_synced_record() {
    // Like the broker's kill -9 test: many cycles of work, crash at a random moment with a random mode,
    // recover, check against everything the caller has ever seen synced, continue on the recovered disk.
    for seed in 1000..1020u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let disk = SimDisk::new();
        let mut durable: Vec<Rec> = Vec::new();
        for cycle in 0..25 {
            let (mut log, recovered, report) = open(&disk, small_config());
            let context = format!("seed {seed} cycle {cycle}");
            assert!(report.is_clean(), "{context}: a recovered log needs no second repair: {report:?}");
            assert_eq!(recovered, durable, "{context}: reopening changed the records");
            let mut history = History::from_durable(recovered);
            let steps = workload(rng.gen(), rng.gen_range(1..30));
            disk.stop_after_ops(rng.gen_range(0..60));
            run(&mut log, &steps, &mut history);
            drop(log);
            let modes = crash_modes(&disk, &mut rng);
            let mode = modes[rng.gen_range(0..modes.len())];
            disk.crash(mode);
            let (_, recovered, report) = open(&disk, small_config());
            check_recovery(&history, &recovered).unwrap_or_else(|e| panic!("{context}, {mode:?}: {e}\n{report:?}"));
            check_crash_report(&report).unwrap_or_else(|e| panic!("{context}, {mode:?}: {e}"));
            durable = recovered;
        }
    }
}
