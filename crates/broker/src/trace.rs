//! The firehose tracer (RabbitMQ's `rabbitmqctl trace_on`): while a vhost traces, a copy of every
//! message published in it goes to its `amq.rabbitmq.trace` exchange with routing key
//! `publish.<exchange>`, and a copy of every delivery (to a consumer or basic.get) with
//! `deliver.<queue>`. A copy keeps the body (shared, not copied) and carries the original's
//! exchange, routing key, properties and more in its headers, as RabbitMQ's do. Messages published
//! to the trace exchange itself are never traced, so a consumer of a trace queue makes no loop.
//! Tracing is per node and not persisted: a restart turns it off, as in RabbitMQ.
//!
//! Costs nothing while no vhost traces: the hot paths test one counter.

use std::sync::Arc;

use amqp_codec::{BasicProperties, FieldTable, FieldValue};
use bytes::Bytes;

use crate::error::{AmqpError, Result};
use crate::message::Message;
use crate::{Broker, ConnectionId, Effects};

/// Every vhost's trace exchange: topic, durable, internal (clients bind to it, never publish).
pub const TRACE_EXCHANGE: &str = "amq.rabbitmq.trace";

/// A copy waiting to be published when the current call's dispatch is done.
#[derive(Debug)]
pub(crate) struct PendingTrace {
    pub deliver: bool,
    pub vhost: String,
    /// The exchange published to, or the queue delivered from.
    pub name: String,
    pub message: Arc<Message>,
    pub redelivered: bool,
    pub conn: ConnectionId,
    pub channel: u16,
    /// Publishes: the queues the message was routed to.
    pub routed: Vec<String>,
}

fn longstr(s: &str) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(s.as_bytes()))
}

/// The original's properties as a table, with the basic properties' names (as RabbitMQ's trace).
fn properties_table(m: &Message) -> FieldTable {
    let p = BasicProperties::decode(&m.properties).unwrap_or_default();
    let mut t = FieldTable::new();
    let mut s = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            t.insert(k, longstr(v));
        }
    };
    s("content_type", &p.content_type);
    s("content_encoding", &p.content_encoding);
    s("correlation_id", &p.correlation_id);
    s("reply_to", &p.reply_to);
    s("expiration", &p.expiration);
    s("message_id", &p.message_id);
    s("type", &p.kind);
    s("user_id", &p.user_id);
    s("app_id", &p.app_id);
    s("cluster_id", &p.cluster_id);
    if let Some(h) = p.headers {
        t.insert("headers", FieldValue::Table(h));
    }
    if let Some(d) = p.delivery_mode {
        t.insert("delivery_mode", FieldValue::U8(d));
    }
    if let Some(pr) = p.priority {
        t.insert("priority", FieldValue::U8(pr));
    }
    if let Some(ts) = p.timestamp {
        t.insert("timestamp", FieldValue::Timestamp(ts));
    }
    t
}

impl Broker {
    /// `rabbitmqctl trace_on` / `trace_off` (and the `tracing` field of PUT /api/vhosts).
    pub fn set_tracing(&mut self, vhost: &str, on: bool) -> Result<()> {
        let v = self.vhosts.get_mut(vhost).ok_or_else(|| AmqpError::not_found(format!("no vhost '{vhost}'")))?;
        if v.tracing != on {
            v.tracing = on;
            if on {
                self.tracing_vhosts += 1;
            } else {
                self.tracing_vhosts -= 1;
            }
        }
        Ok(())
    }

    pub fn is_tracing(&self, vhost: &str) -> bool {
        self.vhosts.get(vhost).is_some_and(|v| v.tracing)
    }

    /// Whether a publish to or a delivery of `message` in `vhost` is traced.
    pub(crate) fn traces(&self, vhost: &str, message: &Message) -> bool {
        self.tracing_vhosts != 0 && message.exchange != TRACE_EXCHANGE && self.is_tracing(vhost)
    }

    /// Publishes the copies queued during this call; returns whether there were any (their
    /// queues then need dispatch).
    pub(crate) fn flush_traces(&mut self, fx: &mut Effects) -> bool {
        if self.pending_traces.is_empty() {
            return false;
        }
        let node = self.config.node_name.clone();
        for t in std::mem::take(&mut self.pending_traces) {
            let (user, connection) = match self.connections.get(&t.conn) {
                Some(c) => {
                    (c.user.clone(), self.auth.connection_meta.get(&t.conn).map(|m| m.name.clone()).unwrap_or_default())
                }
                None => (String::new(), String::new()),
            };
            let m = &t.message;
            let mut h = FieldTable::new();
            h.insert("exchange_name", longstr(&m.exchange));
            h.insert("routing_keys", FieldValue::Array(vec![longstr(&m.routing_key)]));
            h.insert("properties", FieldValue::Table(properties_table(m)));
            h.insert("node", longstr(&node));
            h.insert("redelivered", FieldValue::I32(i32::from(t.redelivered)));
            h.insert("vhost", longstr(&t.vhost));
            h.insert("connection", longstr(&connection));
            h.insert("channel", FieldValue::I32(i32::from(t.channel)));
            h.insert("user", longstr(&user));
            if !t.deliver {
                h.insert("routed_queues", FieldValue::Array(t.routed.iter().map(|q| longstr(q)).collect()));
            }
            let props = BasicProperties { headers: Some(h), ..Default::default() };
            let key = format!("{}.{}", if t.deliver { "deliver" } else { "publish" }, t.name);
            let copy = Arc::new(Message::with_properties(TRACE_EXCHANGE, &key, &props, m.body.clone()));
            let Some(v) = self.vhosts.get(&t.vhost) else { continue };
            let mut routed = Vec::new();
            v.route(TRACE_EXCHANGE, &key, &copy, &mut routed);
            if !routed.is_empty() {
                self.enqueue(&mut routed, copy, fx);
            }
        }
        true
    }
}
