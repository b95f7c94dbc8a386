//! Named producers on the partitions one shard owns: the produce path that deduplicates, the
//! rebuild of each partition's producer table on open, its snapshots, and the per-partition
//! operations behind ProducerDeclare / Sequence / Delete / List.
//!
//! Runs on the partition's owner shard. Invariants: the table is decided and the append's turn
//! taken in one synchronous step, so batches of one producer reach the log in the order they
//! were admitted; every admitted batch is settled exactly once (by the [`Admission`] guard even
//! when the request's future is dropped); a snapshot is written only after the partition log
//! was made durable up to where the snapshot says replay starts.

use std::ops::Range;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use super::{Partition, PartitionManager};
use crate::io::dma::DmaIo;
use crate::model::now_us;
use crate::protocol::batch::BatchHeader;
use crate::protocol::messages::{BatchAck, Status};
use crate::server::frame_pool::FrameBuf;
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::mesh::PartitionKey;
use crate::shard::producers::{Decision, NamedBatch, Placed, ProducerState, ProducerTable};
use crate::storage::producers::{ProducerLog, Recovered};
use crate::storage::{PartitionLog, StorageResult};

/// Bytes read per step while rebuilding a producer table from batch headers.
const REBUILD_READ_BYTES: usize = 1024 * 1024;

/// Producer-log records past which a snapshot is taken even before its interval.
const SNAPSHOT_CHANGES_MAX: u64 = 4096;

/// Named batches admitted by one request: settles them as failed unless told otherwise, and
/// removes the request's replay floor.
struct Admission<'a> {
    partition: &'a Partition,
    batches: Vec<NamedBatch>,
    floor: u64,
    settled: bool,
}

impl<'a> Admission<'a> {
    fn new(partition: &'a Partition, batches: Vec<NamedBatch>) -> Self {
        let floor = partition.log.offsets().dirty_next;
        *partition.named_floors.borrow_mut().entry(floor).or_insert(0) += 1;
        Self { partition, batches, floor, settled: false }
    }

    /// Settles every batch with where it was stored, in admission order.
    fn stored(mut self, placed: impl Iterator<Item = Placed>) {
        let mut table = self.partition.producers.borrow_mut();
        for (batch, placed) in self.batches.iter().zip(placed) {
            table.settle(batch, Some(placed));
        }
        self.settled = true;
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let mut table = self.partition.producers.borrow_mut();
            for batch in &self.batches {
                table.settle(batch, None);
            }
        }
        let mut floors = self.partition.named_floors.borrow_mut();
        if let Some(count) = floors.get_mut(&self.floor) {
            *count -= 1;
            if *count == 0 {
                floors.remove(&self.floor);
            }
        }
    }
}

/// Mutable views of the batches at `bounds` (relative to `payload`, in order).
pub(super) fn batch_slices<'a>(payload: &'a mut [u8], bounds: &[(usize, usize)]) -> Vec<&'a mut [u8]> {
    let mut batches: Vec<&mut [u8]> = Vec::with_capacity(bounds.len());
    let mut rest = payload;
    let mut consumed = 0;
    for (start, end) in bounds {
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(start - consumed);
        let (batch, tail) = tail.split_at_mut(end - start);
        batches.push(batch);
        rest = tail;
        consumed = *end;
    }
    batches
}

impl PartitionManager {
    /// Opens a partition's producer log and rebuilds its table: the last snapshot, the changes
    /// after it, then the batch headers from where the snapshot says (nothing is scanned for a
    /// partition that never had a named producer).
    pub(super) async fn open_producers(
        &self,
        log: &PartitionLog<DmaIo>,
        dir: &Path,
    ) -> BrokerResult<(ProducerLog<DmaIo>, ProducerTable)> {
        let what = format!("shard {} opening the producer log of {}", self.shard, dir.display());
        let (store, recovered) = ProducerLog::open(self.io.clone(), dir, self.config.fsync)
            .await
            .map_err(|e| BrokerError::storage(&what, e))?;
        let expiry = self.config.producer_expiry.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut table = ProducerTable::new(self.config.max_producers_per_partition, expiry);
        if store.changes() == 0 {
            return Ok((store, table));
        }
        let Recovered { entries, replay_from, deleted } = recovered;
        table.restore(entries.into_values());
        let started = Instant::now();
        let scanned = rebuild(log, &mut table, replay_from, &deleted)
            .await
            .map_err(|e| BrokerError::storage(&what, e))?;
        tracing::debug!(
            shard = self.shard,
            dir = %dir.display(),
            producers = table.len(),
            scanned,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "producer table rebuilt"
        );
        Ok((store, table))
    }

    /// A produce request holding named batches: duplicates are answered from the table, the
    /// rest appended (all or nothing as before), and the table learns where they landed.
    pub(super) async fn produce_named(
        &self,
        partition: &Rc<Partition>,
        mut frame: FrameBuf,
        payload: Range<usize>,
        bounds: &[(usize, usize, Option<NamedBatch>)],
    ) -> BrokerResult<Vec<BatchAck>> {
        let named: Vec<Option<NamedBatch>> = bounds.iter().map(|(_, _, named)| *named).collect();
        let decisions = partition.producers.borrow_mut().admit(&named, now_us())?;
        let appending: Vec<(usize, usize)> = bounds
            .iter()
            .zip(&decisions)
            .filter(|(_, decision)| **decision == Decision::Append)
            .map(|((start, end, _), _)| (*start, *end))
            .collect();
        let admitted: Vec<NamedBatch> = named
            .iter()
            .zip(&decisions)
            .filter_map(|(named, decision)| named.filter(|_| *decision == Decision::Append))
            .collect();
        let admission = Admission::new(partition, admitted);
        let infos = if appending.is_empty() {
            Vec::new()
        } else {
            // Synchronous up to the append's turn: admission order is append order.
            let mut batches = batch_slices(&mut frame[payload.clone()], &appending);
            match partition.log.append_validated(&mut batches).await {
                Ok(infos) => infos,
                Err(error) => {
                    drop(admission);
                    partition.data.notify(usize::MAX);
                    let what = format!("append to partition {}", partition.key.partition);
                    return Err(BrokerError::storage(&what, error));
                }
            }
        };
        let placed =
            named.iter().zip(&decisions).filter(|(_, d)| **d == Decision::Append).zip(&infos).filter_map(
                |((named, _), info)| {
                    named.map(|batch| Placed {
                        last_sequence: batch.last_sequence,
                        base_offset: info.base_offset,
                        last_offset: info.last_offset,
                        append_timestamp_us: info.append_timestamp_us,
                    })
                },
            );
        admission.stored(placed.collect::<Vec<_>>().into_iter());
        {
            let body = &frame[payload.clone()];
            let batches = appending.iter().map(|(start, end)| &body[*start..*end]);
            let last_us = infos.last().map_or(0, |info| info.append_timestamp_us);
            crate::shard::durable::appended(&mut partition.retention.borrow_mut(), batches, last_us);
        }
        if appending.len() == bounds.len() {
            if let (Some(first), Some(last)) = (infos.first(), infos.last()) {
                let epoch = partition.log.rollback_epoch();
                let (first, next) = (first.base_offset, last.last_offset + 1);
                let part = crate::shard::payload::PayloadPart::frame(frame, payload, first, next);
                partition.cache.insert(part, epoch, partition.log.high_watermark(), false);
            }
        }
        partition.data.notify(usize::MAX);
        let mut infos = infos.into_iter();
        let acks = decisions
            .iter()
            .map(|decision| match decision {
                Decision::Duplicate(ack) => Ok(*ack),
                Decision::Append => infos
                    .next()
                    .map(|info| BatchAck {
                        base_offset: info.base_offset,
                        last_offset: info.last_offset,
                        append_timestamp_us: info.append_timestamp_us,
                        duplicate: false,
                    })
                    .ok_or_else(|| BrokerError::new(Status::Internal, "an append answered too few batches")),
            })
            .collect();
        acks
    }

    /// Expires idle producers and snapshots a changed table when due.
    pub(super) async fn maintain_producers(&self, partition: &Partition) {
        let expired = partition.producers.borrow_mut().expire(now_us());
        if expired > 0 {
            tracing::info!(
                shard = self.shard,
                partition = partition.key.partition,
                expired,
                "producers expired"
            );
        }
        let changes = partition.producer_log.try_lock().map_or(0, |log| log.changes());
        let due = partition.producer_snapshot_at.get().elapsed() >= self.config.producer_snapshot_interval
            || changes > SNAPSHOT_CHANGES_MAX;
        if partition.producers.borrow().dirty > 0 && due {
            self.snapshot_producers(partition, false).await;
        }
        if let Some(log) = partition.producer_log.try_lock() {
            let synced = log.sync_if_due().await;
            self.report_interval_sync(partition, "interval fsync of the producer log failed", synced);
        }
    }

    /// Writes a snapshot of the partition's producer table (`synced`: the partition log is
    /// already durable, as after its close).
    async fn snapshot_producers(&self, partition: &Partition, synced: bool) {
        let Some(mut store) = partition.producer_log.try_lock() else { return };
        let replay_from = {
            let floor = partition.named_floors.borrow().keys().next().copied();
            let next = partition.log.offsets().dirty_next;
            floor.map_or(next, |floor| floor.min(next))
        };
        let (entries, dirty): (Vec<ProducerState>, u64) = {
            let table = partition.producers.borrow();
            (table.states().cloned().collect(), table.dirty)
        };
        if !synced {
            if let Err(error) = partition.log.sync().await {
                tracing::warn!(shard = self.shard, partition = partition.key.partition, %error, "producer snapshot skipped");
                return;
            }
        }
        match store.snapshot(replay_from, entries.iter()).await {
            Ok(()) => {
                let mut table = partition.producers.borrow_mut();
                table.dirty = table.dirty.saturating_sub(dirty);
                partition.producer_snapshot_at.set(Instant::now());
            }
            Err(error) => {
                tracing::warn!(shard = self.shard, partition = partition.key.partition, %error, "producer snapshot failed")
            }
        }
    }

    /// On shutdown, after the partition log closed: a last snapshot, so that the next start
    /// replays nothing, then closes the producer log.
    pub(super) async fn close_producers(&self, partition: &Partition) {
        let dirty = partition.producers.borrow().dirty > 0;
        let changes = partition.producer_log.try_lock().map_or(0, |log| log.changes());
        if dirty || changes > 1 {
            self.snapshot_producers(partition, true).await;
        }
        let _ = partition.producer_log.lock().await.close().await;
    }

    /// Producer `id` on partition `key`, as stored.
    pub fn producer(&self, key: PartitionKey, id: u64) -> BrokerResult<Option<ProducerState>> {
        Ok(self.get(key)?.producers.borrow().get(id).cloned())
    }

    /// Records a declaration of `name` (id `id`) with `epoch` on partition `key`, durably;
    /// answers the last sequence stored there.
    pub async fn declare_producer(
        &self,
        key: PartitionKey,
        id: u64,
        name: &str,
        epoch: u32,
    ) -> BrokerResult<Option<u64>> {
        let partition = self.get(key)?;
        let mut store = partition.producer_log.lock().await;
        if let Some(state) = partition.producers.borrow().get(id) {
            if !state.name.is_empty() && state.name != name {
                return Err(BrokerError::new(
                    Status::InvalidName,
                    format!(
                        "producer names \"{name}\" and \"{}\" share the id {id:#x}: rename one",
                        state.name
                    ),
                ));
            }
        }
        let now = now_us();
        let what = format!("declare producer \"{name}\" on partition {}", key.partition);
        store.record_epoch(id, name, epoch, now).await.map_err(|e| BrokerError::storage(&what, e))?;
        let mut table = partition.producers.borrow_mut();
        Ok(table.declare(id, name, epoch, now)?.last_sequence)
    }

    /// Forgets producer `id` on partition `key`, durably; false when it was not known.
    pub async fn delete_producer(&self, key: PartitionKey, id: u64) -> BrokerResult<bool> {
        let partition = self.get(key)?;
        let mut store = partition.producer_log.lock().await;
        if partition.producers.borrow().get(id).is_none() {
            return Ok(false);
        }
        let at = partition.log.offsets().dirty_next;
        let what = format!("delete producer {id:#x} on partition {}", key.partition);
        store.record_delete(id, at).await.map_err(|e| BrokerError::storage(&what, e))?;
        let removed = partition.producers.borrow_mut().remove(id);
        Ok(removed)
    }

    /// Every named producer of every owned partition.
    pub fn producer_states(&self) -> Vec<(PartitionKey, ProducerState)> {
        let partitions = self.partitions.borrow();
        let mut out: Vec<(PartitionKey, ProducerState)> = partitions
            .values()
            .flat_map(|p| {
                let table = p.producers.borrow();
                table.states().map(|state| (p.key, state.clone())).collect::<Vec<_>>()
            })
            .collect();
        out.sort_by_key(|(key, state)| (*key, state.id));
        out
    }
}

/// Applies the named batches of `log` from `from` on to `table`, skipping batches of producers
/// deleted after them; returns the bytes read.
async fn rebuild(
    log: &PartitionLog<DmaIo>,
    table: &mut ProducerTable,
    from: u64,
    deleted: &[(u64, u64)],
) -> StorageResult<u64> {
    let mut offset = from.max(log.offsets().start);
    let end = log.high_watermark();
    let mut scanned = 0;
    while offset < end {
        let Some(read) = log.read(offset, REBUILD_READ_BYTES).await? else { break };
        let data = read.bytes();
        let mut at = 0;
        while at < data.len() {
            let header = BatchHeader::decode(&data[at..])?;
            if let Some(batch) = NamedBatch::of(&header) {
                let gone = deleted.iter().any(|(id, below)| *id == batch.id && header.base_offset < *below);
                if !gone {
                    let placed = Placed {
                        last_sequence: batch.last_sequence,
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                        append_timestamp_us: header.append_timestamp_us,
                    };
                    table.replay(batch, placed);
                }
            }
            at += (header.length as usize).max(1);
        }
        scanned += data.len() as u64;
        offset = offset.max(read.next_offset);
    }
    Ok(scanned)
}
