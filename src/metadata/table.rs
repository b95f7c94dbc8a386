//! The partition→shard table: which shard owns each partition.
//!
//! What it owns: nothing but the shard count and the revision it was built at; ownership is a
//! pure function of (stream id, topic id, partition id), so every shard computes the same answer
//! from its own copy, as Redpanda's `shard_table` is replicated to every core. Runs on any core.
//!
//! Placement: each topic gets a starting shard from a fixed integer mix of its stream and topic
//! ids, and its partitions follow round robin from there, `(mix(stream, topic) + partition) %
//! shards`. So one topic's partitions spread as evenly as possible (counts per shard differ by at
//! most one), and different topics start on different shards instead of all piling onto shard 0.
//!
//! Invariants: `shards >= 1`; `owner` is deterministic across processes and releases (no
//! `RandomState`, no pointer values). Changing the mix would move partitions to other shards
//! on upgrade and invalidate every client's cached map, so a test vector pins it.

/// Maps partitions to their owning shard. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardTable {
    /// The catalog revision this table was built for (reported to clients with the map).
    pub revision: u64,
    /// Shards running (at least 1).
    pub shards: u16,
}

impl ShardTable {
    /// A table over `shards` shards at `revision`.
    ///
    /// # Panics
    /// When `shards` is 0: a broker always runs at least one shard.
    pub fn new(revision: u64, shards: u16) -> ShardTable {
        assert!(shards >= 1, "a shard table needs at least one shard");
        ShardTable { revision, shards }
    }

    /// The shard that owns `partition` of topic `topic_id` in stream `stream_id`.
    pub fn owner(&self, stream_id: u32, topic_id: u32, partition: u32) -> u16 {
        let shards = u64::from(self.shards.max(1));
        let start = mix(stream_id, topic_id) % shards;
        let owner = (start + u64::from(partition) % shards) % shards;
        debug_assert!(owner < shards);
        owner as u16
    }
}

/// The splitmix64 finaliser over the two ids: a fixed, well-spread integer hash.
fn mix(stream_id: u32, topic_id: u32) -> u64 {
    let mut z = ((u64::from(stream_id) << 32) | u64::from(topic_id)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(table: &ShardTable, stream_id: u32, topic_id: u32, partitions: u32) -> Vec<u32> {
        let mut counts = vec![0; usize::from(table.shards)];
        for partition in 0..partitions {
            counts[usize::from(table.owner(stream_id, topic_id, partition))] += 1;
        }
        counts
    }

    #[test]
    fn partitions_spread_evenly() {
        let table = ShardTable::new(1, 2);
        assert_eq!(counts(&table, 1, 1, 8), [4, 4]);
        let single = ShardTable::new(1, 1);
        assert_eq!(counts(&single, 3, 9, 5), [5]);
        for shards in 1..=12u16 {
            let table = ShardTable::new(0, shards);
            for (stream_id, topic_id) in [(1, 1), (1, 2), (7, 3), (u32::MAX, u32::MAX)] {
                for partitions in [1, 3, 8, 64, 4096] {
                    let counts = counts(&table, stream_id, topic_id, partitions);
                    let (min, max) = (counts.iter().min(), counts.iter().max());
                    assert!(max.zip(min).is_some_and(|(max, min)| max - min <= 1), "{shards}: {counts:?}");
                    assert_eq!(counts.iter().sum::<u32>(), partitions);
                }
            }
        }
    }

    #[test]
    fn topics_start_on_different_shards() {
        let table = ShardTable::new(0, 8);
        let mut firsts = vec![0; 8];
        for topic_id in 1..=800 {
            firsts[usize::from(table.owner(1, topic_id, 0))] += 1;
        }
        assert!(firsts.iter().all(|&n| (60..=140).contains(&n)), "{firsts:?}");
    }

    #[test]
    fn placement_is_deterministic_and_pinned() {
        let a = ShardTable::new(5, 4);
        let b = ShardTable::new(9, 4);
        for partition in 0..32 {
            assert_eq!(a.owner(2, 3, partition), b.owner(2, 3, partition));
        }
        // Pinned values: a change here moves partitions between shards.
        let table = ShardTable::new(0, 16);
        let pinned: Vec<u16> = (0..4).map(|topic_id| table.owner(1, topic_id, 0)).collect();
        assert_eq!(pinned, PINNED);
        assert_eq!(mix(0, 0), 0xE220_A839_7B1D_CDAF);
    }

    const PINNED: [u16; 4] = [8, 15, 2, 11];

    #[test]
    #[should_panic(expected = "at least one shard")]
    fn zero_shards_is_refused() {
        let _ = ShardTable::new(0, 0);
    }
}
