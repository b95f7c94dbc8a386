//! Published entries into batches: the messages of one RabbitMQ Publish frame become batches in
//! our format, back to back, ready for the produce path, with each publishing id sorted into
//! stored, duplicate (RabbitMQ confirms those without storing) or refused (with its code).
//!
//! Runs on the connection's shard, in the reader, on entries the codec decoded from a peer's
//! bytes: nothing here panics, and nothing is allocated beyond the batches themselves (about the
//! frame's size) and the id lists (one word per entry).
//!
//! The mapping (docs/architecture.md): a message is one record whose value is the message
//! bytes exactly as published, with the Publish v2 filter value as the record's filter value and
//! no key or headers. Consecutive stored messages share a batch (split at `BATCH_BYTES_MAX` /
//! `BATCH_RECORDS_MAX`); the batch's first and last producer sequence are its first and last
//! publishing id. An uncompressed sub-entry's messages become plain records sharing its
//! publishing id, all in one batch; a compressed one is stored as it came, one codec-3 batch of
//! its own (`crate::protocol::compression::sub_entry`), never inflated here.
//!
//! Invariants:
//! * every entry's publishing id is in exactly one of `kept`, `duplicates` and `refused`, in
//!   entry order; `batches` batches were appended to `out`, each one [`validate`] accepts;
//! * a named publisher's (`producer_id != 0`, or `last_stored` given) stored ids strictly
//!   increase, so every batch's sequences, and the batches' ranges one after another, increase
//!   as the owner's producer table requires; an anonymous publisher's batches are split where
//!   an id goes down, so `first_sequence <= last_sequence` always holds.
//!
//! [`validate`]: crate::protocol::batch::validate

use super::codec::{codes, Entry};
use crate::constants::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX};
use crate::model::{now_us, TimestampUs};
use crate::protocol::batch::{BatchBuilder, BatchError, Message, BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::protocol::compression::sub_entry::{write_sub_entry_batch, SubEntryBatch, RABBITMQ_NONE};

#[cfg(test)]
mod tests;

/// The PublishError code of a message or sub-entry too large for one batch (`BATCH_BYTES_MAX`).
pub const REFUSED_TOO_LARGE: u16 = codes::FRAME_TOO_LARGE;

/// The PublishError code of an entry the broker cannot store as sent: a filter value over
/// `FILTER_VALUE_BYTES_MAX` bytes, a sub-entry with no messages, an unknown compression type,
/// or an uncompressed sub-entry whose messages do not add up to its header.
pub const REFUSED_MALFORMED: u16 = codes::PRECONDITION_FAILED;

/// What [`build_batches`] did with a Publish frame's entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    /// Batches appended to `out`.
    pub batches: usize,
    /// Publishing ids stored (in those batches), to confirm once the append is answered.
    pub kept: Vec<u64>,
    /// Publishing ids at or below the publisher's last: confirm them now, store nothing.
    pub duplicates: Vec<u64>,
    /// Publishing ids refused, with the PublishError code of each.
    pub refused: Vec<(u64, u16)>,
}

/// Appends the batches for `entries` to `out` (back to back, ready for the produce path), for
/// producer `producer_id`/`epoch` (0/0 = anonymous). When `last_stored` is Some, or the producer
/// is named (`producer_id != 0`), entries whose publishing id is <= `last_stored`, or <= an
/// earlier kept id of this call, are not stored but listed in `duplicates` (RabbitMQ confirms
/// those without storing). Every message of the call gets the same create time (now).
pub fn build_batches(
    entries: &[Entry<'_>],
    producer_id: u64,
    epoch: u32,
    last_stored: Option<u64>,
    out: &mut Vec<u8>,
) -> Built {
    let named = producer_id != 0 || last_stored.is_some();
    let mut writer = Writer::new(entries, producer_id, epoch, now_us(), out);
    let mut built = Built { kept: Vec::with_capacity(entries.len()), ..Built::default() };
    let mut highest = last_stored;
    for entry in entries {
        let id = publishing_id(entry);
        if named && highest.is_some_and(|highest| id <= highest) {
            built.duplicates.push(id);
            continue;
        }
        let stored = match *entry {
            Entry::Simple { message, filter_value, .. } => writer.simple(id, message, filter_value),
            Entry::SubEntry { compression: RABBITMQ_NONE, records, uncompressed_bytes, data, .. } => {
                writer.plain_sub_entry(id, records, uncompressed_bytes, data)
            }
            Entry::SubEntry { compression, records, uncompressed_bytes, data, .. } => {
                writer.compressed_sub_entry(id, compression, records, uncompressed_bytes, data)
            }
        };
        match stored {
            Ok(()) => {
                built.kept.push(id);
                if named {
                    highest = Some(id);
                }
            }
            Err(code) => built.refused.push((id, code)),
        }
    }
    writer.flush();
    built.batches = writer.batches;
    debug_assert_eq!(built.kept.len() + built.duplicates.len() + built.refused.len(), entries.len());
    built
}

/// The publishing id of an entry.
pub fn publishing_id(entry: &Entry<'_>) -> u64 {
    match entry {
        Entry::Simple { publishing_id, .. } | Entry::SubEntry { publishing_id, .. } => *publishing_id,
    }
}

/// Batches being written: the open plain batch, and where finished ones go.
struct Writer<'o> {
    builder: BatchBuilder,
    out: &'o mut Vec<u8>,
    producer_id: u64,
    epoch: u32,
    timestamp_us: TimestampUs,
    /// The last publishing id in the open batch (meaningful while it is not empty).
    last_id: u64,
    batches: usize,
}

impl<'o> Writer<'o> {
    fn new(
        entries: &[Entry<'_>],
        producer_id: u64,
        epoch: u32,
        now: TimestampUs,
        out: &'o mut Vec<u8>,
    ) -> Self {
        // One allocation for the call: room for every simple message's record, within a batch.
        let estimate = entries.iter().fold(BATCH_HEADER_BYTES, |sum, entry| match entry {
            Entry::Simple { message, filter_value, .. } => {
                sum.saturating_add(record_bytes(message, *filter_value))
            }
            Entry::SubEntry { compression: RABBITMQ_NONE, records, data, .. } => {
                sum.saturating_add(data.len() + usize::from(*records) * (RECORD_HEADER_BYTES - 4))
            }
            Entry::SubEntry { .. } => sum,
        });
        let mut builder = BatchBuilder::with_capacity(producer_id, 0, estimate.min(BATCH_BYTES_MAX));
        builder.set_producer(producer_id, epoch);
        Writer { builder, out, producer_id, epoch, timestamp_us: now, last_id: 0, batches: 0 }
    }

    /// Appends the open batch to `out`, if it holds anything.
    fn flush(&mut self) {
        if self.builder.is_empty() {
            return;
        }
        match self.builder.finish_in_place() {
            Ok(bytes) => {
                self.out.extend_from_slice(bytes);
                self.batches += 1;
            }
            // Not empty, and every push was bounded: finishing cannot fail.
            Err(error) => debug_assert!(false, "finishing a non-empty batch failed: {error}"),
        }
        self.builder.reset(0);
    }

    /// Makes room for records with publishing id `id` taking `bytes` bytes and `records`
    /// records: flushes the open batch when `id` goes down or they would not fit. Returns whether
    /// they fit an empty batch.
    fn open_for(&mut self, id: u64, bytes: usize, records: u32) -> bool {
        let fits = |builder: &BatchBuilder| {
            builder.byte_len().saturating_add(bytes) <= BATCH_BYTES_MAX
                && builder.record_count().saturating_add(records) <= BATCH_RECORDS_MAX
        };
        if !self.builder.is_empty() && (id < self.last_id || !fits(&self.builder)) {
            self.flush();
        }
        if self.builder.is_empty() {
            self.builder.reset(id);
        }
        fits(&self.builder)
    }

    /// Pushes one record (no key, no headers) after [`open_for`](Self::open_for) made room.
    fn push(&mut self, id: u64, value: &[u8], filter_value: Option<&[u8]>) -> Result<(), BatchError> {
        let message = Message {
            filter_value,
            payload: value,
            timestamp_us: Some(self.timestamp_us),
            ..Message::default()
        };
        self.builder.push(&message)?;
        self.builder.set_last_sequence(id);
        self.last_id = id;
        Ok(())
    }

    fn simple(&mut self, id: u64, message: &[u8], filter_value: Option<&str>) -> Result<(), u16> {
        if !self.open_for(id, record_bytes(message, filter_value), 1) {
            return Err(REFUSED_TOO_LARGE);
        }
        self.push(id, message, filter_value.map(str::as_bytes)).map_err(|error| match error {
            BatchError::FieldTooLarge { .. } => REFUSED_MALFORMED,
            _ => REFUSED_TOO_LARGE,
        })
    }

    /// An uncompressed sub-entry: its messages (`u32` big-endian size, bytes) must be exactly
    /// `records` and fill `data`, whose size the header repeats; they go into one batch.
    fn plain_sub_entry(
        &mut self,
        id: u64,
        records: u16,
        uncompressed_bytes: u32,
        data: &[u8],
    ) -> Result<(), u16> {
        if records == 0 || uncompressed_bytes as usize != data.len() {
            return Err(REFUSED_MALFORMED);
        }
        let (mut count, mut framed_bytes) = (0usize, 0usize);
        for message in sub_entry_messages(data, records) {
            count += 1;
            framed_bytes += 4 + message.len();
        }
        if count != usize::from(records) || framed_bytes != data.len() {
            return Err(REFUSED_MALFORMED);
        }
        let bytes = data.len().saturating_add(usize::from(records) * (RECORD_HEADER_BYTES - 4));
        if !self.open_for(id, bytes, u32::from(records)) {
            return Err(REFUSED_TOO_LARGE);
        }
        for message in sub_entry_messages(data, records) {
            if let Err(error) = self.push(id, message, None) {
                // Cannot happen: the sizes and count were checked above, there is no filter
                // value, and every record has the same time.
                debug_assert!(false, "a checked sub-entry record was refused: {error}");
                return Err(REFUSED_MALFORMED);
            }
        }
        Ok(())
    }

    fn compressed_sub_entry(
        &mut self,
        id: u64,
        compression: u8,
        records: u16,
        uncompressed_bytes: u32,
        data: &[u8],
    ) -> Result<(), u16> {
        self.flush();
        let entry = SubEntryBatch {
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            sequence: id,
            timestamp_us: self.timestamp_us,
            compression,
            records,
            uncompressed_bytes,
            data,
        };
        match write_sub_entry_batch(&entry, self.out) {
            Ok(_) => {
                self.batches += 1;
                Ok(())
            }
            Err(BatchError::TooLarge { .. }) => Err(REFUSED_TOO_LARGE),
            Err(_) => Err(REFUSED_MALFORMED),
        }
    }
}

/// The size of a message's record: the fixed part, the filter value with its length, the value.
fn record_bytes(message: &[u8], filter_value: Option<&str>) -> usize {
    RECORD_HEADER_BYTES.saturating_add(message.len()).saturating_add(filter_value.map_or(0, |v| 1 + v.len()))
}

/// The messages of an uncompressed sub-entry's data, at most `records` of them; stops at the
/// first size that runs past the data.
fn sub_entry_messages(data: &[u8], records: u16) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    (0..records).map_while(move |_| {
        let (size, tail) = rest.split_first_chunk::<4>()?;
        let size = u32::from_be_bytes(*size) as usize;
        if size > tail.len() {
            return None;
        }
        let (message, tail) = tail.split_at(size);
        rest = tail;
        Some(message)
    })
}
