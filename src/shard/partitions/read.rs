//! The read path shared by polls, push subscriptions and durable fetches: where the batches at
//! an offset come from, and the read-ahead that keeps the disk busy for a consumer catching up.
//!
//! Sources, in order: the rest of the last read (a poll that starts where the last one ended),
//! the shard's batch cache ([`crate::shard::cache`]), a planned read already on its way, then a
//! read of the disk. Whatever comes from disk goes into the cache.
//!
//! Read-ahead follows the reader: once a consumer reads sequentially and needed the disk, the
//! partition keeps up to `--prefetch-depth` planned reads of `--prefetch-bytes` each ahead of it
//! (chunks cut on index boundaries, all in flight at once, [`crate::storage::ReadChunk`]). Each
//! finished read goes into the cache; each poll tops the window up again from where the last
//! planned read ends, so reads run as far ahead as the reader keeps up with and no further.
//! A reader that jumps elsewhere cancels them.
//!
//! Runs on the partition's owner shard. Invariants: an answer holds whole batches in offset
//! order from the one holding the start offset, all below the visible end; planned reads are in
//! offset order and do not overlap.

use std::collections::VecDeque;
use std::rc::Rc;

use super::{LocalPoll, Partition, PayloadPart};
use crate::model::Offset;
use crate::protocol::batch::BatchHeader;
use crate::protocol::messages::PolledPartition;
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::mesh::{FilterTally, PollSpec};

/// How far reads run ahead of a sequential reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetching {
    /// Bytes per planned read (`--prefetch-bytes`); 0 disables read-ahead.
    pub chunk_bytes: usize,
    /// Planned reads ahead of the reader (`--prefetch-depth`).
    pub depth: usize,
}

/// The planned reads ahead of one partition's sequential reader.
#[derive(Default)]
pub(super) struct ReadAhead {
    reads: VecDeque<Planned>,
    /// Where the last planned read ends.
    end: Option<Offset>,
}

struct Planned {
    first: Offset,
    next: Offset,
    task: glommio::Task<Option<PayloadPart>>,
}

impl ReadAhead {
    /// Takes the planned read holding `offset`, dropping those the reader has passed.
    fn take_holding(&mut self, offset: Offset) -> Option<Planned> {
        while self.reads.front().is_some_and(|r| r.next <= offset) {
            self.reads.pop_front();
        }
        match self.reads.front() {
            Some(r) if r.first <= offset => self.reads.pop_front(),
            _ => None,
        }
    }
}

/// The batches from the one holding `offset`, up to `len` bytes when read from disk (at least
/// one batch). Sets `from_disk` when the disk had to be waited for.
pub(crate) async fn next_part(
    partition: &Partition,
    offset: Offset,
    high_watermark: Offset,
    len: usize,
    from_disk: &mut bool,
) -> BrokerResult<Option<PayloadPart>> {
    let log = &partition.log;
    let rest = partition.read_ahead.borrow_mut().take().filter(|part| part.first_offset() == Some(offset));
    if let Some(part) = rest {
        return Ok(Some(part));
    }
    let (epoch, start) = (log.rollback_epoch(), log.offsets().start);
    if let Some(part) = partition.cache.lookup(offset, high_watermark, start, epoch) {
        return Ok(Some(part));
    }
    let planned = partition.ahead.borrow_mut().take_holding(offset);
    if let Some(planned) = planned {
        *from_disk = true;
        // A failed read is read again below (and a real error reported from there).
        if let Some(part) = planned.task.await {
            if let Some(hit) = partition.cache.lookup(offset, high_watermark, start, epoch) {
                return Ok(Some(hit));
            }
            if let Some(part) = part.from_offset(offset) {
                return Ok(Some(part));
            }
        }
    }
    *from_disk = true;
    let what = || format!("read from partition {}", partition.key.partition);
    let read = log.read(offset, len).await.map_err(|e| BrokerError::storage(&what(), e))?;
    Ok(read.map(|read| {
        let part = PayloadPart::Read(read);
        if let Some(copy) = part.clone_part() {
            partition.cache.insert(copy, epoch, high_watermark, true);
        }
        part
    }))
}

/// Records where this poll ended and, for a sequential reader that needed the disk or is being
/// read ahead for, plans reads up to the window past the end of what it has in memory.
pub(crate) fn read_on(
    partition: &Rc<Partition>,
    start: Offset,
    end: Offset,
    from_disk: bool,
    ahead: Prefetching,
) {
    let sequential = partition.last_poll_end.replace(Some(end)) == Some(start);
    let mut plan = partition.ahead.borrow_mut();
    if !sequential {
        *plan = ReadAhead::default();
        return;
    }
    while plan.reads.front().is_some_and(|r| r.next <= end) {
        plan.reads.pop_front();
    }
    let active = !plan.reads.is_empty() || plan.end.is_some_and(|e| e > end);
    if !(from_disk || active) || ahead.chunk_bytes == 0 || ahead.depth == 0 {
        return;
    }
    let log = &partition.log;
    let high_watermark = log.high_watermark();
    let rest_end = partition.read_ahead.borrow().as_ref().and_then(PayloadPart::next_offset);
    let mut at = plan.end.unwrap_or(end).max(end).max(rest_end.unwrap_or(end));
    let epoch = log.rollback_epoch();
    while plan.reads.len() < ahead.depth && at < high_watermark {
        at = partition.cache.cached_until(at);
        if at >= high_watermark {
            break;
        }
        let Some(chunk) = log.plan_read(at, ahead.chunk_bytes) else { break };
        let owner = partition.clone();
        let (first, next) = (chunk.first, chunk.next);
        let task = glommio::spawn_local(async move {
            let read = owner.log.read_chunk(&chunk).await.ok()?;
            let part = PayloadPart::Read(read);
            owner.cache.insert(part.clone_part()?, epoch, owner.log.high_watermark(), false);
            Some(part)
        });
        plan.reads.push_back(Planned { first, next, task });
        at = next;
    }
    plan.end = Some(at);
}

/// Reads batches from `start` within the spec's message, byte and batch limits (whole batches,
/// at least one): the answer holds the buffers they are in, with no copy.
pub(crate) async fn read_from(
    partition: &Rc<Partition>,
    start: u64,
    spec: &PollSpec,
    ahead: Prefetching,
) -> BrokerResult<LocalPoll> {
    let high_watermark = partition.log.high_watermark();
    let mut parts = Vec::new();
    let mut total = 0_usize;
    let mut offset = start;
    let mut from_disk = false;
    let max_bytes = (spec.max_bytes as usize).max(1);
    let max_messages = u64::from(spec.max_messages.max(1));
    let max_batches = spec.max_batches.max(1);
    let mut batches = 0_u32;
    let what = || format!("read from partition {}", partition.key.partition);
    while offset < high_watermark
        && total < max_bytes
        && offset - start < max_messages
        && batches < max_batches
    {
        let len = max_bytes - total;
        let Some(mut read) = next_part(partition, offset, high_watermark, len, &mut from_disk).await? else {
            break;
        };
        let data = read.bytes();
        let (mut at, mut next) = (0_usize, read.first_offset().unwrap_or(offset));
        // Whole batches only: none once `max_messages` are included, none past `max_bytes`
        // (but at least one per poll).
        while at < data.len() && next.saturating_sub(start) < max_messages && batches < max_batches {
            let header =
                BatchHeader::decode(&data[at..]).map_err(|e| BrokerError::storage(&what(), e.into()))?;
            if total + at > 0 && total + at + header.length as usize > max_bytes {
                break;
            }
            at += header.length as usize;
            next = header.next_offset();
            batches += 1;
        }
        let at = at.min(data.len());
        // The rest of the read waits for the next poll, which usually starts right there.
        let rest = read.split_off(at, next);
        let cut = rest.is_some();
        *partition.read_ahead.borrow_mut() = rest;
        if at > 0 {
            // The read buffer (or cached frame) itself goes into the response: no copy here.
            total += at;
            parts.push(read);
        }
        offset = next;
        if cut {
            break;
        }
    }
    read_on(partition, start, offset, from_disk, ahead);
    let partition_info = PolledPartition {
        partition: partition.key.partition,
        start_offset: start,
        next_offset: offset,
        high_watermark,
        payload_bytes: total as u32,
        removed: Vec::new(),
    };
    Ok(LocalPoll { partition: partition_info, parts, filtered: FilterTally::default() })
}
