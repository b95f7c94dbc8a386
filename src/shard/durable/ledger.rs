//! The ledger of a tracked partition (interest or work-queue retention, or TTLs allowed): one
//! small entry per message still in the log from the first live offset on, saying whether it is
//! live, its size, append time, filter value and expiry.
//!
//! Owned by the partition's [`super::Retention`] on the owner shard. It is derived state: built
//! from the batches (and the persisted deleted-set) when the partition opens, extended on every
//! append. Invariants: entries are dense, `base + i` is entry `i`'s offset; the front entry is
//! live (dead entries at the front are popped and `base` moves past them); `live` and
//! `live_bytes` count the live entries.

use std::collections::{HashMap, VecDeque};

/// One message.
#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u32,
    subject: u32,
    live: bool,
    timestamp_us: u64,
    /// 0 = never.
    expires_us: u64,
}

/// What the ledger knows about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageMeta {
    /// Its filter value's id in the ledger's table (0: none).
    pub subject: u32,
    /// Expiry (µs since the epoch; 0 = never).
    pub expires_us: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Ledger {
    base: u64,
    entries: VecDeque<Entry>,
    subjects: Vec<Box<[u8]>>,
    subject_ids: HashMap<Box<[u8]>, u32>,
    live: u64,
    live_bytes: u64,
    last_timestamp_us: u64,
}

impl Ledger {
    /// An empty ledger whose next message has offset `next`.
    pub fn new(next: u64) -> Ledger {
        Ledger {
            base: next,
            entries: VecDeque::new(),
            subjects: vec![Box::from(&b""[..])],
            subject_ids: HashMap::new(),
            live: 0,
            live_bytes: 0,
            last_timestamp_us: 0,
        }
    }

    /// The offset the next appended message gets.
    pub fn next(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// The first live offset (`next()` when empty).
    pub fn first(&self) -> u64 {
        self.base
    }

    /// Live messages and their bytes.
    pub fn live(&self) -> (u64, u64) {
        (self.live, self.live_bytes)
    }

    /// Append times of the first live and the last appended message (0 when unknown).
    pub fn timestamps(&self) -> (u64, u64) {
        (self.entries.front().map_or(0, |e| e.timestamp_us), self.last_timestamp_us)
    }

    /// Appends message `offset` (which must be `next()`: a gap means offsets were skipped,
    /// which are recorded as dead).
    pub fn push(
        &mut self,
        offset: u64,
        bytes: u32,
        subject: Option<&[u8]>,
        timestamp_us: u64,
        expires_us: u64,
    ) {
        if self.entries.is_empty() && offset > self.base {
            self.base = offset;
        }
        while self.next() < offset {
            self.entries.push_back(Entry { bytes: 0, subject: 0, live: false, timestamp_us, expires_us: 0 });
        }
        if offset < self.next() {
            return;
        }
        let subject = subject.map_or(0, |s| self.intern(s));
        self.entries.push_back(Entry { bytes, subject, live: true, timestamp_us, expires_us });
        self.live += 1;
        self.live_bytes += u64::from(bytes);
        self.last_timestamp_us = self.last_timestamp_us.max(timestamp_us);
        self.pop_dead();
    }

    /// Records that nothing is live below `first` (and moves past it), returning the offsets
    /// that were live and are now removed.
    pub fn remove_below(&mut self, first: u64) -> Vec<u64> {
        let mut removed = Vec::new();
        while self.base < first {
            let Some(entry) = self.entries.pop_front() else {
                self.base = first;
                break;
            };
            if entry.live {
                self.live -= 1;
                self.live_bytes -= u64::from(entry.bytes);
                removed.push(self.base);
            }
            self.base += 1;
        }
        self.pop_dead();
        removed
    }

    /// The message at `offset`, if it is live.
    pub fn get(&self, offset: u64) -> Option<MessageMeta> {
        let index = offset.checked_sub(self.base)?;
        let entry = self.entries.get(usize::try_from(index).ok()?)?;
        entry.live.then_some(MessageMeta { subject: entry.subject, expires_us: entry.expires_us })
    }

    /// The filter value of subject id `id`.
    pub fn subject(&self, id: u32) -> Option<&[u8]> {
        (id != 0).then(|| self.subjects.get(id as usize).map(|s| &s[..])).flatten()
    }

    /// Marks `offset` removed; false when it was not live.
    pub fn remove(&mut self, offset: u64) -> bool {
        let Some(index) = offset.checked_sub(self.base).and_then(|i| usize::try_from(i).ok()) else {
            return false;
        };
        let Some(entry) = self.entries.get_mut(index) else { return false };
        if !entry.live {
            return false;
        }
        entry.live = false;
        self.live -= 1;
        self.live_bytes -= u64::from(entry.bytes);
        self.pop_dead();
        true
    }

    /// Live offsets whose expiry is at or before `now_us`, at most `limit`.
    pub fn expired(&self, now_us: u64, limit: usize) -> Vec<u64> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.live && e.expires_us != 0 && e.expires_us <= now_us)
            .take(limit)
            .map(|(i, _)| self.base + i as u64)
            .collect()
    }

    /// Every live offset, oldest first, with its metadata.
    pub fn live_offsets(&self) -> impl Iterator<Item = (u64, MessageMeta)> + '_ {
        self.entries.iter().enumerate().filter(|(_, e)| e.live).map(|(i, e)| {
            (self.base + i as u64, MessageMeta { subject: e.subject, expires_us: e.expires_us })
        })
    }

    /// The oldest live offsets beyond the newest `keep` live ones.
    pub fn oldest_beyond(&self, keep: u64) -> Vec<u64> {
        let excess = self.live.saturating_sub(keep);
        self.live_offsets().take(excess as usize).map(|(o, _)| o).collect()
    }

    fn pop_dead(&mut self) {
        while self.entries.front().is_some_and(|e| !e.live) {
            self.entries.pop_front();
            self.base += 1;
        }
    }

    fn intern(&mut self, subject: &[u8]) -> u32 {
        if let Some(&id) = self.subject_ids.get(subject) {
            return id;
        }
        let id = self.subjects.len() as u32;
        self.subjects.push(Box::from(subject));
        self.subject_ids.insert(Box::from(subject), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_moves_the_first_offset_past_dead_entries() {
        let mut ledger = Ledger::new(3);
        for offset in 3..8 {
            ledger.push(offset, 10, Some(b"a.b"), offset, 0);
        }
        assert_eq!((ledger.first(), ledger.next(), ledger.live()), (3, 8, (5, 50)));
        assert!(ledger.remove(4));
        assert!(!ledger.remove(4));
        assert_eq!(ledger.first(), 3);
        assert!(ledger.remove(3));
        assert_eq!(ledger.first(), 5);
        assert_eq!(ledger.get(5).map(|m| ledger.subject(m.subject)), Some(Some(&b"a.b"[..])));
        assert_eq!(ledger.remove_below(7), vec![5, 6]);
        assert_eq!((ledger.first(), ledger.live()), (7, (1, 10)));
        assert!(ledger.remove(7));
        assert_eq!((ledger.first(), ledger.next(), ledger.live()), (8, 8, (0, 0)));
    }

    #[test]
    fn expiry_and_oldest_beyond() {
        let mut ledger = Ledger::new(0);
        ledger.push(0, 1, None, 1, 100);
        ledger.push(1, 1, None, 1, 0);
        ledger.push(2, 1, None, 1, 50);
        assert_eq!(ledger.expired(60, 10), vec![2]);
        assert_eq!(ledger.oldest_beyond(1), vec![0, 1]);
    }
}
