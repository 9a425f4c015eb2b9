//! lapin against the real binary (issue 4): priority queues (`x-max-priority`, also across
//! kill -9), consumer priorities (`x-priority`), single active consumer, `x-delivery-limit` with
//! `x-delivery-count`, the consumer acknowledgement timeout, the `x-delayed-message` exchange
//! (also across kill -9) and publisher deduplication.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare(ch: &Channel, name: &str, durable: bool, arguments: FieldTable) {
    let options = QueueDeclareOptions { durable, ..Default::default() };
    within("queue.declare", ch.queue_declare(name, options, arguments)).await.expect("queue.declare");
}

fn prio(p: u8) -> BasicProperties {
    BasicProperties::default().with_priority(p).with_delivery_mode(2)
}

async fn wait_ready(ch: &Channel, queue: &str, want: u32, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        if queue_counts(ch, queue).await.0 == want {
            return;
        }
        assert!(Instant::now() < end, "queue {queue} never reached {want} ready messages");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Proves higher priorities are delivered first, FIFO within a level, and that the order is the
/// same after kill -9 and restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_order_survives_kill_9() {
    let mut server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "pq", true, args(&[("x-max-priority", AMQPValue::ShortShortUInt(5))])).await;
    for (body, p) in [("a1", 1), ("b5", 5), ("c3", 3), ("d5", 5), ("e9", 9), ("f0", 0)] {
        publish_confirmed(&ch, "", "pq", body.as_bytes(), prio(p)).await;
    }
    server.kill();
    drop(conn);
    server.restart();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    assert_eq!(drain(&ch, "pq").await, bodies(&["b5", "d5", "e9", "c3", "a1", "f0"]));
}

/// Proves the consumer with the higher x-priority gets messages while it has prefetch room and
/// a single active consumer queue delivers to one consumer only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_priority_and_single_active_consumer() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare(&ch, "cp", false, FieldTable::default()).await;
    within("basic.qos", ch.basic_qos(2, BasicQosOptions::default())).await.expect("qos");
    let mut low = within(
        "basic.consume",
        ch.basic_consume("cp", "low", BasicConsumeOptions::default(), args(&[("x-priority", AMQPValue::LongInt(1))])),
    )
    .await
    .expect("consume low");
    let mut high = within(
        "basic.consume",
        ch.basic_consume("cp", "high", BasicConsumeOptions::default(), args(&[("x-priority", AMQPValue::LongInt(9))])),
    )
    .await
    .expect("consume high");
    for i in 0..3 {
        publish(&ch, "", "cp", format!("m{i}").as_bytes()).await;
    }
    let h1 = next_delivery(&mut high).await;
    let h2 = next_delivery(&mut high).await;
    let l1 = next_delivery(&mut low).await;
    assert_eq!((h1.data.as_slice(), h2.data.as_slice(), l1.data.as_slice()), (&b"m0"[..], &b"m1"[..], &b"m2"[..]));

    let ch2 = open_channel(&conn).await;
    declare(&ch2, "sac", false, args(&[("x-single-active-consumer", AMQPValue::Boolean(true))])).await;
    let mut first = within(
        "basic.consume",
        ch2.basic_consume(
            "sac",
            "first",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");
    let mut second = within(
        "basic.consume",
        ch2.basic_consume(
            "sac",
            "second",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");
    for i in 0..3 {
        publish(&ch2, "", "sac", format!("s{i}").as_bytes()).await;
    }
    for i in 0..3 {
        assert_eq!(next_delivery(&mut first).await.data, format!("s{i}").into_bytes());
    }
    let idle = tokio::time::timeout(Duration::from_millis(100), futures_lite::StreamExt::next(&mut second)).await;
    assert!(idle.is_err(), "the second consumer is not active");
}

/// Proves x-delivery-limit counts returns in x-delivery-count and drops the message past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_limit() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare(&ch, "dl", false, args(&[("x-delivery-limit", AMQPValue::LongInt(1))])).await;
    publish(&ch, "", "dl", b"poison").await;
    wait_ready(&ch, "dl", 1, Duration::from_secs(3)).await;
    let m = get(&ch, "dl", false).await.expect("first delivery");
    assert!(m.delivery.properties.headers().is_none());
    within("nack", m.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }))
        .await
        .expect("nack");
    let m = get(&ch, "dl", false).await.expect("second delivery");
    let count = m.delivery.properties.headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned());
    assert_eq!(count, Some(AMQPValue::LongLongInt(1)));
    within("nack", m.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }))
        .await
        .expect("nack");
    assert_eq!(queue_counts(&ch, "dl").await.0, 0, "dropped after its limit");
}

/// Proves an unacknowledged delivery past its x-consumer-timeout closes the channel with 406.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_closes_channel() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare(&ch, "slow", false, args(&[("x-consumer-timeout", AMQPValue::LongInt(200))])).await;
    publish(&ch, "", "slow", b"m").await;
    wait_ready(&ch, "slow", 1, Duration::from_secs(3)).await;
    let _m = get(&ch, "slow", false).await.expect("delivery");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = open_channel(&conn).await;
    assert_eq!(queue_counts(&probe, "slow").await.0, 1, "requeued");
    let r = ch.basic_ack(1, BasicAckOptions::default()).await;
    assert!(r.is_err(), "the channel was closed by the timeout");
}

fn delayed(ms: i64) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert(ShortString::from("x-delay"), AMQPValue::LongLongInt(ms));
    BasicProperties::default().with_headers(h).with_delivery_mode(2)
}

/// Proves the x-delayed-message exchange holds a message for its x-delay, and a held persistent
/// message in a durable exchange survives kill -9 and is delivered at its original due time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_exchange_across_kill_9() {
    let mut server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    let xargs = args(&[("x-delayed-type", AMQPValue::LongString("direct".into()))]);
    let options = ExchangeDeclareOptions { durable: true, ..Default::default() };
    within(
        "exchange.declare",
        ch.exchange_declare("dx", ExchangeKind::Custom("x-delayed-message".into()), options, xargs),
    )
    .await
    .expect("declare delayed exchange");
    declare(&ch, "dq", true, FieldTable::default()).await;
    within("queue.bind", ch.queue_bind("dq", "dx", "k", QueueBindOptions::default(), FieldTable::default()))
        .await
        .expect("bind");
    let published = Instant::now();
    publish_confirmed(&ch, "dx", "k", b"short", delayed(150)).await;
    publish_confirmed(&ch, "dx", "k", b"long", delayed(2000)).await;
    assert_eq!(queue_counts(&ch, "dq").await.0, 0);
    wait_ready(&ch, "dq", 1, Duration::from_secs(2)).await;
    assert!(published.elapsed() >= Duration::from_millis(150));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    drop(conn);
    server.restart();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    assert_eq!(queue_counts(&ch, "dq").await.0, 1, "the long one is still held");
    wait_ready(&ch, "dq", 2, Duration::from_secs(4)).await;
    let elapsed = published.elapsed();
    assert!(elapsed >= Duration::from_millis(2000) && elapsed < Duration::from_millis(5000), "{elapsed:?}");
    assert_eq!(drain(&ch, "dq").await, bodies(&["short", "long"]));
}

/// Proves a duplicate (same x-deduplication-header) is confirmed but not enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    declare(&ch, "dd", false, args(&[("x-message-deduplication", AMQPValue::Boolean(true))])).await;
    for id in ["1", "2", "1"] {
        let mut h = FieldTable::default();
        h.insert(ShortString::from("x-deduplication-header"), AMQPValue::LongString(id.into()));
        let c = publish_confirmed(&ch, "", "dd", id.as_bytes(), BasicProperties::default().with_headers(h)).await;
        assert!(c.is_ack());
    }
    assert_eq!(drain(&ch, "dd").await, bodies(&["1", "2"]));
}
