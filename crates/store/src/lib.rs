//! Durable bytes for Warren: a segmented, append-only, checksummed record log with group commit and crash
//! recovery. It stores opaque records (a type byte chosen by the caller and a payload) and knows nothing
//! of AMQP, messages or queues; the broker gives records their meaning.
//!
//! A [`Log`] lives in one directory as numbered segment files. The life of a log:
//!
//! ```
//! # fn main() -> Result<(), store::StoreError> {
//! use std::sync::Arc;
//! use store::{FsDisk, Log, LogConfig};
//! # let tmp = tempfile::tempdir().expect("a temporary directory");
//! # let dir = tmp.path().join("log");
//!
//! // Open: recovery reads every segment, yields each valid record once, in order, and repairs the tail.
//! let mut recovery = Log::open(&dir, LogConfig::default(), Arc::new(FsDisk))?;
//! while let Some(record) = recovery.next_record()? {
//!     // rebuild the caller's state from record.id, record.record_type, record.payload
//! #   let _ = record;
//! }
//! let (mut log, report) = recovery.finish()?;
//! assert!(report.is_clean());
//!
//! // Write: appends are buffered; one flush_and_sync makes all of them durable (group commit).
//! let id = log.append(1, &[b"header", b"body"])?;
//! log.flush_and_sync()?; // only now may the caller confirm the record to anyone
//! assert_eq!(log.read(id)?, (1, b"headerbody".to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! Guarantees: a record whose `flush_and_sync` returned `Ok` is returned by every later recovery until its
//! segment is deleted; recovery never returns bytes that were not appended; after a crash it returns a
//! prefix of what was appended (on a disk that persists writes in order; see `docs/storage-format.md`).
//! After any failed write or fsync the log is poisoned and refuses further changes.
//!
//! The on-disk format is specified in `docs/storage-format.md`; the design is argued in
//! `docs/decisions/0001-store-log.md`. This crate uses no async runtime, no threads and no clock.

mod disk;
mod error;
pub mod format;
mod log;
mod recovery;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use disk::{Disk, DiskFile, FsDisk};
pub use error::{Result, StoreError};
pub use format::{HeaderFault, RecordFault};
pub use log::{Log, LogConfig, PendingSync, SegmentInfo};
pub use recovery::{Damage, DamageKind, Record, Recovery, RecoveryProgress, RecoveryReport};

/// Where a record lives: its segment and the byte offset of its header in that segment file. Returned
/// by [`Log::append`] and by recovery; stable for the life of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub segment: u64,
    pub offset: u64,
}

// A log and its recovery can move to (and be shared with) another thread, e.g. a dedicated store thread.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Log>();
    send_sync::<Recovery>();
};
