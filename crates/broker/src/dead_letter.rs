//! Dead-lettering: the copy of a message that leaves a queue for its dead-letter exchange, with
//! the `x-death` header and `x-first-death-*` / `x-last-death-*` headers as RabbitMQ (3.13 and 4)
//! writes them, and RabbitMQ's cycle detection. Pure functions of the message; routing and
//! journaling of the copy are the broker's (`Broker::publish_dead_letters`).

use amqp_codec::{BasicProperties, FieldTable, FieldValue};
use bytes::Bytes;

use crate::message::Message;

/// Why a message was dead-lettered (the `reason` field of its x-death entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its per-queue or per-message TTL passed.
    Expired,
    /// Dropped from the head, or refused, by a length limit.
    Maxlen,
    /// Returned to its queue more often than `x-delivery-limit` allows.
    DeliveryLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message on its way from a queue to that queue's dead-letter exchange.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message: std::sync::Arc<Message>,
    pub vhost: String,
    /// The queue it died in.
    pub queue: String,
    pub reason: Reason,
    pub exchange: String,
    /// `x-dead-letter-routing-key`; None keeps the message's own routing key.
    pub routing_key: Option<String>,
}

/// `message` with header `key` set to `value` (other properties unchanged), or None when its
/// properties cannot be decoded.
pub fn with_header(m: &Message, key: &str, value: FieldValue) -> Option<Message> {
    let mut props = BasicProperties::decode(&m.properties).ok()?;
    props.headers.get_or_insert_with(FieldTable::default).insert(key, value);
    Some(Message::with_properties(&m.exchange, &m.routing_key, &props, m.body.clone()))
}

fn text(s: &str) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(s.as_bytes()))
}

fn get_str<'a>(t: &'a FieldTable, k: &str) -> Option<&'a str> {
    t.get(k).and_then(FieldValue::as_str)
}

/// The copy to publish to the dead-letter exchange, and its x-death entries (newest first), or
/// None when the message's properties cannot be decoded (it is then dropped).
///
/// RabbitMQ compat: one x-death entry per (queue, reason), most recent first; a repeated death
/// increments `count` and moves the entry to the front, keeping the `time`, `exchange` and
/// `routing-keys` of the first such death. `original-expiration` records a per-message
/// `expiration`, which is removed from the copy so it does not expire again by it.
pub fn dead_lettered_copy(dl: &DeadLetter, time_secs: u64) -> Option<(Message, Vec<FieldValue>)> {
    let m = &dl.message;
    let mut props = BasicProperties::decode(&m.properties).ok()?;
    let mut headers = props.headers.take().unwrap_or_default();
    let reason = dl.reason.as_str();
    let mut deaths = match headers.remove("x-death") {
        Some(FieldValue::Array(a)) => a,
        _ => Vec::new(),
    };
    let same = deaths.iter().position(|d| match d {
        FieldValue::Table(t) => get_str(t, "queue") == Some(&dl.queue) && get_str(t, "reason") == Some(reason),
        _ => false,
    });
    let entry = match same {
        Some(i) => {
            let mut e = deaths.remove(i);
            if let FieldValue::Table(t) = &mut e {
                let count = t.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
                t.insert("count", FieldValue::I64(count + 1));
            }
            e
        }
        None => {
            let mut routing_keys = vec![text(&m.routing_key)];
            // RabbitMQ compat: CC routing keys are listed too (BCC never reaches a queue).
            if let Some(FieldValue::Array(cc)) = headers.get("CC") {
                routing_keys.extend(cc.iter().filter_map(FieldValue::as_str).map(text));
            }
            let mut t = FieldTable(vec![
                ("count".into(), FieldValue::I64(1)),
                ("reason".into(), text(reason)),
                ("queue".into(), text(&dl.queue)),
                ("time".into(), FieldValue::Timestamp(time_secs)),
                ("exchange".into(), text(&m.exchange)),
                ("routing-keys".into(), FieldValue::Array(routing_keys)),
            ]);
            if let Some(e) = &props.expiration {
                t.insert("original-expiration", text(e));
            }
            FieldValue::Table(t)
        }
    };
    deaths.insert(0, entry);
    if headers.get("x-first-death-reason").is_none() {
        headers.insert("x-first-death-exchange", text(&m.exchange));
        headers.insert("x-first-death-queue", text(&dl.queue));
        headers.insert("x-first-death-reason", text(reason));
    }
    headers.insert("x-last-death-exchange", text(&m.exchange));
    headers.insert("x-last-death-queue", text(&dl.queue));
    headers.insert("x-last-death-reason", text(reason));
    headers.insert("x-death", FieldValue::Array(deaths.clone()));
    let routing_key = match &dl.routing_key {
        Some(rk) => {
            // RabbitMQ compat: a dead-letter routing key replaces the CC keys too.
            headers.remove("CC");
            rk.clone()
        }
        None => m.routing_key.clone(),
    };
    props.headers = Some(headers);
    props.expiration = None;
    let copy = Message::with_properties(&dl.exchange, &routing_key, &props, m.body.clone());
    Some((copy, deaths))
}

/// RabbitMQ's cycle rule: a copy dead-lettered for a reason other than `rejected` must not go to
/// `queue` when it already died there and every death since (that one included) was automatic,
/// i.e. none was a rejection. Otherwise expiring messages would circle forever.
pub fn is_cycle(deaths: &[FieldValue], queue: &str) -> bool {
    let Some(i) = deaths.iter().position(|d| matches!(d, FieldValue::Table(t) if get_str(t, "queue") == Some(queue)))
    else {
        return false;
    };
    deaths[..=i].iter().all(|d| match d {
        FieldValue::Table(t) => get_str(t, "reason") != Some("rejected"),
        // Something a client put there: the cycle is not "fully automatic".
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn dl(message: Message, queue: &str, reason: Reason) -> DeadLetter {
        DeadLetter {
            message: Arc::new(message),
            vhost: "/".into(),
            queue: queue.into(),
            reason,
            exchange: "dlx".into(),
            routing_key: None,
        }
    }

    /// Proves the first death writes one x-death entry with every field in RabbitMQ's order, the
    /// first- and last-death headers, and moves `expiration` into `original-expiration`.
    #[test]
    fn first_death_headers() {
        let props = BasicProperties { expiration: Some("5000".into()), ..Default::default() };
        let m = Message::with_properties("ex", "rk", &props, Bytes::from_static(b"b"));
        let (copy, deaths) = dead_lettered_copy(&dl(m, "q1", Reason::Expired), 1_700_000_000).expect("copy");
        let p = BasicProperties::decode(&copy.properties).expect("decodes");
        assert_eq!(p.expiration, None);
        assert_eq!((copy.exchange.as_str(), copy.routing_key.as_str()), ("dlx", "rk"));
        let h = p.headers.expect("headers");
        let expected = FieldTable(vec![
            ("count".into(), FieldValue::I64(1)),
            ("reason".into(), text("expired")),
            ("queue".into(), text("q1")),
            ("time".into(), FieldValue::Timestamp(1_700_000_000)),
            ("exchange".into(), text("ex")),
            ("routing-keys".into(), FieldValue::Array(vec![text("rk")])),
            ("original-expiration".into(), text("5000")),
        ]);
        assert_eq!(h.get("x-death"), Some(&FieldValue::Array(vec![FieldValue::Table(expected)])));
        assert_eq!(deaths.len(), 1);
        for (k, v) in [
            ("x-first-death-queue", "q1"),
            ("x-first-death-reason", "expired"),
            ("x-first-death-exchange", "ex"),
            ("x-last-death-queue", "q1"),
        ] {
            assert_eq!(get_str(&h, k), Some(v), "{k}");
        }
    }

    /// Proves a second death in the same (queue, reason) increments the count of the first entry
    /// and moves it to the front, while a new (queue, reason) gets its own entry first; the
    /// first-death headers keep the first death, the last-death ones follow the latest.
    #[test]
    fn repeated_deaths_count_and_order() {
        let m = Message::with_properties("ex", "rk", &BasicProperties::default(), Bytes::new());
        let (c1, _) = dead_lettered_copy(&dl(m, "q1", Reason::Rejected), 10).expect("1");
        let (c2, _) = dead_lettered_copy(&dl(c1, "q2", Reason::Expired), 20).expect("2");
        let (c3, deaths) = dead_lettered_copy(&dl(c2, "q1", Reason::Rejected), 30).expect("3");
        let summary: Vec<_> = deaths
            .iter()
            .map(|d| match d {
                FieldValue::Table(t) => (
                    get_str(t, "queue").unwrap_or("").to_owned(),
                    t.get("count").and_then(FieldValue::as_i64),
                    t.get("time").cloned(),
                    get_str(t, "exchange").unwrap_or("").to_owned(),
                ),
                _ => panic!("x-death entries are tables"),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("q1".into(), Some(2), Some(FieldValue::Timestamp(10)), "ex".into()),
                ("q2".into(), Some(1), Some(FieldValue::Timestamp(20)), "dlx".into()),
            ]
        );
        let h = BasicProperties::decode(&c3.properties).expect("decodes").headers.expect("headers");
        assert_eq!(get_str(&h, "x-first-death-reason"), Some("rejected"));
        assert_eq!(get_str(&h, "x-last-death-queue"), Some("q1"));
        assert_eq!(get_str(&h, "x-last-death-exchange"), Some("dlx"));
    }

    /// Proves the cycle rule: a queue already died in is a cycle only when no rejection happened
    /// since, and a queue never died in is never one.
    #[test]
    fn cycles() {
        let death = |q: &str, r: &str| {
            FieldValue::Table(FieldTable(vec![("queue".into(), text(q)), ("reason".into(), text(r))]))
        };
        let automatic = vec![death("a", "expired"), death("b", "maxlen")];
        assert!(is_cycle(&automatic, "a") && is_cycle(&automatic, "b"));
        assert!(!is_cycle(&automatic, "c"));
        let rejected_between = vec![death("a", "expired"), death("b", "rejected"), death("c", "expired")];
        assert!(is_cycle(&rejected_between, "a"));
        assert!(!is_cycle(&rejected_between, "c"), "a rejection since the death in c breaks the cycle");
    }
}
