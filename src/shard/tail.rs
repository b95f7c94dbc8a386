//! What a poll answer is made of, and the per-partition tail cache that lets consumers at the
//! head of a partition read without touching the disk.
//!
//! A [`PayloadPart`] is a run of whole batches: in an O_DIRECT read buffer, in a produce frame
//! kept by the [`TailCache`], or (for answers from another shard) in an owned copy. Parts are
//! written to the socket from where they are.
//!
//! The tail cache keeps the request frames of the latest produces of one partition (after their
//! batches were given offsets in place, so the bytes are exactly the log's), up to a byte bound:
//! the shard's budget (`--tail-cache-bytes`, a [`TailBudget`]) split evenly over the partitions
//! the shard owns, so memory stays bounded however many partitions there are.
//! A poll at an offset a cached frame holds is answered from that frame once the batches are
//! visible (written, or fsynced under `--fsync always`); nothing is copied or read.
//!
//! Lives on the shard that owns the partition (`Rc`, never crosses cores). Invariants: cached
//! entries hold whole batches with dense offsets `first_offset..next_offset`; an entry is served
//! only when `next_offset <= high watermark` and the log's rollback epoch is the one it was cached
//! under (a failed write makes offsets be reused; the cache is then emptied); after an insert a
//! cache holds at most its share (budget / partitions) in frame bytes, so the caches of a shard
//! hold at most the budget (a cache over a share that shrank sheds the excess at its next insert).

use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::{Deref, Range};
use std::rc::Rc;

use glommio::io::ReadResult;

use crate::model::Offset;
use crate::protocol::batch::BatchHeader;
use crate::server::frame_pool::FrameBuf;
use crate::storage::LogRead;

/// A produce frame shared by the tail cache and the poll answers sent from it.
#[derive(Clone)]
pub struct SharedFrame(Rc<FrameBuf>);

impl Deref for SharedFrame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Whole batches in a produce frame held by the tail cache.
pub type FrameSlice = LogRead<SharedFrame>;

/// Batch bytes of a poll answer.
pub enum PayloadPart {
    /// Whole batches in an O_DIRECT read buffer.
    Read(LogRead<ReadResult>),
    /// Whole batches in a produce frame kept by the tail cache.
    Frame(FrameSlice),
    /// Whole batches copied out of another shard's buffers.
    Owned(Vec<u8>),
}

impl PayloadPart {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            PayloadPart::Read(read) => read.bytes(),
            PayloadPart::Frame(slice) => slice.bytes(),
            PayloadPart::Owned(bytes) => bytes,
        }
    }

    /// The offset of the first batch (`None` for an owned copy, which is never split).
    pub fn first_offset(&self) -> Option<Offset> {
        match self {
            PayloadPart::Read(read) => Some(read.first_offset),
            PayloadPart::Frame(slice) => Some(slice.first_offset),
            PayloadPart::Owned(_) => None,
        }
    }

    /// The offset after the last batch (`None` for an owned copy).
    pub fn next_offset(&self) -> Option<Offset> {
        match self {
            PayloadPart::Read(read) => Some(read.next_offset),
            PayloadPart::Frame(slice) => Some(slice.next_offset),
            PayloadPart::Owned(_) => None,
        }
    }

    /// Cuts at `at` (a batch boundary, the start of offset `at_offset`): `self` keeps the bytes
    /// before, the returned part (sharing the same buffer) the batches after, if any.
    pub fn split_off(&mut self, at: usize, at_offset: Offset) -> Option<PayloadPart> {
        match self {
            PayloadPart::Read(read) => read.split_off(at, at_offset).map(PayloadPart::Read),
            PayloadPart::Frame(slice) => slice.split_off(at, at_offset).map(PayloadPart::Frame),
            PayloadPart::Owned(_) => None,
        }
    }
}

/// One shard's tail-cache memory: a byte budget shared evenly by the caches that hold it.
pub struct TailBudget {
    bytes: usize,
    caches: Cell<usize>,
}

impl TailBudget {
    /// A budget of `bytes` (0 disables caching).
    pub fn new(bytes: usize) -> Rc<Self> {
        Rc::new(Self { bytes, caches: Cell::new(0) })
    }

    /// What one cache may hold now.
    pub fn share(&self) -> usize {
        self.bytes / self.caches.get().max(1)
    }
}

/// The latest produce frames of one partition, oldest first.
pub struct TailCache {
    entries: VecDeque<FrameSlice>,
    bytes: usize,
    budget: Rc<TailBudget>,
    epoch: u64,
}

impl TailCache {
    /// An empty cache taking an equal share of `budget`.
    pub fn new(budget: Rc<TailBudget>) -> Self {
        budget.caches.set(budget.caches.get() + 1);
        Self { entries: VecDeque::new(), bytes: 0, budget, epoch: 0 }
    }

    /// Frame bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn reset_if_stale(&mut self, epoch: u64) {
        if epoch != self.epoch {
            self.entries.clear();
            self.bytes = 0;
            self.epoch = epoch;
        }
    }

    /// Keeps `frame`, whose `range` holds whole batches with offsets `first..next` appended
    /// under rollback epoch `epoch`, evicting the oldest frames to stay within the share.
    pub fn insert(&mut self, frame: FrameBuf, range: Range<usize>, first: Offset, next: Offset, epoch: u64) {
        self.reset_if_stale(epoch);
        let cost = frame.len();
        let share = self.budget.share();
        let cost = if cost > share || range.is_empty() || next <= first { 0 } else { cost };
        while self.bytes + cost > share {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.buffer().len(),
                None => break,
            }
        }
        if cost == 0 {
            return;
        }
        self.bytes += cost;
        self.entries.push_back(FrameSlice::new(SharedFrame(Rc::new(frame)), range, first, next));
    }

    /// The cached batches from the one holding `offset` to the end of its frame, if a frame
    /// holds `offset`, all of it is below `high_watermark`, and `epoch` is still current.
    pub fn lookup(&mut self, offset: Offset, high_watermark: Offset, epoch: u64) -> Option<PayloadPart> {
        self.reset_if_stale(epoch);
        let entry = self.entries.iter().find(|e| e.first_offset <= offset && offset < e.next_offset)?;
        if entry.next_offset > high_watermark {
            return None;
        }
        let bytes = entry.bytes();
        let mut at = 0;
        while at < bytes.len() {
            let header = BatchHeader::decode(&bytes[at..]).ok()?;
            if header.next_offset() > offset {
                let mut slice = entry.clone();
                return match at {
                    0 => Some(PayloadPart::Frame(slice)),
                    _ => slice.split_off(at, header.base_offset).map(PayloadPart::Frame),
                };
            }
            at += header.length as usize;
        }
        None
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        self.budget.caches.set(self.budget.caches.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{self, BatchBuilder};

    /// A frame holding `count` batches of 3 records at offsets `base..`, after 32 header bytes.
    fn frame_with(base: Offset, count: u64) -> (FrameBuf, Range<usize>) {
        let mut payload = Vec::new();
        for i in 0..count {
            let mut builder = BatchBuilder::new(0, 0);
            for r in 0..3 {
                builder.push_payload(format!("b{i}-r{r}").as_bytes()).expect("push");
            }
            let mut bytes = builder.finish().expect("finish");
            batch::patch_server_fields(&mut bytes, base + i * 3, 1);
            payload.extend_from_slice(&bytes);
        }
        let mut frame = FrameBuf::take(32 + payload.len());
        frame[32..].copy_from_slice(&payload);
        (frame, 32..32 + payload.len())
    }

    #[test]
    fn serves_from_the_batch_holding_the_offset_once_visible() {
        let mut cache = TailCache::new(TailBudget::new(1 << 20));
        let (frame, range) = frame_with(10, 4);
        cache.insert(frame, range, 10, 22, 0);
        assert!(cache.lookup(15, 21, 0).is_none(), "not all visible yet");
        let part = cache.lookup(15, 22, 0).expect("cached");
        assert_eq!(part.first_offset(), Some(13));
        let batches: Vec<_> =
            batch::batches(part.bytes()).map(|b| b.expect("batch").header().base_offset).collect();
        assert_eq!(batches, vec![13, 16, 19]);
        assert!(cache.lookup(22, 100, 0).is_none());
        assert!(cache.lookup(9, 100, 0).is_none());
    }

    #[test]
    fn a_rollback_empties_it_and_capacity_bounds_it() {
        let (frame, range) = frame_with(0, 2);
        let cost = frame.len();
        let budget = TailBudget::new(cost * 4);
        let _other = TailCache::new(budget.clone());
        let mut cache = TailCache::new(budget);
        cache.insert(frame, range, 0, 6, 0);
        let (frame, range) = frame_with(6, 2);
        cache.insert(frame, range, 6, 12, 0);
        let (frame, range) = frame_with(12, 2);
        cache.insert(frame, range, 12, 18, 0);
        assert_eq!(cache.bytes(), cost * 2);
        assert!(cache.lookup(0, 100, 0).is_none(), "the oldest frame was evicted");
        assert!(cache.lookup(6, 100, 0).is_some());
        assert!(cache.lookup(12, 100, 1).is_none(), "a rollback makes every entry stale");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn the_budget_is_shared_evenly_and_a_new_partition_shrinks_every_share() {
        let (frame, range) = frame_with(0, 2);
        let cost = frame.len();
        let budget = TailBudget::new(cost * 2);
        let mut first = TailCache::new(budget.clone());
        first.insert(frame, range, 0, 6, 0);
        let (frame, range) = frame_with(6, 2);
        first.insert(frame, range, 6, 12, 0);
        assert_eq!(first.bytes(), cost * 2, "alone, a cache may take the whole budget");
        let mut second = TailCache::new(budget.clone());
        let (frame, range) = frame_with(0, 2);
        second.insert(frame, range, 0, 6, 0);
        assert_eq!(second.bytes(), cost);
        let (frame, range) = frame_with(12, 2);
        first.insert(frame, range, 12, 18, 0);
        assert_eq!(first.bytes(), cost, "the first cache shed down to its new share");
        assert!(first.lookup(12, 100, 0).is_some() && first.lookup(6, 100, 0).is_none());
        drop(second);
        assert_eq!(budget.share(), cost * 2, "a dropped cache gives its share back");
        let small = TailBudget::new(cost - 1);
        let mut cache = TailCache::new(small);
        let (frame, range) = frame_with(0, 2);
        cache.insert(frame, range, 0, 6, 0);
        assert_eq!(cache.bytes(), 0, "a frame larger than the share is not kept");
    }

    #[test]
    fn split_off_keeps_both_halves_on_the_same_frame() {
        let mut cache = TailCache::new(TailBudget::new(1 << 20));
        let (frame, range) = frame_with(0, 3);
        cache.insert(frame, range, 0, 9, 0);
        let mut part = cache.lookup(0, 9, 0).expect("cached");
        let first_len = BatchHeader::decode(part.bytes()).expect("header").length as usize;
        let rest = part.split_off(first_len, 3).expect("rest");
        assert_eq!(rest.first_offset(), Some(3));
        assert_eq!(part.bytes().len(), first_len);
        assert!(part.split_off(first_len, 3).is_none());
    }
}
