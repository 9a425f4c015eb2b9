//! Compaction of the definitions log: after it, and after a crash at any step of it, recovery
//! gives the same durable state, messages included, and queue ids are not reused.

use std::path::Path;

use bytes::Bytes;
use store::sim::{CrashMode, SimDisk};

use super::*;
use crate::durable::StoreJournal;

const T0: u64 = 1_700_000_000_000;

/// A broker recovered from (or started on) `disk`, compacting from any size.
fn open(disk: &SimDisk) -> Broker {
    let mut b = Broker::new(BrokerConfig::default(), 1);
    let (mut j, _) = StoreJournal::open(Path::new("/data"), Arc::new(disk.clone()), &mut b, |_| {}).expect("opens");
    j.set_definitions_compaction_min_bytes(1);
    b.set_journal(Box::new(j));
    b
}

fn session(b: &mut Broker, vhost: &str) {
    b.connection_open(1, vhost, "guest", WriteCredit::new(1 << 30)).expect("vhost exists");
    b.channel_open(1, 1);
}

fn call(b: &mut Broker, m: impl Into<Method>) {
    b.handle(1, 1, m.into(), T0, &mut Effects::default()).expect("succeeds");
}

fn declare_queue(b: &mut Broker, name: &str, durable: bool) {
    call(b, QueueDeclare { queue: name.into(), durable, ..Default::default() });
}

/// Builds a state with a long history: many durable queues declared and deleted (the last one
/// declared among them), exchanges, bindings of both kinds, users, permissions, policies, a second
/// vhost with metadata, and persistent messages in a surviving queue.
fn build(disk: &SimDisk) -> Broker {
    let mut b = open(disk);
    b.put_user("guest", &crate::auth::hash_password("g", [1; 4]), &["administrator".to_owned()]).expect("user");
    b.set_permissions("/", "guest", ".*", ".*", ".*").expect("permissions");
    session(&mut b, "/");
    for i in 0..40 {
        declare_queue(&mut b, &format!("churn{i}"), true);
    }
    for i in 0..40 {
        call(&mut b, QueueDelete { queue: format!("churn{i}"), ..Default::default() });
    }
    declare_queue(&mut b, "kept", true);
    declare_queue(&mut b, "transient", false);
    call(&mut b, ExchangeDeclare { exchange: "x".into(), kind: "topic".into(), durable: true, ..Default::default() });
    call(&mut b, ExchangeDeclare { exchange: "y".into(), kind: "fanout".into(), durable: true, ..Default::default() });
    call(
        &mut b,
        ExchangeDeclare { exchange: "gone".into(), kind: "direct".into(), durable: true, ..Default::default() },
    );
    call(&mut b, ExchangeDelete { exchange: "gone".into(), ..Default::default() });
    call(
        &mut b,
        QueueBind { queue: "kept".into(), exchange: "x".into(), routing_key: "a.#".into(), ..Default::default() },
    );
    call(
        &mut b,
        QueueBind { queue: "kept".into(), exchange: "x".into(), routing_key: "b".into(), ..Default::default() },
    );
    call(
        &mut b,
        QueueUnbind { queue: "kept".into(), exchange: "x".into(), routing_key: "b".into(), ..Default::default() },
    );
    call(
        &mut b,
        QueueBind { queue: "transient".into(), exchange: "x".into(), routing_key: "t".into(), ..Default::default() },
    );
    call(&mut b, ExchangeBind { destination: "x".into(), source: "y".into(), ..Default::default() });
    b.put_user("alice", &crate::auth::hash_password("a", [2; 4]), &["monitoring".to_owned()]).expect("user");
    b.put_user("bob", "", &[]).expect("user");
    b.delete_user("bob", &mut Effects::default());
    b.add_vhost("v2");
    b.set_vhost_metadata("v2", "second", &["t1".to_owned()], "classic").expect("metadata");
    b.set_permissions("v2", "alice", "^a", ".*", "").expect("permissions");
    b.set_topic_permissions("v2", "alice", "amq.topic", "^w", "^r").expect("topic permissions");
    let limits = crate::limits::VhostLimits { max_connections: Some(10), max_queues: Some(-1) };
    b.set_vhost_limits("v2", limits).expect("limits");
    let limits = crate::limits::UserLimits { max_connections: None, max_channels: Some(7) };
    b.set_user_limits("alice", limits).expect("limits");
    b.set_global_parameter(crate::parameters::CLUSTER_NAME, "\"first\"").expect("parameter");
    b.set_global_parameter(crate::parameters::CLUSTER_NAME, "\"kept\"").expect("parameter");
    b.set_global_parameter("gone", "1").expect("parameter");
    b.clear_global_parameter("gone");
    let mut ttl = FieldTable::new();
    ttl.insert("message-ttl", FieldValue::I32(60_000));
    b.set_policy("/", "ttl", "^kept$", "queues", 1, ttl.clone(), false, &mut Effects::default()).expect("policy");
    b.set_policy("/", "cap", ".*", "queues", 0, FieldTable::new(), true, &mut Effects::default()).ok();
    b.set_policy("/", "old", "^x", "all", 0, ttl, false, &mut Effects::default()).expect("policy");
    b.clear_policy("/", "old", false, &mut Effects::default());
    let props = BasicProperties { delivery_mode: Some(2), ..Default::default() };
    for i in 0..3 {
        let m = Message::with_properties("x", "a.b", &props, Bytes::from(format!("m{i}")));
        b.publish(1, 1, PublishFlags::default(), m, T0, &mut Effects::default()).expect("publishes");
    }
    sync(&mut b);
    b
}

/// Bytes in the definitions log's files.
fn definitions_bytes(disk: &SimDisk) -> usize {
    disk.paths()
        .iter()
        .filter(|p| p.starts_with("/data/definitions"))
        .filter_map(|p| disk.read_file(p))
        .map(|data| data.len())
        .sum()
}

fn sync(b: &mut Broker) {
    if let Some(job) = b.journal_mut().begin_sync(true) {
        job.run().expect("syncs");
    }
}

/// The durable state as the snapshot describes it, less the queue id floor, plus the messages in
/// "kept".
fn durable_state(b: &Broker) -> (Vec<Definition>, u32) {
    let mut snapshot = b.definitions_snapshot();
    snapshot.retain(|d| !matches!(d, Definition::QueueIdFloor { .. }));
    (snapshot, b.queue("/", "kept").map_or(0, |q| q.message_count()))
}

/// Proves a compacted log is smaller and recovers the same durable state and messages, and that a
/// queue declared after recovery gets an id above every id handed out before (the deleted ones
/// included), with nothing of theirs.
#[test]
fn compaction_keeps_the_durable_state() {
    let disk = SimDisk::new();
    let mut b = build(&disk);
    let before = durable_state(&b);
    assert_eq!(before.1, 3);
    let max_id = b.queues.keys().copied().max().expect("queues");
    let long = definitions_bytes(&disk);
    assert!(b.compact_definitions_if_due());
    let short = definitions_bytes(&disk);
    assert!(short * 2 < long, "compaction shrank the log only from {long} to {short} bytes");
    drop(b);

    let mut b = open(&disk);
    assert_eq!(durable_state(&b), before);
    assert!(b.queue("/", "transient").is_none());
    assert!(b.auth().users.contains_key("alice") && !b.auth().users.contains_key("bob"));
    session(&mut b, "/");
    declare_queue(&mut b, "new", true);
    let q = b.queue("/", "new").expect("declared");
    assert!(q.id > max_id, "queue id {} reused (highest before: {max_id})", q.id);
    assert_eq!(q.message_count(), 0);
}

/// Proves that when every user was deleted, a compacted log still says so: recovery does not
/// leave the node looking new (which would create the default user again), and a deleted "/"
/// stays deleted.
#[test]
fn compaction_keeps_deletions_of_defaults() {
    let disk = SimDisk::new();
    let mut b = open(&disk);
    b.put_user("guest", &crate::auth::hash_password("g", [1; 4]), &[]).expect("user");
    b.delete_user("guest", &mut Effects::default());
    b.add_vhost("other");
    b.delete_vhost("/", &mut Effects::default());
    assert!(b.compact_definitions_if_due());
    drop(b);
    let b = open(&disk);
    assert!(!b.auth_uninitialized(), "the node looks new after compaction");
    assert!(b.auth().users.is_empty());
    assert!(!b.vhosts.contains_key("/") && b.vhosts.contains_key("other"));
}

/// Proves a crash at every step of a compaction, keeping any prefix of the unsynced operations,
/// recovers the state that a restart without compaction recovers.
#[test]
fn crash_during_compaction_recovers_the_same_state() {
    let expected = {
        let disk = SimDisk::new();
        drop(build(&disk));
        durable_state(&open(&disk))
    };
    let steps = {
        let disk = SimDisk::new();
        let mut b = build(&disk);
        let start = disk.ops();
        assert!(b.compact_definitions_if_due());
        disk.ops() - start
    };
    assert!(steps > 3, "compaction took only {steps} disk operations");
    for n in 0..=steps {
        let disk = SimDisk::new();
        let mut b = build(&disk);
        disk.stop_after_ops(n);
        b.compact_definitions_if_due();
        drop(b);
        let pending = disk.pending().len();
        for keep in [0, pending / 2, pending] {
            let crashed = disk.fork();
            crashed.crash(CrashMode::KeepOps { ops: keep });
            let b = open(&crashed);
            assert_eq!(durable_state(&b), expected, "crash after {n} of {steps} operations, keeping {keep}");
        }
    }
}

/// Every definition record in the log on `disk`, oldest first.
fn history(disk: &SimDisk) -> Vec<Definition> {
    let mut rec = store::Log::open(Path::new("/data/definitions"), store::LogConfig::default(), Arc::new(disk.clone()))
        .expect("opens");
    let mut out = Vec::new();
    while let Some(r) = rec.next_record().expect("reads") {
        out.push(crate::journal::decode_definition(r.payload).expect("decodes"));
    }
    out
}

/// Proves the property a crash during compaction relies on, for logs longer than one segment (a
/// crash part-way through deleting the old segments leaves a later part of the history): any
/// suffix of the history, replayed on a new broker and followed by the snapshot, gives the
/// state the whole history gives.
#[test]
fn any_suffix_of_the_history_then_the_snapshot_replays_to_the_same_state() {
    let disk = SimDisk::new();
    let b = build(&disk);
    let snapshot = b.definitions_snapshot();
    let expected = durable_state(&b).0;
    drop(b);
    let history = history(&disk);
    assert!(history.len() > 100, "a long history: {} records", history.len());
    for k in 0..=history.len() {
        let mut replayed = Broker::new(BrokerConfig::default(), 1);
        for d in history[k..].iter().chain(&snapshot) {
            replayed.restore_definition(d.clone());
        }
        assert_eq!(durable_state(&replayed).0, expected, "history from record {k} of {}", history.len());
    }
}

/// Proves global parameters (the cluster name among them) come back after a restart from the
/// log as written, set, replaced and cleared, before any compaction.
#[test]
fn global_parameters_survive_a_restart() {
    let disk = SimDisk::new();
    let mut b = open(&disk);
    b.set_global_parameter(crate::parameters::CLUSTER_NAME, "\"first\"").expect("parameter");
    b.set_global_parameter(crate::parameters::CLUSTER_NAME, "\"second\"").expect("parameter");
    b.set_global_parameter("gone", "1").expect("parameter");
    assert!(b.clear_global_parameter("gone"));
    sync(&mut b);
    drop(b);
    let b = open(&disk);
    assert_eq!(b.global_parameters(), vec![(crate::parameters::CLUSTER_NAME.to_owned(), "\"second\"".to_owned())]);
}
