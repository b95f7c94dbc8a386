//! [`Polled`]: a poll answer and the iterators over its partitions, batches and records.
//!
//! Pure views over the response payload (shared [`Bytes`], no copies); runs on the calling task.
//!
//! Compressed batches (a producer's `compression`) are inflated once, in [`Polled::new`], into
//! the plain batches they stand for, so every reader above sees plain records. A payload without
//! compressed batches is kept as it came (zero copy); one with them is rebuilt into a new buffer.
//!
//! Invariants: a [`Polled`] exists only when the partitions' `payload_bytes` add up to the
//! payload's length, so each partition's slice is in range. Every batch is validated (CRC
//! included) before any of its records is handed out, and records outside
//! `[start_offset, next_offset)` of their partition are skipped: a poll answers with whole
//! batches, so the first may begin before the requested offset. Inflating is bounded: each batch
//! by [`INFLATED_BATCH_BYTES_MAX`] (a bomb or a corrupt batch becomes a [`RefusedBatch`] and an
//! error for its partition, never a panic), the whole answer by [`INFLATED_POLL_BYTES_MAX`] (past
//! it, the answer is cut at a batch boundary and the cut partitions' `next_offset` moved back, so
//! the next poll resumes there).

use std::iter::FusedIterator;

use bytes::Bytes;

use super::error::ClientError;
use crate::constants::BATCH_BYTES_MAX;
use crate::protocol::batch::{self, Batch, BatchHeader, BatchIter, Record, RecordIter};
use crate::protocol::messages::{PollResponse, PolledPartition};

/// Most bytes one compressed batch may inflate to: the largest batch a producer can build.
pub const INFLATED_BATCH_BYTES_MAX: usize = BATCH_BYTES_MAX;

/// Most bytes the inflated payload of one poll answer may hold before it is cut short (at least
/// one batch is always kept, so a consumer always moves on).
pub const INFLATED_POLL_BYTES_MAX: usize = 256 * 1024 * 1024;

const _: () = assert!(INFLATED_POLL_BYTES_MAX >= INFLATED_BATCH_BYTES_MAX);

/// A compressed batch the client refused to inflate (corrupt, or a decompression bomb). It stays
/// in the payload as it came; reading its partition yields an error when it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedBatch {
    /// Partition id.
    pub partition: u32,
    /// The batch's first offset.
    pub base_offset: u64,
    /// Why it was refused.
    pub reason: String,
}

/// A poll answer: the response body and the payload holding each partition's batches in the
/// order the body lists them (compressed batches already inflated).
#[derive(Debug, Clone)]
pub struct Polled {
    /// The response body (per-partition marks and byte counts).
    pub response: PollResponse,
    /// Every partition's batches back to back.
    pub payload: Bytes,
    refused: Vec<RefusedBatch>,
}

impl Polled {
    /// Checks that the per-partition byte counts cover the payload exactly, then inflates the
    /// compressed batches, if there are any (see the module docs for the bounds).
    pub fn new(response: PollResponse, payload: Bytes) -> Result<Self, ClientError> {
        let declared: u64 = response.partitions.iter().map(|p| u64::from(p.payload_bytes)).sum();
        if declared != payload.len() as u64 {
            return Err(ClientError::Protocol(format!(
                "poll response lists {declared} payload bytes, the frame carries {}",
                payload.len()
            )));
        }
        let polled = Self { response, payload, refused: Vec::new() };
        if !has_compressed(&polled.payload) {
            return Ok(polled);
        }
        Ok(polled.inflated(INFLATED_BATCH_BYTES_MAX, INFLATED_POLL_BYTES_MAX))
    }

    /// The compressed batches refused while inflating.
    pub fn refused_batches(&self) -> &[RefusedBatch] {
        &self.refused
    }

    /// Rebuilds the payload with every compressed batch inflated (each up to `batch_limit`
    /// bytes, the whole up to `poll_limit` bytes, beyond which partitions are cut short).
    fn inflated(self, batch_limit: usize, poll_limit: usize) -> Self {
        let Self { mut response, payload, mut refused } = self;
        let mut out: Vec<u8> = Vec::with_capacity(payload.len().saturating_mul(2).min(poll_limit));
        let mut at = 0_usize;
        let mut cut = false;
        for info in &mut response.partitions {
            let start = at;
            at += info.payload_bytes as usize;
            let bytes = payload.get(start..at).unwrap_or_default();
            let before = out.len();
            if cut {
                info.next_offset = info.start_offset;
            } else {
                cut = inflate_partition(info, bytes, &mut out, &mut refused, (batch_limit, poll_limit));
            }
            // Each partition adds at most `poll_limit` plus one batch, far below u32::MAX.
            info.payload_bytes = u32::try_from(out.len() - before).unwrap_or(u32::MAX);
        }
        Self { response, payload: Bytes::from(out), refused }
    }

    /// Whether no batch came back.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Each partition's marks and its share of the payload.
    pub fn partitions(&self) -> impl Iterator<Item = PolledPartitionData<'_>> + '_ {
        let mut at = 0_usize;
        self.response.partitions.iter().map(move |info| {
            let start = at;
            at += info.payload_bytes as usize;
            // In range: `new` checked the byte counts sum to the payload length.
            let bytes = self.payload.get(start..at).unwrap_or_default();
            PolledPartitionData { info, bytes, refused: &self.refused }
        })
    }

    /// Every record in `[start_offset, next_offset)` of every partition, partition by partition.
    /// A batch that fails validation yields one error and ends that partition.
    pub fn records(&self) -> impl Iterator<Item = Result<PolledRecord<'_>, ClientError>> + '_ {
        self.partitions().flat_map(|partition| partition.records())
    }
}

/// Whether any batch in `payload` is compressed, reading headers only (no CRC). A payload
/// that does not parse is left to the readers, which report it.
fn has_compressed(payload: &[u8]) -> bool {
    let mut rest = payload;
    while let Ok(header) = BatchHeader::decode(rest) {
        if header.is_compressed() {
            return true;
        }
        let Some(next) = rest.get(header.length as usize..) else { return false };
        if header.length == 0 || next.is_empty() {
            return false;
        }
        rest = next;
    }
    false
}

/// Appends one partition's batches to `out`, inflating the compressed ones. A batch that fails
/// validation, and everything after it, is copied as it is (the readers report it); a refused
/// compressed batch is recorded and copied likewise. Returns whether the poll limit cut the
/// partition short (its `next_offset` is then moved back to the first batch left out).
fn inflate_partition(
    info: &mut PolledPartition,
    bytes: &[u8],
    out: &mut Vec<u8>,
    refused: &mut Vec<RefusedBatch>,
    (batch_limit, poll_limit): (usize, usize),
) -> bool {
    let mut batches = batch::batches(bytes);
    while let Some(next) = batches.next() {
        let Ok(batch) = next else {
            let failed_at = bytes.len() - batches.remaining().len();
            out.extend_from_slice(&bytes[failed_at..]);
            return false;
        };
        let header = batch.header();
        if !out.is_empty() && out.len().saturating_add(header.records_bytes as usize) > poll_limit {
            info.next_offset = header.base_offset.clamp(info.start_offset, info.next_offset);
            return true;
        }
        if !batch.is_compressed() {
            out.extend_from_slice(batch.as_bytes());
            continue;
        }
        match batch::inflate(batch.as_bytes(), batch_limit) {
            Ok(plain) => out.extend_from_slice(&plain),
            Err(error) => {
                let (partition, base_offset) = (info.partition, header.base_offset);
                tracing::warn!(partition, base_offset, %error, "compressed batch refused");
                refused.push(RefusedBatch { partition, base_offset, reason: error.to_string() });
                out.extend_from_slice(batch.as_bytes());
                out.extend_from_slice(batches.remaining());
                return false;
            }
        }
    }
    false
}

/// One partition's share of a [`Polled`].
#[derive(Debug, Clone, Copy)]
pub struct PolledPartitionData<'a> {
    /// The partition's marks.
    pub info: &'a PolledPartition,
    /// Its batches, back to back.
    pub bytes: &'a [u8],
    /// The answer's refused compressed batches (of every partition).
    refused: &'a [RefusedBatch],
}

impl<'a> PolledPartitionData<'a> {
    /// The partition's batches, each validated as it is reached. Compressed batches were
    /// inflated by [`Polled::new`]; one still compressed here was refused (see
    /// [`check_plain`](Self::check_plain)).
    pub fn batches(&self) -> BatchIter<'a> {
        batch::batches(self.bytes)
    }

    /// `batch` itself when it is plain; the error of a compressed batch that could not be
    /// inflated otherwise (it yields no records).
    pub fn check_plain(&self, batch: Batch<'a>) -> Result<Batch<'a>, ClientError> {
        if !batch.is_compressed() {
            return Ok(batch);
        }
        let base_offset = batch.header().base_offset;
        let reason = self
            .refused
            .iter()
            .find(|refused| refused.partition == self.info.partition && refused.base_offset == base_offset)
            .map_or("it was not inflated", |refused| refused.reason.as_str());
        Err(ClientError::Protocol(format!(
            "partition {}: the compressed batch at offset {base_offset} cannot be read: {reason}",
            self.info.partition
        )))
    }

    /// The partition's records in `[start_offset, next_offset)`.
    pub fn records(&self) -> PartitionRecords<'a> {
        PartitionRecords { data: *self, batches: self.batches(), current: None, failed: false }
    }
}

/// One record of a poll answer and the partition it came from.
#[derive(Debug, Clone, Copy)]
pub struct PolledRecord<'a> {
    /// Partition id.
    pub partition: u32,
    /// The record (offset, timestamp, key, filter value, headers, payload).
    pub record: Record<'a>,
}

/// Iterator over one partition's records in `[start_offset, next_offset)`.
#[derive(Debug)]
pub struct PartitionRecords<'a> {
    data: PolledPartitionData<'a>,
    batches: BatchIter<'a>,
    current: Option<RecordIter<'a>>,
    failed: bool,
}

impl<'a> Iterator for PartitionRecords<'a> {
    type Item = Result<PolledRecord<'a>, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let info = self.data.info;
        loop {
            if let Some(records) = self.current.as_mut() {
                for record in records.by_ref() {
                    if record.offset >= info.next_offset {
                        break;
                    }
                    if record.offset >= info.start_offset
                        && !crate::protocol::messages::is_removed(&info.removed, record.offset)
                    {
                        return Some(Ok(PolledRecord { partition: info.partition, record }));
                    }
                }
                self.current = None;
            }
            match self.batches.next()? {
                Ok(batch) if batch.header().next_offset() <= info.start_offset => continue,
                Ok(batch) if batch.header().base_offset >= info.next_offset => continue,
                Ok(batch) => match self.data.check_plain(batch) {
                    Ok(batch) => self.current = Some(batch.records()),
                    Err(error) => {
                        self.failed = true;
                        return Some(Err(error));
                    }
                },
                Err(error) => {
                    self.failed = true;
                    return Some(Err(ClientError::Protocol(format!(
                        "partition {} returned a bad batch: {error}",
                        info.partition
                    ))));
                }
            }
        }
    }
}

impl FusedIterator for PartitionRecords<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{
        crc32_of, patch_server_fields, BatchBuilder, Compression, BATCH_HEADER_BYTES, CODEC_ZSTD,
    };

    /// A stored batch of `payloads` starting at `base_offset`.
    fn stored_batch(base_offset: u64, payloads: &[&str]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(0, 0);
        for payload in payloads {
            builder.push_payload(payload.as_bytes()).expect("push");
        }
        let mut bytes = builder.finish().expect("finish");
        patch_server_fields(&mut bytes, base_offset, 1);
        bytes
    }

    fn marks(partition: u32, start_offset: u64, next_offset: u64, bytes: &[u8]) -> PolledPartition {
        PolledPartition {
            partition,
            start_offset,
            next_offset,
            high_watermark: next_offset,
            payload_bytes: bytes.len() as u32,
            removed: Vec::new(),
        }
    }

    #[test]
    fn records_skip_below_start_and_span_partitions() {
        let mut zero = stored_batch(10, &["a", "b", "c"]);
        zero.extend(stored_batch(13, &["d"]));
        let one = stored_batch(0, &["x", "y"]);
        let response = PollResponse {
            partitions: vec![marks(0, 11, 14, &zero), marks(1, 0, 2, &one), marks(2, 5, 5, &[])],
        };
        let payload = Bytes::from([zero.clone(), one.clone()].concat());
        let polled = Polled::new(response, payload).expect("consistent");
        let seen: Vec<(u32, u64, Vec<u8>)> = polled
            .records()
            .map(|r| r.expect("valid"))
            .map(|r| (r.partition, r.record.offset, r.record.payload.to_vec()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (0, 11, b"b".to_vec()),
                (0, 12, b"c".to_vec()),
                (0, 13, b"d".to_vec()),
                (1, 0, b"x".to_vec()),
                (1, 1, b"y".to_vec())
            ]
        );
        assert_eq!(polled.partitions().map(|p| p.batches().count()).collect::<Vec<_>>(), [2, 1, 0]);
    }

    #[test]
    fn inconsistent_or_corrupt_payloads_are_protocol_errors() {
        let batch = stored_batch(0, &["a"]);
        let response = PollResponse { partitions: vec![marks(0, 0, 1, &batch)] };
        assert!(matches!(Polled::new(response.clone(), Bytes::new()), Err(ClientError::Protocol(_))));
        let mut corrupt = batch.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let polled = Polled::new(response, Bytes::from(corrupt)).expect("lengths agree");
        let results: Vec<_> = polled.records().collect();
        assert_eq!(results.len(), 1);
        assert!(matches!(results[0], Err(ClientError::Protocol(_))));
    }

    /// A stored batch of `payloads` at `base_offset`, compressed with `compression`.
    fn compressed_batch(base_offset: u64, payloads: &[&str], compression: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::new(0, 0);
        builder.set_compression(compression);
        for payload in payloads {
            builder.push_payload(payload.as_bytes()).expect("push");
        }
        let mut bytes = builder.finish().expect("finish");
        patch_server_fields(&mut bytes, base_offset, 1);
        bytes
    }

    /// A valid, CRC-correct zstd batch whose records inflate far past what its header claims.
    fn bomb(base_offset: u64) -> Vec<u8> {
        let mut batch = compressed_batch(
            base_offset,
            &["x"; 50].map(|x| x.repeat(40)).each_ref().map(String::as_str),
            Compression::Zstd,
        );
        assert!(BatchHeader::decode(&batch).expect("header").is_compressed());
        let mut records = Vec::new();
        crate::protocol::compression::compress_records(&vec![0_u8; 16 << 20], CODEC_ZSTD, &mut records);
        batch.truncate(BATCH_HEADER_BYTES);
        batch.extend_from_slice(&records);
        let length = batch.len() as u32;
        batch[8..12].copy_from_slice(&length.to_le_bytes());
        batch[36..40].copy_from_slice(&1024_u32.to_le_bytes());
        let crc = crc32_of(&batch);
        batch[12..16].copy_from_slice(&crc.to_le_bytes());
        batch
    }

    fn plain_payloads(polled: &Polled) -> Vec<Result<(u32, u64, String), String>> {
        polled
            .records()
            .map(|r| {
                r.map(|r| {
                    (r.partition, r.record.offset, String::from_utf8_lossy(r.record.payload).into_owned())
                })
                .map_err(|error| error.to_string())
            })
            .collect()
    }

    #[test]
    fn compressed_batches_are_inflated_and_plain_ones_stay_zero_copy() {
        let text = "a compressible payload, a compressible payload, a compressible payload";
        let plain = stored_batch(0, &[text, text]);
        let payload = Bytes::from(plain.clone());
        let response = PollResponse { partitions: vec![marks(0, 0, 2, &plain)] };
        let polled = Polled::new(response, payload.clone()).expect("plain");
        assert_eq!(polled.payload.as_ptr(), payload.as_ptr(), "no copy without compression");
        for compression in [Compression::Lz4, Compression::Zstd] {
            let mut zero = compressed_batch(0, &[text, text, text], compression);
            assert!(zero.len() < plain.len(), "{compression} shrinks the batch");
            zero.extend(stored_batch(3, &["plain"]));
            let one = compressed_batch(7, &[text], compression);
            let response = PollResponse { partitions: vec![marks(0, 1, 4, &zero), marks(1, 7, 8, &one)] };
            let polled = Polled::new(response, Bytes::from([zero, one].concat())).expect("inflated");
            assert!(polled.refused_batches().is_empty());
            let seen = plain_payloads(&polled);
            let expected = [(0, 1, text), (0, 2, text), (0, 3, "plain"), (1, 7, text)]
                .map(|(p, o, t)| Ok((p, o, t.to_string())));
            assert_eq!(seen, expected, "{compression}");
            let sizes: u64 = polled.response.partitions.iter().map(|p| u64::from(p.payload_bytes)).sum();
            assert_eq!(sizes, polled.payload.len() as u64);
        }
    }

    #[test]
    fn a_bomb_is_an_error_for_its_partition_only() {
        let bomb = bomb(0);
        let good = compressed_batch(5, &["fine", "fine", "fine", "fine"], Compression::Zstd);
        let response = PollResponse { partitions: vec![marks(0, 0, 50, &bomb), marks(1, 5, 9, &good)] };
        let polled = Polled::new(response, Bytes::from([bomb.clone(), good].concat())).expect("answer");
        assert_eq!(polled.refused_batches().len(), 1);
        let seen = plain_payloads(&polled);
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert!(
            matches!(&seen[0], Err(e) if e.contains("partition 0") && e.contains("compressed")),
            "{seen:?}"
        );
        assert!(seen[1..].iter().all(|r| matches!(r, Ok((1, _, p)) if p == "fine")));
        assert!(polled.payload.len() < 4096, "the bomb was not inflated");
    }

    #[test]
    fn limits_refuse_big_batches_and_cut_big_answers() {
        let text = "b".repeat(2000);
        let zero = compressed_batch(0, &[&text, &text], Compression::Lz4);
        let mut one = compressed_batch(10, &[&text], Compression::Lz4);
        one.extend(compressed_batch(11, &[&text], Compression::Lz4));
        let response = PollResponse { partitions: vec![marks(0, 0, 2, &zero), marks(1, 10, 12, &one)] };
        let polled = Polled {
            response: response.clone(),
            payload: Bytes::from([zero.clone(), one.clone()].concat()),
            refused: Vec::new(),
        };
        // A batch limit below one batch's size: refused, reported, nothing inflated.
        let refused = polled.clone().inflated(1000, 1 << 20);
        assert_eq!(refused.refused_batches().len(), 2);
        assert!(plain_payloads(&refused).iter().all(Result::is_err));
        // A poll limit of about two records: partition 1 is cut after its first batch.
        let cut = polled.inflated(1 << 20, 7000);
        assert_eq!(plain_payloads(&cut).len(), 3);
        assert_eq!(cut.response.partitions[1].next_offset, 11);
        assert_eq!(cut.response.partitions[0].next_offset, 2);
    }
}
