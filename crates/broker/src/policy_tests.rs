//! Unit tests of policies and operator policies applied through the broker: to existing and new
//! queues and exchanges, combined with queue arguments, cleared, and restored from the journal.

use super::*;
use bytes::Bytes;

use super::tests::{setup, MemJournal, T0};

fn run(b: &mut Broker, m: impl Into<Method>) {
    let mut fx = Effects::default();
    b.handle(1, 1, m.into(), T0, &mut fx).expect("method succeeds");
}

fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
    FieldTable(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

fn declare(b: &mut Broker, name: &str, arguments: FieldTable) {
    run(b, QueueDeclare { queue: name.into(), durable: true, arguments, ..Default::default() });
}

fn publish(b: &mut Broker, exchange: &str, rk: &str, body: &str, now: u64) {
    let m =
        Message::with_properties(exchange, rk, &BasicProperties::default(), Bytes::copy_from_slice(body.as_bytes()));
    let mut fx = Effects::default();
    b.publish(1, 1, PublishFlags::default(), m, now, &mut fx).expect("publishes");
}

fn count(b: &Broker, q: &str) -> usize {
    b.queue("/", q).map_or(0, |q| q.ready_len())
}

fn set(b: &mut Broker, name: &str, pattern: &str, apply_to: &str, priority: i64, def: FieldTable, operator: bool) {
    let mut fx = Effects::default();
    b.set_policy("/", name, pattern, apply_to, priority, def, operator, &mut fx).expect("policy is valid");
}

#[test]
fn policy_applies_to_existing_and_new_queues_and_clears() {
    let (mut b, _) = setup();
    declare(&mut b, "lim.a", FieldTable::new());
    for i in 0..5 {
        publish(&mut b, "", "lim.a", &format!("m{i}"), T0);
    }
    set(&mut b, "limits", "^lim\\.", "queues", 0, table(&[("max-length", FieldValue::I64(2))]), false);
    assert_eq!(count(&b, "lim.a"), 2, "existing queue trimmed at once (drop-head)");
    declare(&mut b, "lim.b", FieldTable::new());
    declare(&mut b, "other", FieldTable::new());
    for i in 0..4 {
        publish(&mut b, "", "lim.b", &format!("m{i}"), T0);
        publish(&mut b, "", "other", &format!("m{i}"), T0);
    }
    assert_eq!((count(&b, "lim.b"), count(&b, "other")), (2, 4));
    let q = b.queue("/", "lim.b").expect("queue");
    assert_eq!(b.queue_policies(q), (Some("limits"), None));
    assert!(b.clear_policy("/", "limits", false, &mut Effects::default()));
    assert!(!b.clear_policy("/", "limits", false, &mut Effects::default()));
    publish(&mut b, "", "lim.b", "free", T0);
    assert_eq!(count(&b, "lim.b"), 3);
}

#[test]
fn arguments_and_operator_policies_combine_by_rabbitmq_rules() {
    let (mut b, _) = setup();
    declare(&mut b, "q", table(&[("x-max-length", FieldValue::I64(3))]));
    set(&mut b, "big", ".*", "all", 1, table(&[("max-length", FieldValue::I64(10))]), false);
    for i in 0..6 {
        publish(&mut b, "", "q", &format!("m{i}"), T0);
    }
    assert_eq!(count(&b, "q"), 3, "the argument (lower) wins over the policy");
    set(&mut b, "cap", ".*", "queues", 0, table(&[("max-length", FieldValue::I64(1))]), true);
    assert_eq!(count(&b, "q"), 1, "the operator policy caps both");
    // Operator policies may only set the numeric limits.
    let mut fx = Effects::default();
    let bad = table(&[("dead-letter-exchange", FieldValue::from("x"))]);
    assert!(b.set_policy("/", "op2", ".*", "queues", 0, bad, true, &mut fx).is_err());
    assert!(b
        .set_policy("/", "p", "(", "queues", 0, table(&[("max-length", FieldValue::I64(1))]), false, &mut fx)
        .is_err());
    assert!(b
        .set_policy("nope", "p", ".*", "queues", 0, table(&[("max-length", FieldValue::I64(1))]), false, &mut fx)
        .is_err());
}

#[test]
fn policy_ttl_and_dead_letter_exchange() {
    let (mut b, _) = setup();
    run(&mut b, ExchangeDeclare { exchange: "dlx".into(), kind: "fanout".into(), ..Default::default() });
    declare(&mut b, "dlq", FieldTable::new());
    run(&mut b, QueueBind { queue: "dlq".into(), exchange: "dlx".into(), ..Default::default() });
    set(
        &mut b,
        "ttl",
        "^work$",
        "queues",
        0,
        table(&[("message-ttl", FieldValue::I64(100)), ("dead-letter-exchange", FieldValue::from("dlx"))]),
        false,
    );
    declare(&mut b, "work", FieldTable::new());
    publish(&mut b, "", "work", "job", T0);
    b.tick(T0 + 150, &mut Effects::default());
    assert_eq!((count(&b, "work"), count(&b, "dlq")), (0, 1));
}

#[test]
fn policy_alternate_exchange() {
    let (mut b, _) = setup();
    run(&mut b, ExchangeDeclare { exchange: "main".into(), kind: "direct".into(), ..Default::default() });
    run(&mut b, ExchangeDeclare { exchange: "ae".into(), kind: "fanout".into(), ..Default::default() });
    declare(&mut b, "unrouted", FieldTable::new());
    run(&mut b, QueueBind { queue: "unrouted".into(), exchange: "ae".into(), ..Default::default() });
    set(&mut b, "ae", "^main$", "exchanges", 0, table(&[("alternate-exchange", FieldValue::from("ae"))]), false);
    publish(&mut b, "main", "nowhere", "lost?", T0);
    assert_eq!(count(&b, "unrouted"), 1);
}

#[test]
fn policies_survive_journal_replay() {
    let journal = MemJournal::default();
    let (mut b, _) = setup();
    b.set_journal(Box::new(journal.clone()));
    declare(&mut b, "lim", FieldTable::new());
    set(&mut b, "limits", "^lim", "queues", 0, table(&[("max-length", FieldValue::I64(1))]), false);
    set(&mut b, "gone", "^x", "queues", 0, table(&[("max-length", FieldValue::I64(1))]), false);
    b.clear_policy("/", "gone", false, &mut Effects::default());
    let mut restored = Broker::default();
    for d in journal.0.lock().expect("lock").defs.clone() {
        restored.restore_definition(d);
    }
    let names: Vec<&str> = restored.policies(Some("/"), false).iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["limits"]);
    restored.connection_open(1, "/", "guest", WriteCredit::new(1 << 30)).expect("vhost exists");
    restored.channel_open(1, 1);
    for i in 0..3 {
        publish(&mut restored, "", "lim", &format!("m{i}"), T0);
    }
    assert_eq!(count(&restored, "lim"), 1);
}
