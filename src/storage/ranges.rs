//! A set of `u64` offsets kept as disjoint, non-adjacent half-open ranges.
//!
//! What it owns: [`RangeSet`], the in-memory shape of "which offsets are done" (acked offsets of
//! a consumer, offsets removed from the middle of a partition). Sets of offsets are mostly long
//! runs with a few holes, so they are stored as a `BTreeMap<start, end>` of ranges `start..end`,
//! merged on insert: memory and snapshot size follow the number of holes, not of offsets.
//!
//! Which core: whoever owns the value (it is plain data; the ack log keeps one per consumer on
//! the shard that owns the partition).
//!
//! Invariants: every stored range is non-empty (`start < end`); ranges are disjoint and not
//! adjacent (a range's `end` is strictly below the next range's `start`), so the representation
//! of a set is unique and two equal sets compare equal; the running count equals the sum of the
//! ranges' lengths. The offset `u64::MAX` cannot be stored (a range's end would overflow):
//! offsets never get there.

use std::collections::BTreeMap;
use std::ops::Range;

/// A set of offsets stored as disjoint, non-adjacent half-open ranges. See the module
/// documentation.
///
/// ```
/// use ringbroker::storage::ranges::RangeSet;
/// let mut done = RangeSet::new();
/// assert_eq!(done.insert_range(3..6), 3);
/// assert!(done.insert(6));
/// assert!(done.insert(1));
/// assert_eq!(done.ranges().collect::<Vec<_>>(), [1..2, 3..7]);
/// assert_eq!(done.first_absent_from(3), 7);
/// assert_eq!(done.remove_below(4), 2);
/// assert_eq!(done.len(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// Start to end (exclusive) of every range.
    ranges: BTreeMap<u64, u64>,
    /// Offsets in the set: the sum of the ranges' lengths.
    len: u64,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `offset`; true if it was not in the set. `u64::MAX` cannot be stored: false, and
    /// the set is unchanged.
    pub fn insert(&mut self, offset: u64) -> bool {
        match offset.checked_add(1) {
            Some(end) => self.insert_range(offset..end) == 1,
            None => false,
        }
    }

    /// Adds every offset of `range` (an empty range adds nothing), merging it with the ranges it
    /// overlaps or touches. Returns how many offsets were new.
    pub fn insert_range(&mut self, range: Range<u64>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let mut merged_start = range.start;
        let mut merged_end = range.end;
        let mut already = 0;
        // The range starting at or before `range.start` merges when it reaches `range.start`.
        if let Some((&start, &end)) = self.ranges.range(..=range.start).next_back() {
            if end >= range.start {
                self.ranges.remove(&start);
                already += overlap(start..end, &range);
                merged_start = start;
                merged_end = merged_end.max(end);
            }
        }
        // Ranges starting inside or right after the merged range merge too.
        while let Some((&start, &end)) = self.ranges.range(range.start..).next() {
            if start > merged_end {
                break;
            }
            self.ranges.remove(&start);
            already += overlap(start..end, &range);
            merged_end = merged_end.max(end);
        }
        assert!(merged_start < merged_end, "merged range {merged_start}..{merged_end} is empty");
        self.ranges.insert(merged_start, merged_end);
        let added = range.end - range.start - already;
        self.len += added;
        added
    }

    /// True when `offset` is in the set.
    pub fn contains(&self, offset: u64) -> bool {
        self.ranges.range(..=offset).next_back().is_some_and(|(_, &end)| end > offset)
    }

    /// Drops every offset below `floor`; returns how many were dropped.
    pub fn remove_below(&mut self, floor: u64) -> u64 {
        let mut dropped = 0;
        while let Some((&start, &end)) = self.ranges.first_key_value() {
            if start >= floor {
                break;
            }
            self.ranges.remove(&start);
            if end > floor {
                self.ranges.insert(floor, end);
                dropped += floor - start;
                break;
            }
            dropped += end - start;
        }
        assert!(dropped <= self.len, "dropped {dropped} of {} offsets", self.len);
        self.len -= dropped;
        dropped
    }

    /// The number of offsets in the set (kept as a running count, O(1)).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the set holds no offset.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of ranges the set is stored as (what its size on disk follows).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The ranges, in increasing order: non-empty, disjoint and not adjacent.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&start, &end)| start..end)
    }

    /// The number of offsets of the set inside `range`.
    pub fn count_in(&self, range: Range<u64>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let mut count = 0;
        if let Some((&start, &end)) = self.ranges.range(..range.start).next_back() {
            count += overlap(start..end, &range);
        }
        for (&start, &end) in self.ranges.range(range.clone()) {
            count += overlap(start..end, &range);
        }
        count
    }

    /// The smallest offset in the set.
    pub fn first(&self) -> Option<u64> {
        self.ranges.first_key_value().map(|(&start, _)| start)
    }

    /// The smallest offset at or above `at` that is NOT in the set.
    pub fn first_absent_from(&self, at: u64) -> u64 {
        match self.ranges.range(..=at).next_back() {
            // Ranges are not adjacent, so the end of the range holding `at` is absent.
            Some((_, &end)) if end > at => end,
            _ => at,
        }
    }
}

/// The number of offsets `a` and `b` share.
fn overlap(a: Range<u64>, b: &Range<u64>) -> u64 {
    a.end.min(b.end).saturating_sub(a.start.max(b.start))
}

#[cfg(test)]
// Lists of one range are what the tests mean, not a mistyped `Vec` of offsets.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Checks the invariants of the module documentation.
    fn check(set: &RangeSet) {
        let mut previous_end = None;
        let mut len = 0;
        for range in set.ranges() {
            assert!(range.start < range.end, "empty range {range:?} in {set:?}");
            if let Some(previous_end) = previous_end {
                assert!(previous_end < range.start, "overlapping or adjacent at {range:?} in {set:?}");
            }
            previous_end = Some(range.end);
            len += range.end - range.start;
        }
        assert_eq!(set.len(), len, "running count of {set:?}");
        assert_eq!(set.is_empty(), len == 0);
    }

    fn of(ranges: &[Range<u64>]) -> RangeSet {
        let mut set = RangeSet::new();
        for range in ranges {
            set.insert_range(range.clone());
        }
        check(&set);
        set
    }

    #[test]
    fn insert_merges_overlapping_and_adjacent_ranges() {
        let mut set = RangeSet::new();
        assert!(set.is_empty());
        assert_eq!(set.first(), None);
        assert!(set.insert(5));
        assert!(!set.insert(5));
        assert!(set.insert(7));
        assert_eq!(set.ranges().collect::<Vec<_>>(), [5..6, 7..8]);
        assert!(set.insert(6), "fills the hole and joins both neighbours");
        assert_eq!(set.ranges().collect::<Vec<_>>(), [5..8]);
        assert_eq!(set.insert_range(10..20), 10);
        assert_eq!(set.insert_range(8..10), 2, "adjacent on both sides");
        assert_eq!(set.ranges().collect::<Vec<_>>(), [5..20]);
        assert_eq!(set.insert_range(0..30), 15);
        assert_eq!(set.insert_range(0..30), 0);
        assert_eq!(set.insert_range(40..40), 0, "an empty range adds nothing");
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 50..45;
        assert_eq!(set.insert_range(reversed), 0);
        assert_eq!(set.ranges().collect::<Vec<_>>(), [0..30]);
        assert_eq!(set.len(), 30);
        assert_eq!(set.range_count(), 1);
        check(&set);
    }

    #[test]
    fn insert_range_spanning_many_ranges() {
        let mut set = of(&[2..4, 6..8, 10..12, 20..25]);
        assert_eq!(set.insert_range(3..11), 8 - 3 - 1);
        assert_eq!(set.ranges().collect::<Vec<_>>(), [2..12, 20..25]);
        check(&set);
    }

    #[test]
    fn u64_max_is_not_stored() {
        let mut set = RangeSet::new();
        assert!(!set.insert(u64::MAX));
        assert!(set.insert(u64::MAX - 1));
        assert_eq!(set.insert_range(u64::MAX - 5..u64::MAX), 4);
        assert!(!set.contains(u64::MAX));
        assert_eq!(set.first_absent_from(u64::MAX - 5), u64::MAX);
        check(&set);
    }

    #[test]
    fn remove_below_splits_a_range() {
        let mut set = of(&[0..3, 5..10, 12..13]);
        assert_eq!(set.remove_below(0), 0);
        assert_eq!(set.remove_below(7), 5);
        assert_eq!(set.ranges().collect::<Vec<_>>(), [7..10, 12..13]);
        assert_eq!(set.remove_below(10), 3);
        assert_eq!(set.first(), Some(12));
        assert_eq!(set.remove_below(100), 1);
        assert!(set.is_empty());
        assert_eq!(set.range_count(), 0);
        check(&set);
    }

    #[test]
    fn queries() {
        let set = of(&[2..5, 8..9, 20..30]);
        assert!(!set.contains(1));
        assert!(set.contains(2) && set.contains(4) && !set.contains(5));
        assert!(set.contains(8) && !set.contains(9));
        assert_eq!(set.count_in(0..100), 14);
        assert_eq!(set.count_in(3..21), 2 + 1 + 1);
        assert_eq!(set.count_in(5..8), 0);
        assert_eq!(set.count_in(25..25), 0);
        assert_eq!(set.first(), Some(2));
        assert_eq!(set.first_absent_from(0), 0);
        assert_eq!(set.first_absent_from(2), 5);
        assert_eq!(set.first_absent_from(4), 5);
        assert_eq!(set.first_absent_from(8), 9);
        assert_eq!(set.first_absent_from(25), 30);
        assert_eq!(set.first_absent_from(30), 30);
    }

    /// A xorshift64 generator: seeded, replayable, no dependency.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// Random inserts and removals against a `BTreeSet` model, with every query checked after
    /// every step.
    #[test]
    fn matches_a_btreeset_model() {
        const DOMAIN: u64 = 160;
        for seed in 1..=40u64 {
            let mut random = Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut set = RangeSet::new();
            let mut model = BTreeSet::new();
            for step in 0..400 {
                match random.below(10) {
                    0..=3 => {
                        let offset = random.below(DOMAIN);
                        assert_eq!(set.insert(offset), model.insert(offset), "seed {seed} step {step}");
                    }
                    4..=7 => {
                        let start = random.below(DOMAIN);
                        let end = start + random.below(12);
                        let new = (start..end).filter(|offset| model.insert(*offset)).count() as u64;
                        assert_eq!(set.insert_range(start..end), new, "seed {seed} step {step}");
                    }
                    _ => {
                        let floor = random.below(DOMAIN / 3);
                        let below = model.range(..floor).count() as u64;
                        model.retain(|&offset| offset >= floor);
                        assert_eq!(set.remove_below(floor), below, "seed {seed} step {step}");
                    }
                }
                check(&set);
                assert_eq!(set.len(), model.len() as u64);
                assert_eq!(set.first(), model.first().copied());
                let at = random.below(DOMAIN + 2);
                assert_eq!(set.contains(at), model.contains(&at), "seed {seed} step {step} at {at}");
                let absent = (at..).find(|offset| !model.contains(offset)).expect("an absent offset");
                assert_eq!(set.first_absent_from(at), absent, "seed {seed} step {step} at {at}");
                let end = at + random.below(40);
                assert_eq!(set.count_in(at..end), model.range(at..end).count() as u64);
                let expanded: Vec<u64> = set.ranges().flatten().collect();
                assert_eq!(expanded, model.iter().copied().collect::<Vec<_>>(), "seed {seed} step {step}");
            }
            // Equal sets compare equal whatever order they were built in.
            let mut rebuilt = RangeSet::new();
            for offset in model.iter().rev() {
                rebuilt.insert(*offset);
            }
            assert_eq!(rebuilt, set, "seed {seed}");
        }
    }
}
