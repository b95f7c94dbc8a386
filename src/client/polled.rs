//! [`Polled`]: a poll answer and the iterators over its partitions, batches and records.
//!
//! Pure views over the response payload (shared [`Bytes`], no copies); runs on the calling task.
//!
//! Invariants: a [`Polled`] exists only when the partitions' `payload_bytes` add up to the
//! payload's length, so each partition's slice is in range. Every batch is validated (CRC
//! included) before any of its records is handed out, and records outside
//! `[start_offset, next_offset)` of their partition are skipped: a poll answers with whole
//! batches, so the first may begin before the requested offset.

use std::iter::FusedIterator;

use bytes::Bytes;

use super::error::ClientError;
use crate::protocol::batch::{self, BatchIter, Record, RecordIter};
use crate::protocol::messages::{PollResponse, PolledPartition};

/// A poll answer: the response body and the payload holding each partition's batches in the
/// order the body lists them.
#[derive(Debug, Clone)]
pub struct Polled {
    /// The response body (per-partition marks and byte counts).
    pub response: PollResponse,
    /// Every partition's batches back to back.
    pub payload: Bytes,
}

impl Polled {
    /// Checks that the per-partition byte counts cover the payload exactly.
    pub fn new(response: PollResponse, payload: Bytes) -> Result<Self, ClientError> {
        let declared: u64 = response.partitions.iter().map(|p| u64::from(p.payload_bytes)).sum();
        if declared != payload.len() as u64 {
            return Err(ClientError::Protocol(format!(
                "poll response lists {declared} payload bytes, the frame carries {}",
                payload.len()
            )));
        }
        Ok(Self { response, payload })
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
            PolledPartitionData { info, bytes: self.payload.get(start..at).unwrap_or_default() }
        })
    }

    /// Every record in `[start_offset, next_offset)` of every partition, partition by partition.
    /// A batch that fails validation yields one error and ends that partition.
    pub fn records(&self) -> impl Iterator<Item = Result<PolledRecord<'_>, ClientError>> + '_ {
        self.partitions().flat_map(|partition| partition.records())
    }
}

/// One partition's share of a [`Polled`].
#[derive(Debug, Clone, Copy)]
pub struct PolledPartitionData<'a> {
    /// The partition's marks.
    pub info: &'a PolledPartition,
    /// Its batches, back to back.
    pub bytes: &'a [u8],
}

impl<'a> PolledPartitionData<'a> {
    /// The partition's batches, each validated as it is reached.
    pub fn batches(&self) -> BatchIter<'a> {
        batch::batches(self.bytes)
    }

    /// The partition's records in `[start_offset, next_offset)`.
    pub fn records(&self) -> PartitionRecords<'a> {
        PartitionRecords { info: self.info, batches: self.batches(), current: None, failed: false }
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
    info: &'a PolledPartition,
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
        loop {
            if let Some(records) = self.current.as_mut() {
                for record in records.by_ref() {
                    if record.offset >= self.info.next_offset {
                        break;
                    }
                    if record.offset >= self.info.start_offset {
                        return Some(Ok(PolledRecord { partition: self.info.partition, record }));
                    }
                }
                self.current = None;
            }
            match self.batches.next()? {
                Ok(batch) if batch.header().next_offset() <= self.info.start_offset => continue,
                Ok(batch) if batch.header().base_offset >= self.info.next_offset => continue,
                Ok(batch) => self.current = Some(batch.records()),
                Err(error) => {
                    self.failed = true;
                    return Some(Err(ClientError::Protocol(format!(
                        "partition {} returned a bad batch: {error}",
                        self.info.partition
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
    use crate::protocol::batch::{patch_server_fields, BatchBuilder};

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
}
