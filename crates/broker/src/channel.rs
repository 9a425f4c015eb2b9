//! The broker's side of an AMQP channel: delivery tags, unacknowledged deliveries, prefetch,
//! publisher-confirm sequence numbers, and the transaction buffer. Protocol framing state
//! (content assembly, open/closing) belongs to the server.

use crate::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::message::Message;
use crate::queue::QueuedMessage;
use crate::QueueId;

/// A delivery awaiting ack, nack or reject.
#[derive(Debug, Clone)]
pub struct Unacked {
    pub delivery_tag: u64,
    pub queue: QueueId,
    pub entry: QueuedMessage,
    /// None for basic.get deliveries.
    pub consumer_tag: Option<Arc<str>>,
    /// When the acknowledgement timeout closes the channel (broker ms); 0 for never.
    pub deadline_ms: u64,
    /// The timeout that set `deadline_ms`, for the error text.
    pub timeout_ms: u64,
}

/// Something sent once the journal is durable far enough.
#[derive(Debug, Clone)]
pub enum Deferred {
    /// A publisher confirm for this publish sequence number.
    Confirm(u64),
    /// A negative publisher confirm (basic.nack): a queue refused the message.
    Nack(u64),
    /// A method reply (tx.commit-ok).
    Reply(amqp_codec::Method),
}

impl Deferred {
    /// The outbound form; `ok` false turns a confirm into a nack (a reply stays a reply).
    pub fn into_outbound(self, channel: u16, ok: bool) -> crate::Outbound {
        match self {
            Deferred::Confirm(tag) => crate::Outbound::Confirm { channel, delivery_tag: tag, ack: ok },
            Deferred::Nack(tag) => crate::Outbound::Confirm { channel, delivery_tag: tag, ack: false },
            Deferred::Reply(method) => crate::Outbound::Method { channel, method },
        }
    }
}

/// What a transaction holds until commit.
#[derive(Debug, Clone)]
pub enum TxOp {
    Publish { mandatory: bool, message: Message },
    Ack { delivery_tag: u64, multiple: bool },
    Nack { delivery_tag: u64, multiple: bool, requeue: bool },
}

#[derive(Debug, Default)]
pub struct Channel {
    pub next_delivery_tag: u64,
    /// Sorted by delivery tag, since tags only grow.
    pub unacked: VecDeque<Unacked>,
    /// Unacked deliveries to consumers (not basic.get), counted against `global_prefetch`.
    pub consumer_unacked: u32,
    /// basic.qos global=false: applies to consumers started after it, and to the running ones.
    pub prefetch_count: u16,
    /// basic.qos global=true: shared by all consumers of the channel.
    pub global_prefetch: u16,
    pub consumers: HashMap<Arc<str>, QueueId>,
    /// The tag of this channel's direct reply-to consumer, if any.
    pub reply_consumer: Option<Arc<str>>,
    pub confirm: bool,
    pub next_publish_seq: u64,
    /// Publisher confirms (and tx.commit-oks) not yet sent, in order, each with the journal
    /// sequence number that must be synced first.
    pub confirms: VecDeque<(Deferred, u64)>,
    pub tx: Option<Vec<TxOp>>,
    /// channel.flow: false stops deliveries.
    pub flow_active: bool,
    /// Message counters and rates (see `stats.rs`).
    pub stats: crate::stats::MessageStats,
    /// The deadline of this channel's live entry in the broker's ack timers (`ack_timeout.rs`);
    /// `u64::MAX` when it has none.
    pub ack_timer_ms: u64,
    /// The queue this channel declared last: what an empty queue name means in queue.bind,
    /// queue.unbind, queue.purge, queue.delete, basic.consume and basic.get (RabbitMQ's
    /// shortcut; aioamqp's tests rely on it).
    pub last_queue: Option<String>,
}

impl Channel {
    pub fn new() -> Self {
        Channel { flow_active: true, ack_timer_ms: u64::MAX, ..Default::default() }
    }

    pub fn next_tag(&mut self) -> u64 {
        self.next_delivery_tag += 1;
        self.next_delivery_tag
    }

    /// True when channel-wide limits let one more delivery through.
    pub fn can_deliver(&self) -> bool {
        self.flow_active && (self.global_prefetch == 0 || self.consumer_unacked < self.global_prefetch as u32)
    }

    /// Removes and returns the deliveries an ack/nack of `delivery_tag` settles, or None when the
    /// tag is unknown. Tag 0 with `multiple` means every outstanding delivery.
    pub fn take_unacked(&mut self, delivery_tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        if multiple {
            if delivery_tag == 0 {
                return Some(self.unacked.drain(..).collect());
            }
            if delivery_tag > self.next_delivery_tag {
                return None;
            }
            let n = self.unacked.partition_point(|u| u.delivery_tag <= delivery_tag);
            if n == 0 {
                return None;
            }
            Some(self.unacked.drain(..n).collect())
        } else {
            let i = self.unacked.binary_search_by_key(&delivery_tag, |u| u.delivery_tag).ok()?;
            self.unacked.remove(i).map(|u| vec![u])
        }
    }
}
