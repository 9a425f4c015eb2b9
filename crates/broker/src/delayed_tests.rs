//! Unit tests of the x-delayed-message exchange: holding until due, routing by x-delayed-type,
//! mandatory returns, confirms, and recovery from the journal with the original due time.

use super::*;
use bytes::Bytes;

use super::tests::{setup, MemJournal, T0};

fn run(b: &mut Broker, m: impl Into<Method>) -> Result<()> {
    let mut fx = Effects::default();
    b.handle(1, 1, m.into(), T0, &mut fx)
}

fn delayed_exchange(b: &mut Broker, name: &str, inner: &str, durable: bool) {
    let mut arguments = FieldTable::new();
    arguments.insert("x-delayed-type", FieldValue::from(inner));
    run(
        b,
        ExchangeDeclare {
            exchange: name.into(),
            kind: "x-delayed-message".into(),
            durable,
            arguments,
            ..Default::default()
        },
    )
    .expect("declares");
}

fn publish(b: &mut Broker, x: &str, rk: &str, body: &str, delay: Option<i64>, mandatory: bool, now: u64) -> Effects {
    let headers = delay.map(|d| {
        let mut h = FieldTable::new();
        h.insert("x-delay", FieldValue::I64(d));
        h
    });
    let props = BasicProperties { headers, delivery_mode: Some(2), ..Default::default() };
    let m = Message::with_properties(x, rk, &props, Bytes::copy_from_slice(body.as_bytes()));
    let mut fx = Effects::default();
    b.publish(1, 1, PublishFlags { mandatory, immediate: false }, m, now, &mut fx).expect("publishes");
    fx
}

fn count(b: &Broker, q: &str) -> usize {
    b.queue("/", q).map_or(0, |q| q.ready_len())
}

fn setup_bound(b: &mut Broker, durable: bool) {
    delayed_exchange(b, "dx", "direct", durable);
    run(b, QueueDeclare { queue: "q".into(), durable, ..Default::default() }).expect("queue");
    run(b, QueueBind { queue: "q".into(), exchange: "dx".into(), routing_key: "k".into(), ..Default::default() })
        .expect("bind");
}

#[test]
fn holds_until_due_then_routes_by_delayed_type() {
    let (mut b, _) = setup();
    setup_bound(&mut b, false);
    publish(&mut b, "dx", "k", "later", Some(1000), false, T0);
    publish(&mut b, "dx", "k", "now", None, false, T0);
    publish(&mut b, "dx", "k", "negative", Some(-5), false, T0);
    publish(&mut b, "dx", "other-key", "unbound", Some(10), false, T0);
    assert_eq!(count(&b, "q"), 2, "no delay, or a negative one, routes at once");
    assert_eq!(b.delayed().len(), 2);
    let mut fx = Effects::default();
    // Due a millisecond after the delay: the broker's clock rounds down, so never early.
    let next = b.tick(T0 + 5, &mut fx);
    assert_eq!(next, Some(T0 + 11));
    b.tick(T0 + 1000, &mut fx);
    assert_eq!(count(&b, "q"), 2);
    let next = b.tick(T0 + 1001, &mut fx);
    assert_eq!(count(&b, "q"), 3);
    assert!(b.delayed().is_empty());
    assert_eq!(next, None);
}

#[test]
fn unknown_delayed_type_is_refused() {
    let (mut b, _) = setup();
    let mut arguments = FieldTable::new();
    arguments.insert("x-delayed-type", FieldValue::from("nonsense"));
    let e = run(
        &mut b,
        ExchangeDeclare { exchange: "bad".into(), kind: "x-delayed-message".into(), arguments, ..Default::default() },
    )
    .expect_err("refused");
    assert_eq!(e.code, 406);
    assert!(e.text.contains("x-delayed-type"));
}

#[test]
fn mandatory_unroutable_is_returned_not_held() {
    let (mut b, _) = setup();
    setup_bound(&mut b, false);
    let fx = publish(&mut b, "dx", "nobody", "m", Some(100), true, T0);
    assert!(fx.out.iter().any(|(_, o)| matches!(o, Outbound::Return { .. })));
    assert!(b.delayed().is_empty());
    let fx = publish(&mut b, "dx", "k", "m", Some(100), true, T0);
    assert!(!fx.out.iter().any(|(_, o)| matches!(o, Outbound::Return { .. })));
    assert_eq!(b.delayed().len(), 1);
}

#[test]
fn durable_delayed_messages_come_back_with_their_due_time() {
    let journal = MemJournal::default();
    let (mut b, _) = setup();
    b.set_journal(Box::new(journal.clone()));
    setup_bound(&mut b, true);
    publish(&mut b, "dx", "k", "soon", Some(1000), false, T0);
    publish(&mut b, "dx", "k", "late", Some(60_000), false, T0);
    // "soon" is released and routed before the crash; its held original is removed once the
    // routed copy is synced.
    let mut fx = Effects::default();
    b.tick(T0 + 1001, &mut fx);
    assert_eq!(count(&b, "q"), 1);
    b.journal_synced(u64::MAX, &mut fx);

    let mut restored = super::tests::replay(&journal);
    assert_eq!(count(&restored, "q"), 1, "the routed copy is back in its queue");
    assert_eq!(restored.delayed().len(), 1, "only the late one is still held");
    assert_eq!(restored.delayed().next_due_ms(), Some(T0 + 60_001));
    let mut fx = Effects::default();
    restored.tick(T0 + 60_001, &mut fx);
    assert_eq!(count(&restored, "q"), 2);
}
