//! The crash test of issue 3, against the real binary with lapin: publishers in confirm mode and
//! consumers with manual acks run on three durable queues (fed through a durable direct exchange)
//! while the broker is `kill -9`-ed at a random moment of every cycle and restarted on the same data
//! directory. Afterwards every queue is drained and the test asserts that every message the broker
//! confirmed was received at least once (duplicates from redelivery are allowed, losses are not),
//! that nothing was received that no publisher sent, that the drain straight after the last recovery
//! delivers each publisher's messages in publish order, and that the durable definitions are back
//! while a transient queue is not.
//!
//! `WARREN_CRASH_CYCLES` sets the number of kill/restart cycles (default 20, the CI run; hundreds by
//! hand), `WARREN_CRASH_SEED` replays the kill delays of an earlier run (its seed is printed first),
//! and `WARREN_CRASH_SERVER_ARGS` passes extra flags to the binary.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use futures_lite::{Stream, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use testkit::Server;

const QUEUES: [&str; 3] = ["crash.q0", "crash.q1", "crash.q2"];
const EXCHANGE: &str = "crash.direct";
/// Declared once before the first crash; must not come back.
const TRANSIENT_QUEUE: &str = "crash.transient";
const PUBLISHERS: usize = 2;
const CONSUMERS: usize = 2;
const PREFETCH_COUNT: u16 = 50;
/// Publishes a publisher keeps awaiting their confirm before it waits for the oldest.
const CONFIRMS_OUTSTANDING_MAX: usize = 64;
const KILL_DELAY_MS_MIN: u64 = 50;
const KILL_DELAY_MS_MAX: u64 = 400;
const CYCLES_DEFAULT: u64 = 20;
/// How long a restarted broker has to accept connections again.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(15);
/// How long workers have to notice the broker died and return.
const WORKER_EXIT_DEADLINE: Duration = Duration::from_secs(10);
/// How often an idle consumer checks whether its connection died.
const CONSUMER_IDLE_CHECK: Duration = Duration::from_millis(200);
/// Silence after which a draining consumer asks the queue whether it is empty.
const DRAIN_IDLE: Duration = Duration::from_millis(300);
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
const LOST_IDS_SHOWN_MAX: usize = 20;

/// What the clients saw, shared by every worker; never held across an await.
#[derive(Default)]
struct Ledger {
    /// Every id handed to basic.publish (whether or not the frame reached the broker).
    sent: HashSet<String>,
    /// Ids whose basic.ack arrived: the broker promised they are on disk.
    confirmed: HashSet<String>,
    nacked: u64,
    /// Ids acked but returned as unroutable: a durable binding was missing.
    returned: Vec<String>,
    /// Deliveries per body, across cycles and the final drain.
    received: HashMap<String, u64>,
    deliveries: u64,
    redelivered_flagged: u64,
}

type SharedLedger = Arc<Mutex<Ledger>>;

fn lock(ledger: &SharedLedger) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

fn record_delivery(ledger: &SharedLedger, d: &Delivery) {
    let body = String::from_utf8_lossy(&d.data).into_owned();
    let mut l = lock(ledger);
    *l.received.entry(body).or_default() += 1;
    l.deliveries += 1;
    if d.redelivered {
        l.redelivered_flagged += 1;
    }
}

/// SplitMix64: a few lines instead of a dependency, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")))
}

/// Awaits a lapin step the broker's death may interrupt: `None` on error or after [`STEP_TIMEOUT`].
async fn step<T>(fut: impl Future<Output = lapin::Result<T>>) -> Option<T> {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Some(v),
        _ => None,
    }
}

/// Connects, retrying until [`RECONNECT_DEADLINE`]: a restarted broker may still be recovering.
async fn reconnect(url: &str) -> Connection {
    let end = Instant::now() + RECONNECT_DEADLINE;
    loop {
        let error = match tokio::time::timeout(STEP_TIMEOUT, Connection::connect(url, properties())).await {
            Ok(Ok(conn)) => return conn,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no connection.open-ok within {STEP_TIMEOUT:?}"),
        };
        assert!(Instant::now() < end, "could not reconnect within {RECONNECT_DEADLINE:?}: {error}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

const MANDATORY: BasicPublishOptions = BasicPublishOptions { mandatory: true, immediate: false };

async fn declare_definitions(ch: &Channel) {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    within("exchange.declare", ch.exchange_declare(EXCHANGE, ExchangeKind::Direct, durable, FieldTable::default()))
        .await
        .expect("declare the durable exchange");
    for q in QUEUES {
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        within("queue.declare", ch.queue_declare(q, durable, FieldTable::default())).await.expect("durable queue");
        within("queue.bind", ch.queue_bind(q, EXCHANGE, q, QueueBindOptions::default(), FieldTable::default()))
            .await
            .expect("durable binding");
    }
    declare_queue(ch, TRANSIENT_QUEUE).await;
}

/// Publishes persistent messages `p{publisher}-{n}` round-robin over the queues until the
/// connection dies, recording each id as sent before the publish and as confirmed only when its
/// basic.ack arrives. Returns the next `n`, so ids stay unique across cycles.
async fn publish_until_crash(publisher: usize, conn: Connection, ch: Channel, mut n: u64, ledger: SharedLedger) -> u64 {
    let mut outstanding: VecDeque<(String, PublisherConfirm)> = VecDeque::new();
    loop {
        if outstanding.len() < CONFIRMS_OUTSTANDING_MAX {
            let id = format!("p{publisher}-{n}");
            let queue = QUEUES[(n % QUEUES.len() as u64) as usize];
            n += 1;
            lock(&ledger).sent.insert(id.clone());
            match step(ch.basic_publish(EXCHANGE, queue, MANDATORY, id.as_bytes(), persistent())).await {
                Some(confirm) => outstanding.push_back((id, confirm)),
                None => break,
            }
        } else {
            let (id, confirm) = outstanding.pop_front().expect("the window is full");
            if !settle(&ledger, id, confirm).await {
                break;
            }
        }
    }
    // Confirms that arrived before the connection died are resolved; the rest fail fast.
    for (id, confirm) in outstanding {
        settle(&ledger, id, confirm).await;
    }
    drop(conn);
    n
}

/// Records the outcome of one confirm; false when the connection is gone.
async fn settle(ledger: &SharedLedger, id: String, confirm: PublisherConfirm) -> bool {
    match step(confirm).await {
        Some(Confirmation::Ack(None)) => {
            lock(ledger).confirmed.insert(id);
            true
        }
        Some(Confirmation::Ack(Some(_))) => {
            lock(ledger).returned.push(id);
            true
        }
        Some(Confirmation::Nack(_)) => {
            lock(ledger).nacked += 1;
            true
        }
        Some(Confirmation::NotRequested) => panic!("the channel is in confirm mode"),
        None => false,
    }
}

/// Consumes every queue with manual acks until the connection dies, recording each delivery
/// (first or redelivered) before acking it.
async fn consume_until_crash(
    conn: Connection,
    mut deliveries: impl Stream<Item = lapin::Result<Delivery>> + Unpin,
    ledger: SharedLedger,
) {
    loop {
        let d = match tokio::time::timeout(CONSUMER_IDLE_CHECK, deliveries.next()).await {
            Err(_) if conn.status().connected() => continue,
            Ok(Some(Ok(d))) => d,
            _ => break,
        };
        record_delivery(&ledger, &d);
        if step(d.acker.ack(BasicAckOptions::default())).await.is_none() {
            break;
        }
    }
}

async fn start_publisher(url: &str, publisher: usize, n: u64, ledger: &SharedLedger) -> tokio::task::JoinHandle<u64> {
    let conn = reconnect(url).await;
    let ch = confirm_channel(&conn).await;
    tokio::spawn(publish_until_crash(publisher, conn, ch, n, ledger.clone()))
}

async fn start_consumer(url: &str, consumer: usize, ledger: &SharedLedger) -> tokio::task::JoinHandle<()> {
    let conn = reconnect(url).await;
    let ch = open_channel(&conn).await;
    within("basic.qos", ch.basic_qos(PREFETCH_COUNT, BasicQosOptions::default())).await.expect("basic.qos");
    let mut streams = Vec::new();
    for q in QUEUES {
        let tag = format!("c{consumer}-{q}");
        let c =
            within("basic.consume", ch.basic_consume(q, &tag, BasicConsumeOptions::default(), FieldTable::default()))
                .await
                .expect("basic.consume");
        streams.push(c);
    }
    let [a, b, c]: [lapin::Consumer; 3] = streams.try_into().expect("one consumer per queue");
    tokio::spawn(consume_until_crash(conn, a.race(b.race(c)), ledger.clone()))
}

/// Consumes `queue` without acks until it stays silent and reports no ready message; returns the
/// bodies in delivery order.
async fn drain_queue(ch: &Channel, queue: &str, ledger: &SharedLedger, end: Instant) -> Vec<String> {
    let mut bodies = Vec::new();
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let tag = format!("drain-{queue}");
    let mut consumer =
        within("basic.consume", ch.basic_consume(queue, &tag, no_ack, FieldTable::default())).await.expect("drain");
    loop {
        assert!(Instant::now() < end, "could not drain {queue} within {DRAIN_DEADLINE:?}");
        match tokio::time::timeout(DRAIN_IDLE, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                record_delivery(ledger, &d);
                bodies.push(String::from_utf8_lossy(&d.data).into_owned());
            }
            Ok(other) => panic!("draining {queue}: the consumer ended: {other:?}"),
            Err(_) if queue_counts(ch, queue).await.0 == 0 => break,
            Err(_) => {}
        }
    }
    within("basic.cancel", ch.basic_cancel(&tag, BasicCancelOptions::default())).await.expect("basic.cancel");
    bodies
}

/// The first pair of one publisher's messages that a drain delivered out of publish order: right
/// after recovery a queue holds its messages in their original order (issue 3).
fn first_out_of_order(drained: &[String]) -> Option<(String, String)> {
    let mut last: HashMap<&str, (u64, &String)> = HashMap::new();
    for body in drained {
        let Some((publisher, n)) = body.split_once('-') else { continue };
        let Ok(n) = n.parse::<u64>() else { continue };
        if let Some((prev, prev_body)) = last.insert(publisher, (n, body)) {
            if prev >= n {
                return Some((prev_body.clone(), body.clone()));
            }
        }
    }
    None
}

/// Proves nothing confirmed is lost across `kill -9`: see the file's opening comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_9() {
    let cycles = env_u64("WARREN_CRASH_CYCLES").unwrap_or(CYCLES_DEFAULT);
    let seed = env_u64("WARREN_CRASH_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos());
        nanos.unwrap_or(0) as u64 ^ u64::from(std::process::id())
    });
    println!(
        "crash test: {cycles} cycles, seed {seed} (replay: WARREN_CRASH_SEED={seed} WARREN_CRASH_CYCLES={cycles})"
    );
    let mut rng = Rng(seed);
    let started = Instant::now();

    // Extra server flags, e.g. `--confirm-before-fsync`, whose confirms should survive `kill -9` too.
    let server_args = std::env::var("WARREN_CRASH_SERVER_ARGS").unwrap_or_default();
    let server_args: Vec<&str> = server_args.split_whitespace().collect();
    if !server_args.is_empty() {
        println!("server flags: {server_args:?}");
    }
    let mut server: Server = start_server_with(&server_args);
    let url = server.amqp_url();
    {
        let conn = connect(&server).await;
        let ch = open_channel(&conn).await;
        declare_definitions(&ch).await;
    }

    let ledger = SharedLedger::default();
    let mut next_n = [0u64; PUBLISHERS];
    for cycle in 1..=cycles {
        let mut publishers = Vec::new();
        for (p, n) in next_n.iter().enumerate() {
            publishers.push(start_publisher(&url, p, *n, &ledger).await);
        }
        let mut consumers = Vec::new();
        for c in 0..CONSUMERS {
            consumers.push(start_consumer(&url, c, &ledger).await);
        }
        let delay_ms = rng.range_inclusive(KILL_DELAY_MS_MIN, KILL_DELAY_MS_MAX);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        tokio::task::block_in_place(|| server.kill());
        for (p, h) in publishers.into_iter().enumerate() {
            next_n[p] = tokio::time::timeout(WORKER_EXIT_DEADLINE, h)
                .await
                .unwrap_or_else(|_| panic!("publisher {p} still running {WORKER_EXIT_DEADLINE:?} after the kill"))
                .expect("publisher task");
        }
        for (c, h) in consumers.into_iter().enumerate() {
            tokio::time::timeout(WORKER_EXIT_DEADLINE, h)
                .await
                .unwrap_or_else(|_| panic!("consumer {c} still running {WORKER_EXIT_DEADLINE:?} after the kill"))
                .expect("consumer task");
        }
        {
            let l = lock(&ledger);
            println!(
                "cycle {cycle}/{cycles}: kill -9 after {delay_ms} ms; so far sent {}, confirmed {}, received {}",
                l.sent.len(),
                l.confirmed.len(),
                l.received.len()
            );
        }
        tokio::task::block_in_place(|| server.restart());
    }

    // Publishing has stopped; the broker has just come back from the last kill.
    let conn = reconnect(&url).await;
    let ch = open_channel(&conn).await;
    for q in QUEUES {
        within("passive queue.declare", ch.queue_declare(q, passive_queue(), FieldTable::default()))
            .await
            .unwrap_or_else(|e| panic!("durable queue {q} missing after the restarts (seed {seed}): {e}"));
    }
    let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
    within(
        "passive exchange.declare",
        ch.exchange_declare(EXCHANGE, ExchangeKind::Direct, passive, FieldTable::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("durable exchange {EXCHANGE} missing after the restarts (seed {seed}): {e}"));
    let throwaway = open_channel(&conn).await;
    let (code, text) = expect_reply(
        within(
            "passive queue.declare",
            throwaway.queue_declare(TRANSIENT_QUEUE, passive_queue(), FieldTable::default()),
        )
        .await,
    );
    assert_eq!(code, 404, "the transient queue must not survive a restart: {text}");

    let drain_end = Instant::now() + DRAIN_DEADLINE;
    for q in QUEUES {
        let drained = drain_queue(&ch, q, &ledger, drain_end).await;
        println!("drained {} messages from {q}", drained.len());
        if let Some((before, after)) = first_out_of_order(&drained) {
            panic!("{q} delivered {after} after {before} straight after recovery (seed {seed})");
        }
    }

    // The bindings came back: a mandatory publish through the exchange reaches each queue.
    let confirms = confirm_channel(&conn).await;
    for q in QUEUES {
        let probe = format!("probe-{q}");
        let c = publish_with(&confirms, EXCHANGE, q, MANDATORY, probe.as_bytes(), persistent()).await;
        assert_eq!(c, Confirmation::Ack(None), "binding {EXCHANGE} -> {q} missing after the restarts (seed {seed})");
        let m = get(&ch, q, true).await.unwrap_or_else(|| panic!("the probe published to {q} did not arrive"));
        assert_eq!(m.delivery.data, probe.as_bytes());
        assert_eq!(queue_counts(&ch, q).await.0, 0, "{q} holds more than the probe");
    }
    drop(conn);

    let l = lock(&ledger);
    let unconfirmed: HashSet<&String> = l.sent.iter().filter(|id| !l.confirmed.contains(*id)).collect();
    let unconfirmed_survived = unconfirmed.iter().filter(|id| l.received.contains_key(**id)).count();
    println!("crash test after {cycles} cycles in {:.1} s (seed {seed}):", started.elapsed().as_secs_f64());
    println!("  published (handed to basic.publish): {}", l.sent.len());
    println!("  confirmed (basic.ack):                {}", l.confirmed.len());
    println!("  nacked:                               {}", l.nacked);
    println!("  returned unroutable:                  {}", l.returned.len());
    println!(
        "  unconfirmed (in flight at a kill):    {} ({unconfirmed_survived} of them delivered)",
        unconfirmed.len()
    );
    println!("  distinct ids received:                {}", l.received.len());
    println!("  deliveries:                           {}", l.deliveries);
    println!("  duplicates (redeliveries):            {}", l.deliveries - l.received.len() as u64);
    println!("  deliveries flagged redelivered:       {}", l.redelivered_flagged);

    let lost: BTreeSet<&String> = l.confirmed.iter().filter(|id| !l.received.contains_key(*id)).collect();
    let invented: BTreeSet<&String> = l.received.keys().filter(|id| !l.sent.contains(*id)).collect();
    println!("  confirmed but never received (lost):  {}", lost.len());
    println!("  received but never sent (invented):   {}", invented.len());
    assert!(
        lost.is_empty(),
        "{} confirmed messages were lost (seed {seed}, {cycles} cycles); first ones: {:?}",
        lost.len(),
        lost.iter().take(LOST_IDS_SHOWN_MAX).collect::<Vec<_>>()
    );
    assert!(invented.is_empty(), "received messages nobody sent (seed {seed}): {invented:?}");
    assert!(l.returned.is_empty(), "publishes found no binding during the run (seed {seed}): {:?}", l.returned);
    assert!(!l.confirmed.is_empty(), "no publish was ever confirmed: the test proved nothing");
}

fn passive_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

/// Proves the order check sees a publisher's messages out of order and ignores interleaving
/// between publishers.
#[test]
fn order_check_finds_reordering() {
    let bodies = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(first_out_of_order(&bodies(&["p0-1", "p1-0", "p0-4", "p1-3"])), None);
    assert_eq!(
        first_out_of_order(&bodies(&["p0-1", "p1-0", "p0-4", "p0-2"])),
        Some(("p0-4".to_string(), "p0-2".to_string()))
    );
    assert_eq!(first_out_of_order(&bodies(&["p1-7", "p1-7"])), Some(("p1-7".to_string(), "p1-7".to_string())));
}
