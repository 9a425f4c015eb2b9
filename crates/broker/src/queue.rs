//! A queue: its ready messages in order, its consumers, the arguments in force (TTL, dead-letter
//! exchange, length limits; see `features.rs`) and the counters the protocol reports.
//! `ready` is kept sorted by sequence number so a requeued message returns to its original place.
//! The queue holds no AMQP channel state (delivery bookkeeping lives in `channel.rs`) and decides
//! nothing about time: the broker tells it which deadlines passed.
//!
//! Paging: the ready messages of a journaled queue beyond its memory budget are kept as `Paged`
//! references to their records in the message log (24 bytes each, no body); the broker reads
//! them back (`Queue::page_in`) as consumers drain the in-memory head. Every paged entry comes
//! after every in-memory one in sequence order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use amqp_codec::FieldTable;

use crate::features::QueueFeatures;
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
    /// When the message expires, in the broker's milliseconds; 0 when it never does.
    pub expires_at_ms: u64,
    /// Expired in the middle of `ready`, left in place until compaction (see `Ready`).
    dead: bool,
}

impl QueuedMessage {
    /// True when the message has a deadline and it has come (a message is alive during the
    /// millisecond of its deadline only for the delivery attempt of its own publish; see
    /// `Broker::dispatch`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

/// The shared placeholder body of a tombstone, so an expired message's memory is freed at once.
fn tombstone() -> Arc<Message> {
    static EMPTY: OnceLock<Arc<Message>> = OnceLock::new();
    EMPTY
        .get_or_init(|| {
            Arc::new(Message::new(
                String::new(),
                String::new(),
                Default::default(),
                Default::default(),
                Default::default(),
            ))
        })
        .clone()
}

/// Tombstones are compacted away once there are more than this many and they outnumber the
/// live messages, so removal from the middle is amortised O(1) and memory at most doubles.
const TOMBSTONES_MIN: usize = 64;

/// The ready messages of a queue, in sequence order. Messages normally leave at the front; an
/// expired message in the middle is replaced by a tombstone (body dropped) instead of shifting
/// the deque, and tombstones are skipped and compacted lazily. The first and last entries are
/// never tombstones.
#[derive(Debug, Default)]
pub struct Ready {
    items: VecDeque<QueuedMessage>,
    dead: usize,
    bytes: usize,
}

impl Ready {
    /// Live messages.
    pub fn len(&self) -> usize {
        self.items.len() - self.dead
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Body bytes of the live messages (what `x-max-length-bytes` limits).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn front(&self) -> Option<&QueuedMessage> {
        self.items.front()
    }

    pub fn back(&self) -> Option<&QueuedMessage> {
        self.items.back()
    }

    /// Live messages in order.
    pub fn iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.items.iter().filter(|m| !m.dead)
    }

    fn push_back(&mut self, m: QueuedMessage) {
        self.bytes += m.message.body.len();
        self.items.push_back(m);
    }

    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let m = self.items.pop_front()?;
        self.bytes -= m.message.body.len();
        self.trim();
        Some(m)
    }

    pub fn pop_back(&mut self) -> Option<QueuedMessage> {
        let m = self.items.pop_back()?;
        self.bytes -= m.message.body.len();
        self.trim();
        Some(m)
    }

    /// Drops tombstones that reached either end.
    fn trim(&mut self) {
        while self.items.front().is_some_and(|m| m.dead) {
            self.items.pop_front();
            self.dead -= 1;
        }
        while self.items.back().is_some_and(|m| m.dead) {
            self.items.pop_back();
            self.dead -= 1;
        }
    }

    /// Inserts at the message's sequence position.
    fn insert(&mut self, m: QueuedMessage) {
        self.bytes += m.message.body.len();
        // Requeues are usually of the oldest messages; the search is logarithmic anyway.
        let pos = self.items.partition_point(|x| x.seq < m.seq);
        self.items.insert(pos, m);
    }

    /// Removes the live message with sequence number `seq`, if it is here.
    pub fn take(&mut self, seq: u64) -> Option<QueuedMessage> {
        let i = self.items.binary_search_by_key(&seq, |m| m.seq).ok()?;
        if self.items[i].dead {
            return None;
        }
        if i == 0 {
            return self.pop_front();
        }
        if i + 1 == self.items.len() {
            return self.pop_back();
        }
        let slot = &mut self.items[i];
        let message = std::mem::replace(&mut slot.message, tombstone());
        slot.dead = true;
        let taken = QueuedMessage { message, dead: false, ..slot.clone() };
        self.dead += 1;
        self.bytes -= taken.message.body.len();
        if self.dead > TOMBSTONES_MIN && self.dead * 2 > self.items.len() {
            self.items.retain(|m| !m.dead);
            self.dead = 0;
        }
        Some(taken)
    }

    /// Removes every live message, in order.
    fn drain(&mut self) -> Vec<QueuedMessage> {
        self.bytes = 0;
        self.dead = 0;
        std::mem::take(&mut self.items).into_iter().filter(|m| !m.dead).collect()
    }

    fn invariants(&self) {
        debug_assert!(self.items.iter().zip(self.items.iter().skip(1)).all(|(a, b)| a.seq < b.seq));
        debug_assert_eq!(self.bytes, self.iter().map(|m| m.message.body.len()).sum::<usize>());
        debug_assert_eq!(self.dead, self.items.iter().filter(|m| m.dead).count());
        debug_assert!(!self.items.front().is_some_and(|m| m.dead) && !self.items.back().is_some_and(|m| m.dead));
    }
}

/// Marks a paged entry whose message is held in memory (`Paged::held`).
const HELD: u64 = u64::MAX;
/// Marks a paged entry whose message expired in place (a tombstone).
const DEAD: u64 = u64::MAX - 1;
/// The redelivered flag, in the top bit of `PagedRef::id` (message ids never reach it).
const REDELIVERED: u64 = 1 << 63;

/// A ready message whose body is on disk only: 24 bytes.
#[derive(Debug, Clone, Copy)]
struct PagedRef {
    seq: u64,
    /// The journal's message id, with `REDELIVERED` set when it was delivered before.
    id: u64,
    /// The record's location in the message log (from `Journal::last_location`), or `HELD` or
    /// `DEAD`.
    loc: u64,
}

/// The ready messages after the in-memory head of a journaled queue that passed its memory
/// budget, in sequence order. Messages that cannot be read back from the log (transient ones,
/// and ones with a deadline) but arrive behind paged ones stay in memory in `held`, in place.
#[derive(Debug, Default)]
pub struct Paged {
    items: VecDeque<PagedRef>,
    held: HashMap<u64, QueuedMessage>,
    dead: usize,
}

impl Paged {
    /// Live messages.
    pub fn len(&self) -> usize {
        self.items.len() - self.dead
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Messages held in memory among the paged ones.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Journal ids of the live messages (0 for transient ones).
    fn msg_ids(&self) -> impl Iterator<Item = crate::MessageId> + '_ {
        self.items.iter().filter(|p| p.loc != DEAD).map(|p| match p.loc {
            HELD => self.held.get(&p.seq).map_or(0, |m| m.msg_id),
            _ => p.id & !REDELIVERED,
        })
    }

    fn trim(&mut self) {
        while self.items.front().is_some_and(|p| p.loc == DEAD) {
            self.items.pop_front();
            self.dead -= 1;
        }
        while self.items.back().is_some_and(|p| p.loc == DEAD) {
            self.items.pop_back();
            self.dead -= 1;
        }
    }

    /// Removes the held message with sequence number `seq` and deadline `deadline`, if here.
    fn take_held(&mut self, seq: u64, deadline: u64) -> Option<QueuedMessage> {
        let i = self.items.binary_search_by_key(&seq, |p| p.seq).ok()?;
        if self.items[i].loc != HELD || self.held.get(&seq).map(|m| m.expires_at_ms) != Some(deadline) {
            return None;
        }
        self.items[i].loc = DEAD;
        self.dead += 1;
        self.trim();
        if self.dead > TOMBSTONES_MIN && self.dead * 2 > self.items.len() {
            self.items.retain(|p| p.loc != DEAD);
            self.dead = 0;
        }
        self.held.remove(&seq)
    }

    fn invariants(&self) {
        debug_assert!(self.items.iter().zip(self.items.iter().skip(1)).all(|(a, b)| a.seq < b.seq));
        debug_assert_eq!(self.dead, self.items.iter().filter(|p| p.loc == DEAD).count());
        debug_assert_eq!(self.held.len(), self.items.iter().filter(|p| p.loc == HELD).count());
        debug_assert!(self.items.iter().filter(|p| p.loc == HELD).all(|p| self.held.contains_key(&p.seq)));
        debug_assert!(self.items.front().is_none_or(|p| p.loc != DEAD));
    }
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
    /// TTL, dead-lettering and length limits from the arguments; None for a plain queue, which
    /// then pays one branch per message for all of them.
    pub features: Option<Box<QueueFeatures>>,
    pub ready: Ready,
    /// Ready messages behind `ready` whose bodies were paged out (journaled queues only).
    pub paged: Paged,
    pub unacked_count: usize,
    pub consumers: Vec<Consumer>,
    /// Round-robin position among consumers.
    pub next_consumer: usize,
    /// An auto-delete queue is deleted when its last consumer goes, only once it has had one.
    pub had_consumer: bool,
    /// x-expires: when the queue is deleted if it stays unused (None while consumed or without
    /// x-expires).
    pub unused_deadline_ms: Option<u64>,
    /// Deadlines of messages that were ready when they got them, earliest first, with their
    /// sequence numbers. Entries whose message has left `ready` are skipped when they come up;
    /// the heap is rebuilt when such entries outnumber the live ones.
    expiry: BinaryHeap<Reverse<(u64, u64)>>,
    /// The earliest deadline a broker timer is set for; `u64::MAX` when none is.
    pub(crate) timer_ms: u64,
    next_seq: u64,
}

/// Stale expiry entries tolerated before the heap is rebuilt, beyond twice the ready count.
const EXPIRY_SLACK: usize = 1024;

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
            features: QueueFeatures::from_arguments(&arguments),
            arguments,
            ready: Ready::default(),
            paged: Paged::default(),
            unacked_count: 0,
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumer: false,
            unused_deadline_ms: None,
            expiry: BinaryHeap::new(),
            timer_ms: u64::MAX,
            next_seq: 0,
        }
    }

    /// Appends a message; returns its sequence number. `expires_at_ms` is 0 for no deadline.
    pub fn push(&mut self, message: Arc<Message>, msg_id: crate::MessageId, expires_at_ms: u64) -> u64 {
        self.push_restored(message, msg_id, false, expires_at_ms)
    }

    /// Appends a message (also used by recovery, where it may already have been delivered once).
    pub fn push_restored(
        &mut self,
        message: Arc<Message>,
        msg_id: crate::MessageId,
        redelivered: bool,
        expires_at_ms: u64,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if expires_at_ms != 0 {
            self.watch_expiry(expires_at_ms, seq);
        }
        let m = QueuedMessage { seq, message, redelivered, msg_id, expires_at_ms, dead: false };
        if self.paged.is_empty() {
            self.ready.push_back(m);
        } else {
            // Behind paged messages: stays in memory, in its place among them.
            self.paged.items.push_back(PagedRef { seq, id: 0, loc: HELD });
            self.paged.held.insert(seq, m);
        }
        seq
    }

    /// Pages out the message just pushed with sequence number `seq`, whose journal record is at
    /// `location`, if the in-memory ready messages exceed `budget` bytes or messages are paged
    /// already. Only plain queues page (no TTL, dead-lettering or length limits) and only
    /// messages without a deadline. Returns true when it was paged out.
    pub fn page_out(&mut self, seq: u64, location: u64, budget: usize) -> bool {
        if self.features.is_some() || location >= DEAD {
            return false;
        }
        if let Some(last) = self.paged.items.back_mut() {
            if last.seq != seq || last.loc != HELD {
                return false;
            }
            let Some(m) = self.paged.held.get(&seq) else { return false };
            if m.expires_at_ms != 0 || m.msg_id == 0 {
                return false;
            }
            last.id = m.msg_id | if m.redelivered { REDELIVERED } else { 0 };
            last.loc = location;
            self.paged.held.remove(&seq);
            return true;
        }
        let fits = self.ready.bytes() <= budget;
        match self.ready.back() {
            Some(m) if !fits && m.seq == seq && m.expires_at_ms == 0 && m.msg_id != 0 => {}
            _ => return false,
        }
        let Some(m) = self.ready.pop_back() else { return false };
        let id = m.msg_id | if m.redelivered { REDELIVERED } else { 0 };
        self.paged.items.push_back(PagedRef { seq, id, loc: location });
        true
    }

    /// When the in-memory head is empty, brings paged messages back into it, up to half of
    /// `budget` bytes (at least one message), reading bodies with `load`. Returns how many
    /// messages could not be read (they are dropped from the queue).
    pub fn page_in(&mut self, budget: usize, mut load: impl FnMut(u64) -> Option<Message>) -> usize {
        let mut lost = 0;
        while self.ready.is_empty() && !self.paged.is_empty() {
            while let Some(p) = self.paged.items.pop_front() {
                let m = match p.loc {
                    DEAD => {
                        self.paged.dead -= 1;
                        continue;
                    }
                    HELD => match self.paged.held.remove(&p.seq) {
                        Some(m) => m,
                        None => continue,
                    },
                    loc => match load(loc) {
                        Some(message) => QueuedMessage {
                            seq: p.seq,
                            message: Arc::new(message),
                            redelivered: p.id & REDELIVERED != 0,
                            msg_id: p.id & !REDELIVERED,
                            expires_at_ms: 0,
                            dead: false,
                        },
                        None => {
                            lost += 1;
                            continue;
                        }
                    },
                };
                self.ready.push_back(m);
                if self.ready.bytes() >= budget / 2 {
                    break;
                }
            }
            self.paged.trim();
        }
        lost
    }

    fn watch_expiry(&mut self, expires_at_ms: u64, seq: u64) {
        if self.expiry.len() > 2 * (self.ready.len() + self.paged.held.len()) + EXPIRY_SLACK {
            let live = self
                .ready
                .iter()
                .chain(self.paged.held.values())
                .filter(|m| m.expires_at_ms != 0)
                .map(|m| Reverse((m.expires_at_ms, m.seq)));
            self.expiry = live.collect();
        }
        self.expiry.push(Reverse((expires_at_ms, seq)));
    }

    pub fn pop(&mut self) -> Option<QueuedMessage> {
        self.ready.pop_front()
    }

    /// Puts a message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMessage) {
        m.redelivered = true;
        if m.expires_at_ms != 0 {
            self.watch_expiry(m.expires_at_ms, m.seq);
        }
        self.ready.insert(m);
    }

    /// Entries in the deadline heap, stale ones included (for tests of its bound).
    pub fn watched_deadlines(&self) -> usize {
        self.expiry.len()
    }

    /// The earliest message deadline still watched (it may belong to a message that left).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiry.peek().map(|Reverse((d, _))| *d)
    }

    /// Removes and returns the ready messages whose deadline is `now_ms` or earlier, wherever
    /// they are in the queue, in deadline order.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<QueuedMessage> {
        let mut out = Vec::new();
        while let Some(&Reverse((deadline, seq))) = self.expiry.peek() {
            if deadline > now_ms {
                break;
            }
            self.expiry.pop();
            // The entry may be stale: the message left (and maybe came back with a new entry).
            if self.ready.iter_at(seq).is_some_and(|m| m.expires_at_ms == deadline) {
                if let Some(m) = self.ready.take(seq) {
                    out.push(m);
                }
            } else if let Some(m) = self.paged.take_held(seq, deadline) {
                out.push(m);
            }
        }
        out
    }

    /// Removes every ready message; returns their journal ids (0 for transient ones) so their
    /// journal entries can be removed.
    pub fn purge(&mut self) -> Vec<crate::MessageId> {
        self.expiry.clear();
        let mut ids: Vec<_> = self.ready.drain().into_iter().map(|m| m.msg_id).collect();
        ids.extend(self.paged.msg_ids());
        self.paged = Paged::default();
        ids
    }

    /// Journal ids of every ready message, in memory or paged (0 for transient ones).
    pub fn ready_msg_ids(&self) -> impl Iterator<Item = crate::MessageId> + '_ {
        self.ready.iter().map(|m| m.msg_id).chain(self.paged.msg_ids())
    }

    /// Persistent messages in this queue are journaled: it is durable and not exclusive (an
    /// exclusive queue dies with its connection, so never outlives a restart).
    pub fn is_journaled(&self) -> bool {
        self.durable && self.exclusive_owner.is_none()
    }

    /// Ready messages, in memory and paged.
    pub fn ready_len(&self) -> usize {
        self.ready.len() + self.paged.len()
    }

    pub fn message_count(&self) -> u32 {
        self.ready_len() as u32
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

    /// The earliest time something in this queue is due: a message deadline or, while unused,
    /// its own expiry.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let unused = if self.consumers.is_empty() { self.unused_deadline_ms } else { None };
        match (self.next_expiry_ms(), unused) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Invariants, checked after mutation in debug builds.
    pub fn invariants(&self) {
        self.ready.invariants();
        self.paged.invariants();
        debug_assert!(self.paged.items.front().is_none_or(|p| self.ready.back().is_none_or(|m| m.seq < p.seq)));
        // Every ready message with a deadline has an entry in the heap (stale ones may add more).
        let deadlines = self.ready.iter().chain(self.paged.held.values()).filter(|m| m.expires_at_ms != 0).count();
        debug_assert!(deadlines <= self.expiry.len());
    }
}

impl Ready {
    /// The live message with sequence number `seq`.
    fn iter_at(&self, seq: u64) -> Option<&QueuedMessage> {
        let i = self.items.binary_search_by_key(&seq, |m| m.seq).ok()?;
        Some(&self.items[i]).filter(|m| !m.dead)
    }
}
