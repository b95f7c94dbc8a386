//! Filtered reads: a poll with filter values reads on like an unfiltered one (read-ahead, batch
//! cache, planned reads, disk) but leaves out whole batches whose header rules out every wanted value
//! ([`batch_may_match`]). The batches it keeps stay in the buffers they were read into: each run
//! of kept batches becomes one payload part sharing its read buffer or cached frame, so nothing
//! is copied, and records are never opened (compressed batches are judged by their header).
//!
//! Runs on the partition's owner shard. Invariants: the answer's `next_offset` is past every batch
//! looked at, kept or skipped, so a consumer moves past what it does not want; the kept parts
//! hold exactly `payload_bytes` bytes of whole batches in offset order; a poll keeps at least one
//! wanted batch if one is there, and looks at no more than its scan budget (one batch at least).

use std::rc::Rc;

use super::{LocalPoll, Partition, PayloadPart};
use crate::protocol::batch::BatchHeader;
use crate::protocol::filter::{batch_may_match, Filter};
use crate::protocol::messages::{PolledPartition, Status};
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::mesh::{FilterTally, PollSpec};

/// Reads from `start` like an unfiltered poll, keeping only the batches `filter` may want, within
/// the spec's message and byte limits (counted over kept batches) and `scan_bytes_max` bytes
/// looked at. Adds what it skipped to the partition's counters.
pub(super) async fn read(
    partition: &Rc<Partition>,
    start: u64,
    spec: &PollSpec,
    filter: &Filter,
    scan_bytes_max: usize,
    ahead: super::Prefetching,
) -> BrokerResult<LocalPoll> {
    let high_watermark = partition.log.high_watermark();
    let limits = Limits {
        bytes: (spec.max_bytes as usize).max(1),
        messages: u64::from(spec.max_messages.max(1)),
        scan_bytes: scan_bytes_max.max(1),
    };
    let mut walk = Walk::new(start);
    let mut parts = Vec::new();
    let mut offset = start;
    let mut from_disk = false;
    while offset < high_watermark && !walk.done(&limits) {
        let len = limits.bytes - walk.kept_bytes;
        let Some(mut read) =
            super::read::next_part(partition, offset, high_watermark, len, &mut from_disk).await?
        else {
            break;
        };
        let first = read.first_offset().unwrap_or(offset);
        let pass = walk.pass(read.bytes(), first, filter, &limits).map_err(|message| {
            BrokerError::new(Status::Internal, format!("partition {}: {message}", partition.key.partition))
        })?;
        // The rest of the read waits for the next poll, which usually starts right there.
        let rest = read.split_off(pass.end, pass.next_offset);
        let cut = rest.is_some();
        *partition.read_ahead.borrow_mut() = rest;
        carve(read, &pass.runs, &mut parts);
        offset = pass.next_offset;
        if cut {
            break;
        }
    }
    super::read::read_on(partition, start, offset, from_disk, ahead);
    let mut tally = partition.filtered.get();
    tally.add(walk.skipped);
    partition.filtered.set(tally);
    debug_assert_eq!(parts.iter().map(|p| p.bytes().len()).sum::<usize>(), walk.kept_bytes);
    let marks = PolledPartition {
        partition: partition.key.partition,
        start_offset: start,
        next_offset: offset,
        high_watermark,
        payload_bytes: walk.kept_bytes as u32,
        removed: Vec::new(),
    };
    Ok(LocalPoll { partition: marks, parts, filtered: walk.skipped })
}

/// Moves the runs of kept batches out of `read` into `parts`, in order, each sharing the read's
/// buffer; the skipped batches between them are dropped.
fn carve(mut read: PayloadPart, runs: &[Run], parts: &mut Vec<PayloadPart>) {
    let mut pieces = Vec::with_capacity(runs.len());
    // From the last run backwards, so positions stay relative to the start of `read`.
    for run in runs.iter().rev() {
        drop(read.split_off(run.to, run.next_offset));
        if let Some(piece) = read.split_off(run.from, run.first_offset) {
            pieces.push(piece);
        }
    }
    parts.extend(pieces.into_iter().rev());
}

/// A poll's limits.
struct Limits {
    /// Bytes of kept batches (one batch at least).
    bytes: usize,
    /// Records of kept batches, from the start on.
    messages: u64,
    /// Bytes looked at, kept or skipped.
    scan_bytes: usize,
}

/// Consecutive kept batches in one read: bytes `from..to`, offsets `first_offset..next_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    from: usize,
    to: usize,
    first_offset: u64,
    next_offset: u64,
}

/// What one read came to: the kept runs, where the walk stopped (bytes and offset).
#[derive(Debug, PartialEq, Eq)]
struct Pass {
    runs: Vec<Run>,
    end: usize,
    next_offset: u64,
}

/// A poll's progress over the batches it looked at.
struct Walk {
    start: u64,
    kept_bytes: usize,
    kept_records: u64,
    scanned_bytes: usize,
    skipped: FilterTally,
}

impl Walk {
    fn new(start: u64) -> Self {
        Walk { start, kept_bytes: 0, kept_records: 0, scanned_bytes: 0, skipped: FilterTally::default() }
    }

    fn done(&self, limits: &Limits) -> bool {
        self.kept_bytes >= limits.bytes
            || self.kept_records >= limits.messages
            || self.scanned_bytes >= limits.scan_bytes
    }

    /// Walks the whole batches in `data` (the first at offset `first`) until a limit is reached:
    /// keeps those `filter` may want, skips the others.
    fn pass(&mut self, data: &[u8], first: u64, filter: &Filter, limits: &Limits) -> Result<Pass, String> {
        let mut pass = Pass { runs: Vec::new(), end: 0, next_offset: first };
        let mut open: Option<Run> = None;
        while pass.end < data.len() && !self.done(limits) {
            let at = pass.end;
            let header = BatchHeader::decode(&data[at..]).map_err(|e| format!("a stored batch: {e}"))?;
            let len = header.length as usize;
            if at + len > data.len() {
                return Err(format!("a batch at offset {} runs past its read", header.base_offset));
            }
            let records = header.next_offset().saturating_sub(header.base_offset.max(self.start));
            if batch_may_match(&header, filter) {
                if self.kept_bytes > 0 && self.kept_bytes + len > limits.bytes {
                    break;
                }
                let run = open.get_or_insert(Run {
                    from: at,
                    to: at,
                    first_offset: header.base_offset,
                    next_offset: 0,
                });
                run.to = at + len;
                run.next_offset = header.next_offset();
                self.kept_bytes += len;
                self.kept_records += records;
            } else {
                pass.runs.extend(open.take());
                self.skipped.add(FilterTally { batches: 1, bytes: len as u64, records });
            }
            self.scanned_bytes += len;
            pass.end = at + len;
            pass.next_offset = header.next_offset();
        }
        pass.runs.extend(open);
        Ok(pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{patch_server_fields, BatchBuilder, Message};

    /// Stored batches of 2 records each, with these filter values, from offset 0.
    fn stored(values: &[Option<&str>]) -> (Vec<u8>, Vec<usize>) {
        let (mut bytes, mut ends) = (Vec::new(), Vec::new());
        for (i, value) in values.iter().enumerate() {
            let mut builder = BatchBuilder::new(0, 0);
            for _ in 0..2 {
                let message =
                    Message { filter_value: value.map(str::as_bytes), ..Message::payload(b"payload") };
                builder.push(&message).expect("push");
            }
            let mut batch = builder.finish().expect("finish");
            patch_server_fields(&mut batch, 2 * i as u64, 1);
            bytes.extend_from_slice(&batch);
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    fn limits() -> Limits {
        Limits { bytes: 1 << 20, messages: 1000, scan_bytes: 1 << 20 }
    }

    #[test]
    fn kept_batches_form_runs_and_skipped_ones_are_counted() {
        let (data, ends) = stored(&[Some("eu"), Some("eu"), Some("us"), None, Some("eu")]);
        let filter = Filter::new(&["eu"], false).expect("filter");
        let mut walk = Walk::new(1);
        let pass = walk.pass(&data, 0, &filter, &limits()).expect("pass");
        let runs = vec![
            Run { from: 0, to: ends[1], first_offset: 0, next_offset: 4 },
            Run { from: ends[3], to: ends[4], first_offset: 8, next_offset: 10 },
        ];
        assert_eq!(pass, Pass { runs, end: data.len(), next_offset: 10 });
        assert_eq!(walk.kept_bytes, ends[1] + ends[4] - ends[3]);
        assert_eq!(walk.kept_records, 1 + 2 + 2, "record 0 is below the start");
        let skipped_bytes = (ends[3] - ends[1]) as u64;
        assert_eq!(walk.skipped, FilterTally { batches: 2, bytes: skipped_bytes, records: 4 });
    }

    #[test]
    fn limits_count_kept_batches_and_scanned_bytes() {
        let (data, ends) = stored(&[Some("us"), Some("eu"), Some("eu"), Some("us")]);
        let filter = Filter::new(&["eu"], false).expect("filter");
        // One wanted batch fits the byte limit: the walk stops before the second.
        let one = Limits { bytes: ends[1] - ends[0], ..limits() };
        let pass = Walk::new(0).pass(&data, 0, &filter, &one).expect("pass");
        assert_eq!((pass.end, pass.next_offset, pass.runs.len()), (ends[1], 4, 1));
        // The first wanted batch is kept even when larger than the byte limit.
        let tiny = Limits { bytes: 1, ..limits() };
        let pass = Walk::new(0).pass(&data, 0, &filter, &tiny).expect("pass");
        assert_eq!((pass.end, pass.next_offset), (ends[1], 4));
        // The message limit counts kept records only.
        let two = Limits { messages: 2, ..limits() };
        let pass = Walk::new(0).pass(&data, 0, &filter, &two).expect("pass");
        assert_eq!(pass.next_offset, 4);
        // The scan budget stops the walk after skipped batches too (one batch at least).
        let scan = Limits { scan_bytes: 1, ..limits() };
        let mut walk = Walk::new(0);
        let pass = walk.pass(&data, 0, &filter, &scan).expect("pass");
        assert_eq!((pass.end, pass.next_offset, pass.runs.len(), walk.kept_bytes), (ends[0], 2, 0, 0));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let filter = Filter::new(&["eu"], false).expect("filter");
        assert!(Walk::new(0).pass(&[0_u8; 200], 0, &filter, &limits()).is_err());
        let (data, _) = stored(&[Some("eu")]);
        assert!(Walk::new(0).pass(&data[..data.len() - 1], 0, &filter, &limits()).is_err());
    }
}
