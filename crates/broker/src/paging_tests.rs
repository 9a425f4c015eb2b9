//! Paging tests: a journaled queue past its memory budget keeps references to log records
//! instead of bodies, and reads them back as it is drained. Each test runs a broker on a
//! `StoreJournal` over a simulated disk, with a budget of a few messages.

use std::path::Path;

use bytes::Bytes;
use store::sim::SimDisk;

use super::*;
use crate::durable::StoreJournal;

const T0: u64 = 1_700_000_000_000;
/// Ten-byte bodies: the in-memory head holds about five of them.
const BUDGET: usize = 50;

/// A broker recovered from (or started on) `disk`, with connection 1 and channel 1 open.
fn open(disk: &SimDisk) -> Broker {
    let config =
        BrokerConfig { queue_memory_bytes_max: BUDGET, queue_message_overhead_bytes: 0, ..BrokerConfig::default() };
    let mut b = Broker::new(config, 1);
    let (j, _) = StoreJournal::open(Path::new("/data"), Arc::new(disk.clone()), &mut b, |_| {}).expect("opens");
    b.set_journal(Box::new(j));
    b.connection_open(1, "/", "guest", WriteCredit::new(1 << 30)).expect("vhost exists");
    b.channel_open(1, 1);
    let mut fx = Effects::default();
    b.handle(1, 1, QueueDeclare { queue: "dq".into(), durable: true, ..Default::default() }.into(), T0, &mut fx)
        .expect("declares");
    b
}

/// Writes and syncs everything journaled so far.
fn sync(b: &mut Broker) {
    if let Some(job) = b.journal_mut().begin_sync(true) {
        job.run().expect("syncs");
    }
}

fn body(i: usize) -> Bytes {
    Bytes::from(format!("message{i:03}"))
}

fn publish(b: &mut Broker, i: usize, props: BasicProperties) {
    let m = Message::with_properties("", "dq", &props, body(i));
    b.publish(1, 1, PublishFlags::default(), m, T0, &mut Effects::default()).expect("publishes");
}

fn persistent() -> BasicProperties {
    BasicProperties { delivery_mode: Some(2), ..Default::default() }
}

/// basic.get: (delivery tag, redelivered, body), or None when the queue is empty.
fn get(b: &mut Broker, no_ack: bool, now: u64) -> Option<(u64, bool, Bytes)> {
    let mut fx = Effects::default();
    b.handle(1, 1, BasicGet { queue: "dq".into(), no_ack, ..Default::default() }.into(), now, &mut fx).expect("gets");
    fx.out.into_iter().find_map(|(_, o)| match o {
        Outbound::GetOk { delivery_tag, redelivered, message, .. } => {
            Some((delivery_tag, redelivered, message.body.clone()))
        }
        _ => None,
    })
}

fn drain(b: &mut Broker) -> Vec<(bool, Bytes)> {
    std::iter::from_fn(|| get(b, true, T0)).map(|(_, r, body)| (r, body)).collect()
}

fn queue(b: &Broker) -> &Queue {
    b.queue("/", "dq").expect("dq exists")
}

/// Proves messages beyond the budget are paged out (bodies dropped, about five kept in memory)
/// and come back in publish order across the boundary, a transient message among them too
/// (written as a transient record).
#[test]
fn paged_messages_come_back_in_order() {
    let disk = SimDisk::new();
    let mut b = open(&disk);
    for i in 0..40 {
        let props = if i == 20 { BasicProperties::default() } else { persistent() };
        publish(&mut b, i, props);
    }
    let q = queue(&b);
    assert_eq!(q.message_count(), 40);
    assert!(q.ready.len() <= 6, "in memory: {}", q.ready.len());
    assert_eq!(q.paged.len(), 40 - q.ready.len());
    assert_eq!(q.paged.held(), 0, "the transient message is paged out as well");
    let got = drain(&mut b);
    assert_eq!(got, (0..40).map(|i| (false, body(i))).collect::<Vec<_>>());
    assert_eq!(b.page_in_failures(), 0);
    assert_eq!(queue(&b).message_count(), 0);
}

/// Proves acks and requeues work on paged-in messages: requeued ones return to their place,
/// redelivered, ahead of the still-paged ones, and acked ones are gone after a restart.
#[test]
fn requeue_and_ack_across_the_boundary() {
    let disk = SimDisk::new();
    let mut b = open(&disk);
    for i in 0..30 {
        publish(&mut b, i, persistent());
    }
    // Take 12 (more than the in-memory head): ack the first 4, requeue the rest.
    let taken: Vec<_> = (0..12).map(|_| get(&mut b, false, T0).expect("a message")).collect();
    let bodies: Vec<_> = taken.iter().map(|t| t.2.clone()).collect();
    assert_eq!(bodies, (0..12).map(body).collect::<Vec<_>>());
    let mut fx = Effects::default();
    b.handle(1, 1, BasicAck { delivery_tag: taken[3].0, multiple: true }.into(), T0, &mut fx).expect("acks");
    b.handle(1, 1, BasicNack { delivery_tag: taken[11].0, multiple: true, requeue: true }.into(), T0, &mut fx)
        .expect("nacks");
    assert_eq!(queue(&b).message_count(), 26);
    let expect: Vec<_> = (4..30).map(|i| (i < 12, body(i))).collect();
    // Take them all again, then restart: nothing acked may come back, everything is redelivered.
    let first: Vec<_> = (0..26).map(|_| get(&mut b, false, T0).expect("a message")).collect();
    assert_eq!(first.iter().map(|t| (t.1, t.2.clone())).collect::<Vec<_>>(), expect);
    sync(&mut b);
    drop(b);
    let mut b = open(&disk);
    let got = drain(&mut b);
    assert_eq!(got, (4..30).map(|i| (true, body(i))).collect::<Vec<_>>(), "all were delivered before");
}

/// Proves recovery pages too (a backlog is not loaded into memory beyond the budget) and
/// restores order and redelivered flags of paged messages.
#[test]
fn restart_replays_and_pages() {
    let disk = SimDisk::new();
    let mut b = open(&disk);
    for i in 0..40 {
        publish(&mut b, i, persistent());
    }
    let (_, _, first) = get(&mut b, false, T0).expect("a message");
    assert_eq!(first, body(0), "delivered, left unacked");
    sync(&mut b);
    drop(b);
    let mut b = open(&disk);
    let q = queue(&b);
    assert_eq!(q.message_count(), 40);
    assert!(q.ready.len() <= 6 && q.paged.len() >= 34, "recovery paged: {} {}", q.ready.len(), q.paged.len());
    let got = drain(&mut b);
    assert_eq!(got, (0..40).map(|i| (i == 0, body(i))).collect::<Vec<_>>());
}

/// Proves purge and delete remove paged messages from the journal: after a restart nothing
/// comes back.
#[test]
fn purge_and_delete_remove_paged_messages() {
    let disk = SimDisk::new();
    let mut b = open(&disk);
    for i in 0..30 {
        publish(&mut b, i, persistent());
    }
    let mut fx = Effects::default();
    b.handle(1, 1, QueuePurge { queue: "dq".into(), ..Default::default() }.into(), T0, &mut fx).expect("purges");
    assert!(fx.out.iter().any(|(_, o)| matches!(o, Outbound::Method { method, .. } if *method == Method::from(QueuePurgeOk { message_count: 30 }))));
    assert_eq!(queue(&b).message_count(), 0);
    for i in 30..60 {
        publish(&mut b, i, persistent());
    }
    assert!(!queue(&b).paged.is_empty());
    sync(&mut b);
    drop(b);
    let mut b = open(&disk);
    assert_eq!(queue(&b).message_count(), 30, "only the ones published after the purge");
    let mut fx = Effects::default();
    b.handle(1, 1, QueueDelete { queue: "dq".into(), ..Default::default() }.into(), T0, &mut fx).expect("deletes");
    sync(&mut b);
    drop(b);
    let mut b = open(&disk);
    assert_eq!(drain(&mut b), vec![], "the deleted queue's messages do not come back");
}

/// Proves a message with a deadline published behind paged ones is paged too (nothing held in
/// memory) and expires in place, while the paged messages around it are delivered.
#[test]
fn deadlines_among_paged_messages_expire() {
    let disk = SimDisk::new();
    let mut b = open(&disk);
    for i in 0..20 {
        let props =
            if i == 12 { BasicProperties { expiration: Some("1000".into()), ..persistent() } } else { persistent() };
        publish(&mut b, i, props);
    }
    assert_eq!(queue(&b).paged.held(), 0, "paged like the others");
    b.tick(T0 + 1000, &mut Effects::default());
    assert_eq!(queue(&b).message_count(), 19);
    let got: Vec<_> = std::iter::from_fn(|| get(&mut b, true, T0 + 1000)).map(|t| t.2).collect();
    assert_eq!(got, (0..20).filter(|i| *i != 12).map(body).collect::<Vec<_>>());
}

/// Proves transient messages past the budget are paged out through transient records, come back
/// in order when drained, and are not restored after a restart, while persistent ones are; the
/// restarted broker never reuses their message ids.
#[test]
fn transient_messages_page_and_do_not_survive_restart() {
    let disk = SimDisk::new();
    let mut b = open(&disk);
    for i in 0..30 {
        let props = if i % 3 == 0 { persistent() } else { BasicProperties::default() };
        publish(&mut b, i, props);
    }
    let q = queue(&b);
    assert!(q.ready.len() <= 6, "in memory: {}", q.ready.len());
    assert_eq!(q.paged.held(), 0);
    let used = b.next_msg_id();
    sync(&mut b);
    drop(b);
    let mut b = open(&disk);
    assert!(b.next_msg_id() >= used, "ids of transient records are not reused");
    let got = drain(&mut b);
    let persistent_bodies: Vec<Bytes> = (0..30).filter(|i| i % 3 == 0).map(body).collect();
    assert_eq!(got.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(), persistent_bodies);
    // And without a restart, every one comes back in order.
    for i in 0..30 {
        publish(&mut b, i, BasicProperties::default());
    }
    assert!(queue(&b).paged.len() > 20);
    let got = drain(&mut b);
    assert_eq!(got.into_iter().map(|(_, m)| m).collect::<Vec<_>>(), (0..30).map(body).collect::<Vec<_>>());
    assert_eq!(b.page_in_failures(), 0);
}

/// Proves a message's delivery count survives a restart in a queue with `x-delivery-limit`:
/// each return is journaled, recovery restores the count and the `x-delivery-count` header, and
/// the limit counts returns from before the restart.
#[test]
fn delivery_count_survives_a_restart() {
    let disk = SimDisk::new();
    let declare_limited = |b: &mut Broker| {
        let args = FieldTable(vec![("x-delivery-limit".into(), FieldValue::I64(4))]);
        let q = QueueDeclare { queue: "lq".into(), durable: true, arguments: args, ..Default::default() };
        b.handle(1, 1, q.into(), T0, &mut Effects::default()).expect("declares lq");
    };
    let get_lq = |b: &mut Broker| {
        let mut fx = Effects::default();
        b.handle(1, 1, BasicGet { queue: "lq".into(), ..Default::default() }.into(), T0, &mut fx).expect("gets");
        fx.out.into_iter().find_map(|(_, o)| match o {
            Outbound::GetOk { delivery_tag, message, .. } => {
                let count = message.headers().and_then(|h| h.get("x-delivery-count").and_then(FieldValue::as_i64));
                Some((delivery_tag, count))
            }
            _ => None,
        })
    };
    let nack = |b: &mut Broker, tag: u64| {
        let n = BasicNack { delivery_tag: tag, multiple: false, requeue: true };
        b.handle(1, 1, n.into(), T0, &mut Effects::default()).expect("nacks");
    };
    let mut b = open(&disk);
    declare_limited(&mut b);
    let m = Message::with_properties("", "lq", &persistent(), body(1));
    b.publish(1, 1, PublishFlags::default(), m, T0, &mut Effects::default()).expect("publishes");
    for returns in 0..3 {
        let (tag, count) = get_lq(&mut b).expect("the message");
        assert_eq!(count, (returns > 0).then_some(returns), "before the restart");
        nack(&mut b, tag);
    }
    sync(&mut b);
    drop(b);

    let mut b = open(&disk);
    declare_limited(&mut b);
    let (tag, count) = get_lq(&mut b).expect("the message came back");
    assert_eq!(count, Some(3), "the count carried over the restart");
    nack(&mut b, tag);
    let (tag, count) = get_lq(&mut b).expect("a fourth return is within the limit");
    assert_eq!(count, Some(4));
    nack(&mut b, tag);
    assert!(get_lq(&mut b).is_none(), "the fifth return is past the limit of 4: dropped");
}

/// Proves a queue with `x-message-ttl` pages (its messages all have deadlines): past the budget
/// only references stay in memory; expired paged messages are read back and dead-lettered in
/// order, the ones that are not yet due are delivered with their deadline intact after paging
/// in, and a restart keeps the deadlines of paged messages (transient ones too are paged).
#[test]
fn a_queue_with_message_ttl_pages_and_expires_paged_messages() {
    let disk = SimDisk::new();
    let mut b = open(&disk);
    let mut fx = Effects::default();
    b.handle(1, 1, QueueDeclare { queue: "dlq".into(), durable: true, ..Default::default() }.into(), T0, &mut fx)
        .expect("dlq");
    let args = FieldTable(vec![
        ("x-message-ttl".into(), FieldValue::I64(5000)),
        ("x-dead-letter-exchange".into(), FieldValue::LongStr("".into())),
        ("x-dead-letter-routing-key".into(), FieldValue::LongStr("dlq".into())),
    ]);
    let q = QueueDeclare { queue: "tq".into(), durable: true, arguments: args, ..Default::default() };
    b.handle(1, 1, q.into(), T0, &mut fx).expect("tq");
    let publish_tq = |b: &mut Broker, i: usize| {
        let mut props = if i.is_multiple_of(5) { BasicProperties::default() } else { persistent() };
        if i < 30 {
            props.expiration = Some("1000".into());
        }
        let m = Message::with_properties("", "tq", &props, body(i));
        b.publish(1, 1, PublishFlags::default(), m, T0, &mut Effects::default()).expect("publishes");
    };
    // 30 due at T0 + 1000 (their own expiration), then 30 due at T0 + 5000 (the queue's TTL).
    for i in 0..60 {
        publish_tq(&mut b, i);
    }
    let tq = b.queue("/", "tq").expect("tq");
    assert_eq!(tq.message_count(), 60);
    assert!(
        tq.ready.len() <= 6 && tq.paged.held() == 0,
        "paged: {} in memory, {} held",
        tq.ready.len(),
        tq.paged.held()
    );

    b.tick(T0 + 1000, &mut Effects::default());
    assert_eq!(b.queue("/", "tq").expect("tq").message_count(), 30, "the first 30 expired");
    let dlq = b.queue("/", "dlq").expect("dlq");
    assert_eq!(dlq.message_count(), 30, "and were dead-lettered");
    sync(&mut b);
    drop(b);

    let mut b = open(&disk);
    let tq = b.queue("/", "tq").expect("tq");
    assert_eq!(tq.message_count(), 24, "the transient ones (every fifth) did not survive the restart");
    b.tick(T0 + 4999, &mut Effects::default());
    assert_eq!(b.queue("/", "tq").expect("tq").message_count(), 24, "not due yet");
    b.tick(T0 + 5000, &mut Effects::default());
    assert_eq!(b.queue("/", "tq").expect("tq").message_count(), 0, "the deadlines survived paging and the restart");
    let mut got = Vec::new();
    let mut fx = Effects::default();
    while let Ok(()) =
        b.handle(1, 1, BasicGet { queue: "dlq".into(), no_ack: true, ..Default::default() }.into(), T0 + 5000, &mut fx)
    {
        let Some(body) = fx.out.drain(..).find_map(|(_, o)| match o {
            Outbound::GetOk { message, .. } => Some(message.body.clone()),
            _ => None,
        }) else {
            break;
        };
        got.push(body);
    }
    let persistent_ones: Vec<_> = (0..30usize).filter(|i| !i.is_multiple_of(5)).map(body).collect();
    let later: Vec<_> = (30..60usize).filter(|i| !i.is_multiple_of(5)).map(body).collect();
    assert_eq!(
        got[..24],
        persistent_ones[..],
        "dead-lettered in order; transient dead letters were lost in the restart"
    );
    assert_eq!(got[24..], later[..]);
}

/// Proves the paging budget counts each message's overhead, not only its body: 10-byte bodies
/// with a 160-byte overhead and a 1,700-byte budget keep about ten messages in memory (counting
/// bodies alone, all hundred would have fit).
#[test]
fn small_messages_page_by_their_footprint() {
    let disk = SimDisk::new();
    let config =
        BrokerConfig { queue_memory_bytes_max: 1_700, queue_message_overhead_bytes: 160, ..BrokerConfig::default() };
    let mut b = Broker::new(config, 1);
    let (j, _) = StoreJournal::open(Path::new("/data"), Arc::new(disk.clone()), &mut b, |_| {}).expect("opens");
    b.set_journal(Box::new(j));
    b.connection_open(1, "/", "guest", WriteCredit::new(1 << 30)).expect("vhost exists");
    b.channel_open(1, 1);
    let q = QueueDeclare { queue: "dq".into(), durable: true, ..Default::default() };
    b.handle(1, 1, q.into(), T0, &mut Effects::default()).expect("declares");
    for i in 0..100 {
        publish(&mut b, i, persistent());
    }
    let q = queue(&b);
    assert!((9..=11).contains(&q.ready.len()), "in memory: {}", q.ready.len());
    assert_eq!(q.paged.len(), 100 - q.ready.len());
    let got = drain(&mut b);
    assert_eq!(got, (0..100).map(|i| (false, body(i))).collect::<Vec<_>>());
}
