//! Building a partition's [`Retention`] when it opens (from the ack log's state, the catalog's
//! consumers and, for tracked policies, a scan of the live batches), and keeping its consumer
//! set in step with later catalogs.
//!
//! Runs on the owner shard, inside `PartitionManager::sync_with`. Invariant: a consumer the ack
//! log knows keeps its start, floor and done set; a consumer new to this partition starts where
//! its deliver policy says (on an interest topic: at the next offset, as it cannot show
//! interest in what is already there); a consumer the catalog no longer has is dropped.

use std::cell::RefCell;
use std::rc::Rc;

use super::Retention;
use crate::io::dma::DmaIo;
use crate::metadata::catalog::Topic;
use crate::metadata::durable::Durable;
use crate::protocol::batch;
use crate::protocol::durable::{DeliverPolicy, Retention as Policy};
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::partitions::Partition;
use crate::storage::acks::RetentionState;
use crate::storage::ranges::RangeSet;
use crate::storage::{PartitionLog, StorageError, StorageResult};

/// Bytes per read while rebuilding the ledger.
const SCAN_READ_BYTES: usize = 1024 * 1024;

/// The retention state of a partition of `topic` whose log and ack log are open.
pub async fn build(
    log: &PartitionLog<DmaIo>,
    topic: &Topic,
    persisted: RetentionState,
) -> StorageResult<Retention> {
    let first = persisted.first.max(log.offsets().start);
    let mut retention = Retention::new(topic.policy.clone(), first, persisted.removed);
    retention.removed.remove_below(first);
    if topic.policy.tracks_messages() {
        retention.ledger = Some(super::ledger::Ledger::new(first));
        scan(log, &mut retention).await?;
    }
    for (name, acks) in persisted.consumers {
        match topic.consumers.get(&name) {
            Some(durable) => retention.add_consumer(
                Rc::new(durable.config.clone()),
                acks.start,
                acks.floor,
                acks.done,
                false,
            ),
            None => retention.drop_consumer(&name),
        }
    }
    let retention = RefCell::new(retention);
    sync_consumers(log, topic, &retention).await?;
    let mut retention = retention.into_inner();
    // Interest removals are saved lazily (every 50 ms, or with the next synced ack): after a
    // crash, a message removed at once because no consumer wanted it, or whose interest ended
    // with a consumer's deletion, is back in the ledger, and nothing would ever remove it again
    // (a consumer that does not want it just skips it). Invariant restored here: on an interest
    // topic every live message is held by some consumer (found by tests/durable_crash.rs).
    if topic.policy.retention == Policy::Interest {
        retention.sweep_interest();
    }
    Ok(retention)
}

/// [`sync_consumers`] on an open partition, then its ack state saved and synced. A consumer's
/// create (or delete) is answered only after every shard installed the catalog, so once it is
/// answered the consumer's start is durable: otherwise a crash within the 50 ms before the
/// periodic save restarts it at the then-next offset (interest topics, deliver `new`), and the
/// messages written after the create but before the crash are never delivered to it (found by
/// tests/durable_crash.rs).
pub async fn sync_partition_consumers(partition: &Partition, topic: &Topic) -> BrokerResult<()> {
    let what = format!("adding durable consumers to partition {}", partition.key.partition);
    let synced = sync_consumers(&partition.log, topic, &partition.retention).await;
    synced.map_err(|e| BrokerError::storage(&what, e))?;
    super::fetch::save(partition, true).await
}

/// Adds the catalog's new consumers and drops those it no longer has. Start offsets are found
/// first (a time lookup may read the disk); the state is changed in one step after.
pub async fn sync_consumers(
    log: &PartitionLog<DmaIo>,
    topic: &Topic,
    retention: &RefCell<Retention>,
) -> StorageResult<()> {
    let (first, fresh): (u64, Vec<&Durable>) = {
        let state = retention.borrow();
        let fresh =
            topic.consumers.values().filter(|d| !state.consumers.contains_key(&d.config.name)).collect();
        (state.first, fresh)
    };
    let mut starts = Vec::with_capacity(fresh.len());
    for durable in fresh {
        let next = log.high_watermark();
        let start = if topic.policy.retention == Policy::Interest {
            next
        } else {
            match durable.config.deliver {
                DeliverPolicy::All => first,
                DeliverPolicy::Last => next.saturating_sub(1).max(first),
                DeliverPolicy::New => next,
                DeliverPolicy::ByOffset(offset) => offset.max(first),
                DeliverPolicy::ByTime(us) => log.offset_for_timestamp(us).await?.unwrap_or(next).max(first),
            }
        };
        starts.push((durable, start));
    }
    let mut state = retention.borrow_mut();
    let gone: Vec<String> =
        state.consumers.keys().filter(|name| !topic.consumers.contains_key(*name)).cloned().collect();
    for name in gone {
        state.drop_consumer(&name);
    }
    for (durable, start) in starts {
        if !state.consumers.contains_key(&durable.config.name) {
            state.add_consumer(Rc::new(durable.config.clone()), start, start, RangeSet::new(), true);
        }
    }
    Ok(())
}

/// Fills the ledger from the live batches (`first` to the end), skipping removed offsets.
async fn scan(log: &PartitionLog<DmaIo>, retention: &mut Retention) -> StorageResult<()> {
    let mut offset = retention.first;
    let end = log.high_watermark();
    while offset < end {
        let Some(read) = log.read(offset, SCAN_READ_BYTES).await? else { break };
        let mut progressed = false;
        for found in batch::batches(read.bytes()) {
            let found = found?;
            let header = found.header();
            if header.next_offset() <= offset {
                continue;
            }
            let append_us = header.append_timestamp_us;
            let per_record = (header.length as u64 / u64::from(header.record_count.max(1))) as u32;
            for view in super::record_views(&found, append_us) {
                let at = view.offset;
                if at < offset {
                    continue;
                }
                // Called only for tracked policies, which have a ledger.
                let Some(ledger) = retention.ledger.as_mut() else { return Ok(()) };
                let bytes = view.bytes.unwrap_or(per_record);
                ledger.push(at, bytes, view.subject.as_deref(), append_us, view.expires_us);
                if retention.removed.contains(at) {
                    ledger.remove(at);
                }
            }
            retention.last_timestamp_us = append_us;
            offset = header.next_offset();
            progressed = true;
        }
        if !progressed {
            return Err(StorageError::Corrupt { position: offset, reason: "ledger scan made no progress" });
        }
    }
    let ledger_first = retention.ledger.as_ref().map_or(0, super::ledger::Ledger::first);
    retention.set_first(ledger_first);
    Ok(())
}
