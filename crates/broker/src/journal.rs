//! What the broker records for durability, and the record formats. The broker calls a `Journal`
//! as it changes durable state; the journal turns the calls into records on disk (see
//! `durable.rs`) and reports, through `Broker::journal_synced`, how far they are on stable
//! storage so publisher confirms can be released. The broker itself never touches a file.

use amqp_codec::{FieldTable, FieldValue};
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::exchange::ExchangeKind;
use crate::message::Message;
use crate::QueueId;

/// Identifies a journaled message; increases in publish (and log) order. 0 means "not journaled".
pub type MessageId = u64;

/// A durable definition or its removal.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    Vhost {
        name: String,
    },
    VhostDeleted {
        name: String,
    },
    Exchange {
        vhost: String,
        name: String,
        kind: ExchangeKind,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    },
    ExchangeDeleted {
        vhost: String,
        name: String,
    },
    Queue {
        id: QueueId,
        vhost: String,
        name: String,
        auto_delete: bool,
        arguments: FieldTable,
    },
    QueueDeleted {
        id: QueueId,
    },
    /// `destination` is a queue id (as decimal text) when `to_queue`, else an exchange name.
    Binding {
        vhost: String,
        source: String,
        to_queue: bool,
        destination: String,
        routing_key: String,
        arguments: FieldTable,
    },
    BindingDeleted {
        vhost: String,
        source: String,
        to_queue: bool,
        destination: String,
        routing_key: String,
        arguments: FieldTable,
    },
    /// A user created or changed (see `auth.rs`); `password_hash` as RabbitMQ's sha256 scheme.
    User {
        name: String,
        password_hash: String,
        tags: Vec<String>,
    },
    UserDeleted {
        name: String,
    },
    Permission {
        vhost: String,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    PermissionCleared {
        vhost: String,
        user: String,
    },
    TopicPermission {
        vhost: String,
        user: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// One exchange's topic permission, or all of the user's in the vhost when None.
    TopicPermissionCleared {
        vhost: String,
        user: String,
        exchange: Option<String>,
    },
    /// A vhost's description, tags and default queue type (RabbitMQ's vhost metadata).
    VhostMetadata {
        name: String,
        description: String,
        tags: Vec<String>,
        default_queue_type: String,
    },
    /// A policy or operator policy set (see `policy.rs`).
    Policy {
        vhost: String,
        name: String,
        pattern: String,
        apply_to: String,
        priority: i64,
        definition: FieldTable,
        operator: bool,
    },
    PolicyDeleted {
        vhost: String,
        name: String,
        operator: bool,
    },
    /// Queue ids below `next` were handed out (written by compaction, which may drop the record
    /// of the newest queue when it was deleted): ids are never reused, so that records of a
    /// deleted queue still in the message or ack log can never be taken for a new queue's.
    QueueIdFloor {
        next: QueueId,
    },
    /// A user's limits, replacing any earlier ones (both None: cleared).
    UserLimits {
        user: String,
        max_connections: Option<i64>,
        max_channels: Option<i64>,
    },
    /// A vhost's limits, replacing any earlier ones (both None: cleared).
    VhostLimits {
        vhost: String,
        max_connections: Option<i64>,
        max_queues: Option<i64>,
    },
    /// A global runtime parameter set (see `parameters.rs`); `value` is JSON text.
    GlobalParameter {
        name: String,
        value: String,
    },
    GlobalParameterCleared {
        name: String,
    },
}

/// The broker's calls into durable storage. Appends are buffered; `written` numbers them.
pub trait Journal: Send + std::fmt::Debug {
    /// A persistent message routed to these durable queues, with its arrival time (the broker's
    /// milliseconds) when it has a deadline in one of them. Returns the sequence number that
    /// must be synced before the publish is confirmed.
    fn publish(&mut self, msg_id: MessageId, queues: &[QueueId], message: &Message, arrival_ms: Option<u64>) -> u64;
    /// Where the message of the latest `publish` was written, as a location for `read`; None
    /// when this journal cannot read messages back (then nothing is paged out).
    /// Writes a message that need not survive a restart (transient, or in a non-durable queue)
    /// so that its body can be paged out of memory; returns its location for `read`, or None
    /// when this journal cannot page. It is released with `remove` like a journaled message.
    fn page(&mut self, msg_id: MessageId, queues: &[QueueId], message: &Message) -> Option<u64> {
        let _ = (msg_id, queues, message);
        None
    }
    fn last_location(&self) -> Option<u64> {
        None
    }
    /// Reads back a message written earlier, by its location (from `last_location`, or given
    /// to `Broker::restore_message_at` by recovery); None when it cannot.
    fn read(&self, location: u64) -> Option<Message> {
        let _ = location;
        None
    }
    /// The message left the queue for good (acked, rejected, purged, dropped, queue deleted).
    fn remove(&mut self, queue: QueueId, msg_id: MessageId);
    /// The message was handed to a consumer that must ack it (it comes back redelivered).
    fn delivered(&mut self, queue: QueueId, msg_id: MessageId);
    /// The message came back to a queue with a delivery limit (nack/reject with requeue, or its
    /// channel closed): recovery counts these to restore its delivery count.
    fn returned(&mut self, queue: QueueId, msg_id: MessageId) {
        let _ = (queue, msg_id);
    }
    /// A durable definition changed. Written and synced before this returns: declarations are
    /// rare and their -ok must mean durable.
    fn define(&mut self, definition: &Definition);
    /// True when the definitions written since the last compaction outweigh the state they
    /// describe enough for `compact_definitions` to be worth its write.
    fn definitions_compaction_due(&self) -> bool {
        false
    }
    /// Replaces every definition written so far with `snapshot`, the broker's whole durable state
    /// (`Broker::definitions_snapshot`), synced before this returns. A crash part-way leaves
    /// the old records, or a later part of them, followed by the snapshot: replaying that gives
    /// the same state, as each snapshot record overwrites what it names.
    fn compact_definitions(&mut self, snapshot: &[Definition]) {
        let _ = snapshot;
    }
    /// The highest sequence number handed out so far.
    fn written(&self) -> u64;
    /// Starts a group commit of everything appended so far, or None when no confirm waits for
    /// one and `force` is false (acks and delivery marks alone are synced only when forced, i.e.
    /// periodically and at shutdown). The job runs without the broker lock; its result goes to
    /// `Broker::journal_synced` (or `journal_failed`).
    fn begin_sync(&mut self, force: bool) -> Option<Box<dyn SyncJob>> {
        let _ = force;
        None
    }
    /// A job from `begin_sync` failed: refuse every further write.
    fn sync_failed(&mut self, error: &str) {
        let _ = error;
    }
    /// True when even a forced `begin_sync` would find nothing to do, so the syncer may sleep
    /// until `kick` is called rather than look again periodically.
    fn idle(&self) -> bool {
        true
    }
    /// Sets what to call when the journal stops being idle by other means than a publish (the
    /// broker's callers wake the syncer for those themselves): the first ack record since the
    /// last sync. Called with the broker lock held; it must not take it.
    fn set_kick(&mut self, kick: Box<dyn Fn() + Send>) {
        let _ = kick;
    }
}

/// The fsync part of a group commit, run off the broker lock.
pub trait SyncJob: Send {
    /// The sequence number this job makes durable; everything up to it is already written to the
    /// OS when the job is handed out (it survives a crash of the process, not of the machine).
    fn target(&self) -> u64;
    /// Makes the journal durable; returns the sequence number now on stable storage.
    fn run(self: Box<Self>) -> Result<u64, String>;
}

/// The journal of a broker that keeps nothing (tests, transient-only use).
#[derive(Debug, Default)]
pub struct NullJournal;

impl Journal for NullJournal {
    fn publish(&mut self, _: MessageId, _: &[QueueId], _: &Message, _: Option<u64>) -> u64 {
        0
    }
    fn remove(&mut self, _: QueueId, _: MessageId) {}
    fn delivered(&mut self, _: QueueId, _: MessageId) {}
    fn define(&mut self, _: &Definition) {}
    fn written(&self) -> u64 {
        0
    }
}

// ---- record formats ------------------------------------------------------------------------------

/// Record types in the message log.
pub const RECORD_MESSAGE: u8 = 1;
/// A message record preceded by its arrival time: `arrival_ms u64 | <RECORD_MESSAGE payload>`.
/// Written for messages with a deadline (TTL) in a durable queue, so recovery can restore it.
pub const RECORD_MESSAGE_TIMED: u8 = 5;
/// A transient message (or one in a non-durable queue) written only so that its body can leave
/// memory (paging); same payload as `RECORD_MESSAGE`. Recovery skips it.
pub const RECORD_TRANSIENT: u8 = 6;
/// Record types in the ack log.
pub const RECORD_REMOVE: u8 = 2;
pub const RECORD_DELIVERED: u8 = 3;
/// One return of a message to a queue with a delivery limit (see `Journal::returned`).
pub const RECORD_RETURNED: u8 = 7;
/// Record type in the definitions log.
pub const RECORD_DEFINITION: u8 = 4;

/// Message record payload, big-endian: `msg_id u64 | queue_count u16 | queue_id u64 * n |
/// exchange (u8 length, bytes) | routing_key (u8 length, bytes) | properties (u32 length, bytes) |
/// body (the rest)`. The body is the last part so the writer can pass it without copying it.
pub fn encode_message_head(msg_id: MessageId, queues: &[QueueId], m: &Message, out: &mut BytesMut) {
    out.put_u64(msg_id);
    out.put_u16(queues.len() as u16);
    for q in queues {
        out.put_u64(*q);
    }
    put_short(out, &m.exchange);
    put_short(out, &m.routing_key);
    out.put_u32(m.properties.len() as u32);
    out.put_slice(&m.properties);
}

fn put_short(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(b.len() as u8);
    out.put_slice(b);
}

/// A decoded message record.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub msg_id: MessageId,
    pub queues: Vec<QueueId>,
    pub message: Message,
    /// When it was published (broker milliseconds); recorded only when it had a deadline.
    pub arrival_ms: Option<u64>,
}

/// Decodes a message record of type `RECORD_MESSAGE` or `RECORD_MESSAGE_TIMED`; None when it is
/// malformed (the log's CRC passed, so this means a bug or a format mismatch, reported by the
/// caller) or of another type.
pub fn decode_message(record_type: u8, payload: Bytes) -> Option<MessageRecord> {
    let mut b = payload;
    let need = |b: &Bytes, n: usize| b.remaining() >= n;
    let arrival_ms = match record_type {
        RECORD_MESSAGE | RECORD_TRANSIENT => None,
        RECORD_MESSAGE_TIMED if need(&b, 8) => Some(b.get_u64()),
        _ => return None,
    };
    if !need(&b, 10) {
        return None;
    }
    let msg_id = b.get_u64();
    let n = b.get_u16() as usize;
    if !need(&b, n * 8) {
        return None;
    }
    let queues = (0..n).map(|_| b.get_u64()).collect();
    let short = |b: &mut Bytes| -> Option<String> {
        if !need(b, 1) {
            return None;
        }
        let len = b.get_u8() as usize;
        if !need(b, len) {
            return None;
        }
        String::from_utf8(b.split_to(len).to_vec()).ok()
    };
    let exchange = short(&mut b)?;
    let routing_key = short(&mut b)?;
    if !need(&b, 4) {
        return None;
    }
    let plen = b.get_u32() as usize;
    if !need(&b, plen) {
        return None;
    }
    let properties = b.split_to(plen);
    let summary = amqp_codec::PropertiesSummary::scan(&properties).ok()?;
    Some(MessageRecord {
        msg_id,
        queues,
        message: Message::new(exchange, routing_key, properties, summary, b),
        arrival_ms,
    })
}

/// Ack-log record payload: `queue_id u64 | msg_id u64`.
pub fn encode_ref(queue: QueueId, msg_id: MessageId) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&queue.to_be_bytes());
    a[8..].copy_from_slice(&msg_id.to_be_bytes());
    a
}

pub fn decode_ref(payload: &[u8]) -> Option<(QueueId, MessageId)> {
    if payload.len() != 16 {
        return None;
    }
    let q = u64::from_be_bytes(payload[..8].try_into().ok()?);
    let m = u64::from_be_bytes(payload[8..].try_into().ok()?);
    Some((q, m))
}

/// Definitions are stored as AMQP field tables: self-describing, so fields can be added later.
pub fn encode_definition(d: &Definition) -> BytesMut {
    let mut t = FieldTable::new();
    let s = |v: &str| FieldValue::from(v);
    let mut binding =
        |kind: &str, vhost: &str, source: &str, to_queue: bool, dest: &str, rk: &str, args: &FieldTable| {
            t.insert("t", s(kind));
            t.insert("vhost", s(vhost));
            t.insert("source", s(source));
            t.insert("to_queue", FieldValue::Bool(to_queue));
            t.insert("destination", s(dest));
            t.insert("routing_key", s(rk));
            t.insert("arguments", FieldValue::Table(args.clone()));
        };
    match d {
        Definition::Binding { vhost, source, to_queue, destination, routing_key, arguments } => {
            binding("binding", vhost, source, *to_queue, destination, routing_key, arguments)
        }
        Definition::BindingDeleted { vhost, source, to_queue, destination, routing_key, arguments } => {
            binding("binding-deleted", vhost, source, *to_queue, destination, routing_key, arguments)
        }
        Definition::Vhost { name } => {
            t.insert("t", s("vhost"));
            t.insert("name", s(name));
        }
        Definition::VhostDeleted { name } => {
            t.insert("t", s("vhost-deleted"));
            t.insert("name", s(name));
        }
        Definition::Exchange { vhost, name, kind, auto_delete, internal, arguments } => {
            t.insert("t", s("exchange"));
            t.insert("vhost", s(vhost));
            t.insert("name", s(name));
            t.insert("kind", s(kind.as_str()));
            t.insert("auto_delete", FieldValue::Bool(*auto_delete));
            t.insert("internal", FieldValue::Bool(*internal));
            t.insert("arguments", FieldValue::Table(arguments.clone()));
        }
        Definition::ExchangeDeleted { vhost, name } => {
            t.insert("t", s("exchange-deleted"));
            t.insert("vhost", s(vhost));
            t.insert("name", s(name));
        }
        Definition::Queue { id, vhost, name, auto_delete, arguments } => {
            t.insert("t", s("queue"));
            t.insert("id", FieldValue::I64(*id as i64));
            t.insert("vhost", s(vhost));
            t.insert("name", s(name));
            t.insert("auto_delete", FieldValue::Bool(*auto_delete));
            t.insert("arguments", FieldValue::Table(arguments.clone()));
        }
        Definition::QueueDeleted { id } => {
            t.insert("t", s("queue-deleted"));
            t.insert("id", FieldValue::I64(*id as i64));
        }
        Definition::User { .. }
        | Definition::UserLimits { .. }
        | Definition::UserDeleted { .. }
        | Definition::Permission { .. }
        | Definition::PermissionCleared { .. }
        | Definition::TopicPermission { .. }
        | Definition::TopicPermissionCleared { .. }
        | Definition::VhostMetadata { .. } => crate::auth::encode_definition(d, &mut t),
        Definition::Policy { vhost, name, pattern, apply_to, priority, definition, operator } => {
            t.insert("t", s("policy"));
            t.insert("vhost", s(vhost));
            t.insert("name", s(name));
            t.insert("pattern", s(pattern));
            t.insert("apply_to", s(apply_to));
            t.insert("priority", FieldValue::I64(*priority));
            t.insert("definition", FieldValue::Table(definition.clone()));
            t.insert("operator", FieldValue::Bool(*operator));
        }
        Definition::PolicyDeleted { vhost, name, operator } => {
            t.insert("t", s("policy-deleted"));
            t.insert("vhost", s(vhost));
            t.insert("name", s(name));
            t.insert("operator", FieldValue::Bool(*operator));
        }
        Definition::QueueIdFloor { next } => {
            t.insert("t", s("queue-id-floor"));
            t.insert("next", FieldValue::I64(*next as i64));
        }
        Definition::VhostLimits { vhost, max_connections, max_queues } => {
            t.insert("t", s("vhost-limits"));
            t.insert("vhost", s(vhost));
            if let Some(n) = max_connections {
                t.insert("max-connections", FieldValue::I64(*n));
            }
            if let Some(n) = max_queues {
                t.insert("max-queues", FieldValue::I64(*n));
            }
        }
        Definition::GlobalParameter { name, value } => {
            t.insert("t", s("global-parameter"));
            t.insert("name", s(name));
            t.insert("value", s(value));
        }
        Definition::GlobalParameterCleared { name } => {
            t.insert("t", s("global-parameter-cleared"));
            t.insert("name", s(name));
        }
    }
    let mut out = BytesMut::new();
    // Encoding a table of short keys cannot fail.
    let _ = t.encode(&mut out);
    out
}

pub fn decode_definition(payload: &[u8]) -> Option<Definition> {
    let t = FieldTable::from_wire(payload).ok()?;
    let s = |k: &str| t.get(k).and_then(FieldValue::as_str).map(str::to_owned);
    let b = |k: &str| t.get(k).and_then(FieldValue::as_bool).unwrap_or(false);
    let table = |k: &str| match t.get(k) {
        Some(FieldValue::Table(x)) => x.clone(),
        _ => FieldTable::new(),
    };
    let id = || t.get("id").and_then(FieldValue::as_i64).map(|i| i as u64);
    Some(match s("t")?.as_str() {
        "vhost" => Definition::Vhost { name: s("name")? },
        "vhost-deleted" => Definition::VhostDeleted { name: s("name")? },
        "exchange" => Definition::Exchange {
            vhost: s("vhost")?,
            name: s("name")?,
            kind: ExchangeKind::parse(&s("kind")?)?,
            auto_delete: b("auto_delete"),
            internal: b("internal"),
            arguments: table("arguments"),
        },
        "exchange-deleted" => Definition::ExchangeDeleted { vhost: s("vhost")?, name: s("name")? },
        "queue" => Definition::Queue {
            id: id()?,
            vhost: s("vhost")?,
            name: s("name")?,
            auto_delete: b("auto_delete"),
            arguments: table("arguments"),
        },
        "queue-deleted" => Definition::QueueDeleted { id: id()? },
        kind @ ("binding" | "binding-deleted") => {
            let (vhost, source, to_queue, destination, routing_key, arguments) =
                (s("vhost")?, s("source")?, b("to_queue"), s("destination")?, s("routing_key")?, table("arguments"));
            if kind == "binding" {
                Definition::Binding { vhost, source, to_queue, destination, routing_key, arguments }
            } else {
                Definition::BindingDeleted { vhost, source, to_queue, destination, routing_key, arguments }
            }
        }
        "policy" => Definition::Policy {
            vhost: s("vhost")?,
            name: s("name")?,
            pattern: s("pattern")?,
            apply_to: s("apply_to")?,
            priority: t.get("priority").and_then(FieldValue::as_i64).unwrap_or(0),
            definition: table("definition"),
            operator: b("operator"),
        },
        "policy-deleted" => Definition::PolicyDeleted { vhost: s("vhost")?, name: s("name")?, operator: b("operator") },
        "vhost-limits" => Definition::VhostLimits {
            vhost: s("vhost")?,
            max_connections: t.get("max-connections").and_then(FieldValue::as_i64),
            max_queues: t.get("max-queues").and_then(FieldValue::as_i64),
        },
        "global-parameter" => Definition::GlobalParameter { name: s("name")?, value: s("value")? },
        "global-parameter-cleared" => Definition::GlobalParameterCleared { name: s("name")? },
        "queue-id-floor" => Definition::QueueIdFloor { next: t.get("next").and_then(FieldValue::as_i64)? as u64 },
        other => return crate::auth::decode_definition(other, &t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_codec::BasicProperties;

    /// Proves message records and definitions decode to what was encoded.
    #[test]
    fn records_round_trip() {
        let props = BasicProperties { delivery_mode: Some(2), message_id: Some("m".into()), ..Default::default() };
        let m = Message::with_properties("ex", "rk", &props, Bytes::from_static(b"body"));
        let mut head = BytesMut::new();
        encode_message_head(7, &[3, 4], &m, &mut head);
        head.extend_from_slice(&m.body);
        let mut timed = BytesMut::new();
        timed.put_u64(1_700_000_000_123);
        timed.extend_from_slice(&head);
        let t = decode_message(RECORD_MESSAGE_TIMED, timed.freeze()).expect("decodes");
        assert_eq!((t.msg_id, t.arrival_ms, &t.message.body), (7, Some(1_700_000_000_123), &m.body));
        let r = decode_message(RECORD_MESSAGE, head.freeze()).expect("decodes");
        assert_eq!((r.msg_id, r.queues.clone(), r.arrival_ms), (7, vec![3, 4], None));
        assert_eq!((r.message.exchange.as_str(), r.message.routing_key.as_str()), ("ex", "rk"));
        assert_eq!((&r.message.properties, &r.message.body), (&m.properties, &m.body));
        let defs = [
            Definition::Vhost { name: "/".into() },
            Definition::Exchange {
                vhost: "/".into(),
                name: "x".into(),
                kind: ExchangeKind::Topic,
                auto_delete: true,
                internal: false,
                arguments: FieldTable(vec![("alternate-exchange".into(), "ae".into())]),
            },
            Definition::Queue {
                id: 9,
                vhost: "/".into(),
                name: "q".into(),
                auto_delete: false,
                arguments: FieldTable::new(),
            },
            Definition::QueueDeleted { id: 9 },
            Definition::Binding {
                vhost: "/".into(),
                source: "x".into(),
                to_queue: true,
                destination: "9".into(),
                routing_key: "a.#".into(),
                arguments: FieldTable::new(),
            },
            Definition::GlobalParameter { name: "cluster_name".into(), value: "\"c\"".into() },
            Definition::GlobalParameterCleared { name: "cluster_name".into() },
        ];
        for d in defs {
            assert_eq!(decode_definition(&encode_definition(&d)), Some(d));
        }
        assert_eq!(decode_ref(&encode_ref(5, 6)), Some((5, 6)));
    }
}
