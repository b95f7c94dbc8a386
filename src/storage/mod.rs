//! Storage: partition logs made of segments, written through the [`crate::io`] trait.
//!
//! Everything here runs on the shard that owns the partition; nothing is shared across cores.
//! [`PartitionLog`] is the entry point; segments, index files, the aligned writer and recovery are
//! private parts of it. The on-disk formats are drawn in `docs/format.md`.
//!
//! Invariants (kept by [`PartitionLog`]): offsets are dense; an acknowledged append is in the file
//! (and fsynced under [`FsyncPolicy::Always`]); recovery never serves a batch whose CRC or offset
//! sequence is wrong; a failed fsync poisons the log.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::constants::{
    DIRTY_BYTES_MAX_DEFAULT, INDEX_INTERVAL_BYTES_DEFAULT, IO_ALIGNMENT_BYTES, SEGMENT_BYTES_DEFAULT,
    SEGMENT_BYTES_MAX, WRITE_CHUNK_BYTES_DEFAULT,
};
use crate::io::IoError;
use crate::model::Offset;
use crate::protocol::batch::BatchError;

pub mod acks;
mod appender;
pub mod index;
mod log;
pub mod offsets;
pub mod producers;
pub mod ranges;
mod segment;
#[cfg(test)]
mod tests;

pub use log::{AppendInfo, LogRead, PartitionLog, ReadChunk};

/// When appends are acknowledged relative to fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge after the batch is written and fdatasynced (group commit shares the fsync).
    Always,
    /// Acknowledge after the write; fdatasync at least this often.
    Interval(Duration),
    /// Acknowledge after the write; fdatasync only on roll and close.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match text.strip_prefix("interval=").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err(format!("fsync policy `{text}`: expected always, never or interval=MS")),
            },
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Never => write!(f, "never"),
            FsyncPolicy::Interval(every) => write!(f, "interval={}", every.as_millis()),
        }
    }
}

/// Settings of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Size at which the active segment is sealed.
    pub segment_bytes: u64,
    /// Age (since its first batch) at which the active segment is sealed.
    pub segment_max_age: Option<Duration>,
    /// Log bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// Capacity of one aligned write chunk.
    pub write_chunk_bytes: usize,
    /// Unwritten bytes above which appenders wait for the disk.
    pub dirty_bytes_max: usize,
    /// The durability policy.
    pub fsync: FsyncPolicy,
    /// Sealed segments whose newest batch is older than this are deleted.
    pub retention_max_age: Option<Duration>,
    /// Oldest sealed segments are deleted while the log is larger than this.
    pub retention_max_bytes: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_max_age: None,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            write_chunk_bytes: WRITE_CHUNK_BYTES_DEFAULT,
            dirty_bytes_max: DIRTY_BYTES_MAX_DEFAULT,
            fsync: FsyncPolicy::Always,
            retention_max_age: None,
            retention_max_bytes: None,
        }
    }
}

impl LogConfig {
    /// Rejects settings the log cannot honour.
    pub fn check(&self) -> StorageResult<()> {
        let problem = if self.segment_bytes == 0 || self.segment_bytes > SEGMENT_BYTES_MAX {
            Some(format!("segment bytes {} outside 1..={SEGMENT_BYTES_MAX}", self.segment_bytes))
        } else if self.write_chunk_bytes < IO_ALIGNMENT_BYTES
            || self.write_chunk_bytes % IO_ALIGNMENT_BYTES != 0
        {
            Some(format!("write chunk {} is not a multiple of {IO_ALIGNMENT_BYTES}", self.write_chunk_bytes))
        } else if self.index_interval_bytes == 0 {
            Some("index interval must be positive".to_string())
        } else if self.dirty_bytes_max < self.write_chunk_bytes {
            // A larger batch is still accepted (the check runs before each append); this only
            // keeps the bound meaningful.
            Some(format!("dirty bytes max {} below one write chunk", self.dirty_bytes_max))
        } else {
            None
        };
        match problem {
            Some(reason) => Err(StorageError::Config(reason)),
            None => Ok(()),
        }
    }
}

/// The marks of a log (each is the offset after the last batch in that state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    /// The first offset still stored (retention moves it).
    pub start: Offset,
    /// After the last batch assigned an offset (buffered or written).
    pub dirty_next: Offset,
    /// After the last batch written to the file.
    pub stable_next: Offset,
    /// After the last batch fsynced.
    pub committed_next: Offset,
}

/// One thing recovery repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Bytes from `position` on were dropped from the segment's log.
    TruncatedTail {
        /// Base offset of the segment.
        segment: Offset,
        /// New length of the log file.
        position: u64,
        /// Bytes dropped.
        dropped_bytes: u64,
        /// Why the first dropped batch was refused.
        reason: String,
        /// True when every dropped byte that was looked at was zero (padding of a partial block).
        zero_padding: bool,
    },
    /// The index files were rewritten from the log.
    RebuiltIndex {
        /// Base offset of the segment.
        segment: Offset,
        /// Entries now.
        entries: usize,
        /// Entries of the old files that were kept.
        trusted_from_file: usize,
    },
    /// A whole segment was removed.
    RemovedSegment {
        /// Base offset of the segment.
        segment: Offset,
        /// Why.
        reason: &'static str,
    },
    /// An index file without a log was removed.
    RemovedOrphanIndex {
        /// File name.
        file: String,
    },
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::TruncatedTail { segment, position, dropped_bytes, reason, zero_padding } => {
                let what = if *zero_padding { "zero padding" } else { "torn or corrupt tail" };
                write!(f, "segment {segment}: truncated {dropped_bytes} bytes of {what} at byte {position} ({reason})")
            }
            Repair::RebuiltIndex { segment, entries, trusted_from_file } => {
                write!(f, "segment {segment}: rebuilt index, {entries} entries ({trusted_from_file} trusted from file)")
            }
            Repair::RemovedSegment { segment, reason } => write!(f, "segment {segment}: removed ({reason})"),
            Repair::RemovedOrphanIndex { file } => write!(f, "removed index file without a log: {file}"),
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug)]
pub enum StorageError {
    /// An I/O error (operation and path inside).
    Io(IoError),
    /// The batch bytes were refused.
    Batch(BatchError),
    /// A write failed; the appends not yet written were rolled back and failed.
    WriteFailed {
        /// The partition directory.
        dir: PathBuf,
        /// The write error.
        reason: String,
    },
    /// An fsync failed earlier; the log refuses writes until it is reopened.
    Poisoned {
        /// The partition directory.
        dir: PathBuf,
        /// The fsync error.
        reason: String,
    },
    /// The offset asked for is below the log start.
    OffsetOutOfRange {
        /// Offset asked for.
        requested: Offset,
        /// First offset stored.
        start: Offset,
        /// Offset after the last visible batch.
        next: Offset,
    },
    /// Data read back from a segment is not what was written.
    Corrupt {
        /// Byte position in the segment.
        position: u64,
        /// What was wrong.
        reason: &'static str,
    },
    /// Invalid configuration.
    Config(String),
    /// The log was closed.
    Closed,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io(error) => write!(f, "i/o error: {error}"),
            StorageError::Batch(error) => write!(f, "invalid batch: {error}"),
            StorageError::WriteFailed { dir, reason } => {
                write!(f, "write failed in {}, append not stored: {reason}", dir.display())
            }
            StorageError::Poisoned { dir, reason } => {
                write!(f, "partition {} is poisoned after a failed fsync ({reason}); it refuses writes until restarted", dir.display())
            }
            StorageError::OffsetOutOfRange { requested, start, next } => {
                write!(f, "offset {requested} is out of range (log holds {start}..{next})")
            }
            StorageError::Corrupt { position, reason } => {
                write!(f, "corrupt segment data at byte {position}: {reason}")
            }
            StorageError::Config(reason) => write!(f, "invalid log configuration: {reason}"),
            StorageError::Closed => write!(f, "the log is closed"),
        }
    }
}

impl std::error::Error for StorageError {}

impl From<IoError> for StorageError {
    fn from(error: IoError) -> Self {
        StorageError::Io(error)
    }
}

impl From<BatchError> for StorageError {
    fn from(error: BatchError) -> Self {
        StorageError::Batch(error)
    }
}

/// Result of a storage operation.
pub type StorageResult<T> = Result<T, StorageError>;
