//! The batch cache: recent batches of one shard's partitions, in memory, so that polls,
//! subscriptions and fetches of data written or read lately are answered without a disk read.
//!
//! An entry is a run of whole batches with dense offsets, held where the bytes already are: a
//! produce frame (after its batches were given offsets in place, so the bytes are exactly the
//! log's) or an O_DIRECT read buffer. Nothing is copied in or out: a hit is a [`PayloadPart`]
//! sharing the entry's buffer, written to the socket from there.
//!
//! Memory: one budget per shard (`--cache-bytes` split over the shards), charged with the whole
//! buffer an entry keeps alive. Eviction is oldest first, with awareness of readers: entries a
//! poll has already read go first (oldest read first), then entries nobody has read yet (oldest
//! inserted first). So a consumer catching up from disk, whose reads are inserted as read, churns
//! through its own reads and leaves the recent data that consumers at the head are about to read.
//!
//! Growth: memory the process has not touched yet costs a page fault and a zero-fill per page
//! (on a virtual machine also the host's fault: 1.1 s per GiB measured on our 2-core VM, more
//! than the broker's whole produce path). A cache that took its budget at once would spend a
//! fresh broker's first gigabytes of traffic on that. So the limit starts at a floor and grows
//! at `--cache-growth` bytes per second to the budget, and buffers leave the cache only by
//! eviction: a produce frame evicted returns to the frame pool and carries the next request, so
//! a cache at its limit takes no new memory.
//!
//! Visibility: an entry is inserted only once its batches are visible under the fsync policy
//! (written, or fsynced under `--fsync always`). A produce frame acknowledged before its write
//! (`--fsync never`) waits in its partition's pending list, charged to the budget, until the
//! visible end passes it. A rollback (a failed write makes offsets be reused) empties the
//! partition's entries: each is kept under the rollback epoch it was inserted in.
//!
//! Lives on the shard that owns the partitions (`Rc`, never crosses cores). Invariants: the
//! entries of one partition never overlap; `bytes` is the sum of the costs of every entry and
//! pending run; after an insert `bytes <= budget` (an entry that cannot fit is not kept); every
//! live entry has exactly one key in the queue it belongs to (stale keys are skipped and
//! compacted away).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use super::payload::PayloadPart;
use crate::model::Offset;

/// Bytes charged on top of a read buffer's length (its alignment and allocation slack).
const READ_SLACK_BYTES: usize = 4096;

/// Counters of one shard's cache, since it started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes held now (entries and pending runs).
    pub bytes: usize,
    /// Entries held now.
    pub entries: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

/// Bytes a shard's cache may hold from the start, before it grows (bounded by the budget).
pub const CACHE_FLOOR_BYTES: usize = 64 * 1024 * 1024;

/// One shard's batch cache.
pub struct BatchCache {
    budget: usize,
    /// Bytes per second the limit grows by (0: the limit is the budget from the start).
    growth: usize,
    started: Instant,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    bytes: usize,
    seq: u64,
    next_id: u32,
    partitions: HashMap<u32, Runs>,
    /// Keys of entries no poll has read yet, oldest inserted first.
    unread: VecDeque<Key>,
    /// Keys of entries a poll has read, oldest read first.
    read: VecDeque<Key>,
    live: usize,
    stats: CacheStats,
}

#[derive(Clone, Copy)]
struct Key {
    id: u32,
    first: Offset,
    seq: u64,
}

#[derive(Default)]
struct Runs {
    epoch: u64,
    entries: BTreeMap<Offset, Entry>,
    /// Produce frames acknowledged before they became visible, oldest first.
    pending: VecDeque<(PayloadPart, usize)>,
}

struct Entry {
    part: PayloadPart,
    cost: usize,
    seq: u64,
    read: bool,
}

impl BatchCache {
    /// A cache of at most `budget` bytes (0 disables it) that takes its whole budget at once.
    pub fn new(budget: usize) -> Rc<Self> {
        Self::growing(budget, 0)
    }

    /// A cache of at most `budget` bytes whose limit starts at [`CACHE_FLOOR_BYTES`] and grows
    /// by `growth` bytes per second (0: no pacing).
    pub fn growing(budget: usize, growth: usize) -> Rc<Self> {
        Rc::new(Self { budget, growth, started: Instant::now(), state: RefCell::new(State::default()) })
    }

    /// What the cache may hold now: the budget, or less while it is still growing into it.
    pub fn limit(&self) -> usize {
        if self.growth == 0 {
            return self.budget;
        }
        let grown = self.started.elapsed().as_secs_f64() * self.growth as f64;
        let limit = (CACHE_FLOOR_BYTES as f64 + grown).min(self.budget as f64);
        limit as usize
    }

    /// Counters and what is held now.
    pub fn stats(&self) -> CacheStats {
        let state = self.state.borrow();
        CacheStats { bytes: state.bytes, entries: state.live, ..state.stats }
    }

    /// A handle for one partition's entries; dropping it frees them.
    pub fn partition(self: &Rc<Self>) -> PartitionCache {
        let mut state = self.state.borrow_mut();
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        state.partitions.insert(id, Runs::default());
        PartitionCache { cache: self.clone(), id }
    }
}

/// What a part costs the budget: the whole buffer it keeps alive.
fn cost_of(part: &PayloadPart) -> usize {
    match part {
        PayloadPart::Read(read) => read.buffer().len() + READ_SLACK_BYTES,
        PayloadPart::Frame(slice) => slice.buffer().capacity(),
        PayloadPart::Owned(bytes) => bytes.capacity(),
    }
}

/// One partition's view of its shard's cache.
pub struct PartitionCache {
    cache: Rc<BatchCache>,
    id: u32,
}

impl PartitionCache {
    /// Keeps `part` (whole batches, offsets `first..next`, appended under rollback `epoch`).
    /// `visible` is the partition's visible end now: a part not yet wholly visible waits in the
    /// pending list. `read` says whether a poll is reading it now (a disk read being answered).
    /// Where the part overlaps entries already held, only the part between them is kept.
    pub fn insert(&self, part: PayloadPart, epoch: u64, visible: Offset, read: bool) {
        let budget = self.cache.limit();
        let (Some(first), Some(next)) = (part.first_offset(), part.next_offset()) else { return };
        let cost = cost_of(&part);
        if budget == 0 || next <= first || cost > budget {
            return;
        }
        let mut state = self.cache.state.borrow_mut();
        state.reset_if_stale(self.id, epoch);
        state.promote(self.id, visible, budget);
        if next > visible {
            if !state.make_room(cost, budget) && !state.drop_pending(self.id, cost, budget) {
                return;
            }
            state.bytes += cost;
            if let Some(runs) = state.partitions.get_mut(&self.id) {
                runs.pending.push_back((part, cost));
            }
            return;
        }
        state.promote(self.id, visible, budget);
        state.insert_visible(self.id, part, read, budget);
    }

    /// The cached batches from the one holding `offset` to the end of their entry, if an entry
    /// holds `offset` and `epoch` is still current. Entries below `log_start` (removed by
    /// retention) are dropped instead. Marks the entry read.
    pub fn lookup(
        &self,
        offset: Offset,
        visible: Offset,
        log_start: Offset,
        epoch: u64,
    ) -> Option<PayloadPart> {
        if self.cache.budget == 0 {
            return None;
        }
        let mut state = self.cache.state.borrow_mut();
        state.reset_if_stale(self.id, epoch);
        state.promote(self.id, visible, self.cache.limit());
        if offset < log_start {
            state.drop_below(self.id, log_start);
            state.stats.misses += 1;
            return None;
        }
        let found = state.partitions.get_mut(&self.id).and_then(|runs| {
            let (_, entry) = runs.entries.range_mut(..=offset).next_back()?;
            let next = entry.part.next_offset()?;
            if offset >= next || next > visible {
                return None;
            }
            let part = entry.part.from_offset(offset)?;
            let newly_read = !entry.read;
            entry.read = true;
            let key = Key { id: self.id, first: entry.part.first_offset()?, seq: entry.seq };
            Some((part, newly_read.then_some(key)))
        });
        match found {
            Some((part, newly_read)) => {
                state.stats.hits += 1;
                if let Some(key) = newly_read {
                    state.read.push_back(key);
                }
                Some(part)
            }
            None => {
                state.stats.misses += 1;
                None
            }
        }
    }

    /// True when an entry holds `offset`.
    #[cfg(test)]
    pub fn contains(&self, offset: Offset) -> bool {
        let state = self.cache.state.borrow();
        state.partitions.get(&self.id).is_some_and(|runs| {
            runs.entries
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, e)| e.part.next_offset().is_some_and(|next| offset < next))
        })
    }

    /// The end of the cached entries that follow each other from `offset` (`offset` itself
    /// when no entry holds it): where a read ahead has to start.
    pub fn cached_until(&self, offset: Offset) -> Offset {
        let state = self.cache.state.borrow();
        let Some(runs) = state.partitions.get(&self.id) else { return offset };
        let mut at = offset;
        if let Some((_, entry)) = runs.entries.range(..=at).next_back() {
            match entry.part.next_offset() {
                Some(next) if next > at => at = next,
                _ => return at,
            }
        } else {
            return at;
        }
        for (&first, entry) in runs.entries.range(at..) {
            match entry.part.next_offset() {
                Some(next) if first == at => at = next,
                _ => break,
            }
        }
        at
    }

    /// Bytes this partition's entries and pending runs hold.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        let state = self.cache.state.borrow();
        state.partitions.get(&self.id).map_or(0, |runs| {
            runs.entries.values().map(|e| e.cost).sum::<usize>()
                + runs.pending.iter().map(|(_, cost)| cost).sum::<usize>()
        })
    }
}

impl Drop for PartitionCache {
    fn drop(&mut self) {
        let mut state = self.cache.state.borrow_mut();
        if let Some(runs) = state.partitions.remove(&self.id) {
            state.forget(runs);
        }
    }
}

impl State {
    fn forget(&mut self, runs: Runs) {
        self.live -= runs.entries.len();
        self.bytes -= runs.entries.values().map(|e| e.cost).sum::<usize>();
        self.bytes -= runs.pending.iter().map(|(_, cost)| cost).sum::<usize>();
    }

    fn reset_if_stale(&mut self, id: u32, epoch: u64) {
        let stale = self.partitions.get(&id).is_some_and(|runs| runs.epoch != epoch);
        if stale {
            if let Some(runs) = self.partitions.insert(id, Runs { epoch, ..Runs::default() }) {
                self.forget(runs);
            }
        }
    }

    /// Moves the pending runs that became visible into the entries.
    fn promote(&mut self, id: u32, visible: Offset, budget: usize) {
        loop {
            let Some(runs) = self.partitions.get_mut(&id) else { return };
            let ready =
                runs.pending.front().is_some_and(|(p, _)| p.next_offset().is_some_and(|n| n <= visible));
            if !ready {
                return;
            }
            let Some((part, cost)) = runs.pending.pop_front() else { return };
            self.bytes -= cost;
            self.insert_visible(id, part, false, budget);
        }
    }

    /// Gives up this partition's oldest pending runs (not cached after all) until `cost` more
    /// bytes fit; false when they cannot.
    fn drop_pending(&mut self, id: u32, cost: usize, budget: usize) -> bool {
        while self.bytes + cost > budget {
            let Some(runs) = self.partitions.get_mut(&id) else { return false };
            let Some((_, dropped)) = runs.pending.pop_front() else { return false };
            self.bytes -= dropped;
        }
        true
    }

    /// Drops the entries wholly below `start`.
    fn drop_below(&mut self, id: u32, start: Offset) {
        let Some(runs) = self.partitions.get_mut(&id) else { return };
        let below: Vec<Offset> = runs
            .entries
            .iter()
            .take_while(|(_, e)| e.part.next_offset().is_some_and(|n| n <= start))
            .map(|(first, _)| *first)
            .collect();
        for first in below {
            if let Some(entry) = runs.entries.remove(&first) {
                self.bytes -= entry.cost;
                self.live -= 1;
            }
        }
    }

    fn insert_visible(&mut self, id: u32, part: PayloadPart, read: bool, budget: usize) {
        let Some(part) = self.trim_overlaps(id, part) else { return };
        let Some(first) = part.first_offset() else { return };
        let cost = cost_of(&part);
        if cost > budget || !self.make_room(cost, budget) {
            return;
        }
        let Some(runs) = self.partitions.get_mut(&id) else { return };
        // Eviction may have removed the neighbours, never added one: still no overlap.
        self.seq += 1;
        let seq = self.seq;
        runs.entries.insert(first, Entry { part, cost, seq, read });
        self.bytes += cost;
        self.live += 1;
        let key = Key { id, first, seq };
        if read {
            self.read.push_back(key);
        } else {
            self.unread.push_back(key);
        }
        self.compact();
    }

    /// The part of `part` not held yet: cut after an entry that holds its start, and before the
    /// next entry. `None` when nothing is left.
    fn trim_overlaps(&self, id: u32, mut part: PayloadPart) -> Option<PayloadPart> {
        let runs = self.partitions.get(&id)?;
        let first = part.first_offset()?;
        if let Some((_, held)) = runs.entries.range(..=first).next_back() {
            let held_next = held.part.next_offset()?;
            if held_next > first {
                if held_next >= part.next_offset()? {
                    return None;
                }
                let at = part.batch_position(held_next)?;
                part = part.split_off(at, held_next)?;
            }
        }
        let first = part.first_offset()?;
        if let Some((&later, _)) = runs.entries.range(first + 1..).next() {
            if later < part.next_offset()? {
                let at = part.batch_position(later)?;
                part.split_off(at, later);
            }
        }
        Some(part)
    }

    /// Evicts until `cost` more bytes fit; false when they cannot.
    fn make_room(&mut self, cost: usize, budget: usize) -> bool {
        while self.bytes + cost > budget {
            if !self.evict_one() {
                return false;
            }
        }
        true
    }

    fn evict_one(&mut self) -> bool {
        while let Some(key) = self.read.pop_front().or_else(|| self.unread.pop_front()) {
            let Some(runs) = self.partitions.get_mut(&key.id) else { continue };
            let live = runs.entries.get(&key.first).is_some_and(|e| e.seq == key.seq);
            if !live {
                continue;
            }
            if let Some(entry) = runs.entries.remove(&key.first) {
                self.bytes -= entry.cost;
                self.live -= 1;
                self.stats.evictions += 1;
                return true;
            }
        }
        false
    }

    /// Rebuilds the queues when stale keys (entries removed another way, or moved to the read
    /// queue) outnumber the live ones, so they stay proportional to what is held.
    fn compact(&mut self) {
        if self.unread.len() + self.read.len() <= 2 * self.live + 1024 {
            return;
        }
        let partitions = &self.partitions;
        let valid = |key: &Key, read: bool| {
            partitions
                .get(&key.id)
                .and_then(|runs| runs.entries.get(&key.first))
                .is_some_and(|e| e.seq == key.seq && e.read == read)
        };
        self.unread.retain(|key| valid(key, false));
        self.read.retain(|key| valid(key, true));
    }
}

#[cfg(test)]
mod tests;
