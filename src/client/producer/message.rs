//! [`ProducerMessage`]: one message to produce, its conversions, and the checks and sizes the
//! producer applies before a message enters a batch.
//!
//! Pure functions on the caller's task or the background task. Invariant: a message that passes
//! [`check_message`] fits a batch on its own ([`push_message`] cannot fail on it for a limit).

use bytes::Bytes;

use super::error::ProducerError;
use crate::constants::{
    BATCH_BYTES_MAX, FILTER_VALUE_BYTES_MAX, HEADERS_PER_RECORD_MAX, HEADER_KEY_BYTES_MAX, KEY_BYTES_MAX,
};
use crate::protocol::batch::{BatchBuilder, BatchError, Message, BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};

/// One message to produce. The parts are shared [`Bytes`], so building one from a `Vec<u8>` or
/// a `String` does not copy.
///
/// Partition choice, first match wins: `partition`; the producer's
/// [`Partitioning::Partition`] or [`Partitioning::Key`]; this message's `key`; round robin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerMessage {
    /// The record key (at most `KEY_BYTES_MAX` bytes), stored with the record and used for
    /// routing under [`Partitioning::Balanced`].
    pub key: Option<Bytes>,
    /// The filter value (at most `FILTER_VALUE_BYTES_MAX` bytes) consumers may filter on.
    pub filter_value: Option<Bytes>,
    /// Headers as (key, value) pairs: at most `HEADERS_PER_RECORD_MAX`, keys at most
    /// `HEADER_KEY_BYTES_MAX` bytes.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The body.
    pub payload: Bytes,
    /// The partition to write to, overriding the producer's partitioning.
    pub partition: Option<u32>,
}

impl ProducerMessage {
    /// A message with only a payload.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        ProducerMessage { payload: payload.into(), ..ProducerMessage::default() }
    }

    /// A message with a key and a payload.
    pub fn keyed(key: impl Into<Bytes>, payload: impl Into<Bytes>) -> Self {
        ProducerMessage { key: Some(key.into()), payload: payload.into(), ..ProducerMessage::default() }
    }

    /// This message with a key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// This message with a filter value.
    pub fn with_filter_value(mut self, value: impl Into<Bytes>) -> Self {
        self.filter_value = Some(value.into());
        self
    }

    /// This message with one more header.
    pub fn with_header(mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// This message bound for `partition`.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
}

impl From<&str> for ProducerMessage {
    fn from(payload: &str) -> Self {
        ProducerMessage::new(Bytes::copy_from_slice(payload.as_bytes()))
    }
}

impl From<String> for ProducerMessage {
    fn from(payload: String) -> Self {
        ProducerMessage::new(payload)
    }
}

impl From<&[u8]> for ProducerMessage {
    fn from(payload: &[u8]) -> Self {
        ProducerMessage::new(Bytes::copy_from_slice(payload))
    }
}

impl From<Vec<u8>> for ProducerMessage {
    fn from(payload: Vec<u8>) -> Self {
        ProducerMessage::new(payload)
    }
}

impl From<Bytes> for ProducerMessage {
    fn from(payload: Bytes) -> Self {
        ProducerMessage::new(payload)
    }
}

/// Checks a message against the format's limits, so the background task never meets one it
/// cannot batch.
pub(super) fn check_message(index: usize, message: &ProducerMessage) -> Result<(), ProducerError> {
    let over = |what: &str, len: usize, max: usize| {
        ProducerError::InvalidMessage(format!("message {index}: {what} is {len}, at most {max}"))
    };
    if let Some(key) = &message.key {
        if key.len() > KEY_BYTES_MAX {
            return Err(over("key bytes", key.len(), KEY_BYTES_MAX));
        }
    }
    if let Some(value) = &message.filter_value {
        if value.len() > FILTER_VALUE_BYTES_MAX {
            return Err(over("filter value bytes", value.len(), FILTER_VALUE_BYTES_MAX));
        }
    }
    if message.headers.len() > HEADERS_PER_RECORD_MAX {
        return Err(over("header count", message.headers.len(), HEADERS_PER_RECORD_MAX));
    }
    if let Some((key, _)) = message.headers.iter().find(|(key, _)| key.len() > HEADER_KEY_BYTES_MAX) {
        return Err(over("header key bytes", key.len(), HEADER_KEY_BYTES_MAX));
    }
    let batch_bytes = record_bytes(message).saturating_add(BATCH_HEADER_BYTES);
    if batch_bytes > BATCH_BYTES_MAX {
        return Err(over("batch bytes with this message alone", batch_bytes, BATCH_BYTES_MAX));
    }
    Ok(())
}

/// The size of a message's record in a batch (`docs/format.md`).
pub(super) fn record_bytes(message: &ProducerMessage) -> usize {
    let key = message.key.as_ref().map_or(0, |key| 2 + key.len());
    let filter = message.filter_value.as_ref().map_or(0, |value| 1 + value.len());
    let headers = message.headers.iter().fold(0_usize, |bytes, (key, value)| {
        bytes.saturating_add(1 + key.len() + 4).saturating_add(value.len())
    });
    RECORD_HEADER_BYTES
        .saturating_add(key + filter)
        .saturating_add(headers)
        .saturating_add(message.payload.len())
}

/// Appends `message` to `builder` as the next record, borrowing its parts (the header pairs
/// sit in an array on the stack).
pub(super) fn push_message(builder: &mut BatchBuilder, message: &ProducerMessage) -> Result<(), BatchError> {
    let record = Message {
        key: message.key.as_deref(),
        filter_value: message.filter_value.as_deref(),
        headers: &[],
        payload: &message.payload,
        timestamp_us: None,
    };
    if message.headers.is_empty() {
        return builder.push(&record);
    }
    if message.headers.len() > HEADERS_PER_RECORD_MAX {
        let (field, len, max) = ("header count", message.headers.len(), HEADERS_PER_RECORD_MAX);
        return Err(BatchError::FieldTooLarge { field, len, max });
    }
    let mut pairs: [(&[u8], &[u8]); HEADERS_PER_RECORD_MAX] = [(&[], &[]); HEADERS_PER_RECORD_MAX];
    for (pair, (key, value)) in pairs.iter_mut().zip(&message.headers) {
        *pair = (key, value);
    }
    builder.push(&Message { headers: &pairs[..message.headers.len()], ..record })
}
