//! [`Log`]: the write side of the record log (append, group commit, segment rolling and deletion) and
//! random reads of records by id. Recovery, which builds a `Log` from what is on disk, is in
//! `recovery.rs`; the byte layout is in `format.rs`.
//!
//! The log never retries a failed write or fsync: the first failure poisons it. It never syncs behind the
//! caller's back and never writes in `Drop`; durability happens in [`Log::flush_and_sync`] and nowhere else.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::disk::{Disk, DiskFile};
use crate::error::{io_err, Result, StoreError};
use crate::format::{self, RecordFault, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::RecordId;

/// The limits of a log. Every field has a default; see [`LogConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment is closed and the next one started when an append would take it past this size. A record
    /// bigger than this gets a segment of its own. Default 8 MiB.
    pub segment_size_bytes: u64,
    /// The largest payload [`Log::append`] accepts. Recovery reads records of any size the format allows.
    /// Default 512 MiB (RabbitMQ's largest message body).
    pub record_bytes_max: u32,
    /// Appended bytes are kept in memory until [`Log::flush_and_sync`]; when more than this many are
    /// waiting, `append` writes them out (without fsync) so the buffer stays bounded. Default 4 MiB.
    pub write_buffer_bytes_max: usize,
    /// How many segment files [`Log::read`] keeps open. Default 64.
    pub read_handles_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_size_bytes: 8 << 20,
            record_bytes_max: 512 << 20,
            write_buffer_bytes_max: 4 << 20,
            read_handles_max: 64,
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.segment_size_bytes <= SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES {
            return Err(StoreError::InvalidConfig("segment_size_bytes must exceed the segment and record headers"));
        }
        if u64::from(self.record_bytes_max) > u64::from(u32::MAX) - RECORD_HEADER_BYTES {
            return Err(StoreError::InvalidConfig("record_bytes_max must leave room for the record header"));
        }
        if self.write_buffer_bytes_max == 0 {
            return Err(StoreError::InvalidConfig("write_buffer_bytes_max must be at least 1"));
        }
        if self.read_handles_max == 0 {
            return Err(StoreError::InvalidConfig("read_handles_max must be at least 1"));
        }
        Ok(())
    }
}

/// One segment of the log, as listed by [`Log::segments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub number: u64,
    /// Bytes in the file, plus bytes appended to it but not written out yet for the active segment.
    pub len_bytes: u64,
    /// Appends go to this segment; it cannot be deleted.
    pub active: bool,
    /// The segment's header failed its checks at recovery: none of its records were read. It stays on
    /// disk (for inspection) until deleted.
    pub damaged: bool,
}

/// A segment no longer appended to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sealed {
    pub len_bytes: u64,
    pub damaged: bool,
}

/// The segment appends go to.
#[derive(Debug)]
pub(crate) struct Active {
    pub number: u64,
    /// `None` until the segment's first bytes are written out: its file is created then.
    pub file: Option<Box<dyn DiskFile>>,
    /// Bytes already written to the file (synced or not).
    pub len_written: u64,
    /// Bytes appended but not written yet; they go at `len_written`. Reused across segments so the
    /// append path does not allocate in steady state.
    pub buf: Vec<u8>,
    /// The file has writes not covered by a sync.
    pub unsynced: bool,
    /// A second handle on the file for [`PendingSync`], opened at the segment's first sync and
    /// shared with every later one (not one `open` per group commit under the caller's lock).
    pub sync_handle: Option<SyncHandle>,
}

/// A file handle a [`PendingSync`] fsyncs without access to the [`Log`].
pub(crate) type SyncHandle = Arc<Mutex<Box<dyn DiskFile>>>;

impl Active {
    fn len_total(&self) -> u64 {
        self.len_written + self.buf.len() as u64
    }
}

/// A segmented, append-only record log in one directory. See the crate documentation for its life cycle
/// and guarantees.
///
/// `Log` is `Send` but its write methods take `&mut self`: one writer. [`Log::read`] takes `&self`.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    disk: Arc<dyn Disk>,
    sealed: BTreeMap<u64, Sealed>,
    active: Option<Active>,
    /// The number the next new segment gets.
    next_segment: u64,
    /// Sealed segments written since their last sync, oldest first, with their handles: the next
    /// `flush_and_sync` syncs them before the active segment, so that a later segment is never durable
    /// while an earlier one is not.
    unsynced_sealed: Vec<(u64, Box<dyn DiskFile>)>,
    /// A segment file was created or removed since the last directory sync.
    dir_unsynced: bool,
    /// Files of segments deleted with [`Log::delete_segment_later`], removed by the next
    /// [`PendingSync::run`] (or `flush_and_sync`), in deletion order.
    removals: Vec<PathBuf>,
    poisoned: bool,
    readers: Mutex<Readers>,
}

/// Read handles by segment, and the last block read ahead: records are mostly read back in the
/// order they were written (paged messages, delayed messages coming due), so one `pread` of
/// `READ_AHEAD_BYTES` serves the next records too instead of two reads each.
#[derive(Default)]
struct Readers {
    files: HashMap<u64, Box<dyn DiskFile>>,
    /// Segment, offset of `ahead[0]`, and bytes already on disk from there (immutable: only the
    /// written part of a segment is ever read, and segments are append-only).
    ahead_at: (u64, u64),
    ahead: Vec<u8>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("segments", &self.files.keys().collect::<Vec<_>>())
            .field("ahead_at", &self.ahead_at)
            .field("ahead_len", &self.ahead.len())
            .finish()
    }
}

/// How much a read of a record brings in beyond it.
const READ_AHEAD_BYTES: u64 = 64 * 1024;

impl Readers {
    /// The bytes `offset..offset + len` of the segment, from the read-ahead block when it has
    /// them, else by reading a new block (at least `len`, at most to `segment_len`).
    fn bytes(&mut self, segment: u64, offset: u64, len: u64, segment_len: u64) -> std::io::Result<&[u8]> {
        let (seg, start) = self.ahead_at;
        let cached = seg == segment && offset >= start && offset + len <= start + self.ahead.len() as u64;
        if !cached {
            let want = len.max(READ_AHEAD_BYTES.min(segment_len.saturating_sub(offset)));
            let file = self.files.get(&segment).expect("opened by the caller");
            self.ahead.clear();
            self.ahead.resize(usize::try_from(want).unwrap_or(usize::MAX), 0);
            if let Err(e) = file.read_at(offset, &mut self.ahead) {
                self.ahead.clear();
                return Err(e);
            }
            self.ahead_at = (segment, offset);
            if self.ahead.capacity() > 4 * READ_AHEAD_BYTES as usize && len <= READ_AHEAD_BYTES {
                self.ahead.shrink_to(READ_AHEAD_BYTES as usize);
            }
        }
        let from = (offset - self.ahead_at.1) as usize;
        Ok(&self.ahead[from..from + len as usize])
    }

    fn forget(&mut self, segment: u64) {
        self.files.remove(&segment);
        if self.ahead_at.0 == segment {
            self.ahead.clear();
        }
    }
}

/// What recovery hands over to build a [`Log`].
pub(crate) struct Recovered {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub disk: Arc<dyn Disk>,
    pub sealed: BTreeMap<u64, Sealed>,
    pub active: Option<Active>,
    pub next_segment: u64,
}

impl Log {
    pub(crate) fn from_recovered(r: Recovered) -> Self {
        Self {
            dir: r.dir,
            config: r.config,
            disk: r.disk,
            sealed: r.sealed,
            active: r.active,
            next_segment: r.next_segment,
            unsynced_sealed: Vec::new(),
            dir_unsynced: false,
            removals: Vec::new(),
            poisoned: false,
            readers: Mutex::new(Readers::default()),
        }
    }

    /// Appends one record of the caller's `record_type` whose payload is the concatenation of
    /// `payload_parts`, and returns where it will live. The record is buffered in memory: it is not
    /// durable, and not even written, until [`Log::flush_and_sync`]. `append` writes (never syncs) only
    /// when it closes a full segment or when more than `write_buffer_bytes_max` bytes are waiting.
    ///
    /// Errors: `RecordTooLarge` (nothing changes), `Poisoned`, or `Io` from such a write (and the log is
    /// poisoned from then on).
    pub fn append(&mut self, record_type: u8, payload_parts: &[&[u8]]) -> Result<RecordId> {
        self.check_writable()?;
        let len_bytes: u64 = payload_parts.iter().map(|p| p.len() as u64).sum();
        if len_bytes > u64::from(self.config.record_bytes_max) {
            return Err(StoreError::RecordTooLarge { len_bytes, record_bytes_max: self.config.record_bytes_max });
        }
        let record_bytes = RECORD_HEADER_BYTES + len_bytes;
        let roll = match &self.active {
            None => true,
            Some(a) => {
                a.len_total() > SEGMENT_HEADER_BYTES && a.len_total() + record_bytes > self.config.segment_size_bytes
            }
        };
        if roll {
            let result = self.roll();
            self.poison_on_err(result)?;
        }
        let active = self.active.as_mut().expect("roll() leaves an active segment");
        let id = RecordId { segment: active.number, offset: active.len_total() };
        let len_u32 = u32::try_from(len_bytes).expect("record_bytes_max fits in u32 (checked by validate)");
        let header = format::encode_record_header(
            id.segment,
            id.offset,
            record_type,
            len_u32,
            format::payload_crc(payload_parts),
        );
        active.buf.extend_from_slice(&header);
        for part in payload_parts {
            active.buf.extend_from_slice(part);
        }
        if active.buf.len() > self.config.write_buffer_bytes_max {
            let result = self.write_out_active();
            self.poison_on_err(result)?;
        }
        if cfg!(debug_assertions) {
            self.invariants();
        }
        Ok(id)
    }

    /// The group-commit point: writes every buffered record and fsyncs every segment written since the last
    /// call, oldest first, then the directory if a segment was created or deleted. When it returns `Ok`,
    /// every record appended before the call and every deletion made before it are durable.
    ///
    /// On failure the log is poisoned: the failed fsync is not retried (after a failed fsync the kernel may
    /// have dropped the dirty pages, so a retry that succeeds proves nothing), and every further change is
    /// refused with `Poisoned`. Reopening the log recovers what is durable.
    pub fn flush_and_sync(&mut self) -> Result<()> {
        self.check_writable()?;
        let result = self.flush_and_sync_inner();
        if cfg!(debug_assertions) {
            self.invariants();
        }
        self.poison_on_err(result)
    }

    fn flush_and_sync_inner(&mut self) -> Result<()> {
        self.write_out_active()?;
        // Paths are built only for errors: this is the hot path of every group commit.
        let dir = &self.dir;
        for (number, mut file) in self.unsynced_sealed.drain(..) {
            file.sync().map_err(|e| io_err("sync", &dir.join(format::segment_file_name(number)))(e))?;
        }
        if let Some(active) = &mut self.active {
            if active.unsynced {
                let file = active.file.as_mut().expect("a segment with unsynced writes has a file");
                file.sync().map_err(|e| io_err("sync", &dir.join(format::segment_file_name(active.number)))(e))?;
                active.unsynced = false;
            }
        }
        for path in std::mem::take(&mut self.removals) {
            remove_file(self.disk.as_ref(), &path)?;
            self.dir_unsynced = true;
        }
        if self.dir_unsynced {
            self.disk.sync_dir(&self.dir).map_err(io_err("sync directory", &self.dir))?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// The first half of a group commit that does not hold the writer while it waits for the
    /// disk: writes every buffered record (no fsync) and returns a [`PendingSync`] holding the
    /// handles to fsync. Run it on any thread, then report the outcome with [`Log::sync_failed`]
    /// if it failed. When [`PendingSync::run`] returns `Ok`, everything appended before this call
    /// is durable (and possibly more). Appends may continue meanwhile.
    pub fn begin_sync(&mut self) -> Result<PendingSync> {
        self.check_writable()?;
        let result = self.begin_sync_inner();
        self.poison_on_err(result)
    }

    fn begin_sync_inner(&mut self) -> Result<PendingSync> {
        self.write_out_active()?;
        let mut files: Vec<(PathBuf, SyncHandle)> = Vec::new();
        for (number, file) in self.unsynced_sealed.drain(..) {
            files.push((self.dir.join(format::segment_file_name(number)), Arc::new(Mutex::new(file))));
        }
        if let Some(active) = &mut self.active {
            if active.unsynced {
                // A second handle on the same file: fsync covers the file, whichever handle asks.
                let path = self.dir.join(format::segment_file_name(active.number));
                let handle = match &active.sync_handle {
                    Some(h) => h.clone(),
                    None => {
                        let h: SyncHandle =
                            Arc::new(Mutex::new(self.disk.open(&path).map_err(io_err("open for sync", &path))?));
                        active.sync_handle = Some(h.clone());
                        h
                    }
                };
                files.push((path, handle));
                active.unsynced = false;
            }
        }
        let removals = std::mem::take(&mut self.removals);
        let dir = if self.dir_unsynced || !removals.is_empty() {
            self.dir_unsynced = false;
            Some((self.disk.clone(), self.dir.clone()))
        } else {
            None
        };
        Ok(PendingSync { files, removals, dir })
    }

    /// A [`PendingSync`] of this log failed: poison the log (the fsync is never retried).
    pub fn sync_failed(&mut self) {
        self.poisoned = true;
    }

    /// Reads one record back, checking its header and payload checksums, and returns
    /// `(record_type, payload)`. Works for records not yet flushed, too (they are served from the
    /// buffer). Reads are allowed on a poisoned log.
    ///
    /// Errors: `UnknownSegment` (deleted or never existed), `NoRecord` (offset outside the segment),
    /// `Corrupt` (checks failed, including an id that does not point at the start of a record), `Io`.
    pub fn read(&self, id: RecordId) -> Result<(u8, Vec<u8>)> {
        let segment_len = match (&self.active, self.sealed.get(&id.segment)) {
            (Some(a), _) if a.number == id.segment => {
                if id.offset >= a.len_written {
                    return self.read_buffered(a, id);
                }
                a.len_written
            }
            (_, Some(sealed)) if !sealed.damaged => sealed.len_bytes,
            _ => return Err(StoreError::UnknownSegment(id.segment)),
        };
        if id.offset < SEGMENT_HEADER_BYTES || id.offset.saturating_add(RECORD_HEADER_BYTES) > segment_len {
            return Err(StoreError::NoRecord { segment: id.segment, offset: id.offset });
        }
        let path = self.segment_path(id.segment);
        let mut readers = self.readers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !readers.files.contains_key(&id.segment) {
            if readers.files.len() >= self.config.read_handles_max {
                // Evict the oldest segment's handle: old segments are the ones the caller deletes first.
                if let Some(&oldest) = readers.files.keys().min() {
                    readers.forget(oldest);
                }
            }
            let file = self.disk.open(&path).map_err(io_err("open", &path))?;
            readers.files.insert(id.segment, file);
        }
        let header: [u8; RECORD_HEADER_BYTES as usize] = readers
            .bytes(id.segment, id.offset, RECORD_HEADER_BYTES, segment_len)
            .map_err(io_err("read", &path))?
            .try_into()
            .expect("asked for a header's length");
        let corrupt = |fault| StoreError::Corrupt { path: path.clone(), offset: id.offset, fault };
        let h = format::decode_record_header(id.segment, id.offset, &header).map_err(corrupt)?;
        let payload_offset = id.offset + RECORD_HEADER_BYTES;
        if payload_offset + u64::from(h.len_bytes) > segment_len {
            return Err(corrupt(RecordFault::BeyondEnd { len_bytes: h.len_bytes }));
        }
        let payload = readers
            .bytes(id.segment, payload_offset, u64::from(h.len_bytes), segment_len)
            .map_err(io_err("read", &path))?
            .to_vec();
        if crc32c::crc32c(&payload) != h.payload_crc {
            return Err(corrupt(RecordFault::PayloadChecksum));
        }
        Ok((h.record_type, payload))
    }

    fn read_buffered(&self, active: &Active, id: RecordId) -> Result<(u8, Vec<u8>)> {
        let no_record = || StoreError::NoRecord { segment: id.segment, offset: id.offset };
        let start = usize::try_from(id.offset - active.len_written).map_err(|_| no_record())?;
        let header: &[u8; RECORD_HEADER_BYTES as usize] = active
            .buf
            .get(start..start.saturating_add(RECORD_HEADER_BYTES as usize))
            .and_then(|h| h.try_into().ok())
            .ok_or_else(no_record)?;
        let path = self.segment_path(id.segment);
        let corrupt = |fault| StoreError::Corrupt { path: path.clone(), offset: id.offset, fault };
        let h = format::decode_record_header(id.segment, id.offset, header).map_err(corrupt)?;
        let payload_start = start + RECORD_HEADER_BYTES as usize;
        let payload = active
            .buf
            .get(payload_start..payload_start + h.len_bytes as usize)
            .ok_or_else(|| corrupt(RecordFault::BeyondEnd { len_bytes: h.len_bytes }))?;
        if crc32c::crc32c(payload) != h.payload_crc {
            return Err(corrupt(RecordFault::PayloadChecksum));
        }
        Ok((h.record_type, payload.to_vec()))
    }

    /// Deletes a segment whose records the caller knows to be dead. The deletion is durable once the next
    /// [`Log::flush_and_sync`] returns `Ok`; until then a crash may bring the segment back.
    ///
    /// Errors: `ActiveSegment` (the segment appends go to can never be deleted), `UnknownSegment`,
    /// `Poisoned`, `Io` (and the log is poisoned).
    pub fn delete_segment(&mut self, number: u64) -> Result<()> {
        self.check_writable()?;
        if self.active.as_ref().is_some_and(|a| a.number == number) {
            return Err(StoreError::ActiveSegment(number));
        }
        if !self.sealed.contains_key(&number) {
            return Err(StoreError::UnknownSegment(number));
        }
        let path = self.segment_path(number);
        let result = self.disk.remove(&path).map_err(io_err("remove", &path));
        self.poison_on_err(result)?;
        self.sealed.remove(&number);
        // Its data need not reach the disk any more.
        self.unsynced_sealed.retain(|(n, _)| *n != number);
        self.readers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).forget(number);
        self.dir_unsynced = true;
        if cfg!(debug_assertions) {
            self.invariants();
        }
        Ok(())
    }

    /// Like [`Log::delete_segment`], but the file is removed by the next [`PendingSync::run`] (or
    /// `flush_and_sync`), outside whatever lock the caller holds around the log: removing a large
    /// file can take milliseconds. The segment is gone for the log at once (no reads, not listed);
    /// removals happen in the order asked for, so a crash leaves a prefix of them done.
    ///
    /// Errors: as [`Log::delete_segment`] (no `Io`: the removal's error comes from the job).
    pub fn delete_segment_later(&mut self, number: u64) -> Result<()> {
        self.check_writable()?;
        if self.active.as_ref().is_some_and(|a| a.number == number) {
            return Err(StoreError::ActiveSegment(number));
        }
        if !self.sealed.contains_key(&number) {
            return Err(StoreError::UnknownSegment(number));
        }
        self.removals.push(self.segment_path(number));
        self.sealed.remove(&number);
        self.unsynced_sealed.retain(|(n, _)| *n != number);
        self.readers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).forget(number);
        if cfg!(debug_assertions) {
            self.invariants();
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one, whose number it returns: every record
    /// appended from now on lives in that segment or later ones. For compaction: write a snapshot
    /// from a fresh segment, sync it, then delete the segments before it.
    ///
    /// Errors: `Poisoned`, or `Io` from writing out the buffered records (the log is poisoned).
    pub fn start_segment(&mut self) -> Result<u64> {
        self.check_writable()?;
        let result = self.roll();
        self.poison_on_err(result)?;
        if cfg!(debug_assertions) {
            self.invariants();
        }
        Ok(self.active.as_ref().expect("roll() leaves an active segment").number)
    }

    /// Segment files deleted with [`Log::delete_segment_later`] and not removed yet.
    pub fn pending_removals(&self) -> usize {
        self.removals.len()
    }

    /// Every segment, oldest first, including damaged ones and the active one.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let mut list: Vec<SegmentInfo> = self
            .sealed
            .iter()
            .map(|(&number, s)| SegmentInfo { number, len_bytes: s.len_bytes, active: false, damaged: s.damaged })
            .collect();
        if let Some(a) = &self.active {
            list.push(SegmentInfo { number: a.number, len_bytes: a.len_total(), active: true, damaged: false });
        }
        list
    }

    /// The total size of all segments, including bytes appended but not yet written out.
    pub fn size_bytes(&self) -> u64 {
        self.sealed.values().map(|s| s.len_bytes).sum::<u64>() + self.active.as_ref().map_or(0, Active::len_total)
    }

    /// True after a write or fsync failed: the log refuses every further change.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// [`Log::flush_and_sync`], then drop. Dropping a log without it loses the buffered records, exactly
    /// as a crash would.
    pub fn close(mut self) -> Result<()> {
        self.flush_and_sync()
    }

    /// The log's invariants, checked after every change in debug builds.
    fn invariants(&self) {
        if let Some(a) = &self.active {
            assert!(a.number < self.next_segment, "the active segment is numbered below the next one");
            assert!(self.sealed.keys().all(|&n| n < a.number), "sealed segments are older than the active one");
            assert!(a.file.is_some() || a.len_written == 0, "bytes were written to a file that exists");
            assert!(a.len_total() >= SEGMENT_HEADER_BYTES, "the active segment starts with its header");
        }
        assert!(self.sealed.keys().all(|&n| n < self.next_segment));
        assert!(
            self.unsynced_sealed.iter().all(|(n, _)| self.sealed.contains_key(n)),
            "only live sealed segments wait for a sync"
        );
    }

    fn check_writable(&self) -> Result<()> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        Ok(())
    }

    fn poison_on_err<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn segment_path(&self, number: u64) -> PathBuf {
        self.dir.join(format::segment_file_name(number))
    }

    /// Writes the active segment's buffered bytes (creating its file if this is the first write).
    fn write_out_active(&mut self) -> Result<()> {
        let Some(active) = &mut self.active else { return Ok(()) };
        if active.buf.is_empty() {
            return Ok(());
        }
        let dir = &self.dir;
        if active.file.is_none() {
            let path = dir.join(format::segment_file_name(active.number));
            active.file = Some(self.disk.create(&path).map_err(io_err("create", &path))?);
            self.dir_unsynced = true;
        }
        let file = active.file.as_mut().expect("created above");
        file.append(&active.buf)
            .map_err(|e| io_err("write", &dir.join(format::segment_file_name(active.number)))(e))?;
        active.len_written += active.buf.len() as u64;
        active.unsynced = true;
        active.buf.clear();
        if active.buf.capacity() > 2 * self.config.write_buffer_bytes_max {
            // A huge record grew the buffer; do not keep that much memory for ordinary ones.
            active.buf.shrink_to(self.config.write_buffer_bytes_max);
        }
        Ok(())
    }

    /// Closes the active segment (writing out its buffer) and starts the next one, whose header goes into
    /// the reused buffer.
    fn roll(&mut self) -> Result<()> {
        self.write_out_active()?;
        let mut buf = Vec::new();
        if let Some(old) = self.active.take() {
            self.sealed.insert(old.number, Sealed { len_bytes: old.len_written, damaged: false });
            if let (true, Some(file)) = (old.unsynced, old.file) {
                self.unsynced_sealed.push((old.number, file));
            }
            buf = old.buf;
        }
        if buf.capacity() == 0 {
            buf.reserve(self.config.write_buffer_bytes_max.min(self.config.segment_size_bytes as usize));
        }
        let number = self.next_segment;
        self.next_segment += 1;
        buf.extend_from_slice(&format::encode_segment_header(number));
        self.active = Some(Active { number, file: None, len_written: 0, buf, unsynced: false, sync_handle: None });
        Ok(())
    }
}

/// Removes a deleted segment's file; one already gone is fine (a removal is never repeated, but
/// a file may have been removed by hand).
fn remove_file(disk: &dyn Disk, path: &Path) -> Result<()> {
    match disk.remove(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(io_err("remove", path)),
    }
}

/// The fsync half of a group commit started by [`Log::begin_sync`]: segments oldest first, then
/// the directory. Needs no access to the [`Log`], so the writer keeps appending meanwhile.
#[derive(Debug)]
#[must_use = "a PendingSync does nothing until it is run"]
pub struct PendingSync {
    files: Vec<(PathBuf, SyncHandle)>,
    /// Segment files to remove first (see [`Log::delete_segment_later`]).
    removals: Vec<PathBuf>,
    dir: Option<(Arc<dyn Disk>, PathBuf)>,
}

impl PendingSync {
    /// True when there is nothing to sync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.removals.is_empty() && self.dir.is_none()
    }

    /// Runs the fsyncs. On error, call [`Log::sync_failed`].
    pub fn run(self) -> Result<()> {
        if let Some((disk, _)) = &self.dir {
            for path in &self.removals {
                remove_file(disk.as_ref(), path)?;
            }
        }
        for (path, file) in self.files {
            file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).sync().map_err(io_err("sync", &path))?;
        }
        if let Some((disk, dir)) = self.dir {
            disk.sync_dir(&dir).map_err(io_err("sync directory", &dir))?;
        }
        Ok(())
    }
}
