//! The journal on disk: three `store::Log`s in the data directory.
//!
//! - `messages/`: one record per persistent message, listing every durable queue it was routed to,
//!   so a message sent to many queues is written once.
//! - `acks/`: small records saying a message left a queue (ack, reject, purge, delete) or was
//!   delivered; kept apart from the bodies so acknowledging never rewrites a message segment.
//! - `definitions/`: durable vhosts, exchanges, queues and bindings, synced before the -ok.
//!
//! Segment lifetime: every message segment counts the (queue, message) pairs still alive in it and
//! is deleted when the count reaches zero and it is no longer being written. An ack segment is
//! deleted once every message segment its records refer to is gone.
//!
//! Recovery (`open`) replays definitions, then acks (into sets of removed and delivered pairs),
//! then messages in log order, handing everything to the broker, and finally deletes segments that
//! hold nothing alive.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use store::{Disk, Log, LogConfig, PendingSync, RecordId, StoreError};

use crate::journal::*;
use crate::{Broker, Message, QueueId};

/// Counters for logs and operators.
#[derive(Debug, Default, Clone)]
pub struct RecoveryStats {
    pub definitions: u64,
    pub messages: u64,
    pub removed: u64,
    pub damaged_regions: usize,
}

struct Kick(Box<dyn Fn() + Send>);

impl std::fmt::Debug for Kick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kick")
    }
}

#[derive(Debug)]
pub struct StoreJournal {
    messages: Log,
    acks: Log,
    definitions: Log,
    /// Sequence number of the last append that needs a sync; 0 before any.
    seq: u64,
    synced: u64,
    /// First message id stored in each message segment, for id → segment lookups.
    segment_of: BTreeMap<MessageId, u64>,
    /// Alive (queue, message) pairs per message segment.
    live: HashMap<u64, u64>,
    /// The message segments each ack segment refers to.
    ack_refs: BTreeMap<u64, BTreeSet<u64>>,
    active_message_segment: Option<u64>,
    active_ack_segment: Option<u64>,
    failed: Option<String>,
    head: BytesMut,
    /// Ack-log records appended since the last sync.
    acks_dirty: bool,
    /// Wakes the syncer when `acks_dirty` turns true (see `Journal::set_kick`).
    kick: Option<Kick>,
    /// Location of the latest published message record (see `Journal::last_location`).
    last_location: Option<u64>,
    /// Size of the definitions log right after its last compaction (0: none since opening).
    definitions_compacted_bytes: u64,
    /// Below this size the definitions log is never compacted.
    definitions_compaction_min_bytes: u64,
}

/// The definitions log is compacted once it holds at least this much and twice what its last
/// compaction wrote: a compaction costs a write of the state, so the history it replaces must
/// outweigh it. 4 MiB is some 20,000 queue declarations and deletions.
pub const DEFINITIONS_COMPACTION_MIN_BYTES: u64 = 4 << 20;

/// A message record's location packed in a u64: segment number above, offset below 32 bits.
/// None when either does not fit (then the message is never paged out).
fn pack_location(id: RecordId) -> Option<u64> {
    let segment = u32::try_from(id.segment).ok()?;
    let offset = u32::try_from(id.offset).ok()?;
    Some(u64::from(segment) << 32 | u64::from(offset))
}

fn unpack_location(location: u64) -> RecordId {
    RecordId { segment: location >> 32, offset: location & 0xffff_ffff }
}

fn err(e: StoreError) -> String {
    e.to_string()
}

impl StoreJournal {
    /// Opens (creating when missing) the journal under `dir`, replays it into `broker`, and
    /// returns the journal ready to be installed with `Broker::set_journal`.
    pub fn open(
        dir: &Path,
        disk: Arc<dyn Disk>,
        broker: &mut Broker,
        mut progress: impl FnMut(&str),
    ) -> Result<(StoreJournal, RecoveryStats), String> {
        let config = LogConfig::default();
        let mut stats = RecoveryStats::default();

        let mut rec = Log::open(dir.join("definitions"), config.clone(), disk.clone()).map_err(err)?;
        while let Some(r) = rec.next_record().map_err(err)? {
            if r.record_type != RECORD_DEFINITION {
                continue;
            }
            match decode_definition(r.payload) {
                Some(d) => {
                    broker.restore_definition(d);
                    stats.definitions += 1;
                }
                None => progress(&format!("skipping an unreadable definition at {:?}", r.id)),
            }
        }
        let (definitions, report) = rec.finish().map_err(err)?;
        stats.damaged_regions += report.damage.len();

        let mut removed: HashSet<(QueueId, MessageId)> = HashSet::new();
        let mut delivered: HashSet<(QueueId, MessageId)> = HashSet::new();
        let mut returned: HashMap<(QueueId, MessageId), u32> = HashMap::new();
        let mut ack_refs: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        let mut rec = Log::open(dir.join("acks"), config.clone(), disk.clone()).map_err(err)?;
        while let Some(r) = rec.next_record().map_err(err)? {
            let Some((q, m, seg)) = decode_ack(r.payload) else { continue };
            ack_refs.entry(r.id.segment).or_default().insert(seg);
            match r.record_type {
                RECORD_REMOVE => {
                    removed.insert((q, m));
                    stats.removed += 1;
                }
                RECORD_DELIVERED => {
                    delivered.insert((q, m));
                }
                RECORD_RETURNED => {
                    *returned.entry((q, m)).or_default() += 1;
                }
                _ => {}
            }
        }
        let (acks, report) = rec.finish().map_err(err)?;
        stats.damaged_regions += report.damage.len();

        let mut segment_of = BTreeMap::new();
        let mut live: HashMap<u64, u64> = HashMap::new();
        let mut rec = Log::open(dir.join("messages"), config, disk).map_err(err)?;
        let mut last_report = std::time::Instant::now();
        while let Some(r) = rec.next_record().map_err(err)? {
            if r.record_type == RECORD_TRANSIENT {
                // Paged-out transient messages do not come back, but their ids are not reused:
                // acks naming them may still be in the ack log.
                if let Some(id) = r.payload.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                    broker.reserve_msg_id(u64::from_be_bytes(id));
                }
                continue;
            }
            if r.record_type != RECORD_MESSAGE && r.record_type != RECORD_MESSAGE_TIMED {
                continue;
            }
            let Some(record) = decode_message(r.record_type, Bytes::copy_from_slice(r.payload)) else {
                progress(&format!("skipping an unreadable message record at {:?}", r.id));
                continue;
            };
            segment_of.entry(record.msg_id).or_insert(r.id.segment);
            if segment_of.range(..=record.msg_id).next_back().map(|(_, s)| *s) != Some(r.id.segment) {
                segment_of.insert(record.msg_id, r.id.segment);
            }
            let id = record.msg_id;
            // Pages out as publishes do: a backlog is not loaded into memory beyond the budget.
            let n = broker.restore_message_at(
                record,
                pack_location(r.id),
                |q| removed.contains(&(q, id)),
                |q| delivered.contains(&(q, id)),
                |q| returned.get(&(q, id)).copied().unwrap_or(0),
            );
            *live.entry(r.id.segment).or_default() += n as u64;
            stats.messages += 1;
            if last_report.elapsed().as_secs() >= 1 {
                let p = rec.progress();
                progress(&format!("recovering messages: {:?}", p));
                last_report = std::time::Instant::now();
            }
        }
        let (messages, report) = rec.finish().map_err(err)?;
        stats.damaged_regions += report.damage.len();

        let mut j = StoreJournal {
            active_message_segment: messages.segments().last().map(|s| s.number),
            active_ack_segment: acks.segments().last().map(|s| s.number),
            messages,
            acks,
            definitions,
            seq: 0,
            synced: 0,
            segment_of,
            live,
            ack_refs,
            failed: None,
            head: BytesMut::new(),
            acks_dirty: false,
            kick: None,
            last_location: None,
            definitions_compacted_bytes: 0,
            definitions_compaction_min_bytes: DEFINITIONS_COMPACTION_MIN_BYTES,
        };
        j.collect_garbage();
        Ok((j, stats))
    }

    /// Lowers (tests) or raises the size below which the definitions log is never compacted.
    pub fn set_definitions_compaction_min_bytes(&mut self, bytes: u64) {
        self.definitions_compaction_min_bytes = bytes;
    }

    fn write_definitions_snapshot(&mut self, snapshot: &[Definition]) -> Result<(), StoreError> {
        let first = self.definitions.start_segment()?;
        for d in snapshot {
            self.definitions.append(RECORD_DEFINITION, &[&encode_definition(d)])?;
        }
        self.definitions.flush_and_sync()?;
        // Oldest first, so that a crash leaves a later part of the history, which the snapshot
        // after it overrides.
        for s in self.definitions.segments() {
            if s.number < first {
                self.definitions.delete_segment(s.number)?;
            }
        }
        self.definitions.flush_and_sync()
    }

    fn segment_for(&self, msg_id: MessageId) -> Option<u64> {
        self.segment_of.range(..=msg_id).next_back().map(|(_, s)| *s)
    }

    /// Deletes message segments with nothing alive and ack segments that refer only to deleted
    /// message segments. The segments being written are kept. The files are removed by the next
    /// group commit's job, outside the broker lock, message segments before ack segments (the job
    /// runs the messages log's part first), so a crash can never keep a message segment whose
    /// acks are gone.
    fn collect_garbage(&mut self) {
        let dead: Vec<u64> = self
            .messages
            .segments()
            .iter()
            .map(|s| s.number)
            .filter(|n| Some(*n) != self.active_message_segment && self.live.get(n).copied().unwrap_or(0) == 0)
            .collect();
        for n in dead {
            if self.messages.delete_segment_later(n).is_ok() {
                // `segment_of` keeps the deleted segment's entry, so a late lookup for one of its
                // messages finds it (gone from `live`) instead of wrongly finding its predecessor.
                self.live.remove(&n);
            }
        }
        let existing: BTreeSet<u64> = self.messages.segments().iter().map(|s| s.number).collect();
        let mut dead_acks = Vec::new();
        for (a, refs) in self.ack_refs.iter_mut() {
            refs.retain(|s| existing.contains(s));
            if refs.is_empty() && Some(*a) != self.active_ack_segment {
                dead_acks.push(*a);
            }
        }
        let ack_segments: BTreeSet<u64> = self.acks.segments().iter().map(|s| s.number).collect();
        for a in ack_segments {
            let referenced = self.ack_refs.get(&a).is_some_and(|r| !r.is_empty());
            if !referenced && Some(a) != self.active_ack_segment && self.acks.delete_segment_later(a).is_ok() {
                self.ack_refs.remove(&a);
            }
        }
        for a in dead_acks {
            self.ack_refs.remove(&a);
        }
    }

    fn fail(&mut self, what: &str, e: StoreError) {
        if self.failed.is_none() {
            self.failed = Some(format!("{what}: {e}"));
        }
    }

    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn ack_record(&mut self, kind: u8, queue: QueueId, msg_id: MessageId) {
        let Some(seg) = self.segment_for(msg_id) else { return };
        let payload = encode_ack(queue, msg_id, seg);
        if !self.acks_dirty {
            self.acks_dirty = true;
            if let Some(kick) = &self.kick {
                (kick.0)();
            }
        }
        match self.acks.append(kind, &[&payload]) {
            Ok(id) => {
                self.ack_refs.entry(id.segment).or_default().insert(seg);
                if self.active_ack_segment != Some(id.segment) {
                    self.active_ack_segment = Some(id.segment);
                }
            }
            Err(e) => self.fail("ack log append", e),
        }
    }

    /// True when appends wait for a sync.
    pub fn needs_sync(&self) -> bool {
        self.seq > self.synced
    }

    fn start_sync(&mut self, force: bool) -> Option<Box<dyn SyncJob>> {
        // Forced (periodically, and at shutdown) also for segment files waiting to be removed.
        let removals = self.messages.pending_removals() + self.acks.pending_removals() > 0;
        if !(self.needs_sync() || (force && (self.acks_dirty || removals))) {
            return None;
        }
        if let Some(f) = &self.failed {
            // Everything appended since is nacked by the broker; do not come back for it.
            self.synced = self.seq;
            self.acks_dirty = false;
            return Some(Box::new(Failed(f.clone())));
        }
        let target = self.seq;
        let jobs = self.messages.begin_sync().and_then(|m| self.acks.begin_sync().map(|a| (m, a)));
        match jobs {
            Ok((messages, acks)) => {
                // Optimistic: if the job fails, `sync_failed` fails the journal for good.
                self.synced = target;
                self.acks_dirty = false;
                Some(Box::new(Pending { messages, acks, target }))
            }
            Err(e) => {
                self.fail("sync", e);
                self.synced = target;
                self.acks_dirty = false;
                Some(Box::new(Failed(self.failed.clone().unwrap_or_default())))
            }
        }
    }
}

impl StoreJournal {
    /// Appends a message record (`head` holds what precedes the common payload) and accounts
    /// for it in its segment; returns its location.
    fn append_message(
        &mut self,
        record_type: u8,
        msg_id: MessageId,
        queues: &[QueueId],
        message: &Message,
    ) -> Option<u64> {
        encode_message_head(msg_id, queues, message, &mut self.head);
        match self.messages.append(record_type, &[&self.head, &message.body]) {
            Ok(id) => {
                if self.active_message_segment != Some(id.segment) {
                    self.active_message_segment = Some(id.segment);
                    self.segment_of.insert(msg_id, id.segment);
                    // The previous segment is sealed now; it may hold nothing alive.
                    self.collect_garbage();
                }
                *self.live.entry(id.segment).or_default() += queues.len() as u64;
                pack_location(id)
            }
            Err(e) => {
                self.fail("message log append", e);
                None
            }
        }
    }
}

/// The fsyncs of one group commit, run by the syncer without the broker lock.
struct Pending {
    messages: PendingSync,
    acks: PendingSync,
    target: u64,
}

impl SyncJob for Pending {
    fn target(&self) -> u64 {
        self.target
    }

    fn run(self: Box<Self>) -> Result<u64, String> {
        self.messages.run().map_err(err)?;
        self.acks.run().map_err(err)?;
        Ok(self.target)
    }
}

struct Failed(String);

impl SyncJob for Failed {
    fn target(&self) -> u64 {
        0
    }

    fn run(self: Box<Self>) -> Result<u64, String> {
        Err(self.0)
    }
}

/// Ack-log payload: `queue_id u64 | msg_id u64 | message segment u64`, big-endian.
fn encode_ack(queue: QueueId, msg_id: MessageId, segment: u64) -> [u8; 24] {
    let mut a = [0u8; 24];
    a[..16].copy_from_slice(&encode_ref(queue, msg_id));
    a[16..].copy_from_slice(&segment.to_be_bytes());
    a
}

fn decode_ack(p: &[u8]) -> Option<(QueueId, MessageId, u64)> {
    if p.len() != 24 {
        return None;
    }
    let (q, m) = decode_ref(&p[..16])?;
    Some((q, m, u64::from_be_bytes(p[16..].try_into().ok()?)))
}

impl Journal for StoreJournal {
    fn publish(&mut self, msg_id: MessageId, queues: &[QueueId], message: &Message, arrival_ms: Option<u64>) -> u64 {
        self.head.clear();
        let record_type = match arrival_ms {
            Some(a) => {
                self.head.put_u64(a);
                RECORD_MESSAGE_TIMED
            }
            None => RECORD_MESSAGE,
        };
        self.last_location = self.append_message(record_type, msg_id, queues, message);
        self.seq += 1;
        self.seq
    }

    fn page(&mut self, msg_id: MessageId, queues: &[QueueId], message: &Message) -> Option<u64> {
        if self.failed.is_some() {
            return None;
        }
        self.head.clear();
        // Not counted in `seq`: nothing waits for it to be synced.
        self.append_message(RECORD_TRANSIENT, msg_id, queues, message)
    }

    fn last_location(&self) -> Option<u64> {
        self.last_location
    }

    fn read(&self, location: u64) -> Option<Message> {
        let (record_type, payload) = self.messages.read(unpack_location(location)).ok()?;
        decode_message(record_type, Bytes::from(payload)).map(|r| r.message)
    }

    fn remove(&mut self, queue: QueueId, msg_id: MessageId) {
        self.ack_record(RECORD_REMOVE, queue, msg_id);
        if let Some(seg) = self.segment_for(msg_id) {
            if let Some(n) = self.live.get_mut(&seg) {
                *n = n.saturating_sub(1);
                if *n == 0 && Some(seg) != self.active_message_segment {
                    self.collect_garbage();
                }
            }
        }
    }

    fn delivered(&mut self, queue: QueueId, msg_id: MessageId) {
        self.ack_record(RECORD_DELIVERED, queue, msg_id);
    }

    fn returned(&mut self, queue: QueueId, msg_id: MessageId) {
        self.ack_record(RECORD_RETURNED, queue, msg_id);
    }

    fn define(&mut self, definition: &Definition) {
        let payload = encode_definition(definition);
        let r = self.definitions.append(RECORD_DEFINITION, &[&payload]).and_then(|_| self.definitions.flush_and_sync());
        if let Err(e) = r {
            self.fail("definitions log", e);
        }
    }

    fn definitions_compaction_due(&self) -> bool {
        self.failed.is_none()
            && self.definitions.size_bytes()
                > self.definitions_compaction_min_bytes.max(2 * self.definitions_compacted_bytes)
    }

    fn compact_definitions(&mut self, snapshot: &[Definition]) {
        match self.write_definitions_snapshot(snapshot) {
            Ok(()) => self.definitions_compacted_bytes = self.definitions.size_bytes(),
            Err(e) => self.fail("definitions log", e),
        }
    }

    fn written(&self) -> u64 {
        self.seq
    }

    fn begin_sync(&mut self, force: bool) -> Option<Box<dyn SyncJob>> {
        self.start_sync(force)
    }

    fn idle(&self) -> bool {
        !self.needs_sync() && !self.acks_dirty && self.messages.pending_removals() + self.acks.pending_removals() == 0
    }

    fn set_kick(&mut self, kick: Box<dyn Fn() + Send>) {
        self.kick = Some(Kick(kick));
    }

    fn sync_failed(&mut self, error: &str) {
        self.messages.sync_failed();
        self.acks.sync_failed();
        if self.failed.is_none() {
            self.failed = Some(format!("sync: {error}"));
        }
    }
}
