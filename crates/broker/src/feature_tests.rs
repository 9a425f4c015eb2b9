//! Unit tests of message TTL, queue expiry, dead-lettering and length limits: each drives the
//! broker through AMQP operations at chosen times (`now_ms`) and asserts on the effects, on
//! what the queues hold and on what the journal was told.

use super::*;
use bytes::Bytes;
use std::sync::Mutex;

use super::tests::{setup, T0};

fn args(pairs: &[(&str, FieldValue)]) -> FieldTable {
    FieldTable(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

fn int(i: i64) -> FieldValue {
    FieldValue::I64(i)
}

fn text(s: &str) -> FieldValue {
    FieldValue::from(s)
}

fn run(b: &mut Broker, m: impl Into<Method>, now: u64) -> Effects {
    let mut fx = Effects::default();
    b.handle(1, 1, m.into(), now, &mut fx).expect("method succeeds");
    fx
}

fn declare(b: &mut Broker, name: &str, durable: bool, arguments: FieldTable, now: u64) {
    run(b, QueueDeclare { queue: name.into(), durable, arguments, ..Default::default() }, now);
}

/// A fanout exchange `dlx` bound to a plain queue `dlq`.
fn dlx(b: &mut Broker, durable: bool) {
    run(b, ExchangeDeclare { exchange: "dlx".into(), kind: "fanout".into(), durable, ..Default::default() }, T0);
    declare(b, "dlq", durable, FieldTable::new(), T0);
    run(b, QueueBind { queue: "dlq".into(), exchange: "dlx".into(), ..Default::default() }, T0);
}

fn publish_props(b: &mut Broker, rk: &str, body: &'static str, props: &BasicProperties, now: u64) -> Effects {
    let mut fx = Effects::default();
    let m = Message::with_properties("", rk, props, Bytes::from_static(body.as_bytes()));
    b.publish(1, 1, PublishFlags::default(), m, now, &mut fx).expect("publishes");
    fx
}

fn publish(b: &mut Broker, rk: &str, body: &'static str, now: u64) -> Effects {
    publish_props(b, rk, body, &BasicProperties::default(), now)
}

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties { expiration: Some(ms.into()), ..Default::default() }
}

fn bodies(b: &Broker, q: &str) -> Vec<Bytes> {
    b.queue("/", q).map(|q| q.ready.iter().map(|m| m.message.body.clone()).collect()).unwrap_or_default()
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn headers_of(m: &Message) -> FieldTable {
    BasicProperties::decode(&m.properties).expect("properties decode").headers.unwrap_or_default()
}

/// The x-death entries of the ready messages of `q`, as (queue, reason, count) per message.
fn deaths(b: &Broker, q: &str) -> Vec<Vec<(String, String, i64)>> {
    let q = b.queue("/", q).expect("queue exists");
    q.ready
        .iter()
        .map(|m| match headers_of(&m.message).get("x-death") {
            Some(FieldValue::Array(a)) => a
                .iter()
                .map(|d| match d {
                    FieldValue::Table(t) => (
                        t.get("queue").and_then(FieldValue::as_str).unwrap_or("").to_owned(),
                        t.get("reason").and_then(FieldValue::as_str).unwrap_or("").to_owned(),
                        t.get("count").and_then(FieldValue::as_i64).unwrap_or(0),
                    ),
                    _ => panic!("x-death entries are tables"),
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn deliveries(fx: &Effects) -> Vec<Bytes> {
    fx.out
        .iter()
        .filter_map(|(_, o)| match o {
            Outbound::Deliver { message, .. } => Some(message.body.clone()),
            _ => None,
        })
        .collect()
}

fn confirms(fx: &Effects) -> Vec<(u64, bool)> {
    fx.out
        .iter()
        .filter_map(|(_, o)| match o {
            Outbound::Confirm { delivery_tag, ack, .. } => Some((*delivery_tag, *ack)),
            _ => None,
        })
        .collect()
}

/// Proves x-message-ttl expires a message exactly at its deadline (not a millisecond before),
/// that tick reports the next deadline, and that the expired message reaches the dead-letter
/// exchange with the x-death entry and first/last-death headers RabbitMQ writes.
#[test]
fn queue_ttl_expires_and_dead_letters() {
    let (mut br, _) = setup();
    dlx(&mut br, false);
    declare(&mut br, "q", false, args(&[("x-message-ttl", int(1000)), ("x-dead-letter-exchange", text("dlx"))]), T0);
    let fx = publish(&mut br, "q", "m", T0);
    assert_eq!(fx.tick_at_ms, Some(T0 + 1000), "the server is asked to tick at the deadline");
    let mut fx = Effects::default();
    assert_eq!(br.tick(T0 + 999, &mut fx), Some(T0 + 1000));
    assert_eq!(bodies(&br, "q"), vec![b("m")]);
    assert_eq!(br.tick(T0 + 1000, &mut fx), None);
    assert_eq!(bodies(&br, "q"), Vec::<Bytes>::new());
    assert_eq!(bodies(&br, "dlq"), vec![b("m")]);
    let dead = &br.queue("/", "dlq").expect("dlq").ready.front().expect("one").message;
    assert_eq!((dead.exchange.as_str(), dead.routing_key.as_str()), ("dlx", "q"));
    let h = headers_of(dead);
    let entry = FieldTable(vec![
        ("count".into(), FieldValue::I64(1)),
        ("reason".into(), text("expired")),
        ("queue".into(), text("q")),
        ("time".into(), FieldValue::Timestamp((T0 + 1000) / 1000)),
        ("exchange".into(), text("")),
        ("routing-keys".into(), FieldValue::Array(vec![text("q")])),
    ]);
    assert_eq!(h.get("x-death"), Some(&FieldValue::Array(vec![FieldValue::Table(entry)])));
    for (k, v) in [
        ("x-first-death-queue", "q"),
        ("x-first-death-reason", "expired"),
        ("x-first-death-exchange", ""),
        ("x-last-death-queue", "q"),
        ("x-last-death-reason", "expired"),
        ("x-last-death-exchange", ""),
    ] {
        assert_eq!(h.get(k).and_then(FieldValue::as_str), Some(v), "{k}");
    }
}

/// Proves a per-message expiration removes the message when it expires although it is not at
/// the head, leaving the others in order, and that the copy carries original-expiration and
/// no expiration property.
#[test]
fn message_expiration_not_at_head() {
    let (mut br, _) = setup();
    dlx(&mut br, false);
    declare(&mut br, "q", false, args(&[("x-dead-letter-exchange", text("dlx"))]), T0);
    publish(&mut br, "q", "a", T0);
    publish_props(&mut br, "q", "b", &expiring("100"), T0);
    publish_props(&mut br, "q", "c", &expiring("5000"), T0);
    publish(&mut br, "q", "d", T0);
    let mut fx = Effects::default();
    assert_eq!(br.tick(T0 + 100, &mut fx), Some(T0 + 5000));
    assert_eq!(bodies(&br, "q"), vec![b("a"), b("c"), b("d")]);
    assert_eq!(br.queue("/", "q").expect("q").message_count(), 3);
    let dead = br.queue("/", "dlq").expect("dlq").ready.front().expect("b").message.clone();
    let p = BasicProperties::decode(&dead.properties).expect("decodes");
    assert_eq!(p.expiration, None);
    let Some(FieldValue::Array(d)) = p.headers.expect("headers").get("x-death").cloned() else {
        panic!("x-death missing")
    };
    let FieldValue::Table(entry) = &d[0] else { panic!("x-death entries are tables") };
    assert_eq!(entry.get("original-expiration").and_then(FieldValue::as_str), Some("100"));
}

/// Proves an invalid expiration property is refused with 406 and RabbitMQ's text.
#[test]
fn invalid_expiration_is_precondition_failed() {
    let (mut br, _) = setup();
    declare(&mut br, "q", false, FieldTable::new(), T0);
    for (value, text) in [
        ("abc", "PRECONDITION_FAILED - invalid expiration 'abc': {invalid_expiration,<<\"abc\">>}"),
        ("-5", "PRECONDITION_FAILED - invalid expiration '-5': {value_negative,-5}"),
    ] {
        let m = Message::with_properties("", "q", &expiring(value), Bytes::new());
        let e = br.publish(1, 1, PublishFlags::default(), m, T0, &mut Effects::default()).expect_err(value);
        assert_eq!((e.code, e.reply_text().as_str()), (406, text));
    }
    assert_eq!(bodies(&br, "q"), Vec::<Bytes>::new());
}

/// Proves a TTL-0 message goes to a consumer that can take it at once, and otherwise expires
/// immediately (dead-lettered, never left in the queue), whether the TTL is the queue's or the
/// message's.
#[test]
fn ttl_zero_delivered_only_at_once() {
    let (mut br, _) = setup();
    dlx(&mut br, false);
    declare(&mut br, "q", false, args(&[("x-message-ttl", int(0)), ("x-dead-letter-exchange", text("dlx"))]), T0);
    publish(&mut br, "q", "nobody", T0);
    assert_eq!(bodies(&br, "q"), Vec::<Bytes>::new());
    assert_eq!(bodies(&br, "dlq"), vec![b("nobody")]);
    run(&mut br, BasicQos { prefetch_count: 1, ..Default::default() }, T0);
    run(&mut br, BasicConsume { queue: "q".into(), consumer_tag: "c".into(), ..Default::default() }, T0);
    let fx = publish(&mut br, "q", "taken", T0);
    assert_eq!(deliveries(&fx), vec![b("taken")]);
    // The consumer is at its prefetch limit now: the next one cannot be taken at once.
    let fx = publish(&mut br, "q", "busy", T0);
    assert_eq!(deliveries(&fx), Vec::<Bytes>::new());
    assert_eq!(bodies(&br, "q"), Vec::<Bytes>::new());
    assert_eq!(bodies(&br, "dlq"), vec![b("nobody"), b("busy")]);
    declare(&mut br, "plain", false, FieldTable::new(), T0);
    publish(&mut br, "plain", "first", T0);
    publish_props(&mut br, "plain", "zero", &expiring("0"), T0);
    assert_eq!(bodies(&br, "plain"), vec![b("first")], "per-message expiration 0 expires at once, behind others too");
}

/// Proves an expired message is never handed out even when no tick has removed it yet: basic.get
/// skips it (and dead-letters it), and a consumer arriving late does not receive it.
#[test]
fn expired_messages_never_delivered_before_tick() {
    let (mut br, _) = setup();
    dlx(&mut br, false);
    declare(&mut br, "q", false, args(&[("x-message-ttl", int(100)), ("x-dead-letter-exchange", text("dlx"))]), T0);
    publish(&mut br, "q", "old", T0);
    publish(&mut br, "q", "new", T0 + 50);
    let fx = run(&mut br, BasicGet { queue: "q".into(), no_ack: true, ..Default::default() }, T0 + 100);
    let got: Vec<_> = fx
        .out
        .iter()
        .filter_map(|(_, o)| match o {
            Outbound::GetOk { message, .. } => Some(message.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![b("new")]);
    assert_eq!(bodies(&br, "dlq"), vec![b("old")]);
    publish(&mut br, "q", "later", T0 + 100);
    let fx = run(&mut br, BasicConsume { queue: "q".into(), no_ack: true, ..Default::default() }, T0 + 200);
    assert_eq!(deliveries(&fx), Vec::<Bytes>::new());
    assert_eq!(bodies(&br, "dlq"), vec![b("old"), b("later")]);
}

/// Proves a message whose deadline passed while it was unacknowledged is dead-lettered as
/// expired when it is requeued (nack, channel close) instead of going back to the queue.
#[test]
fn requeue_after_deadline_dead_letters() {
    let (mut br, _) = setup();
    dlx(&mut br, false);
    declare(&mut br, "q", false, args(&[("x-message-ttl", int(100)), ("x-dead-letter-exchange", text("dlx"))]), T0);
    publish(&mut br, "q", "a", T0);
    publish(&mut br, "q", "b", T0);
    run(&mut br, BasicGet { queue: "q".into(), ..Default::default() }, T0);
    run(&mut br, BasicGet { queue: "q".into(), ..Default::default() }, T0);
    run(&mut br, BasicNack { delivery_tag: 1, multiple: false, requeue: true }, T0 + 50);
    assert_eq!(bodies(&br, "q"), vec![b("a")], "requeued before its deadline");
    // The message requeued in time still expires at its original deadline.
    let mut fx = Effects::default();
    assert_eq!(br.tick(T0 + 99, &mut fx), Some(T0 + 100));
    br.tick(T0 + 100, &mut fx);
    assert_eq!(bodies(&br, "q"), Vec::<Bytes>::new());
    assert_eq!(bodies(&br, "dlq"), vec![b("a")]);
    run(&mut br, BasicNack { delivery_tag: 2, multiple: false, requeue: true }, T0 + 150);
    assert_eq!(bodies(&br, "q"), Vec::<Bytes>::new(), "expired while unacked: not requeued");
    assert_eq!(bodies(&br, "dlq"), vec![b("a"), b("b")]);
    assert_eq!(deaths(&br, "dlq")[1], vec![("q".into(), "expired".into(), 1)]);
    // Behind a live message too: it never goes back into the queue, tick or not.
    declare(&mut br, "plain", false, FieldTable::new(), T0 + 150);
    publish(&mut br, "plain", "head", T0 + 150);
    publish_props(&mut br, "plain", "short", &expiring("100"), T0 + 150);
    run(&mut br, BasicGet { queue: "plain".into(), ..Default::default() }, T0 + 150);
    run(&mut br, BasicGet { queue: "plain".into(), ..Default::default() }, T0 + 150);
    run(&mut br, BasicNack { delivery_tag: 3, multiple: false, requeue: true }, T0 + 250);
    run(&mut br, BasicNack { delivery_tag: 4, multiple: false, requeue: true }, T0 + 250);
    assert_eq!(bodies(&br, "plain"), vec![b("head")]);
}

/// Proves x-expires deletes a queue unused for its period, that basic.get, redeclaring and
/// losing the last consumer restart the period, and that a consumer keeps the queue alive.
#[test]
fn queue_expires_when_unused() {
    let (mut br, _) = setup();
    declare(&mut br, "q", false, args(&[("x-expires", int(1000))]), T0);
    let mut fx = Effects::default();
    // Due a millisecond after the period: the broker's clock rounds down, so never early.
    br.tick(T0 + 1000, &mut fx);
    assert!(br.queue("/", "q").is_some());
    run(&mut br, BasicGet { queue: "q".into(), ..Default::default() }, T0 + 1000);
    br.tick(T0 + 2000, &mut fx);
    assert!(br.queue("/", "q").is_some(), "basic.get restarted the period");
    declare(&mut br, "q", false, args(&[("x-expires", int(1000))]), T0 + 2000);
    br.tick(T0 + 3000, &mut fx);
    assert!(br.queue("/", "q").is_some(), "redeclaring restarted the period");
    run(&mut br, BasicConsume { queue: "q".into(), consumer_tag: "c".into(), ..Default::default() }, T0 + 3000);
    br.tick(T0 + 9000, &mut fx);
    assert!(br.queue("/", "q").is_some(), "a consumer keeps it");
    run(&mut br, BasicCancel { consumer_tag: "c".into(), nowait: false }, T0 + 9000);
    assert_eq!(br.tick(T0 + 10_000, &mut fx), Some(T0 + 10_001));
    assert!(br.queue("/", "q").is_some());
    assert_eq!(br.tick(T0 + 10_001, &mut fx), None);
    assert!(br.queue("/", "q").is_none(), "deleted once unused for 1000 ms");
    let e = br
        .handle(1, 1, QueueDeclare { queue: "q".into(), passive: true, ..Default::default() }.into(), T0, &mut fx)
        .expect_err("gone");
    assert_eq!(e.code, 404);
}

/// Proves basic.reject and basic.nack without requeue dead-letter with reason rejected, using
/// x-dead-letter-routing-key while x-death keeps the original routing key, and that repeated
/// rejections through the same queue count up in one entry (rejections are never cycles).
#[test]
fn rejected_messages_dead_letter_and_count() {
    let (mut br, _) = setup();
    declare(&mut br, "dlq", false, FieldTable::new(), T0);
    let to_dlq = args(&[("x-dead-letter-exchange", text("")), ("x-dead-letter-routing-key", text("dlq"))]);
    declare(&mut br, "q", false, to_dlq, T0);
    publish(&mut br, "q", "m", T0);
    run(&mut br, BasicGet { queue: "q".into(), ..Default::default() }, T0);
    run(&mut br, BasicReject { delivery_tag: 1, requeue: false }, T0);
    let m = br.queue("/", "dlq").expect("dlq").ready.front().expect("dead-lettered").message.clone();
    assert_eq!(m.routing_key, "dlq");
    let Some(FieldValue::Array(d)) = headers_of(&m).get("x-death").cloned() else { panic!("x-death") };
    let FieldValue::Table(t) = &d[0] else { panic!("table") };
    assert_eq!(t.get("routing-keys"), Some(&FieldValue::Array(vec![text("q")])));
    // A queue that dead-letters to itself on rejection: each nack brings it back, counted.
    let to_self = args(&[("x-dead-letter-exchange", text("")), ("x-dead-letter-routing-key", text("loop"))]);
    declare(&mut br, "loop", false, to_self, T0);
    publish(&mut br, "loop", "again", T0);
    for tag in 2..5 {
        run(&mut br, BasicGet { queue: "loop".into(), ..Default::default() }, T0);
        run(&mut br, BasicNack { delivery_tag: tag, multiple: false, requeue: false }, T0);
    }
    assert_eq!(deaths(&br, "loop"), vec![vec![("loop".into(), "rejected".into(), 3)]]);
}

/// Proves RabbitMQ's cycle detection: a message expiring around a loop of queues is dropped when
/// it would come back to a queue it already expired in, but a rejection in between lets it go on.
#[test]
fn automatic_cycles_are_dropped() {
    let (mut br, _) = setup();
    let to = |q: &str| {
        args(&[
            ("x-message-ttl", int(10)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text(q)),
        ])
    };
    declare(&mut br, "a", false, to("b"), T0);
    declare(&mut br, "b", false, to("a"), T0);
    publish(&mut br, "a", "m", T0);
    let mut fx = Effects::default();
    br.tick(T0 + 10, &mut fx);
    assert_eq!(deaths(&br, "b"), vec![vec![("a".into(), "expired".into(), 1)]]);
    assert_eq!(br.tick(T0 + 20, &mut fx), None, "nothing left to expire");
    assert_eq!((bodies(&br, "a"), bodies(&br, "b")), (vec![], vec![]), "a -> b -> a is a cycle: dropped");
    // With a rejection in between, a queue the message already expired in takes it again.
    declare(
        &mut br,
        "c",
        false,
        args(&[("x-dead-letter-exchange", text("")), ("x-dead-letter-routing-key", text("d"))]),
        T0,
    );
    declare(&mut br, "d", false, to("c"), T0);
    publish(&mut br, "d", "n", T0 + 20);
    br.tick(T0 + 30, &mut fx);
    run(&mut br, BasicGet { queue: "c".into(), ..Default::default() }, T0 + 30);
    run(&mut br, BasicReject { delivery_tag: 1, requeue: false }, T0 + 30);
    assert_eq!(deaths(&br, "d"), vec![vec![("c".into(), "rejected".into(), 1), ("d".into(), "expired".into(), 1)]]);
    br.tick(T0 + 40, &mut fx);
    assert_eq!(
        deaths(&br, "c"),
        vec![vec![("d".into(), "expired".into(), 2), ("c".into(), "rejected".into(), 1)]],
        "d expired twice, with a rejection in c between"
    );
}

/// Proves x-max-length drops (and dead-letters, reason maxlen) the oldest ready messages, in
/// order, and x-max-length-bytes does the same by body bytes, down to the new message itself.
#[test]
fn max_length_and_bytes_drop_head() {
    let (mut br, _) = setup();
    dlx(&mut br, false);
    declare(&mut br, "q", false, args(&[("x-max-length", int(2)), ("x-dead-letter-exchange", text("dlx"))]), T0);
    for body in ["0", "1", "2", "3", "4"] {
        publish(&mut br, "q", body, T0);
    }
    assert_eq!(bodies(&br, "q"), vec![b("3"), b("4")]);
    assert_eq!(bodies(&br, "dlq"), vec![b("0"), b("1"), b("2")]);
    assert_eq!(deaths(&br, "dlq")[0], vec![("q".to_owned(), "maxlen".to_owned(), 1)]);
    declare(&mut br, "bytes", false, args(&[("x-max-length-bytes", int(10))]), T0);
    for body in ["aaaa", "bbbb", "cccc"] {
        publish(&mut br, "bytes", body, T0);
    }
    assert_eq!(bodies(&br, "bytes"), vec![b("bbbb"), b("cccc")]);
    publish(&mut br, "bytes", "xxxxxxxxxxxxxxxxxxxx", T0);
    assert_eq!(bodies(&br, "bytes"), Vec::<Bytes>::new(), "a body over the limit leaves nothing");
    // With a consumer that can take it, a message never counts against the limit.
    declare(&mut br, "zero", false, args(&[("x-max-length", int(0))]), T0);
    run(&mut br, BasicConsume { queue: "zero".into(), no_ack: true, ..Default::default() }, T0);
    assert_eq!(deliveries(&publish(&mut br, "zero", "through", T0)), vec![b("through")]);
}

/// Proves x-overflow reject-publish refuses a message to a full queue with a basic.nack to a
/// confirming publisher while the other queue it was routed to takes it, and drops it silently
/// for a publisher without confirms; reject-publish-dlx dead-letters the refused message.
#[test]
fn reject_publish_nacks_and_dead_letters() {
    let (mut br, _) = setup();
    dlx(&mut br, false);
    run(&mut br, ExchangeDeclare { exchange: "fan".into(), kind: "fanout".into(), ..Default::default() }, T0);
    declare(&mut br, "full", false, args(&[("x-max-length", int(1)), ("x-overflow", text("reject-publish"))]), T0);
    declare(&mut br, "other", false, FieldTable::new(), T0);
    for q in ["full", "other"] {
        run(&mut br, QueueBind { queue: q.into(), exchange: "fan".into(), ..Default::default() }, T0);
    }
    let mut fx = Effects::default();
    for body in ["quiet-1", "quiet-2"] {
        let m = Message::with_properties("fan", "", &BasicProperties::default(), b(body));
        br.publish(1, 1, PublishFlags::default(), m, T0, &mut fx).expect("publish");
    }
    assert!(fx.out.is_empty(), "without confirms a refusal is silent");
    run(&mut br, ConfirmSelect { nowait: false }, T0);
    for body in ["x", "y"] {
        let m = Message::with_properties("fan", "", &BasicProperties::default(), b(body));
        br.publish(1, 1, PublishFlags::default(), m, T0, &mut fx).expect("publish");
    }
    assert_eq!(confirms(&fx), vec![(1, false), (2, false)]);
    assert_eq!(bodies(&br, "full"), vec![b("quiet-1")]);
    assert_eq!(bodies(&br, "other"), vec![b("quiet-1"), b("quiet-2"), b("x"), b("y")]);
    run(&mut br, BasicGet { queue: "full".into(), no_ack: true, ..Default::default() }, T0);
    let m = Message::with_properties("fan", "", &BasicProperties::default(), b("fits"));
    let mut fx = Effects::default();
    br.publish(1, 1, PublishFlags::default(), m, T0, &mut fx).expect("publish");
    assert_eq!(confirms(&fx), vec![(3, true)]);

    let dlx_args = args(&[
        ("x-max-length", int(1)),
        ("x-overflow", text("reject-publish-dlx")),
        ("x-dead-letter-exchange", text("dlx")),
    ]);
    declare(&mut br, "full-dlx", false, dlx_args, T0);
    let c1 = confirms(&publish(&mut br, "full-dlx", "kept", T0));
    let c2 = confirms(&publish(&mut br, "full-dlx", "refused", T0));
    assert_eq!((c1, c2), (vec![(4, true)], vec![(5, false)]));
    assert_eq!(bodies(&br, "full-dlx"), vec![b("kept")]);
    assert_eq!(bodies(&br, "dlq"), vec![b("refused")]);
    assert_eq!(deaths(&br, "dlq"), vec![vec![("full-dlx".into(), "maxlen".into(), 1)]]);
}

/// Proves the TTL, expiry and dead-letter arguments RabbitMQ refuses at declare are refused with its texts.
#[test]
fn feature_arguments_validated() {
    let (mut br, _) = setup();
    for (a, text_expected) in [
        (
            args(&[("x-dead-letter-routing-key", text("k"))]),
            "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined",
        ),
        (
            args(&[("x-message-ttl", int(1 << 40))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_too_large,1099511627776}",
        ),
        (
            args(&[("x-expires", int(0))]),
            "PRECONDITION_FAILED - invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}",
        ),
    ] {
        let mut fx = Effects::default();
        let m = QueueDeclare { queue: "q".into(), arguments: a, ..Default::default() };
        let e = br.handle(1, 1, m.into(), T0, &mut fx).expect_err("refused");
        assert_eq!(e.reply_text(), text_expected);
        br.channel_open(1, 1);
    }
}

/// A journal that records what the broker asks of it, shared with the test.
#[derive(Debug, Default, Clone)]
struct MemJournal(Arc<Mutex<MemLog>>);

#[derive(Debug, Default)]
struct MemLog {
    defs: Vec<Definition>,
    messages: Vec<MessageRecord>,
    removed: Vec<(QueueId, MessageId)>,
}

impl Journal for MemJournal {
    fn publish(&mut self, msg_id: MessageId, queues: &[QueueId], message: &Message, arrival_ms: Option<u64>) -> u64 {
        let mut l = self.0.lock().expect("lock");
        l.messages.push(MessageRecord { msg_id, queues: queues.to_vec(), message: message.clone(), arrival_ms });
        l.messages.len() as u64
    }
    fn remove(&mut self, queue: QueueId, msg_id: MessageId) {
        self.0.lock().expect("lock").removed.push((queue, msg_id));
    }
    fn delivered(&mut self, _: QueueId, _: MessageId) {}
    fn define(&mut self, d: &Definition) {
        self.0.lock().expect("lock").defs.push(d.clone());
    }
    fn written(&self) -> u64 {
        self.0.lock().expect("lock").messages.len() as u64
    }
}

/// Replays a journal into a fresh broker, as recovery does.
fn restore(journal: &MemJournal) -> Broker {
    let mut restored = Broker::default();
    let log = journal.0.lock().expect("lock");
    for d in log.defs.clone() {
        restored.restore_definition(d);
    }
    for rec in log.messages.clone() {
        let id = rec.msg_id;
        restored.restore_message(rec, |q| log.removed.contains(&(q, id)), |_| false);
    }
    restored
}

fn persistent(expiration: Option<&str>) -> BasicProperties {
    BasicProperties { delivery_mode: Some(2), expiration: expiration.map(str::to_owned), ..Default::default() }
}

/// Proves a persistent message that expires in a durable queue is journaled as removed from it
/// and its dead-lettered copy is journaled as a new message (new id) in the durable dead-letter
/// queue, so a restart finds it there and not in the original queue.
#[test]
fn dead_lettering_is_journaled() {
    let journal = MemJournal::default();
    let (mut br, _) = setup();
    br.set_journal(Box::new(journal.clone()));
    dlx(&mut br, true);
    declare(&mut br, "q", true, args(&[("x-message-ttl", int(100)), ("x-dead-letter-exchange", text("dlx"))]), T0);
    publish_props(&mut br, "q", "m", &persistent(None), T0);
    publish_props(&mut br, "q", "dropped-later", &persistent(None), T0 + 50);
    let mut fx = Effects::default();
    br.tick(T0 + 100, &mut fx);
    let (q, dlq) = (br.queue("/", "q").expect("q").id, br.queue("/", "dlq").expect("dlq").id);
    {
        let log = journal.0.lock().expect("lock");
        let ids: Vec<_> = log.messages.iter().map(|r| (r.msg_id, r.queues.clone(), r.arrival_ms)).collect();
        assert_eq!(ids, vec![(1, vec![q], Some(T0)), (2, vec![q], Some(T0 + 50)), (3, vec![dlq], None)]);
        assert_eq!(log.removed, vec![(q, 1)]);
    }
    let restored = restore(&journal);
    assert_eq!(bodies(&restored, "q"), vec![b("dropped-later")]);
    assert_eq!(bodies(&restored, "dlq"), vec![b("m")]);
    assert_eq!(deaths(&restored, "dlq"), vec![vec![("q".into(), "expired".into(), 1)]]);
}

/// Proves deadlines survive a restart: restored messages keep the deadline of their arrival
/// (queue TTL and per-message expiration), expire at the first tick after it, and a recovered
/// queue's x-expires period starts again at that tick.
#[test]
fn deadlines_survive_restart() {
    let journal = MemJournal::default();
    let (mut br, _) = setup();
    br.set_journal(Box::new(journal.clone()));
    declare(&mut br, "ttl", true, args(&[("x-message-ttl", int(1000))]), T0);
    declare(&mut br, "plain", true, FieldTable::new(), T0);
    declare(&mut br, "lease", true, args(&[("x-expires", int(500))]), T0);
    publish_props(&mut br, "ttl", "queue-ttl", &persistent(None), T0);
    publish_props(&mut br, "plain", "own-ttl", &persistent(Some("2000")), T0);
    publish_props(&mut br, "plain", "forever", &persistent(None), T0);

    let mut restored = restore(&journal);
    let mut fx = Effects::default();
    assert_eq!(restored.tick(T0 + 999, &mut fx), Some(T0 + 1000));
    assert_eq!(bodies(&restored, "ttl"), vec![b("queue-ttl")]);
    assert!(restored.queue("/", "lease").is_some(), "the lease restarts at the first tick (T0 + 999)");
    restored.tick(T0 + 1000, &mut fx);
    assert_eq!(bodies(&restored, "ttl"), Vec::<Bytes>::new());
    restored.tick(T0 + 1498, &mut fx);
    assert!(restored.queue("/", "lease").is_some());
    restored.tick(T0 + 2000, &mut fx);
    assert_eq!(bodies(&restored, "plain"), vec![b("forever")]);
    assert!(restored.queue("/", "lease").is_none());
}

/// Proves expiring many messages from the middle keeps order and counts right (tombstones are
/// compacted), and that the deadline heap of a queue whose consumer takes every message stays
/// bounded instead of growing with each publish.
#[test]
fn expiry_structures_stay_bounded() {
    let (mut br, _) = setup();
    declare(&mut br, "q", false, FieldTable::new(), T0);
    for i in 0..2000u32 {
        let body: &'static str = if i % 2 == 0 { "keep" } else { "drop" };
        let props = if i % 2 == 0 { BasicProperties::default() } else { expiring("10") };
        publish_props(&mut br, "q", body, &props, T0);
    }
    let mut fx = Effects::default();
    br.tick(T0 + 10, &mut fx);
    let q = br.queue("/", "q").expect("q");
    assert_eq!(q.message_count(), 1000);
    assert!(q.ready.iter().all(|m| &m.message.body[..] == b"keep"));
    q.invariants();

    declare(&mut br, "busy", false, args(&[("x-message-ttl", int(60_000))]), T0);
    run(&mut br, BasicConsume { queue: "busy".into(), no_ack: true, ..Default::default() }, T0);
    for _ in 0..10_000 {
        publish(&mut br, "busy", "x", T0);
    }
    assert!(br.queue("/", "busy").expect("busy").watched_deadlines() <= 1025);
}
