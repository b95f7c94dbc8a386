//! The error every shard operation answers with: a wire status code and a message for people.
//!
//! Plain `Send` data: created on the shard that failed, carried back over the mesh, encoded into
//! an error response by the connection's shard. Invariant: the message names what failed (stream,
//! topic, partition, shard, operation) without leaking secrets.

use std::fmt;

use crate::protocol::messages::Status;
use crate::storage::StorageError;

/// A failed request: status code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError {
    /// Wire status.
    pub status: Status,
    /// Human-readable explanation.
    pub message: String,
}

impl BrokerError {
    /// An error with this status and message.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// A storage failure on `partition`, mapped to the status a client can act on.
    pub fn storage(what: &str, error: StorageError) -> Self {
        let status = match &error {
            StorageError::Batch(_) => Status::InvalidBatch,
            StorageError::Poisoned { .. } => Status::PartitionPoisoned,
            StorageError::OffsetOutOfRange { .. } => Status::OffsetOutOfRange,
            StorageError::Io(io) if io.is_out_of_space() => Status::OutOfSpace,
            StorageError::WriteFailed { reason, .. } if reason.contains("No space") => Status::OutOfSpace,
            StorageError::Closed => Status::ShuttingDown,
            _ => Status::StorageFailed,
        };
        Self::new(status, format!("{what}: {error}"))
    }

    /// A shard did not answer (it stopped or dropped the request).
    pub fn shard_gone(shard: u16) -> Self {
        Self::new(Status::ShuttingDown, format!("shard {shard} is not answering (shutting down?)"))
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for BrokerError {}

impl From<crate::metadata::MetadataError> for BrokerError {
    fn from(error: crate::metadata::MetadataError) -> Self {
        Self::new(error.status(), error.to_string())
    }
}

/// Result of a shard operation.
pub type BrokerResult<T> = Result<T, BrokerError>;
