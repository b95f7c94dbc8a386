//! [`ProducerError`]: why a producer call failed.
//!
//! Plain data, `Send + Sync`. Invariants: a delivery failure names the first failed partition and
//! counts every message that failed since the last report; once a named producer is fenced,
//! every call fails with [`ProducerError::Fenced`].

use std::fmt;

use crate::client::error::ClientError;

/// Why a producer call failed.
#[derive(Debug)]
pub enum ProducerError {
    /// A request outside of sending failed: metadata, creating the stream or topic, or the
    /// topic does not exist.
    Client(ClientError),
    /// The builder's settings cannot work (the text says why).
    InvalidConfig(String),
    /// A message breaks a limit or names a partition the topic lacks; none of the call's
    /// messages was accepted.
    InvalidMessage(String),
    /// Messages could not be delivered, after retries. `partition` and `source` describe the
    /// first failure; `messages` counts every message that failed since the last report. After
    /// a connection error their fate is unknown (they may be stored); after a refusal they
    /// are not stored.
    Delivery {
        /// The partition of the first failed batch.
        partition: u32,
        /// Messages that failed since the last report.
        messages: u64,
        /// What the first failure was.
        source: ClientError,
    },
    /// The producer's background task is gone (the runtime shut down or the task panicked).
    Closed,
    /// A newer instance of this named producer declared the same name, so the broker refuses
    /// this one's batches (`ProducerFenced`). Final: every later call fails the same way; build
    /// a new producer (which declares again) to go on.
    Fenced {
        /// The producer's name.
        name: String,
        /// The epoch this instance was declared with.
        epoch: u32,
        /// The broker's refusal.
        source: ClientError,
    },
}

impl fmt::Display for ProducerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProducerError::Client(error) => write!(f, "{error}"),
            ProducerError::InvalidConfig(reason) => write!(f, "invalid producer settings: {reason}"),
            ProducerError::InvalidMessage(reason) => write!(f, "invalid message: {reason}"),
            ProducerError::Delivery { partition, messages, source } => {
                write!(f, "{messages} messages not delivered (first on partition {partition}): {source}")
            }
            ProducerError::Closed => write!(f, "the producer's background task has stopped"),
            ProducerError::Fenced { name, epoch, source } => write!(
                f,
                "producer \"{name}\" (epoch {epoch}) is fenced: a newer instance declared the same name: {source}"
            ),
        }
    }
}

impl std::error::Error for ProducerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProducerError::Client(error)
            | ProducerError::Delivery { source: error, .. }
            | ProducerError::Fenced { source: error, .. } => Some(error),
            _ => None,
        }
    }
}

impl ProducerError {
    /// Whether the producer is fenced ([`ProducerError::Fenced`], or a delivery or request that
    /// failed with `ProducerFenced`).
    pub fn is_fenced(&self) -> bool {
        match self {
            ProducerError::Fenced { .. } => true,
            ProducerError::Client(error) | ProducerError::Delivery { source: error, .. } => {
                error.is_producer_fenced()
            }
            _ => false,
        }
    }
}

impl From<ClientError> for ProducerError {
    fn from(error: ClientError) -> Self {
        ProducerError::Client(error)
    }
}
