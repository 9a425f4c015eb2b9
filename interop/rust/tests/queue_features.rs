//! lapin against the real binary (issue 4): message TTL (`x-message-ttl`, the `expiration`
//! property, TTL 0), queue expiry (`x-expires`), dead-lettering (`x-dead-letter-exchange`,
//! `x-dead-letter-routing-key`, the `x-death` and `x-first-death-*` headers for the reasons
//! rejected, expired and maxlen), length limits (`x-max-length`, `x-max-length-bytes`) with each
//! `x-overflow` mode, and a TTL that runs out while the broker is down.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use futures_lite::StreamExt;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};

/// How long a test waits for the broker to reach an expected state (expiry, dead-lettering).
const STATE_DEADLINE: Duration = Duration::from_secs(3);

/// A queue-argument table from pairs.
fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn long(v: i32) -> AMQPValue {
    AMQPValue::LongInt(v)
}

fn text(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

/// Declares a queue with arguments, durable or not.
async fn declare_with(ch: &Channel, name: &str, durable: bool, arguments: FieldTable) {
    let options = QueueDeclareOptions { durable, ..Default::default() };
    within("queue.declare", ch.queue_declare(name, options, arguments))
        .await
        .unwrap_or_else(|e| panic!("queue.declare {name}: {e}"));
}

/// Declares exchange `dlx` of `kind` and queue `dlq` bound to it with `key`.
async fn dead_letter_target(ch: &Channel, dlx: &str, kind: ExchangeKind, dlq: &str, key: &str, durable: bool) {
    let options = ExchangeDeclareOptions { durable, ..Default::default() };
    within("exchange.declare", ch.exchange_declare(dlx, kind, options, FieldTable::default()))
        .await
        .expect("declare the dead-letter exchange");
    declare_with(ch, dlq, durable, FieldTable::default()).await;
    within("queue.bind", ch.queue_bind(dlq, dlx, key, QueueBindOptions::default(), FieldTable::default()))
        .await
        .expect("bind the dead-letter queue");
}

/// Polls the queue's ready count with passive declares until it is `want`, failing after
/// [`STATE_DEADLINE`].
async fn wait_ready(ch: &Channel, queue: &str, want: u32) {
    let end = Instant::now() + STATE_DEADLINE;
    loop {
        let (ready, _) = queue_counts(ch, queue).await;
        if ready == want {
            return;
        }
        assert!(Instant::now() < end, "queue {queue} has {ready} ready messages, not {want}, after {STATE_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything in the queue, taken with basic.get no_ack until get-empty.
async fn drain_messages(ch: &Channel, queue: &str) -> Vec<BasicGetMessage> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, queue, true).await {
        out.push(m);
    }
    out
}

fn body_of(m: &BasicGetMessage) -> &[u8] {
    &m.delivery.data
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

fn as_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// The message's headers table.
fn headers(m: &BasicGetMessage) -> &FieldTable {
    m.delivery.properties.headers().as_ref().expect("the dead-lettered copy has headers")
}

/// A header that must be a string.
fn header_text(m: &BasicGetMessage, key: &str) -> String {
    as_text(headers(m).inner().get(key).unwrap_or_else(|| panic!("header {key} missing")))
}

/// The `x-death` entries, newest first.
fn deaths(m: &BasicGetMessage) -> Vec<FieldTable> {
    match headers(m).inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|d| match d {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("an x-death entry is a table, got {other:?}"),
            })
            .collect(),
        other => panic!("x-death must be an array, got {other:?}"),
    }
}

/// One x-death entry's fields: (queue, reason, count, exchange, routing-keys).
fn death_summary(d: &FieldTable) -> (String, String, AMQPValue, String, Vec<String>) {
    let field = |k: &str| d.inner().get(k).unwrap_or_else(|| panic!("x-death field {k} missing in {d:?}"));
    let routing_keys = match field("routing-keys") {
        AMQPValue::FieldArray(a) => a.as_slice().iter().map(as_text).collect(),
        other => panic!("routing-keys must be an array, got {other:?}"),
    };
    (
        as_text(field("queue")),
        as_text(field("reason")),
        field("count").clone(),
        as_text(field("exchange")),
        routing_keys,
    )
}

/// The x-death entry's `time`, in seconds.
fn death_time(d: &FieldTable) -> u64 {
    match d.inner().get("time") {
        Some(AMQPValue::Timestamp(t)) => *t,
        other => panic!("x-death time must be a timestamp, got {other:?}"),
    }
}

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ms.into())
}

async fn reject(ch: &Channel, delivery_tag: u64) {
    within("basic.reject", ch.basic_reject(delivery_tag, BasicRejectOptions { requeue: false }))
        .await
        .expect("basic.reject written");
}

async fn consume(ch: &Channel, queue: &str, tag: &str, options: BasicConsumeOptions) -> Consumer {
    within("basic.consume", ch.basic_consume(queue, tag, options, FieldTable::default()))
        .await
        .unwrap_or_else(|e| panic!("basic.consume {queue}: {e}"))
}

/// Proves x-message-ttl expires a waiting message: it is counted right after the publish, gone
/// (message_count 0) once its 200 ms have passed, and basic.get then answers get-empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_ttl_expires_waiting_message() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    declare_with(&ch, "ttl", false, args(&[("x-message-ttl", long(200))])).await;
    let published = Instant::now();
    publish_confirmed(&ch, "", "ttl", b"stale", Default::default()).await;
    assert_eq!(queue_counts(&ch, "ttl").await, (1, 0), "not expired before its TTL");
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_ready(&ch, "ttl", 0).await;
    assert!(published.elapsed() >= Duration::from_millis(200), "expired before its TTL");
    assert!(get(&ch, "ttl", false).await.is_none(), "basic.get-empty after expiry");
}

/// Proves a per-message `expiration` behind a message without one is removed when it runs out,
/// though not at the head (unlike RabbitMQ): it is dead-lettered with reason expired and
/// `original-expiration`, while the head and the tail stay, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_not_at_head_is_dead_lettered() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", false).await;
    declare_with(&ch, "q", false, args(&[("x-dead-letter-exchange", text("dlx"))])).await;
    publish_confirmed(&ch, "", "q", b"first", Default::default()).await;
    publish_confirmed(&ch, "", "q", b"short", expiring("150")).await;
    publish_confirmed(&ch, "", "q", b"last", Default::default()).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    wait_ready(&ch, "dlq", 1).await;
    assert_eq!(queue_counts(&ch, "q").await, (2, 0));

    let dead = drain_messages(&ch, "dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(body_of(&dead[0]), b"short");
    assert_eq!(dead[0].delivery.properties.expiration(), &None, "the copy loses its expiration");
    let d = deaths(&dead[0]);
    assert_eq!(d.len(), 1);
    assert_eq!(
        death_summary(&d[0]),
        ("q".into(), "expired".into(), AMQPValue::LongLongInt(1), "".into(), vec!["q".into()])
    );
    assert_eq!(d[0].inner().get("original-expiration").map(as_text), Some("150".into()));
    let kept: Vec<Vec<u8>> = drain(&ch, "q").await;
    assert_eq!(kept, bodies(&["first", "last"]));
}

/// Proves TTL 0 delivers a message only to a consumer that can take it at once: with no
/// consumer it expires (dead-lettered, reason expired, nothing for basic.get); a waiting consumer
/// gets the next one; and one published while that consumer's prefetch window is full expires
/// instead of waiting for the ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_zero_is_delivered_only_to_a_waiting_consumer() {
    let server = start_server();
    let conn = connect(&server).await;
    let pc = confirm_channel(&conn).await;
    dead_letter_target(&pc, "dlx", ExchangeKind::Fanout, "dlq", "", false).await;
    declare_with(&pc, "q0", false, args(&[("x-message-ttl", long(0)), ("x-dead-letter-exchange", text("dlx"))])).await;
    publish_confirmed(&pc, "", "q0", b"nobody waiting", Default::default()).await;
    wait_ready(&pc, "dlq", 1).await;
    assert_eq!(queue_counts(&pc, "q0").await, (0, 0));
    assert!(get(&pc, "q0", true).await.is_none(), "basic.get-empty");

    let ch = open_channel(&conn).await;
    within("basic.qos", ch.basic_qos(1, BasicQosOptions::default())).await.expect("basic.qos-ok");
    let mut consumer = consume(&ch, "q0", "c", BasicConsumeOptions::default()).await;
    publish_confirmed(&pc, "", "q0", b"taken at once", Default::default()).await;
    let first = next_delivery(&mut consumer).await;
    assert_eq!(first.data, b"taken at once");
    // The consumer's one-message window is full now.
    publish_confirmed(&pc, "", "q0", b"window full", Default::default()).await;
    wait_ready(&pc, "dlq", 2).await;
    assert_eq!(queue_counts(&pc, "q0").await, (0, 1));
    within("basic.ack", first.acker.ack(Default::default())).await.expect("basic.ack");
    publish_confirmed(&pc, "", "q0", b"room again", Default::default()).await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"room again", "the expired one never comes");

    let dead = drain_messages(&pc, "dlq").await;
    let dead_bodies: Vec<&[u8]> = dead.iter().map(body_of).collect();
    assert_eq!(dead_bodies, vec![&b"nobody waiting"[..], &b"window full"[..]]);
    for m in &dead {
        let d = deaths(m);
        assert_eq!((death_summary(&d[0]).0, death_summary(&d[0]).1), ("q0".into(), "expired".into()));
    }
}

/// True while the default exchange routes to `queue`: a mandatory publish that comes back as
/// basic.return means it does not. Unlike a passive declare, this does not use the queue.
async fn routable(ch: &Channel, queue: &str) -> bool {
    let mandatory = lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() };
    let c = publish_with(ch, "", queue, mandatory, b"probe", Default::default()).await;
    assert!(c.is_ack(), "{c:?}");
    c.take_message().is_none()
}

/// Proves x-expires deletes a queue left unused for its period (300 ms), not earlier: a probe
/// that does not count as use sees it routable until then, and a passive declare afterwards is
/// 404; a queue with a consumer outlives the same period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_expires_deletes_an_unused_queue() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    let expires = args(&[("x-expires", long(300))]);
    let declared = Instant::now();
    declare_with(&ch, "idle", false, expires.clone()).await;
    let consumer_ch = open_channel(&conn).await;
    declare_with(&consumer_ch, "consumed", false, expires).await;
    let _consumer = consume(&consumer_ch, "consumed", "c", BasicConsumeOptions::default()).await;

    let end = Instant::now() + STATE_DEADLINE;
    while routable(&ch, "idle").await {
        assert!(Instant::now() < end, "the idle queue still exists after {STATE_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(declared.elapsed() >= Duration::from_millis(300), "deleted before its x-expires period");
    let probe = open_channel(&conn).await;
    let r = within(
        "passive queue.declare",
        probe.queue_declare("idle", QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()),
    )
    .await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no queue 'idle' in vhost '/'".into()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(declared.elapsed() >= Duration::from_millis(400));
    assert!(routable(&ch, "consumed").await, "a queue with a consumer does not expire");
}

/// Proves basic.reject and basic.nack with requeue=false dead-letter through
/// x-dead-letter-exchange with x-dead-letter-routing-key replacing the routing key, and the copy
/// carries one x-death entry (count 1, reason rejected, the queue, the original exchange and
/// routing keys, a current time) and the x-first-death-queue/-reason/-exchange headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_and_nack_dead_letter_with_x_death() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Direct, "dlq", "dead", false).await;
    declare_with(
        &ch,
        "src",
        false,
        args(&[("x-dead-letter-exchange", text("dlx")), ("x-dead-letter-routing-key", text("dead"))]),
    )
    .await;
    within(
        "queue.bind",
        ch.queue_bind("src", "amq.direct", "in-key", QueueBindOptions::default(), FieldTable::default()),
    )
    .await
    .expect("bind src");
    let before = now_secs();
    let mut h = FieldTable::default();
    h.insert("mine".into(), text("kept"));
    let props = BasicProperties::default().with_headers(h).with_message_id("m-1".into());
    publish_confirmed(&ch, "amq.direct", "in-key", b"rejected", props.clone()).await;
    publish_confirmed(&ch, "amq.direct", "in-key", b"nacked", props).await;

    let r = get(&ch, "src", false).await.expect("first message");
    assert_eq!(r.delivery.data, b"rejected");
    reject(&ch, r.delivery.delivery_tag).await;
    let n = get(&ch, "src", false).await.expect("second message");
    assert_eq!(n.delivery.data, b"nacked");
    within("basic.nack", ch.basic_nack(n.delivery.delivery_tag, BasicNackOptions { multiple: false, requeue: false }))
        .await
        .expect("basic.nack written");
    wait_ready(&ch, "dlq", 2).await;
    assert_eq!(queue_counts(&ch, "src").await, (0, 0), "nothing requeued");
    let after = now_secs();

    let dead = drain_messages(&ch, "dlq").await;
    let dead_bodies: Vec<&[u8]> = dead.iter().map(body_of).collect();
    assert_eq!(dead_bodies, vec![&b"rejected"[..], &b"nacked"[..]]);
    for m in &dead {
        assert_eq!(m.delivery.exchange.as_str(), "dlx");
        assert_eq!(m.delivery.routing_key.as_str(), "dead", "x-dead-letter-routing-key replaces the key");
        assert_eq!(m.delivery.properties.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        assert_eq!(header_text(m, "mine"), "kept");
        let d = deaths(m);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            death_summary(&d[0]),
            ("src".into(), "rejected".into(), AMQPValue::LongLongInt(1), "amq.direct".into(), vec!["in-key".into()])
        );
        let t = death_time(&d[0]);
        assert!(before <= t && t <= after, "x-death time {t} not within [{before}, {after}]");
        assert!(d[0].inner().get("original-expiration").is_none(), "no expiration, no original-expiration");
        assert_eq!(header_text(m, "x-first-death-queue"), "src");
        assert_eq!(header_text(m, "x-first-death-reason"), "rejected");
        assert_eq!(header_text(m, "x-first-death-exchange"), "amq.direct");
    }
}

/// Proves repeated deaths as RabbitMQ records them: a message rejected twice from the same queue
/// (its dead-letter exchange routes it back) has one x-death entry with count 2; expiring it in a
/// second queue puts a new entry first, while x-first-death-* keep the first death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_deaths_count_and_first_death_headers() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", false).await;
    // q1 dead-letters to itself through the default exchange; q2 expires into dlx.
    declare_with(&ch, "q1", false, args(&[("x-dead-letter-exchange", text(""))])).await;
    declare_with(&ch, "q2", false, args(&[("x-message-ttl", long(100)), ("x-dead-letter-exchange", text("dlx"))]))
        .await;
    publish_confirmed(&ch, "", "q1", b"body", expiring("60000")).await;
    for _ in 0..2 {
        wait_ready(&ch, "q1", 1).await;
        let m = get(&ch, "q1", false).await.expect("the message is back in q1");
        reject(&ch, m.delivery.delivery_tag).await;
    }
    wait_ready(&ch, "q1", 1).await;
    let m = get(&ch, "q1", true).await.expect("rejected twice");
    let d = deaths(&m);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        death_summary(&d[0]),
        ("q1".into(), "rejected".into(), AMQPValue::LongLongInt(2), "".into(), vec!["q1".into()])
    );
    assert_eq!(d[0].inner().get("original-expiration").map(as_text), Some("60000".into()));
    assert_eq!(m.delivery.properties.expiration(), &None);

    // Publish the copy, headers and all, to q2, where it expires.
    publish_confirmed(&ch, "", "q2", b"body", m.delivery.properties.clone()).await;
    wait_ready(&ch, "dlq", 1).await;
    let dead = drain_messages(&ch, "dlq").await;
    assert_eq!(dead.len(), 1);
    let d = deaths(&dead[0]);
    let summaries: Vec<_> = d.iter().map(death_summary).collect();
    assert_eq!(
        summaries,
        vec![
            ("q2".into(), "expired".into(), AMQPValue::LongLongInt(1), "".into(), vec!["q2".into()]),
            ("q1".into(), "rejected".into(), AMQPValue::LongLongInt(2), "".into(), vec!["q1".into()]),
        ]
    );
    assert_eq!(header_text(&dead[0], "x-first-death-queue"), "q1");
    assert_eq!(header_text(&dead[0], "x-first-death-reason"), "rejected");
    assert_eq!(header_text(&dead[0], "x-first-death-exchange"), "");
    assert_eq!(header_text(&dead[0], "x-last-death-queue"), "q2");
    assert_eq!(header_text(&dead[0], "x-last-death-reason"), "expired");
}

/// Proves x-max-length with the default drop-head keeps the newest messages and dead-letters the
/// oldest, in order, each with one x-death entry of reason maxlen for the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_drop_head_dead_letters_oldest_as_maxlen() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", false).await;
    declare_with(&ch, "q", false, args(&[("x-max-length", long(2)), ("x-dead-letter-exchange", text("dlx"))])).await;
    for body in ["1", "2", "3", "4", "5"] {
        let c = publish_confirmed(&ch, "", "q", body.as_bytes(), Default::default()).await;
        assert_eq!(c, Confirmation::Ack(None), "drop-head accepts every publish");
    }
    assert_eq!(queue_counts(&ch, "q").await, (2, 0));
    wait_ready(&ch, "dlq", 3).await;
    let dead = drain_messages(&ch, "dlq").await;
    let dead_bodies: Vec<&[u8]> = dead.iter().map(body_of).collect();
    assert_eq!(dead_bodies, vec![&b"1"[..], &b"2"[..], &b"3"[..]]);
    for m in &dead {
        let d = deaths(m);
        assert_eq!(d.len(), 1);
        assert_eq!(
            death_summary(&d[0]),
            ("q".into(), "maxlen".into(), AMQPValue::LongLongInt(1), "".into(), vec!["q".into()])
        );
        assert_eq!(header_text(m, "x-first-death-reason"), "maxlen");
    }
    assert_eq!(drain(&ch, "q").await, bodies(&["4", "5"]));
}

/// Proves x-max-length-bytes counts body bytes: with 10 allowed, three 4-byte bodies leave the
/// newest two (8 bytes), and a 10-byte body then pushes both out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_bytes_drops_oldest() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    declare_with(&ch, "q", false, args(&[("x-max-length-bytes", long(10))])).await;
    for body in ["aaaa", "bbbb", "cccc"] {
        publish_confirmed(&ch, "", "q", body.as_bytes(), Default::default()).await;
    }
    assert_eq!(queue_counts(&ch, "q").await, (2, 0));
    assert_eq!(drain(&ch, "q").await, bodies(&["bbbb", "cccc"]));
    for body in ["dddd", "eeee", "0123456789"] {
        publish_confirmed(&ch, "", "q", body.as_bytes(), Default::default()).await;
    }
    assert_eq!(drain(&ch, "q").await, bodies(&["0123456789"]));
}

/// Proves x-overflow reject-publish: a confirming publisher gets basic.ack for messages that fit
/// and basic.nack for the one the full queue refuses, which is not enqueued (nor dead-lettered:
/// only -dlx does that); once there is room again publishes are acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_nacks_the_refused_message() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", false).await;
    declare_with(
        &ch,
        "q",
        false,
        args(&[
            ("x-max-length", long(2)),
            ("x-overflow", text("reject-publish")),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    )
    .await;
    assert_eq!(publish_confirmed(&ch, "", "q", b"1", Default::default()).await, Confirmation::Ack(None));
    assert_eq!(publish_confirmed(&ch, "", "q", b"2", Default::default()).await, Confirmation::Ack(None));
    assert_eq!(publish_confirmed(&ch, "", "q", b"3", Default::default()).await, Confirmation::Nack(None));
    assert_eq!(queue_counts(&ch, "q").await, (2, 0));
    let m = get(&ch, "q", true).await.expect("a message");
    assert_eq!(m.delivery.data, b"1");
    assert_eq!(publish_confirmed(&ch, "", "q", b"4", Default::default()).await, Confirmation::Ack(None));
    assert_eq!(drain(&ch, "q").await, bodies(&["2", "4"]));
    assert_eq!(queue_counts(&ch, "dlq").await, (0, 0), "reject-publish does not dead-letter");
}

/// Proves x-overflow reject-publish-dlx: the refused message is nacked to the confirming
/// publisher and dead-lettered with reason maxlen, while the queue keeps what it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_dlx_nacks_and_dead_letters() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", false).await;
    declare_with(
        &ch,
        "q",
        false,
        args(&[
            ("x-max-length", long(1)),
            ("x-overflow", text("reject-publish-dlx")),
            ("x-dead-letter-exchange", text("dlx")),
        ]),
    )
    .await;
    assert_eq!(publish_confirmed(&ch, "", "q", b"kept", Default::default()).await, Confirmation::Ack(None));
    assert_eq!(publish_confirmed(&ch, "", "q", b"refused", Default::default()).await, Confirmation::Nack(None));
    wait_ready(&ch, "dlq", 1).await;
    let dead = drain_messages(&ch, "dlq").await;
    assert_eq!(body_of(&dead[0]), b"refused");
    let d = deaths(&dead[0]);
    assert_eq!(d.len(), 1);
    assert_eq!(
        death_summary(&d[0]),
        ("q".into(), "maxlen".into(), AMQPValue::LongLongInt(1), "".into(), vec!["q".into()])
    );
    assert_eq!(drain(&ch, "q").await, bodies(&["kept"]));
}

/// Proves an `expiration` that is not a millisecond count from 0 to 4294967295 closes the
/// channel with 406 PRECONDITION_FAILED and RabbitMQ's text (one channel per bad value), while
/// the connection stays open and nothing is enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_expiration_closes_the_channel_with_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let mut events = events(&conn);
    let probe = open_channel(&conn).await;
    declare_queue(&probe, "q").await;
    for (value, term) in [
        ("soon", "{invalid_expiration,<<\"soon\">>}"),
        ("-1", "{value_negative,-1}"),
        ("10s", "{leftover_string,\"s\"}"),
        ("4294967296", "{value_too_large,4294967296}"),
    ] {
        let ch = open_channel(&conn).await;
        within("basic.publish", ch.basic_publish("", "q", Default::default(), b"x", expiring(value)))
            .await
            .expect("basic.publish written");
        let expected = format!("PRECONDITION_FAILED - invalid expiration '{value}': {term}");
        assert_eq!(next_close(&mut events).await, (406, expected));
    }
    assert!(conn.status().connected());
    assert_eq!(queue_counts(&probe, "q").await, (0, 0));
}

/// Proves a persistent message in a durable queue whose x-message-ttl runs out while the broker
/// is down (kill -9) is dead-lettered, reason expired, to the durable dead-letter queue after the
/// restart, and never delivered to a consumer of its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_elapsed_while_down_dead_letters_after_restart() {
    let mut server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", true).await;
    declare_with(&ch, "ttl", true, args(&[("x-message-ttl", long(500)), ("x-dead-letter-exchange", text("dlx"))]))
        .await;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let published = Instant::now();
    publish_confirmed(&ch, "", "ttl", b"expires while down", persistent).await;
    assert_eq!(queue_counts(&ch, "ttl").await, (1, 0));
    server.kill();
    drop(conn);
    // Let the TTL pass while the broker is down.
    tokio::time::sleep(Duration::from_millis(600).saturating_sub(published.elapsed())).await;
    server.restart();

    let conn: Connection = connect(&server).await;
    let ch = open_channel(&conn).await;
    let mut consumer = consume(&ch, "ttl", "c", BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    let probe = open_channel(&conn).await;
    wait_ready(&probe, "dlq", 1).await;
    assert_eq!(queue_counts(&probe, "ttl").await, (0, 1));
    let dead = drain_messages(&probe, "dlq").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(body_of(&dead[0]), b"expires while down");
    assert_eq!(dead[0].delivery.properties.delivery_mode(), &Some(2));
    let d = deaths(&dead[0]);
    assert_eq!(
        death_summary(&d[0]),
        ("ttl".into(), "expired".into(), AMQPValue::LongLongInt(1), "".into(), vec!["ttl".into()])
    );
    let delivered = tokio::time::timeout(Duration::from_millis(100), consumer.next()).await;
    assert!(delivered.is_err(), "the expired message was delivered: {delivered:?}");
}

/// Proves the smaller of x-message-ttl and `expiration` applies: in a queue with a 5 s TTL a
/// message with `expiration` 100 is dead-lettered (original-expiration "100") while one with
/// `expiration` 60000 stays, bound by the queue's TTL, not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_of_queue_and_message_ttl_applies() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", false).await;
    declare_with(&ch, "q", false, args(&[("x-message-ttl", long(5000)), ("x-dead-letter-exchange", text("dlx"))]))
        .await;
    publish_confirmed(&ch, "", "q", b"long", expiring("60000")).await;
    publish_confirmed(&ch, "", "q", b"short", expiring("100")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    wait_ready(&ch, "dlq", 1).await;
    let dead = drain_messages(&ch, "dlq").await;
    assert_eq!(body_of(&dead[0]), b"short");
    assert_eq!(deaths(&dead[0])[0].inner().get("original-expiration").map(as_text), Some("100".into()));
    let m = get(&ch, "q", true).await.expect("the long-lived message is still there");
    assert_eq!(m.delivery.data, b"long");
    assert_eq!(m.delivery.properties.expiration().as_ref().map(|e| e.as_str()), Some("60000"));
}

/// Proves x-death `routing-keys` lists the routing key and the `CC` keys, and that
/// x-dead-letter-routing-key replaces them: the copy arrives with the new key and no `CC` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_death_routing_keys_include_cc() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Direct, "dlq", "dead", false).await;
    declare_with(
        &ch,
        "src",
        false,
        args(&[("x-dead-letter-exchange", text("dlx")), ("x-dead-letter-routing-key", text("dead"))]),
    )
    .await;
    for key in ["k1", "k2"] {
        within(
            "queue.bind",
            ch.queue_bind("src", "amq.direct", key, QueueBindOptions::default(), FieldTable::default()),
        )
        .await
        .expect("bind src");
    }
    let mut h = FieldTable::default();
    h.insert("CC".into(), AMQPValue::FieldArray(vec![text("k2")].into()));
    publish_confirmed(&ch, "amq.direct", "k1", b"cc", BasicProperties::default().with_headers(h)).await;
    assert_eq!(queue_counts(&ch, "src").await, (1, 0), "one copy per queue, however many keys match");
    let m = get(&ch, "src", false).await.expect("the message");
    reject(&ch, m.delivery.delivery_tag).await;
    wait_ready(&ch, "dlq", 1).await;
    let dead = drain_messages(&ch, "dlq").await;
    assert_eq!(dead[0].delivery.routing_key.as_str(), "dead");
    assert!(!headers(&dead[0]).contains_key("CC"), "the dead-letter routing key drops CC");
    let d = deaths(&dead[0]);
    assert_eq!(
        death_summary(&d[0]),
        (
            "src".into(),
            "rejected".into(),
            AMQPValue::LongLongInt(1),
            "amq.direct".into(),
            vec!["k1".into(), "k2".into()]
        )
    );
}

/// Proves a message whose TTL passes while a consumer holds it unacknowledged is dead-lettered
/// (reason expired) as soon as it is requeued, not put back in the queue (Warren does this at
/// once; RabbitMQ when it reaches the head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_after_its_deadline_is_dead_lettered() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", false).await;
    declare_with(&ch, "q", false, args(&[("x-message-ttl", long(100)), ("x-dead-letter-exchange", text("dlx"))])).await;
    publish_confirmed(&ch, "", "q", b"held", Default::default()).await;
    let m = get(&ch, "q", false).await.expect("the message");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(queue_counts(&ch, "dlq").await, (0, 0), "an unacknowledged message does not expire");
    within("basic.nack", ch.basic_nack(m.delivery.delivery_tag, BasicNackOptions { multiple: false, requeue: true }))
        .await
        .expect("basic.nack written");
    wait_ready(&ch, "dlq", 1).await;
    assert_eq!(queue_counts(&ch, "q").await, (0, 0));
    let dead = drain_messages(&ch, "dlq").await;
    assert_eq!(body_of(&dead[0]), b"held");
    assert_eq!(death_summary(&deaths(&dead[0])[0]).1, "expired");
}

/// Proves RabbitMQ's cycle rule: a message that expires in a queue whose dead-letter exchange
/// routes back to that same queue is dropped there rather than looping, while another queue
/// bound to the same exchange still gets its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_cycle_is_dropped() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", false).await;
    declare_with(&ch, "q", false, args(&[("x-message-ttl", long(100)), ("x-dead-letter-exchange", text("dlx"))])).await;
    within("queue.bind", ch.queue_bind("q", "dlx", "", QueueBindOptions::default(), FieldTable::default()))
        .await
        .expect("bind q to its own dead-letter exchange");
    publish_confirmed(&ch, "", "q", b"once", Default::default()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    wait_ready(&ch, "dlq", 1).await;
    // A looping copy would come back to q and expire into dlq again every 100 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue_counts(&ch, "dlq").await, (1, 0));
    assert_eq!(queue_counts(&ch, "q").await, (0, 0));
    let dead = drain_messages(&ch, "dlq").await;
    assert_eq!(deaths(&dead[0]).len(), 1);
}

/// Proves length limits count ready messages only: with x-max-length 1 and reject-publish, a
/// message held unacknowledged leaves room for another, and the next one is nacked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_do_not_count_towards_max_length() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    declare_with(&ch, "q", false, args(&[("x-max-length", long(1)), ("x-overflow", text("reject-publish"))])).await;
    assert_eq!(publish_confirmed(&ch, "", "q", b"1", Default::default()).await, Confirmation::Ack(None));
    let held = get(&ch, "q", false).await.expect("the message");
    assert_eq!(held.delivery.data, b"1");
    assert_eq!(publish_confirmed(&ch, "", "q", b"2", Default::default()).await, Confirmation::Ack(None));
    assert_eq!(publish_confirmed(&ch, "", "q", b"3", Default::default()).await, Confirmation::Nack(None));
    assert_eq!(queue_counts(&ch, "q").await, (1, 0));
    let m = get(&ch, "q", true).await.expect("the second message");
    assert_eq!(m.delivery.data, b"2");
}

/// Proves a persistent message keeps its absolute deadline across kill -9: down for 500 ms of
/// its 1.5 s TTL, the restarted broker still holds it and dead-letters it 1.5 s after its
/// publish, not a full TTL after the restart (which would be 2 s or later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_deadline_survives_restart() {
    let mut server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    dead_letter_target(&ch, "dlx", ExchangeKind::Fanout, "dlq", "", true).await;
    declare_with(&ch, "ttl", true, args(&[("x-message-ttl", long(1500)), ("x-dead-letter-exchange", text("dlx"))]))
        .await;
    let published = Instant::now();
    publish_confirmed(&ch, "", "ttl", b"pending", BasicProperties::default().with_delivery_mode(2)).await;
    server.kill();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(500).saturating_sub(published.elapsed())).await;
    server.restart();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    assert_eq!(queue_counts(&ch, "ttl").await, (1, 0), "still pending after the restart");
    let reconnected = published.elapsed();
    assert!(reconnected < Duration::from_millis(1300), "restart took until {reconnected:?}, too slow for this check");
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(published.elapsed())).await;
    wait_ready(&ch, "dlq", 1).await;
    let expired_after = published.elapsed();
    assert!(
        expired_after >= Duration::from_millis(1500) && expired_after < Duration::from_millis(1900),
        "expired {expired_after:?} after its publish, not 1.5 s: the deadline moved with the restart"
    );
    assert_eq!(queue_counts(&ch, "ttl").await, (0, 0));
    let dead = drain_messages(&ch, "dlq").await;
    assert_eq!(body_of(&dead[0]), b"pending");
    assert_eq!(death_summary(&deaths(&dead[0])[0]).1, "expired");
}
