//! A queue: its ready messages in order, its consumers, and the counters the protocol reports.
//! `ready` is kept sorted by sequence number so a requeued message returns to its original place.
//! The queue holds no AMQP channel state; delivery bookkeeping lives in `channel.rs`.

use std::collections::VecDeque;
use std::sync::Arc;

use amqp_codec::FieldTable;

use crate::message::Message;
use crate::{ConnectionId, QueueId};

/// A message waiting in (or taken from) a queue.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Position in the queue's publish order; requeue restores this order.
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// The journal's id for this message in this queue; 0 when not journaled.
    pub msg_id: crate::MessageId,
}

#[derive(Debug, Clone)]
pub struct Consumer {
    pub conn: ConnectionId,
    pub channel: u16,
    pub tag: Arc<str>,
    pub no_ack: bool,
    pub exclusive: bool,
    /// basic.qos prefetch_count (global=false) in force when the consumer started; 0 = unlimited.
    pub prefetch_count: u16,
    pub unacked: u32,
    pub arguments: FieldTable,
    /// The consuming connection's write credit.
    pub credit: Arc<crate::WriteCredit>,
}

#[derive(Debug)]
pub struct Queue {
    pub id: QueueId,
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub exclusive_owner: Option<ConnectionId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    pub ready: VecDeque<QueuedMessage>,
    pub ready_bytes: usize,
    pub unacked_count: usize,
    pub consumers: Vec<Consumer>,
    /// Round-robin position among consumers.
    pub next_consumer: usize,
    /// An auto-delete queue is deleted when its last consumer goes, only once it has had one.
    pub had_consumer: bool,
    next_seq: u64,
}

impl Queue {
    pub fn new(
        id: QueueId,
        vhost: &str,
        name: &str,
        durable: bool,
        exclusive_owner: Option<ConnectionId>,
        auto_delete: bool,
        arguments: FieldTable,
    ) -> Self {
        Queue {
            id,
            vhost: vhost.to_owned(),
            name: name.to_owned(),
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            ready: VecDeque::new(),
            ready_bytes: 0,
            unacked_count: 0,
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumer: false,
            next_seq: 0,
        }
    }

    pub fn push(&mut self, message: Arc<Message>, msg_id: crate::MessageId) {
        self.push_restored(message, msg_id, false);
    }

    /// Appends a message (also used by recovery, where it may already have been delivered once).
    pub fn push_restored(&mut self, message: Arc<Message>, msg_id: crate::MessageId, redelivered: bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready_bytes += message.body.len();
        self.ready.push_back(QueuedMessage { seq, message, redelivered, msg_id });
    }

    pub fn pop(&mut self) -> Option<QueuedMessage> {
        let m = self.ready.pop_front()?;
        self.ready_bytes -= m.message.body.len();
        Some(m)
    }

    /// Puts a message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMessage) {
        m.redelivered = true;
        self.ready_bytes += m.message.body.len();
        // Requeues are usually of the oldest messages, so search from the front.
        let pos = self.ready.partition_point(|x| x.seq < m.seq);
        self.ready.insert(pos, m);
    }

    /// Removes every ready message; returns them so their journal entries can be removed.
    pub fn purge(&mut self) -> VecDeque<QueuedMessage> {
        self.ready_bytes = 0;
        std::mem::take(&mut self.ready)
    }

    /// Persistent messages in this queue are journaled: it is durable and not exclusive (an
    /// exclusive queue dies with its connection, so never outlives a restart).
    pub fn is_journaled(&self) -> bool {
        self.durable && self.exclusive_owner.is_none()
    }

    pub fn message_count(&self) -> u32 {
        self.ready.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.consumers.len() as u32
    }

    pub fn has_exclusive_consumer(&self) -> bool {
        self.consumers.iter().any(|c| c.exclusive)
    }

    pub fn consumer_mut(&mut self, conn: ConnectionId, channel: u16, tag: &str) -> Option<&mut Consumer> {
        self.consumers.iter_mut().find(|c| c.conn == conn && c.channel == channel && &*c.tag == tag)
    }

    /// Invariants, checked after mutation in debug builds.
    pub fn invariants(&self) {
        debug_assert!(self.ready.iter().zip(self.ready.iter().skip(1)).all(|(a, b)| a.seq < b.seq));
        debug_assert_eq!(self.ready_bytes, self.ready.iter().map(|m| m.message.body.len()).sum::<usize>());
    }
}
