//! The one error type of the store. It says what failed and where (operation, file, offset); it does not
//! decide what the caller does about it, except that [`StoreError::Poisoned`] means the log will accept no
//! more writes until it is reopened.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::format::RecordFault;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The environment failed: an I/O call returned an error. If it was a write, a sync, a create, a
    /// truncate or a remove made by a [`Log`](crate::Log), the log is now poisoned.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An earlier write or fsync failed. Nothing written since the last successful
    /// [`flush_and_sync`](crate::Log::flush_and_sync) can be trusted to be on disk, and a failed fsync
    /// must not be retried (the kernel may already have dropped the dirty pages), so the log refuses every
    /// further change. Reopening it recovers what is durable.
    #[error("the log refuses writes after an earlier write or fsync failure; reopen it to recover")]
    Poisoned,
    /// A payload larger than [`LogConfig::record_bytes_max`](crate::LogConfig::record_bytes_max).
    #[error("record of {len_bytes} bytes exceeds record_bytes_max {record_bytes_max}")]
    RecordTooLarge { len_bytes: u64, record_bytes_max: u32 },
    /// No segment with this number exists in the log.
    #[error("no segment {0}")]
    UnknownSegment(u64),
    /// The active segment (the one appends go to) cannot be deleted.
    #[error("segment {0} is the active segment")]
    ActiveSegment(u64),
    /// A record id that points outside its segment.
    #[error("no record at segment {segment} offset {offset}")]
    NoRecord { segment: u64, offset: u64 },
    /// A record read back failed its checks.
    #[error("corrupt record in {} at offset {offset}: {fault}", path.display())]
    Corrupt { path: PathBuf, offset: u64, fault: RecordFault },
    /// A segment written by a newer format version. Nothing is skipped or truncated: the data is probably
    /// fine and this build is too old to read it.
    #[error("{} has format version {version}; this build reads version {}", path.display(), crate::format::FORMAT_VERSION)]
    UnsupportedVersion { path: PathBuf, version: u16 },
    /// A [`LogConfig`](crate::LogConfig) value out of range.
    #[error("invalid log config: {0}")]
    InvalidConfig(&'static str),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// `map_err` helper: wraps an `io::Error` with the operation and path it came from.
pub(crate) fn io_err<'a>(op: &'static str, path: &'a std::path::Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}
