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

use crate::HashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
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
    /// Times it came back to the queue unacknowledged (counted where `x-delivery-limit` is set).
    pub returns: u32,
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
/// live messages of their level, so removal from the middle is amortised O(1) and memory at most
/// doubles.
const TOMBSTONES_MIN: usize = 64;

/// The priority level a sequence number belongs to (its top byte; see `Queue::push_restored`).
fn level_of(seq: u64) -> u8 {
    (seq >> 56) as u8
}

/// The messages of one priority level, in sequence order (one level for a plain queue).
#[derive(Debug)]
struct Level {
    key: u8,
    items: VecDeque<QueuedMessage>,
    dead: usize,
}

impl Level {
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
}

/// The ready messages of a queue, in delivery order: by priority level (highest first; a plain
/// queue has one level), then by sequence number. A sequence number carries its level in its top
/// byte, so the whole order is the order of sequence numbers. Only levels that hold messages
/// exist, so memory and speed do not depend on `x-max-priority` (RabbitMQ keeps a backing queue
/// per possible level). Messages normally leave at the front; an expired message in the middle is
/// replaced by a tombstone (body dropped) instead of shifting the deque, and tombstones are
/// skipped and compacted lazily. The first and last entries of a level are never tombstones.
#[derive(Debug, Default)]
pub struct Ready {
    /// Non-empty levels, by ascending key (descending priority).
    levels: Vec<Level>,
    live: usize,
    bytes: usize,
    /// The deque of the last level that emptied, kept for the next level to appear: a queue that
    /// consumers keep empty would otherwise allocate and free a deque for every message.
    spare: VecDeque<QueuedMessage>,
}

/// Largest spare deque kept (entries); a bigger one, left by a drained backlog, is freed.
const SPARE_DEQUE_MAX: usize = 4096;

impl Ready {
    /// Live messages.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Body bytes of the live messages (what `x-max-length-bytes` limits).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next message to deliver.
    pub fn front(&self) -> Option<&QueuedMessage> {
        self.levels.first()?.items.front()
    }

    /// The last message to deliver.
    pub fn back(&self) -> Option<&QueuedMessage> {
        self.levels.last()?.items.back()
    }

    /// Live messages in delivery order.
    pub fn iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.levels.iter().flat_map(|l| l.items.iter()).filter(|m| !m.dead)
    }

    /// The index of the level for `seq`: Ok when it exists, Err with its place when not.
    fn find_level(&self, seq: u64) -> std::result::Result<usize, usize> {
        let key = level_of(seq);
        match self.levels.as_slice() {
            [only] if only.key == key => Ok(0),
            levels => levels.binary_search_by_key(&key, |l| l.key),
        }
    }

    fn level_mut(&mut self, seq: u64) -> &mut Level {
        let i = match self.find_level(seq) {
            Ok(i) => i,
            Err(i) => {
                let items = std::mem::take(&mut self.spare);
                self.levels.insert(i, Level { key: level_of(seq), items, dead: 0 });
                i
            }
        };
        &mut self.levels[i]
    }

    /// Appends a message newer than every message of its level.
    fn push_back(&mut self, m: QueuedMessage) {
        self.bytes += m.message.body.len();
        self.live += 1;
        self.level_mut(m.seq).items.push_back(m);
    }

    /// Removes level `i` from the list when it has no messages left.
    fn settle_level(&mut self, i: usize) {
        self.levels[i].trim();
        if self.levels[i].items.is_empty() {
            let items = self.levels.remove(i).items;
            if items.capacity() <= SPARE_DEQUE_MAX {
                self.spare = items;
            }
        }
    }

    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let m = self.levels.first_mut()?.items.pop_front()?;
        self.settle_level(0);
        self.bytes -= m.message.body.len();
        self.live -= 1;
        Some(m)
    }

    pub fn pop_back(&mut self) -> Option<QueuedMessage> {
        let last = self.levels.len().checked_sub(1)?;
        let m = self.levels[last].items.pop_back()?;
        self.settle_level(last);
        self.bytes -= m.message.body.len();
        self.live -= 1;
        Some(m)
    }

    /// Inserts at the message's sequence position.
    fn insert(&mut self, m: QueuedMessage) {
        self.bytes += m.message.body.len();
        self.live += 1;
        let level = self.level_mut(m.seq);
        // Requeues are usually of the oldest messages; the search is logarithmic anyway.
        let pos = level.items.partition_point(|x| x.seq < m.seq);
        level.items.insert(pos, m);
    }

    /// Removes the live message with sequence number `seq`, if it is here.
    pub fn take(&mut self, seq: u64) -> Option<QueuedMessage> {
        let li = self.find_level(seq).ok()?;
        let level = &mut self.levels[li];
        let i = level.items.binary_search_by_key(&seq, |m| m.seq).ok()?;
        if level.items[i].dead {
            return None;
        }
        let taken = if i == 0 || i + 1 == level.items.len() {
            let m = if i == 0 { level.items.pop_front() } else { level.items.pop_back() };
            self.settle_level(li);
            m?
        } else {
            let slot = &mut level.items[i];
            let message = std::mem::replace(&mut slot.message, tombstone());
            slot.dead = true;
            let taken = QueuedMessage { message, dead: false, ..slot.clone() };
            level.dead += 1;
            if level.dead > TOMBSTONES_MIN && level.dead * 2 > level.items.len() {
                level.items.retain(|m| !m.dead);
                level.dead = 0;
            }
            taken
        };
        self.bytes -= taken.message.body.len();
        self.live -= 1;
        Some(taken)
    }

    /// Removes every live message, in order.
    fn drain(&mut self) -> Vec<QueuedMessage> {
        self.bytes = 0;
        self.live = 0;
        std::mem::take(&mut self.levels).into_iter().flat_map(|l| l.items).filter(|m| !m.dead).collect()
    }

    /// The live message with sequence number `seq`.
    fn iter_at(&self, seq: u64) -> Option<&QueuedMessage> {
        let level = &self.levels[self.find_level(seq).ok()?];
        let i = level.items.binary_search_by_key(&seq, |m| m.seq).ok()?;
        Some(&level.items[i]).filter(|m| !m.dead)
    }

    fn invariants(&self) {
        debug_assert!(self.levels.windows(2).all(|w| w[0].key < w[1].key));
        for l in &self.levels {
            debug_assert!(!l.items.is_empty());
            debug_assert!(l.items.iter().all(|m| level_of(m.seq) == l.key));
            debug_assert!(l.items.iter().zip(l.items.iter().skip(1)).all(|(a, b)| a.seq < b.seq));
            debug_assert_eq!(l.dead, l.items.iter().filter(|m| m.dead).count());
            debug_assert!(!l.items.front().is_some_and(|m| m.dead) && !l.items.back().is_some_and(|m| m.dead));
        }
        debug_assert_eq!(self.live, self.iter().count());
        debug_assert_eq!(self.bytes, self.iter().map(|m| m.message.body.len()).sum::<usize>());
    }
}

/// The share of time a queue's consumers could take its messages at once (RabbitMQ's
/// `consumer_capacity`, formerly `consumer_utilisation`): 1.0 when no message waited for a
/// consumer with room, lower while ready messages waited with consumers at their prefetch or
/// flow-control limit, 0 without consumers. Updated after each dispatch, computed per sample.
#[derive(Debug, Default, Clone)]
pub struct Capacity {
    /// Since when ready messages have waited while consumers were attached.
    blocked_since_ms: Option<u64>,
    /// Blocked milliseconds in the current sample period.
    blocked_ms: u64,
    /// The last sample's value; None before the first sample.
    last: Option<f64>,
}

impl Capacity {
    /// The last sampled value, or the current state's before the first sample.
    pub fn value(&self, has_consumers: bool) -> f64 {
        match (has_consumers, self.last) {
            (false, _) => 0.0,
            (true, Some(v)) => v,
            (true, None) => {
                if self.blocked_since_ms.is_some() {
                    0.0
                } else {
                    1.0
                }
            }
        }
    }

    /// Closes a sample period of `period_ms` ending at `now_ms`.
    pub fn sample(&mut self, now_ms: u64, period_ms: u64, has_consumers: bool) {
        if let Some(since) = self.blocked_since_ms {
            self.blocked_ms += now_ms.saturating_sub(since);
            self.blocked_since_ms = Some(now_ms);
        }
        self.last = Some(if !has_consumers || period_ms == 0 {
            0.0
        } else {
            1.0 - (self.blocked_ms.min(period_ms) as f64 / period_ms as f64)
        });
        self.blocked_ms = 0;
    }
}

/// How much of a queue stays in memory before it pages (see `BrokerConfig::page_budget`).
#[derive(Debug, Clone, Copy)]
pub struct PageBudget {
    /// Bytes of in-memory ready messages, each counted as its body plus `per_message`.
    pub bytes: usize,
    pub per_message: usize,
}

/// Marks a paged entry whose message is held in memory (`Paged::held`).
const HELD: u64 = u64::MAX;
/// Marks a paged entry whose message expired in place (a tombstone).
const DEAD: u64 = u64::MAX - 1;
/// The redelivered flag, in the top bit of `PagedRef::id` (message ids never reach it).
const REDELIVERED: u64 = 1 << 63;

/// A ready message whose body is on disk only: 16 bytes. Its sequence number is implied by its
/// place (see `Paged`).
#[derive(Debug, Clone, Copy)]
struct PagedRef {
    /// The journal's message id, with `REDELIVERED` set when it was delivered before.
    id: u64,
    /// The record's location in the message log (from `Journal::last_location`), or `HELD` or
    /// `DEAD`.
    loc: u64,
}

/// Entries per chunk of `Paged` (64 KiB): storage grows a chunk at a time, never by doubling.
const CHUNK: usize = 4096;

/// The ready messages after the in-memory head of a journaled queue that passed its memory
/// budget, in sequence order. Messages that cannot be read back from the log (transient ones,
/// and ones with a deadline) but arrive behind paged ones stay in memory in `held`, in place.
///
/// Paged messages have consecutive sequence numbers (once a queue pages, every later message
/// joins the paged tail, and only the front leaves), so an entry's sequence number is
/// `front_seq` plus its index and is not stored: 16 bytes per message, in chunks of `CHUNK`
/// (10 million paged messages take 160 MB). A held message that expires leaves a tombstone in
/// its slot until the slot reaches the front.
#[derive(Debug, Default)]
pub struct Paged {
    /// Every chunk but the last is full; the first `head` entries of the first are gone.
    chunks: VecDeque<Vec<PagedRef>>,
    head: usize,
    /// Entries, tombstones included.
    slots: usize,
    /// The sequence number of the front entry.
    front_seq: u64,
    held: HashMap<u64, QueuedMessage>,
    /// Deadline and body length of the paged (on-disk) messages that have one, by sequence
    /// number: they expire in place like held ones, read back only for a dead-letter exchange.
    deadlines: HashMap<u64, (u64, u32)>,
    dead: usize,
    /// Body bytes of the live paged messages (for `x-max-length-bytes`); a message whose record
    /// cannot be read back leaves its bytes counted until the paged part empties.
    bytes: usize,
}

impl Paged {
    /// Live messages.
    pub fn len(&self) -> usize {
        self.slots - self.dead
    }

    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }

    /// Messages held in memory among the paged ones.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Every entry with its sequence number, front first.
    fn entries(&self) -> impl Iterator<Item = (u64, &PagedRef)> + '_ {
        self.chunks.iter().flatten().skip(self.head).zip(self.front_seq..).map(|(p, seq)| (seq, p))
    }

    /// Appends the entry for sequence number `seq` (the next one after the current back).
    fn push_back(&mut self, seq: u64, r: PagedRef) {
        if self.slots == 0 {
            self.front_seq = seq;
        }
        debug_assert_eq!(seq, self.front_seq + self.slots as u64, "paged sequence numbers are consecutive");
        match self.chunks.back_mut() {
            Some(c) if c.len() < CHUNK => c.push(r),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(r);
                self.chunks.push_back(c);
            }
        }
        self.slots += 1;
    }

    fn back_mut(&mut self) -> Option<(u64, &mut PagedRef)> {
        let seq = self.front_seq + self.slots.checked_sub(1)? as u64;
        self.chunks.back_mut()?.last_mut().map(|r| (seq, r))
    }

    fn front(&self) -> Option<&PagedRef> {
        (self.slots > 0).then(|| self.chunks.front().map(|c| &c[self.head])).flatten()
    }

    fn pop_front(&mut self) -> Option<(u64, PagedRef)> {
        if self.slots == 0 {
            return None;
        }
        let r = *self.chunks.front()?.get(self.head)?;
        let seq = self.front_seq;
        self.head += 1;
        self.slots -= 1;
        self.front_seq += 1;
        if self.slots == 0 {
            self.chunks.clear();
            self.head = 0;
        } else if self.head == CHUNK {
            self.chunks.pop_front();
            self.head = 0;
        }
        if r.loc == DEAD {
            self.dead -= 1;
        }
        Some((seq, r))
    }

    fn get(&self, seq: u64) -> Option<&PagedRef> {
        let i = usize::try_from(seq.checked_sub(self.front_seq)?).ok().filter(|&i| i < self.slots)?;
        let g = self.head + i;
        self.chunks.get(g / CHUNK)?.get(g % CHUNK)
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut PagedRef> {
        let i = usize::try_from(seq.checked_sub(self.front_seq)?).ok().filter(|&i| i < self.slots)?;
        let g = self.head + i;
        self.chunks.get_mut(g / CHUNK)?.get_mut(g % CHUNK)
    }

    /// Journal ids of the live messages (0 for transient ones).
    fn msg_ids(&self) -> impl Iterator<Item = crate::MessageId> + '_ {
        self.entries().filter(|(_, p)| p.loc != DEAD).map(|(seq, p)| match p.loc {
            HELD => self.held.get(&seq).map_or(0, |m| m.msg_id),
            _ => p.id & !REDELIVERED,
        })
    }

    /// Drops tombstones that reached the front.
    fn trim(&mut self) {
        while self.front().is_some_and(|p| p.loc == DEAD) {
            self.pop_front();
        }
    }

    /// Removes the paged (on-disk) message with sequence number `seq` and deadline `deadline`, if
    /// here, leaving a tombstone.
    fn take_paged_expired(&mut self, seq: u64, deadline: u64) -> Option<PagedExpired> {
        let &(d, len) = self.deadlines.get(&seq)?;
        if d != deadline {
            return None;
        }
        let slot = self.get_mut(seq)?;
        if slot.loc == HELD || slot.loc == DEAD {
            return None;
        }
        let (id, loc) = (slot.id, slot.loc);
        slot.loc = DEAD;
        self.dead += 1;
        self.deadlines.remove(&seq);
        self.bytes = self.bytes.saturating_sub(len as usize);
        self.trim();
        if self.slots == 0 {
            self.bytes = 0;
        }
        Some(PagedExpired {
            seq,
            msg_id: id & !REDELIVERED,
            redelivered: id & REDELIVERED != 0,
            location: loc,
            expires_at_ms: deadline,
        })
    }

    /// Removes the held message with sequence number `seq` and deadline `deadline`, if here.
    fn take_held(&mut self, seq: u64, deadline: u64) -> Option<QueuedMessage> {
        if self.held.get(&seq).map(|m| m.expires_at_ms) != Some(deadline) {
            return None;
        }
        let slot = self.get_mut(seq)?;
        if slot.loc != HELD {
            return None;
        }
        slot.loc = DEAD;
        self.dead += 1;
        self.trim();
        let m = self.held.remove(&seq);
        self.bytes = self.bytes.saturating_sub(m.as_ref().map_or(0, |m| m.message.body.len()));
        if self.slots == 0 {
            self.bytes = 0;
        }
        m
    }

    fn invariants(&self) {
        debug_assert_eq!(self.entries().count(), self.slots);
        debug_assert!(self.chunks.iter().rev().skip(1).all(|c| c.len() == CHUNK));
        debug_assert_eq!(self.dead, self.entries().filter(|(_, p)| p.loc == DEAD).count());
        debug_assert_eq!(self.held.len(), self.entries().filter(|(_, p)| p.loc == HELD).count());
        debug_assert!(self.entries().filter(|(_, p)| p.loc == HELD).all(|(seq, _)| self.held.contains_key(&seq)));
        debug_assert!(self.front().is_none_or(|p| p.loc != DEAD));
        debug_assert!(self.deadlines.keys().all(|&seq| self.get(seq).is_some_and(|p| p.loc != HELD && p.loc != DEAD)));
    }
}

/// A paged message that expired: its record is read back only when the queue dead-letters it.
#[derive(Debug, Clone, Copy)]
pub struct PagedExpired {
    pub seq: u64,
    pub msg_id: crate::MessageId,
    pub redelivered: bool,
    /// Its record in the journal (see `Journal::read`).
    pub location: u64,
    pub expires_at_ms: u64,
}

impl PagedExpired {
    /// The queued message it was, with its body read back.
    pub fn into_queued(self, message: Message) -> QueuedMessage {
        QueuedMessage {
            seq: self.seq,
            message: Arc::new(message),
            redelivered: self.redelivered,
            msg_id: self.msg_id,
            expires_at_ms: self.expires_at_ms,
            dead: false,
            returns: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Consumer {
    pub conn: ConnectionId,
    pub channel: u16,
    pub tag: Arc<str>,
    pub no_ack: bool,
    pub exclusive: bool,
    /// basic.qos prefetch_count (global=false) of its channel: in force when the consumer
    /// started, and changed by a later basic.qos (global=false) on the channel; 0 = unlimited.
    pub prefetch_count: u16,
    pub unacked: u32,
    pub arguments: FieldTable,
    /// The consuming connection's write credit.
    pub credit: Arc<crate::WriteCredit>,
    /// `x-priority`: consumers of a higher priority get messages first (0 by default).
    pub priority: i32,
    /// `x-consumer-timeout` given at basic.consume (see `ack_timeout.rs`).
    pub timeout_ms: Option<u64>,
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
    /// `x-max-priority`: message priorities above it count as it; 0 for a queue without levels.
    pub max_priority: u8,
    /// A policy or operator policy shaped `features` (see `policy.rs`).
    pub policy_applied: bool,
    /// Message counters and rates (see `stats.rs`).
    pub stats: crate::stats::MessageStats,
    /// Consumer capacity (RabbitMQ's `consumer_capacity`): see `Queue::note_capacity`.
    pub capacity: Capacity,
    /// `x-message-deduplication`: the ids seen (see `dedup.rs`).
    pub dedup: Option<Box<crate::dedup::DedupWindow>>,
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

/// `x-max-priority` (validated at declare: 0..=255).
fn max_priority(args: &FieldTable) -> u8 {
    args.get("x-max-priority").and_then(amqp_codec::FieldValue::as_i64).map_or(0, |p| p.clamp(0, 255) as u8)
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
            max_priority: max_priority(&arguments),
            policy_applied: false,
            dedup: crate::dedup::DedupWindow::from_arguments(&arguments),
            stats: Default::default(),
            capacity: Capacity::default(),
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
        self.push_restored_returned(message, msg_id, redelivered, expires_at_ms, 0)
    }

    /// `push_restored` for a message that already came back `returns` times (recovery of a
    /// queue with a delivery limit).
    pub fn push_restored_returned(
        &mut self,
        message: Arc<Message>,
        msg_id: crate::MessageId,
        redelivered: bool,
        expires_at_ms: u64,
        returns: u32,
    ) -> u64 {
        // The top byte orders priority levels, highest first (see `Ready`).
        let level = match self.max_priority {
            0 => 0,
            max => 255 - message.summary.priority.unwrap_or(0).min(max),
        };
        let seq = self.next_seq | (u64::from(level) << 56);
        self.next_seq += 1;
        if expires_at_ms != 0 {
            self.watch_expiry(expires_at_ms, seq);
        }
        let m = QueuedMessage { seq, message, redelivered, msg_id, expires_at_ms, dead: false, returns };
        if self.paged.is_empty() {
            self.ready.push_back(m);
        } else {
            // Behind paged messages: stays in memory, in its place among them.
            self.paged.push_back(seq, PagedRef { id: 0, loc: HELD });
            self.paged.bytes += m.message.body.len();
            self.paged.held.insert(seq, m);
        }
        seq
    }

    /// Pages out the message just pushed with sequence number `seq`, whose journal record is at
    /// `location`, if the in-memory ready messages exceed `budget` bytes or messages are paged
    /// already. Priority queues do not page; a message with a deadline keeps it beside its
    /// reference (`Paged::deadlines`). Returns true when it was paged out.
    pub fn page_out(&mut self, seq: u64, location: u64, budget: PageBudget) -> bool {
        if self.max_priority != 0 || location >= DEAD {
            return false;
        }
        if !self.paged.is_empty() {
            let (id, deadline) = match self.paged.held.get(&seq) {
                Some(m) if m.msg_id != 0 => (
                    m.msg_id | if m.redelivered { REDELIVERED } else { 0 },
                    (m.expires_at_ms, m.message.body.len() as u32),
                ),
                _ => return false,
            };
            match self.paged.back_mut() {
                Some((last_seq, last)) if last_seq == seq && last.loc == HELD => {
                    last.id = id;
                    last.loc = location;
                }
                _ => return false,
            }
            self.paged.held.remove(&seq);
            if deadline.0 != 0 {
                self.paged.deadlines.insert(seq, deadline);
            }
            return true;
        }
        let fits = self.in_memory_bytes(budget) <= budget.bytes;
        match self.ready.back() {
            Some(m) if !fits && m.seq == seq && m.msg_id != 0 => {}
            _ => return false,
        }
        let Some(m) = self.ready.pop_back() else { return false };
        let id = m.msg_id | if m.redelivered { REDELIVERED } else { 0 };
        self.paged.bytes += m.message.body.len();
        if m.expires_at_ms != 0 {
            self.paged.deadlines.insert(seq, (m.expires_at_ms, m.message.body.len() as u32));
        }
        self.paged.push_back(seq, PagedRef { id, loc: location });
        true
    }

    /// True when the message just pushed with sequence number `seq`, which has no journal record,
    /// should get one so it can be paged out (see `Journal::page`): the queue pages (plain, and
    /// past its budget or already paging).
    pub fn wants_page(&self, seq: u64, budget: PageBudget) -> bool {
        if self.max_priority != 0 {
            return false;
        }
        if self.paged.is_empty() {
            self.in_memory_bytes(budget) > budget.bytes && self.ready.back().is_some_and(|m| m.seq == seq)
        } else {
            self.paged.held.get(&seq).is_some_and(|m| m.msg_id == 0)
        }
    }

    /// Gives the message just pushed with sequence number `seq` the id of the record `page`
    /// wrote for it.
    pub fn set_msg_id(&mut self, seq: u64, msg_id: crate::MessageId) {
        if let Some(m) = self.paged.held.get_mut(&seq) {
            m.msg_id = msg_id;
        } else if let Some(level) = self.ready.levels.last_mut() {
            if let Some(m) = level.items.back_mut().filter(|m| m.seq == seq) {
                m.msg_id = msg_id;
            }
        }
    }

    /// The in-memory ready messages' share of the paging budget.
    fn in_memory_bytes(&self, budget: PageBudget) -> usize {
        self.ready.bytes() + self.ready.len() * budget.per_message
    }

    /// When the in-memory head is empty, brings paged messages back into it, up to half of
    /// `budget` bytes (at least one message), reading bodies with `load`. Returns how many
    /// messages could not be read (they are dropped from the queue).
    pub fn page_in(&mut self, budget: PageBudget, mut load: impl FnMut(u64) -> Option<Message>) -> usize {
        let mut lost = 0;
        while self.ready.is_empty() && !self.paged.is_empty() {
            while let Some((seq, p)) = self.paged.pop_front() {
                let m = match p.loc {
                    DEAD => continue,
                    HELD => match self.paged.held.remove(&seq) {
                        Some(m) => m,
                        None => continue,
                    },
                    loc => match load(loc) {
                        Some(message) => QueuedMessage {
                            seq,
                            message: Arc::new(message),
                            redelivered: p.id & REDELIVERED != 0,
                            msg_id: p.id & !REDELIVERED,
                            expires_at_ms: self.paged.deadlines.remove(&seq).map_or(0, |(d, _)| d),
                            dead: false,
                            returns: 0,
                        },
                        None => {
                            lost += 1;
                            continue;
                        }
                    },
                };
                self.paged.bytes = self.paged.bytes.saturating_sub(m.message.body.len());
                self.ready.push_back(m);
                if self.in_memory_bytes(budget) >= budget.bytes / 2 {
                    break;
                }
            }
            self.paged.trim();
            if self.paged.is_empty() {
                self.paged.bytes = 0;
            }
        }
        lost
    }

    fn watch_expiry(&mut self, expires_at_ms: u64, seq: u64) {
        if self.expiry.len()
            > 2 * (self.ready.len() + self.paged.held.len() + self.paged.deadlines.len()) + EXPIRY_SLACK
        {
            let live = self
                .ready
                .iter()
                .chain(self.paged.held.values())
                .filter(|m| m.expires_at_ms != 0)
                .map(|m| Reverse((m.expires_at_ms, m.seq)));
            let paged = self.paged.deadlines.iter().map(|(&seq, &(d, _))| Reverse((d, seq)));
            self.expiry = live.chain(paged).collect();
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
    pub fn take_expired(&mut self, now_ms: u64) -> (Vec<QueuedMessage>, Vec<PagedExpired>) {
        let mut out = Vec::new();
        let mut paged = Vec::new();
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
            } else if let Some(p) = self.paged.take_paged_expired(seq, deadline) {
                paged.push(p);
            }
        }
        (out, paged)
    }

    /// Removes the ready message with sequence number `seq`, in memory or held among the paged
    /// ones (a TTL-0 message nobody took at once).
    pub fn take(&mut self, seq: u64) -> Option<QueuedMessage> {
        if let Some(m) = self.ready.take(seq) {
            return Some(m);
        }
        let deadline = self.paged.held.get(&seq)?.expires_at_ms;
        self.paged.take_held(seq, deadline)
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

    /// Body bytes of the ready messages, in memory and paged (what `x-max-length-bytes` limits).
    pub fn ready_bytes(&self) -> usize {
        self.ready.bytes() + self.paged.bytes
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

    /// Adds a consumer after every consumer of the same or a higher priority, so `consumers` is
    /// ordered by priority (highest first), then by arrival.
    /// A single active consumer queue keeps arrival order only: a newcomer never takes over
    /// while the active consumer still has messages.
    pub fn add_consumer(&mut self, c: Consumer) {
        if self.single_active() {
            self.consumers.push(c);
            return;
        }
        let pos = self.consumers.partition_point(|x| x.priority >= c.priority);
        if pos <= self.next_consumer && pos < self.consumers.len() {
            self.next_consumer += 1;
        }
        self.consumers.insert(pos, c);
    }

    /// `x-single-active-consumer`: only the first consumer receives messages.
    pub fn single_active(&self) -> bool {
        self.features.as_deref().is_some_and(|f| f.single_active_consumer)
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

    /// Records whether messages now wait although consumers are attached (all at their limit),
    /// for `consumer_capacity`.
    pub fn note_capacity(&mut self, now_ms: u64) {
        let blocked = !self.consumers.is_empty() && self.ready_len() > 0;
        match (blocked, self.capacity.blocked_since_ms) {
            (true, None) => self.capacity.blocked_since_ms = Some(now_ms),
            (false, Some(since)) => {
                self.capacity.blocked_ms += now_ms.saturating_sub(since);
                self.capacity.blocked_since_ms = None;
            }
            _ => {}
        }
    }

    /// Invariants, checked after mutation in debug builds.
    pub fn invariants(&self) {
        // Release builds skip it all: the counting below is O(n) and would run per dispatch.
        if !cfg!(debug_assertions) {
            return;
        }
        self.ready.invariants();
        self.paged.invariants();
        debug_assert!(self.paged.is_empty() || self.ready.back().is_none_or(|m| m.seq < self.paged.front_seq));
        // Every ready message with a deadline has an entry in the heap (stale ones may add more).
        let deadlines = self.ready.iter().chain(self.paged.held.values()).filter(|m| m.expires_at_ms != 0).count();
        debug_assert!(deadlines <= self.expiry.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_message(seq: u64, deadline: u64) -> QueuedMessage {
        QueuedMessage {
            seq,
            message: tombstone(),
            redelivered: false,
            msg_id: 0,
            expires_at_ms: deadline,
            dead: false,
            returns: 0,
        }
    }

    /// Proves paged entries keep their implied sequence numbers across chunk boundaries, through
    /// pops from the front, tombstones in the middle and at the front, and emptying.
    #[test]
    fn paged_chunks_and_implied_sequence_numbers() {
        let mut p = Paged::default();
        let base = 1000;
        let n = 3 * CHUNK as u64 + 17;
        for i in 0..n {
            let seq = base + i;
            if i % 1000 == 7 {
                p.push_back(seq, PagedRef { id: 0, loc: HELD });
                p.held.insert(seq, held_message(seq, 5));
            } else {
                p.push_back(seq, PagedRef { id: seq * 10, loc: seq });
            }
        }
        p.invariants();
        assert_eq!(p.len(), n as usize);
        // A held message in the second chunk expires: a tombstone in its slot.
        let held_seq = base + CHUNK as u64 + 1007 - (CHUNK as u64 + 1007) % 1000 + 7;
        assert!(p.take_held(held_seq, 5).is_some());
        assert!(p.take_held(held_seq, 5).is_none());
        assert_eq!(p.len(), n as usize - 1);
        p.invariants();
        let mut expected = base;
        let mut popped = 0;
        while let Some((seq, r)) = p.pop_front() {
            assert_eq!(seq, expected);
            expected += 1;
            if r.loc == DEAD {
                assert_eq!(seq, held_seq);
                continue;
            }
            if r.loc == HELD {
                assert!(p.held.remove(&seq).is_some());
            } else {
                assert_eq!((r.id, r.loc), (seq * 10, seq));
            }
            popped += 1;
            if popped % 997 == 0 {
                p.invariants();
            }
        }
        assert_eq!(popped, n - 1);
        assert!(p.is_empty() && p.chunks.is_empty());
        // Empty again: the next entry may start anywhere.
        p.push_back(99, PagedRef { id: 1, loc: 2 });
        assert_eq!(p.pop_front().map(|(s, _)| s), Some(99));
        assert_eq!(std::mem::size_of::<PagedRef>(), 16);
    }
}
