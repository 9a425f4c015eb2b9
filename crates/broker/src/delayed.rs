//! Delayed delivery: the `x-delayed-message` exchange type of RabbitMQ's delayed-message plugin.
//! A message published to such an exchange with a positive integer `x-delay` header (ms) is held
//! until it is due, then routed by the exchange's `x-delayed-type` (direct, fanout, topic or
//! headers) as if published then. Without the header, or with a delay of 0 or less, it is
//! routed at once.
//!
//! Better than the plugin:
//! - Durable: a persistent message held by a durable delayed exchange is journaled like a queued
//!   message, under a store id derived from the exchange's vhost and name (ids with the top bit
//!   set never collide with queue ids). Recovery puts it back with its original due time
//!   (arrival + x-delay), so it survives restart and `kill -9`; its publisher confirm waits for
//!   fsync. When it comes due, its journal entry is removed only once the routed copy is on disk.
//! - Flat memory: beyond the memory budget (`queue_memory_bytes_max`), a held persistent message
//!   keeps only its journal location (the body is read back when due), about 48 bytes each.
//! - `mandatory` is honoured: a message no queue would take at publish time is returned at once
//!   (basic.return) instead of being held; the plugin cannot return messages.
//! - Timing: held messages sit in one min-heap by due time; the broker's timer fires at the
//!   earliest, so a message is routed within a few milliseconds of its due time.

use crate::HashMap;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use amqp_codec::FieldValue;

use crate::journal::MessageId;
use crate::message::Message;
use crate::{Broker, Effects, QueueId};

/// The journal's store id for the messages a delayed exchange holds: FNV-1a of vhost and name,
/// with the top bit set (queue ids count up from 1).
pub fn store_id(vhost: &str, exchange: &str) -> QueueId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in vhost.bytes().chain([0xff]).chain(exchange.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | (1 << 63)
}

/// The `x-delay` of a message, in ms, when it asks to be held (positive).
pub fn delay_of(message: &Message) -> Option<u64> {
    message.summary.headers?;
    let delay = match message.headers()?.get("x-delay")? {
        v @ FieldValue::LongStr(_) => v.as_str()?.trim().parse::<i64>().ok()?,
        v => v.as_i64()?,
    };
    u64::try_from(delay).ok().filter(|&d| d > 0)
}

/// Memory a held message costs: its bytes plus the allocations around them.
fn footprint(m: &Message) -> usize {
    m.size_bytes() + 160
}

#[derive(Debug)]
enum Body {
    Held(Arc<Message>),
    /// Location of the journal record (see `Journal::read`).
    OnDisk(u64),
}

#[derive(Debug)]
struct Pending {
    due_ms: u64,
    seq: u64,
    store: QueueId,
    /// 0 when not journaled.
    msg_id: MessageId,
    body: Body,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ms, self.seq) == (other.due_ms, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due_ms, self.seq).cmp(&(other.due_ms, other.seq))
    }
}

/// Every message held by the delayed exchanges of the broker.
#[derive(Debug, Default)]
pub struct Delayed {
    heap: BinaryHeap<Reverse<Pending>>,
    /// Store id → (vhost, exchange) of each delayed exchange.
    stores: HashMap<QueueId, (String, String)>,
    /// Memory held by messages kept in memory (see `footprint`).
    held_bytes: usize,
    next_seq: u64,
    /// (journal seq, store, msg id): entries to remove once the routed copies are synced.
    removals: VecDeque<(u64, QueueId, MessageId)>,
}

impl Delayed {
    /// Messages held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Messages held by one exchange (O(n): for listings and tests).
    pub fn held_by(&self, vhost: &str, exchange: &str) -> usize {
        let id = store_id(vhost, exchange);
        self.heap.iter().filter(|Reverse(p)| p.store == id).count()
    }

    /// The earliest due time.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(p)| p.due_ms)
    }

    /// True when no delayed-message exchange exists (publishes need not look).
    pub fn is_registered_empty(&self) -> bool {
        self.stores.is_empty()
    }

    pub(crate) fn register(&mut self, vhost: &str, exchange: &str) {
        self.stores.insert(store_id(vhost, exchange), (vhost.to_owned(), exchange.to_owned()));
    }
}

impl Broker {
    /// Holds a message published to delayed exchange `exchange` of `vhost` until `due_ms`;
    /// journals it when persistent and the exchange durable. Returns the journal sequence the
    /// publisher confirm must wait for.
    pub(crate) fn hold_delayed(&mut self, vhost: &str, durable: bool, message: Arc<Message>, due_ms: u64) -> u64 {
        let store = store_id(vhost, &message.exchange);
        self.delayed.register(vhost, &message.exchange);
        let (mut msg_id, mut jseq, mut location) = (0, 0, None);
        if durable && message.is_persistent() {
            msg_id = self.next_msg_id;
            self.next_msg_id += 1;
            jseq = self.journal.publish(msg_id, &[store], &message, Some(self.now_ms));
            location = self.journal.last_location();
        }
        self.push_delayed(store, msg_id, message, location, due_ms);
        jseq
    }

    fn push_delayed(
        &mut self,
        store: QueueId,
        msg_id: MessageId,
        message: Arc<Message>,
        location: Option<u64>,
        due_ms: u64,
    ) {
        let budget = self.config.queue_memory_bytes_max;
        let body = match location {
            Some(loc) if self.delayed.held_bytes + footprint(&message) > budget => Body::OnDisk(loc),
            _ => {
                self.delayed.held_bytes += footprint(&message);
                Body::Held(message)
            }
        };
        let seq = self.delayed.next_seq;
        self.delayed.next_seq += 1;
        self.delayed.heap.push(Reverse(Pending { due_ms, seq, store, msg_id, body }));
        if due_ms < self.timer_wake_ms {
            self.timer_wake_ms = due_ms;
            self.wake_pending = true;
        }
    }

    /// Recovery: a journaled delayed message of store `store`, published at `arrival_ms`. False
    /// when `store` is not a delayed exchange's.
    pub(crate) fn restore_delayed(
        &mut self,
        store: QueueId,
        msg_id: MessageId,
        message: &Arc<Message>,
        arrival_ms: Option<u64>,
        location: Option<u64>,
    ) -> bool {
        if !self.delayed.stores.contains_key(&store) {
            return false;
        }
        let due = arrival_ms.unwrap_or(0).saturating_add(delay_of(message).unwrap_or(0)).saturating_add(1);
        self.push_delayed(store, msg_id, message.clone(), location, due);
        true
    }

    /// Routes the held messages that are due (called by `tick`).
    pub(crate) fn release_delayed(&mut self, fx: &mut Effects) {
        let now = self.now_ms;
        while self.delayed.next_due_ms().is_some_and(|d| d <= now) {
            let Some(Reverse(p)) = self.delayed.heap.pop() else { break };
            let message = match p.body {
                Body::Held(m) => {
                    self.delayed.held_bytes -= footprint(&m);
                    m
                }
                Body::OnDisk(loc) => match self.journal.read(loc) {
                    Some(m) => Arc::new(m),
                    None => {
                        self.page_in_failures += 1;
                        continue;
                    }
                },
            };
            let Some((vhost, _)) = self.delayed.stores.get(&p.store).cloned() else { continue };
            let mut routed = Vec::new();
            if let Some(v) = self.vhosts.get(&vhost) {
                v.route(&message.exchange, &message.routing_key, &message, &mut routed);
            }
            let (jseq, _) = self.enqueue(&mut routed, message, fx);
            if p.msg_id != 0 {
                if jseq == 0 || jseq <= self.synced_seq {
                    self.journal.remove(p.store, p.msg_id);
                } else {
                    self.delayed.removals.push_back((jseq, p.store, p.msg_id));
                }
            }
        }
    }

    /// The journal is synced to `seq`: routed copies are safe, so their held originals go.
    pub(crate) fn delayed_synced(&mut self, seq: u64) {
        while let Some(&(jseq, store, msg_id)) = self.delayed.removals.front() {
            if jseq > seq {
                break;
            }
            self.delayed.removals.pop_front();
            self.journal.remove(store, msg_id);
        }
    }

    /// A delayed exchange is deleted: the messages it holds go with it.
    pub(crate) fn drop_delayed(&mut self, vhost: &str, exchange: &str) {
        let store = store_id(vhost, exchange);
        if self.delayed.stores.remove(&store).is_none() {
            return;
        }
        let heap = std::mem::take(&mut self.delayed.heap);
        let mut kept = Vec::with_capacity(heap.len());
        for Reverse(p) in heap {
            if p.store != store {
                kept.push(Reverse(p));
                continue;
            }
            if let Body::Held(m) = &p.body {
                self.delayed.held_bytes -= footprint(m);
            }
            if p.msg_id != 0 {
                self.journal.remove(store, p.msg_id);
            }
        }
        self.delayed.heap = kept.into();
    }

    /// Messages held by delayed exchanges.
    pub fn delayed(&self) -> &Delayed {
        &self.delayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ids_are_stable_and_apart_from_queue_ids() {
        assert_eq!(store_id("/", "delayed"), store_id("/", "delayed"));
        assert_ne!(store_id("/", "delayed"), store_id("/", "delayed2"));
        assert_ne!(store_id("a", "bc"), store_id("ab", "c"));
        assert!(store_id("/", "x") >= 1 << 63);
    }
}
