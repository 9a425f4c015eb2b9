//! Unit tests of priority queues (`x-max-priority`) and consumer features: consumer priorities,
//! single active consumer, delivery limits.

use super::*;
use bytes::Bytes;

use super::tests::{setup, T0};

fn run(b: &mut Broker, m: impl Into<Method>) -> Effects {
    let mut fx = Effects::default();
    b.handle(1, 1, m.into(), T0, &mut fx).expect("method succeeds");
    fx
}

fn declare(b: &mut Broker, name: &str, arguments: &[(&str, FieldValue)]) {
    let arguments = FieldTable(arguments.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
    run(b, QueueDeclare { queue: name.into(), arguments, ..Default::default() });
}

fn publish_prio(b: &mut Broker, q: &str, body: &str, priority: Option<u8>, now: u64) {
    let props = BasicProperties { priority, ..Default::default() };
    let m = Message::with_properties("", q, &props, Bytes::copy_from_slice(body.as_bytes()));
    let mut fx = Effects::default();
    b.publish(1, 1, PublishFlags::default(), m, now, &mut fx).expect("publishes");
}

fn ready(b: &Broker, q: &str) -> Vec<String> {
    let q = b.queue("/", q).expect("queue exists");
    q.ready.iter().map(|m| String::from_utf8_lossy(&m.message.body).into_owned()).collect()
}

fn get(b: &mut Broker, q: &str, no_ack: bool) -> Option<(u64, String)> {
    let fx = run(b, BasicGet { queue: q.into(), no_ack, ..Default::default() });
    fx.out.into_iter().find_map(|(_, o)| match o {
        Outbound::GetOk { delivery_tag, message, .. } => {
            Some((delivery_tag, String::from_utf8_lossy(&message.body).into_owned()))
        }
        _ => None,
    })
}

#[test]
fn higher_priority_first_fifo_within_a_level() {
    let (mut b, _) = setup();
    declare(&mut b, "p", &[("x-max-priority", FieldValue::I64(10))]);
    for (body, prio) in [
        ("a1", Some(1)),
        ("b5", Some(5)),
        ("c-", None),
        ("d5", Some(5)),
        ("e10", Some(10)),
        ("f200", Some(200)),
        ("g0", Some(0)),
    ] {
        publish_prio(&mut b, "p", body, prio, T0);
    }
    // 200 counts as the maximum, 10; no priority counts as 0.
    assert_eq!(ready(&b, "p"), ["e10", "f200", "b5", "d5", "a1", "c-", "g0"]);
    assert_eq!(b.queue("/", "p").expect("queue").message_count(), 7);
    b.queue("/", "p").expect("queue").invariants();
}

#[test]
fn requeued_message_returns_to_its_level_and_place() {
    let (mut b, _) = setup();
    declare(&mut b, "p", &[("x-max-priority", FieldValue::I64(5))]);
    for (body, prio) in [("lo1", Some(1)), ("hi1", Some(5)), ("lo2", Some(1)), ("hi2", Some(5))] {
        publish_prio(&mut b, "p", body, prio, T0);
    }
    let (tag1, first) = get(&mut b, "p", false).expect("a message");
    let (_, second) = get(&mut b, "p", false).expect("a message");
    assert_eq!((first.as_str(), second.as_str()), ("hi1", "hi2"));
    run(&mut b, BasicNack { delivery_tag: tag1, multiple: false, requeue: true });
    assert_eq!(ready(&b, "p"), ["hi1", "lo1", "lo2"]);
    // A new high-priority message goes behind the requeued one, ahead of the low ones.
    publish_prio(&mut b, "p", "hi3", Some(4), T0);
    assert_eq!(ready(&b, "p"), ["hi1", "hi3", "lo1", "lo2"]);
}

#[test]
fn plain_queue_ignores_priority() {
    let (mut b, _) = setup();
    declare(&mut b, "plain", &[]);
    for (body, prio) in [("a", Some(1)), ("b", Some(9)), ("c", None)] {
        publish_prio(&mut b, "plain", body, prio, T0);
    }
    assert_eq!(ready(&b, "plain"), ["a", "b", "c"]);
}

#[test]
fn priorities_with_ttl_expiry_in_the_middle() {
    let (mut b, _) = setup();
    declare(&mut b, "pt", &[("x-max-priority", FieldValue::I64(3))]);
    publish_prio(&mut b, "pt", "h", Some(3), T0);
    let props = BasicProperties { priority: Some(2), expiration: Some("100".into()), ..Default::default() };
    let m = Message::with_properties("", "pt", &props, Bytes::from_static(b"m-expiring"));
    let mut fx = Effects::default();
    b.publish(1, 1, PublishFlags::default(), m, T0, &mut fx).expect("publishes");
    publish_prio(&mut b, "pt", "m", Some(2), T0);
    publish_prio(&mut b, "pt", "l", Some(1), T0);
    assert_eq!(ready(&b, "pt"), ["h", "m-expiring", "m", "l"]);
    let mut fx = Effects::default();
    b.tick(T0 + 200, &mut fx);
    assert_eq!(ready(&b, "pt"), ["h", "m", "l"]);
    b.queue("/", "pt").expect("queue").invariants();
}

fn consume(b: &mut Broker, q: &str, tag: &str, priority: Option<i64>) {
    let mut arguments = FieldTable::new();
    if let Some(p) = priority {
        arguments.insert("x-priority", FieldValue::I64(p));
    }
    run(b, BasicConsume { queue: q.into(), consumer_tag: tag.into(), arguments, ..Default::default() });
}

/// Deliveries in `fx`, as (consumer tag, delivery tag, body).
fn delivered(fx: &Effects) -> Vec<(String, u64, String)> {
    fx.out
        .iter()
        .filter_map(|(_, o)| match o {
            Outbound::Deliver { consumer_tag, delivery_tag, message, .. } => {
                Some((consumer_tag.to_string(), *delivery_tag, String::from_utf8_lossy(&message.body).into_owned()))
            }
            _ => None,
        })
        .collect()
}

fn publish_fx(b: &mut Broker, q: &str, body: &str) -> Effects {
    let m = Message::with_properties("", q, &BasicProperties::default(), Bytes::copy_from_slice(body.as_bytes()));
    let mut fx = Effects::default();
    b.publish(1, 1, PublishFlags::default(), m, T0, &mut fx).expect("publishes");
    fx
}

#[test]
fn higher_priority_consumer_gets_messages_until_blocked() {
    let (mut b, _) = setup();
    declare(&mut b, "q", &[]);
    run(&mut b, BasicQos { prefetch_count: 2, ..Default::default() });
    consume(&mut b, "q", "low", None);
    consume(&mut b, "q", "high", Some(10));
    consume(&mut b, "q", "high2", Some(10));
    let mut got = Vec::new();
    for i in 0..6 {
        got.extend(delivered(&publish_fx(&mut b, "q", &format!("m{i}"))));
    }
    let tags: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
    // Round-robin among the two high-priority consumers until both have 2 unacked, then low.
    assert_eq!(tags, ["high", "high2", "high", "high2", "low", "low"]);
}

#[test]
fn single_active_consumer_fails_over_in_order() {
    let (mut b, _) = setup();
    declare(&mut b, "sac", &[("x-single-active-consumer", FieldValue::Bool(true))]);
    consume(&mut b, "sac", "first", None);
    consume(&mut b, "sac", "second", None);
    let mut got = Vec::new();
    for i in 0..3 {
        got.extend(delivered(&publish_fx(&mut b, "sac", &format!("m{i}"))));
    }
    assert!(got.iter().all(|(t, _, _)| t == "first"), "{got:?}");
    let fx = run(&mut b, BasicCancel { consumer_tag: "first".into(), ..Default::default() });
    assert!(delivered(&fx).is_empty());
    let got = delivered(&publish_fx(&mut b, "sac", "after"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "second");
}

#[test]
fn delivery_limit_dead_letters_after_too_many_returns() {
    let (mut b, _) = setup();
    run(&mut b, ExchangeDeclare { exchange: "dlx".into(), kind: "fanout".into(), ..Default::default() });
    declare(&mut b, "dlq", &[]);
    run(&mut b, QueueBind { queue: "dlq".into(), exchange: "dlx".into(), ..Default::default() });
    declare(
        &mut b,
        "lim",
        &[("x-delivery-limit", FieldValue::I64(2)), ("x-dead-letter-exchange", FieldValue::from("dlx"))],
    );
    publish_prio(&mut b, "lim", "poison", None, T0);
    for returns in 1..=2 {
        let (tag, _) = get(&mut b, "lim", false).expect("redelivered");
        run(&mut b, BasicReject { delivery_tag: tag, requeue: true });
        let q = b.queue("/", "lim").expect("queue");
        let m = q.ready.front().expect("requeued");
        let headers = BasicProperties::decode(&m.message.properties).expect("props").headers.expect("headers");
        assert_eq!(headers.get("x-delivery-count").and_then(FieldValue::as_i64), Some(returns));
    }
    let (tag, _) = get(&mut b, "lim", false).expect("third delivery");
    run(&mut b, BasicReject { delivery_tag: tag, requeue: true });
    assert!(ready(&b, "lim").is_empty());
    assert_eq!(ready(&b, "dlq"), ["poison"]);
    let dlq = b.queue("/", "dlq").expect("dlq");
    let headers =
        BasicProperties::decode(&dlq.ready.front().expect("dead letter").message.properties).expect("props").headers;
    let deaths = headers.and_then(|h| h.get("x-death").cloned());
    assert!(format!("{deaths:?}").contains("delivery_limit"), "{deaths:?}");
}

#[test]
fn ack_timeout_closes_the_channel_and_requeues() {
    let (mut b, _) = setup();
    declare(&mut b, "slow", &[("x-consumer-timeout", FieldValue::I64(1000))]);
    publish_prio(&mut b, "slow", "m", None, T0);
    let (tag, _) = get(&mut b, "slow", false).expect("a message");
    let mut fx = Effects::default();
    assert_eq!(b.tick(T0 + 500, &mut fx), Some(T0 + 1000));
    assert!(fx.out.is_empty());
    b.tick(T0 + 1000, &mut fx);
    let close = fx.out.iter().find_map(|(_, o)| match o {
        Outbound::Method { method: Method::ChannelClose(c), .. } => Some(c.clone()),
        _ => None,
    });
    let close = close.expect("channel.close sent");
    assert_eq!(close.reply_code, 406);
    assert!(close.reply_text.contains("delivery acknowledgement on channel 1 timed out. Timeout value used: 1000 ms"));
    assert_eq!(ready(&b, "slow"), ["m"], "requeued");
    // The client's ack, sent before it saw the close, is discarded; then close-ok frees the id.
    let mut fx = Effects::default();
    b.handle(1, 1, BasicAck { delivery_tag: tag, multiple: false }.into(), T0 + 1001, &mut fx).expect("discarded");
    assert!(b.channel_close_ok(1, 1));
    assert!(!b.channel_close_ok(1, 1));
}

#[test]
fn consumer_timeout_argument_wins_and_acks_in_time_keep_the_channel() {
    let (mut b, _) = setup();
    declare(&mut b, "q", &[("x-consumer-timeout", FieldValue::I64(1000))]);
    let mut arguments = FieldTable::new();
    arguments.insert("x-consumer-timeout", FieldValue::I64(5000));
    run(&mut b, BasicConsume { queue: "q".into(), consumer_tag: "c".into(), arguments, ..Default::default() });
    let fx = publish_fx(&mut b, "q", "m1");
    let [(_, tag, _)] = delivered(&fx)[..] else { panic!("one delivery") };
    let mut fx = Effects::default();
    b.tick(T0 + 2000, &mut fx);
    assert!(fx.out.is_empty(), "the consumer's 5 s applies, not the queue's 1 s");
    b.handle(1, 1, BasicAck { delivery_tag: tag, multiple: false }.into(), T0 + 2500, &mut fx).expect("ack");
    b.tick(T0 + 10_000, &mut fx);
    assert!(fx.out.is_empty(), "nothing overdue once acked");
    assert!(b.channels.contains_key(&(1, 1)));
}
