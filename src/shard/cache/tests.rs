use super::*;
use crate::protocol::batch::{self, BatchBuilder};
use crate::server::frame_pool::FrameBuf;

/// A produce frame holding `count` batches of 3 records at offsets `base..`, after 32 header
/// bytes, as a part.
fn frame_part(base: Offset, count: u64) -> PayloadPart {
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
    PayloadPart::frame(frame, 32..32 + payload.len(), base, base + count * 3)
}

fn bases(part: &PayloadPart) -> Vec<Offset> {
    batch::batches(part.bytes()).map(|b| b.expect("batch").header().base_offset).collect()
}

#[test]
fn serves_from_the_batch_holding_the_offset_once_visible() {
    let cache = BatchCache::new(1 << 20);
    let partition = cache.partition();
    partition.insert(frame_part(10, 4), 0, 21, false);
    assert!(partition.lookup(15, 21, 0, 0).is_none(), "pending until visible");
    assert!(partition.bytes() > 0, "a pending run is charged");
    let part = partition.lookup(15, 22, 0, 0).expect("promoted and served");
    assert_eq!(part.first_offset(), Some(13));
    assert_eq!(bases(&part), vec![13, 16, 19]);
    assert!(partition.lookup(22, 100, 0, 0).is_none());
    assert!(partition.lookup(9, 100, 0, 0).is_none());
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.entries), (1, 1));
}

#[test]
fn a_rollback_empties_a_partition_and_the_budget_bounds_the_shard() {
    let cost = cost_of(&frame_part(0, 2));
    let cache = BatchCache::new(cost * 3);
    let first = cache.partition();
    let second = cache.partition();
    first.insert(frame_part(0, 2), 0, 100, false);
    second.insert(frame_part(0, 2), 0, 100, false);
    first.insert(frame_part(6, 2), 0, 100, false);
    second.insert(frame_part(6, 2), 0, 100, false);
    assert!(cache.stats().bytes <= cost * 3);
    assert_eq!(cache.stats().entries, 3);
    assert!(first.lookup(0, 100, 0, 0).is_none(), "the oldest entry of the shard went first");
    assert!(second.lookup(6, 100, 0, 0).is_some());
    assert!(first.lookup(6, 100, 0, 1).is_none(), "a rollback makes the partition's entries stale");
    assert_eq!(first.bytes(), 0);
    drop(second);
    assert_eq!(cache.stats().bytes, 0, "a dropped partition gives its bytes back");
    let tiny = BatchCache::new(cost - 1);
    let partition = tiny.partition();
    partition.insert(frame_part(0, 2), 0, 100, false);
    assert_eq!(partition.bytes(), 0, "a part larger than the budget is not kept");
}

#[test]
fn entries_readers_passed_are_evicted_before_unread_ones() {
    let cost = cost_of(&frame_part(0, 2));
    let cache = BatchCache::new(cost * 3);
    let partition = cache.partition();
    for base in [0, 6, 12] {
        partition.insert(frame_part(base, 2), 0, 100, false);
    }
    // A reader reads the newest entry; the two older ones stay unread.
    assert!(partition.lookup(12, 100, 0, 0).is_some());
    partition.insert(frame_part(18, 2), 0, 100, false);
    assert!(partition.lookup(0, 100, 0, 0).is_some(), "the oldest unread entry stays");
    assert!(!partition.contains(12), "the entry a reader passed went first");
    // Disk reads being answered are inserted as read: they go before anything unread.
    partition.insert(frame_part(24, 2), 0, 100, true);
    partition.insert(frame_part(30, 2), 0, 100, false);
    assert!(!partition.contains(24) && partition.contains(30));
    assert_eq!(cache.stats().evictions, 3);
}

#[test]
fn an_overlapping_part_keeps_only_what_is_not_held_and_retention_drops_entries() {
    let cache = BatchCache::new(1 << 20);
    let partition = cache.partition();
    partition.insert(frame_part(6, 2), 0, 100, false);
    partition.insert(frame_part(18, 2), 0, 100, false);
    // 9..21 overlaps both: only 12..18 is new.
    partition.insert(frame_part(9, 4), 0, 100, true);
    assert_eq!(partition.cached_until(6), 24);
    assert_eq!(partition.cached_until(3), 3);
    assert_eq!(partition.cached_until(24), 24);
    assert_eq!(bases(&partition.lookup(12, 100, 0, 0).expect("gap kept")), vec![12, 15]);
    assert!(partition.lookup(7, 100, 12, 0).is_none(), "below the log start");
    assert!(!partition.contains(6) && partition.contains(12));
}

#[test]
fn a_growing_cache_starts_at_its_floor_and_pending_frames_give_way_to_newer_ones() {
    let budget = 1 << 40;
    let growing = BatchCache::growing(budget, 1 << 20);
    let limit = growing.limit();
    assert!((CACHE_FLOOR_BYTES..CACHE_FLOOR_BYTES + (64 << 20)).contains(&limit), "{limit}");
    assert_eq!(BatchCache::growing(4096, 1 << 20).limit(), 4096, "never above the budget");
    assert_eq!(BatchCache::growing(budget, 0).limit(), budget, "0: the whole budget at once");

    // With nothing visible yet, the budget holds the newest pending frames.
    let cost = cost_of(&frame_part(0, 2));
    let cache = BatchCache::new(cost * 2);
    let partition = cache.partition();
    for base in [0, 6, 12] {
        partition.insert(frame_part(base, 2), 0, 0, false);
    }
    assert!(cache.stats().bytes <= cost * 2);
    // Once visible (promoted by the next insert or lookup), the newest two are served.
    assert!(partition.lookup(0, 100, 0, 0).is_none(), "the oldest pending frame gave way");
    assert!(partition.lookup(6, 100, 0, 0).is_some() && partition.lookup(12, 100, 0, 0).is_some());
}
