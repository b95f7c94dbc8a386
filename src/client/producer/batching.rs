//! Batching: the open batch a message goes into, when a batch is sealed, and how sealed batches
//! are grouped into produce requests.
//!
//! Pure functions on whichever task owns the batches (the background task, or the caller in
//! direct mode). Invariants: a batch never exceeds the producer's byte and message limits unless a
//! single message does (it then goes alone); a request holds at most [`REQUEST_BATCHES_MAX`]
//! batches and [`REQUEST_BYTES_MAX`] bytes unless a single batch is larger; every batch carries
//! the producer's [`Stamp`], and a named producer's batch starts at the partition's next sequence
//! and numbers its messages densely from there, so batches of one partition never overlap.

use super::message::{push_message, record_bytes, ProducerMessage};
use super::{REQUEST_BATCHES_MAX, REQUEST_BYTES_MAX};
use crate::client::error::ClientError;
use crate::constants::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX};
use crate::protocol::batch::{BatchBuilder, BatchError, Compression, BUILDER_CAPACITY_DEFAULT_BYTES};

/// What every batch of one producer carries in its header besides its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stamp {
    /// The named producer's id (0: anonymous, no sequences).
    pub(super) producer_id: u64,
    /// The named producer's epoch.
    pub(super) epoch: u32,
    /// How the records are compressed.
    pub(super) compression: Compression,
}

impl Stamp {
    /// Whether batches carry a named producer's sequences.
    pub(super) fn is_named(&self) -> bool {
        self.producer_id != 0
    }
}

/// Batch limits and the header stamp.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) batch_size: u32,
    pub(super) batch_bytes: usize,
    pub(super) stamp: Stamp,
}

impl Limits {
    pub(super) fn new_builder(&self) -> BatchBuilder {
        BatchBuilder::with_capacity(0, 0, self.batch_bytes.min(BUILDER_CAPACITY_DEFAULT_BYTES))
    }

    /// The same stamp with the format's own limits: what one `send_batch` call per partition
    /// fills before it needs a second batch.
    pub(super) fn widest(&self) -> Limits {
        Limits { batch_size: BATCH_RECORDS_MAX, batch_bytes: BATCH_BYTES_MAX, stamp: self.stamp }
    }

    /// An empty batch (from `pool`, or new) stamped for this producer, starting at
    /// `next_sequence` when the producer is named.
    fn open_batch(&self, pool: &mut Vec<BatchBuilder>, next_sequence: u64) -> BatchBuilder {
        let mut builder = pool.pop().unwrap_or_else(|| self.new_builder());
        let stamp = self.stamp;
        builder.reset(if stamp.is_named() { next_sequence } else { 0 });
        builder.set_producer(stamp.producer_id, stamp.epoch);
        builder.set_compression(stamp.compression);
        builder
    }
}

/// Adds `message` to the open batch `open` (taking a buffer from `pool`, or a new one, when
/// there is none). Hands the open batch to `seal` first when the message would overflow it,
/// and after it when it is full. Fails only for a message no batch can hold.
///
/// `next_sequence` is the partition's next producer sequence: a batch opened here starts at it,
/// and each message pushed moves it on (named producers only; it stays put otherwise).
pub(super) fn append(
    open: &mut Option<BatchBuilder>,
    next_sequence: &mut u64,
    message: &ProducerMessage,
    limits: Limits,
    pool: &mut Vec<BatchBuilder>,
    mut seal: impl FnMut(BatchBuilder),
) -> Result<(), BatchError> {
    let record = record_bytes(message);
    if let Some(full) = open
        .take_if(|batch| !batch.is_empty() && batch.byte_len().saturating_add(record) > limits.batch_bytes)
    {
        seal(full);
    }
    let builder = open.get_or_insert_with(|| limits.open_batch(pool, *next_sequence));
    if let Err(error) = push_message(builder, message) {
        if builder.is_empty() {
            return Err(error);
        }
        // The batch hit a format limit first (size, records, time span): send it and retry.
        if let Some(full) = open.take() {
            seal(full);
        }
        push_message(open.insert(limits.open_batch(pool, *next_sequence)), message)?;
    }
    if let Some(builder) = open.as_ref().filter(|_| limits.stamp.is_named()) {
        debug_assert!(builder.first_sequence() <= builder.last_sequence());
        debug_assert!(builder.next_sequence() > *next_sequence, "sequences only grow");
        *next_sequence = builder.next_sequence();
    }
    if let Some(full) = open.take_if(|batch| batch.record_count() >= limits.batch_size) {
        seal(full);
    }
    Ok(())
}

/// How many of the leading batches (given by size) go into one request: at least one, at most
/// [`REQUEST_BATCHES_MAX`], and no more than [`REQUEST_BYTES_MAX`] bytes unless alone.
pub(super) fn request_len(sizes: impl Iterator<Item = usize>) -> usize {
    let mut count = 0;
    let mut bytes = 0_usize;
    for size in sizes.take(REQUEST_BATCHES_MAX) {
        bytes = bytes.saturating_add(size);
        if count > 0 && bytes > REQUEST_BYTES_MAX {
            break;
        }
        count += 1;
    }
    count
}

/// Finishes each batch in place (header and CRC, once) and lends out their bytes.
pub(super) fn finished(batches: &mut [BatchBuilder]) -> Result<Vec<&[u8]>, ClientError> {
    let slices =
        batches.iter_mut().map(BatchBuilder::finish_in_place).collect::<Result<Vec<&[u8]>, BatchError>>()?;
    Ok(slices)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::message::check_message;
    use super::super::{key_hash, key_partition, ProducerError};
    use super::*;
    use crate::constants::{BATCH_BYTES_MAX, HEADERS_PER_RECORD_MAX, KEY_BYTES_MAX};
    use crate::protocol::batch::validate;

    #[test]
    fn key_hash_is_the_servers() {
        for key in [&b""[..], b"a", b"user-7", b"\xff\x00\x10 some longer key"] {
            assert_eq!(key_hash(key), crate::server::data::key_hash(key));
        }
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c, "the published FNV-1a 64 test vector");
        assert!((0..1000).all(|i| key_partition(format!("k{i}").as_bytes(), 7) < 7));
    }

    #[test]
    fn record_bytes_matches_the_builder() {
        let messages = [
            ProducerMessage::from("plain"),
            ProducerMessage::keyed("key", "payload").with_filter_value("f").with_header("h", "value"),
            ProducerMessage::new(vec![0_u8; 1000]).with_header("", "").with_header("x", vec![1_u8; 70]),
        ];
        let mut builder = BatchBuilder::new(0, 0);
        for message in &messages {
            let before = builder.byte_len();
            push_message(&mut builder, message).expect("push");
            assert_eq!(builder.byte_len() - before, record_bytes(message));
            check_message(0, message).expect("within the limits");
        }
        let bytes = builder.finish().expect("finish");
        let batch = validate(&bytes).expect("valid");
        let records: Vec<_> = batch.records().collect();
        assert_eq!(records[1].key, Some(&b"key"[..]));
        assert_eq!(records[1].headers().collect::<Vec<_>>(), [(&b"h"[..], &b"value"[..])]);
        assert_eq!(records[2].payload.len(), 1000);
    }

    #[test]
    fn messages_over_a_limit_are_refused() {
        let key = ProducerMessage::keyed(vec![0_u8; KEY_BYTES_MAX + 1], "x");
        assert!(
            matches!(check_message(3, &key), Err(ProducerError::InvalidMessage(m)) if m.contains("message 3"))
        );
        let mut headers = ProducerMessage::from("x");
        headers.headers = vec![(Bytes::new(), Bytes::new()); HEADERS_PER_RECORD_MAX + 1];
        assert!(check_message(0, &headers).is_err());
        assert!(push_message(&mut BatchBuilder::new(0, 0), &headers).is_err());
        let huge = ProducerMessage::new(vec![0_u8; BATCH_BYTES_MAX]);
        assert!(check_message(0, &huge).is_err());
    }

    #[test]
    fn append_seals_by_count_and_bytes() {
        let limits = Limits { batch_size: 3, batch_bytes: 400, stamp: Stamp::default() };
        let mut open = None;
        let mut sealed = Vec::new();
        let mut pool = Vec::new();
        let mut next = 0;
        for i in 0..7 {
            let message = ProducerMessage::from(format!("m{i}"));
            append(&mut open, &mut next, &message, limits, &mut pool, |batch| sealed.push(batch))
                .expect("append");
        }
        assert_eq!(next, 0, "anonymous producers keep no sequences");
        assert_eq!(sealed.iter().map(BatchBuilder::record_count).collect::<Vec<_>>(), [3, 3]);
        assert_eq!(open.as_ref().map(BatchBuilder::record_count), Some(1));
        // 150-byte payloads: two records (2 × 170) plus the header exceed 400 bytes.
        let mut open = None;
        let mut sealed = Vec::new();
        for _ in 0..5 {
            let message = ProducerMessage::new(vec![7_u8; 150]);
            append(&mut open, &mut next, &message, limits, &mut pool, |batch| sealed.push(batch))
                .expect("append");
        }
        assert_eq!(sealed.len(), 4);
        assert!(sealed.iter().all(|batch| batch.record_count() == 1 && batch.byte_len() <= 400));
        // A message larger than batch_bytes still goes, alone.
        let mut open = None;
        let big = ProducerMessage::new(vec![1_u8; 1000]);
        append(&mut open, &mut next, &big, limits, &mut pool, |_| {}).expect("a lone large message");
        assert_eq!(open.as_ref().map(BatchBuilder::record_count), Some(1));
    }

    #[test]
    fn named_batches_continue_each_others_sequences_and_carry_the_stamp() {
        let stamp = Stamp { producer_id: 42, epoch: 3, compression: Compression::Zstd };
        let limits = Limits { batch_size: 4, batch_bytes: 64 * 1024, stamp };
        let (mut open, mut sealed, mut pool) = (None, Vec::new(), Vec::new());
        // A pooled buffer left over from another partition starts over at this one's sequence.
        let mut used = BatchBuilder::new(0, 0);
        used.push_payload(b"old").expect("push");
        used.reset(0);
        pool.push(used);
        let mut next = 100;
        for i in 0..10 {
            let message = ProducerMessage::from(format!("json-like record {i} {i} {i} {i}"));
            append(&mut open, &mut next, &message, limits, &mut pool, |batch| sealed.push(batch))
                .expect("append");
        }
        sealed.extend(open.take());
        assert_eq!(next, 110);
        let ranges: Vec<(u64, u64)> =
            sealed.iter().map(|batch| (batch.first_sequence(), batch.last_sequence())).collect();
        assert_eq!(ranges, [(100, 103), (104, 107), (108, 109)]);
        for mut batch in sealed {
            assert_eq!((batch.producer_id(), batch.producer_epoch()), (42, 3));
            assert_eq!(batch.compression(), Compression::Zstd);
            let bytes = batch.finish_in_place().expect("finish").to_vec();
            let header = *validate(&bytes).expect("valid").header();
            assert_eq!((header.first_sequence, header.producer_epoch), (batch.first_sequence(), 3));
        }
        assert_eq!(limits.widest().stamp, stamp);
    }

    #[test]
    fn requests_are_bounded_in_batches_and_bytes() {
        assert_eq!(request_len([10; 3].into_iter()), 3);
        assert_eq!(request_len([10; 500].into_iter()), REQUEST_BATCHES_MAX);
        assert_eq!(request_len([REQUEST_BYTES_MAX + 1, 10].into_iter()), 1, "a lone large batch still goes");
        assert_eq!(request_len([REQUEST_BYTES_MAX / 2, REQUEST_BYTES_MAX / 2, 1].into_iter()), 2);
        assert_eq!(request_len(std::iter::empty()), 0);
    }

    #[test]
    fn conversions_share_or_copy_the_payload() {
        assert_eq!(ProducerMessage::from("a").payload, Bytes::from_static(b"a"));
        assert_eq!(ProducerMessage::from(String::from("b")).payload, Bytes::from_static(b"b"));
        assert_eq!(ProducerMessage::from(vec![b'c']).payload, Bytes::from_static(b"c"));
        assert_eq!(ProducerMessage::from(&b"d"[..]).payload, Bytes::from_static(b"d"));
        let message = ProducerMessage::keyed("k", "v").with_partition(2);
        assert_eq!((message.key.as_deref(), message.partition), (Some(&b"k"[..]), Some(2)));
    }
}
