//! The partitions one shard owns: their logs, stored offsets and data-arrival events, and the
//! produce / poll / offset operations on them.
//!
//! Lives on one shard and is only touched from that core. Partitions are opened when a catalog
//! that assigns them to this shard arrives and closed (flushed, fsynced) when their topic or
//! stream is deleted or the broker shuts down. Invariant: at most one open [`Partition`] per
//! [`PartitionKey`]; a partition is served only by the shard the current table names.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use event_listener::Event;
use futures::FutureExt;

use super::error::{BrokerError, BrokerResult};
use super::mesh::{FilterTally, OffsetOp, PartitionKey, PollOutcome, PollSpec};
use crate::constants::FILTER_SCAN_BYTES_MAX;
use crate::io::dma::DmaIo;
use crate::metadata::catalog::Catalog;
use crate::metadata::table::ShardTable;
use crate::model::now_us;
use crate::protocol::batch::{self, BatchHeader, BATCH_BYTES_MIN};
use crate::protocol::messages::{BatchAck, OffsetInfo, PartitionStats, PollStrategy, PolledPartition};
use crate::server::config::ServerConfig;
use crate::storage::offsets::{OffsetError, OffsetStore};
use crate::storage::{PartitionLog, StorageResult};

use super::durable::Retention;
pub use super::payload::PayloadPart;
use super::producers::{NamedBatch, ProducerTable};
use crate::storage::acks::AckLog;
use crate::storage::producers::ProducerLog;

mod figures;
mod filtered;
mod named;
mod read;
use super::cache::{BatchCache, PartitionCache};
use crate::server::frame_pool::FrameBuf;
pub(crate) use read::read_from;
pub use read::Prefetching;

/// A poll answered on the owner shard: marks, and the read buffers holding the batches.
pub struct LocalPoll {
    /// Marks and payload size.
    pub partition: PolledPartition,
    /// Whole batches, in offset order.
    pub parts: Vec<PayloadPart>,
    /// What a filtered poll skipped.
    pub filtered: FilterTally,
}

impl LocalPoll {
    /// Copies the batches into one buffer, for sending to another shard (read buffers belong
    /// to this shard's io_uring and stay here).
    pub fn into_outcome(self) -> PollOutcome {
        let mut bytes = Vec::with_capacity(self.partition.payload_bytes as usize);
        for part in &self.parts {
            bytes.extend_from_slice(part.bytes());
        }
        PollOutcome { partition: self.partition, bytes, filtered: self.filtered }
    }
}

/// One owned partition.
pub struct Partition {
    /// Which partition.
    pub key: PartitionKey,
    /// Its log.
    pub log: PartitionLog<DmaIo>,
    /// Its stored consumer and group offsets.
    pub offsets: async_lock::Mutex<OffsetStore<DmaIo>>,
    /// Notified after every append (long polls wait on it).
    pub data: Event,
    /// Whole batches read past the end of the last poll's answer (a read fetches up to the
    /// poll's byte budget, the answer may stop earlier at its message budget): the next poll
    /// that starts exactly there is answered from memory, without a disk read.
    pub read_ahead: RefCell<Option<PayloadPart>>,
    /// Its entries in the shard's batch cache (`--cache-bytes`): produce frames and disk reads.
    pub cache: PartitionCache,
    /// Reads planned ahead of a sequential reader ([`read`]).
    ahead: RefCell<read::ReadAhead>,
    /// Where the last poll's answer ended, to tell a sequential reader.
    last_poll_end: Cell<Option<u64>>,
    /// Named producers writing here (see [`super::producers`]).
    pub producers: RefCell<ProducerTable>,
    /// Their durable log (declarations, deletions, snapshots).
    producer_log: async_lock::Mutex<ProducerLog<DmaIo>>,
    /// Lower bounds of the offsets of named appends in flight, with their counts: a snapshot
    /// of the producer table is valid from below all of them.
    named_floors: RefCell<BTreeMap<u64, u32>>,
    /// When the producer table was last snapshotted.
    producer_snapshot_at: Cell<Instant>,
    /// Batches and bytes filtered polls skipped here, since the partition was opened.
    filtered: Cell<FilterTally>,
    /// Retention policy state and durable consumers ([`super::durable`]).
    pub retention: RefCell<Retention>,
    /// Their log: ack floors, done sets, the first offset and the deleted-set.
    pub acks: async_lock::Mutex<AckLog<DmaIo>>,
}

/// Every partition this shard owns.
pub struct PartitionManager {
    shard: u16,
    io: DmaIo,
    config: Arc<ServerConfig>,
    partitions: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
    /// This shard's batch cache (`--cache-bytes` over the shards).
    cache: Rc<BatchCache>,
    /// This shard's metrics (the logs observe fsyncs into them; [`figures`] publishes into them).
    metrics: Arc<crate::metrics::ShardMetrics>,
}

impl PartitionManager {
    /// An empty manager for `shard`, counting into `metrics`.
    pub fn new(
        shard: u16,
        io: DmaIo,
        config: Arc<ServerConfig>,
        metrics: Arc<crate::metrics::ShardMetrics>,
    ) -> Self {
        let cache = BatchCache::growing(config.cache_bytes_per_shard(), config.cache_growth_per_shard());
        Self { shard, io, config, partitions: RefCell::new(HashMap::new()), cache, metrics }
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::ShardMetrics> {
        &self.metrics
    }

    /// How far reads run ahead of sequential readers.
    pub fn prefetching(&self) -> Prefetching {
        Prefetching { chunk_bytes: self.config.prefetch_bytes, depth: self.config.prefetch_depth }
    }

    /// The directory of a partition.
    fn dir(&self, key: PartitionKey) -> PathBuf {
        Catalog::partition_dir(&self.config.data_dir, key.stream_id, key.topic_id, key.partition)
    }

    /// Opens every partition the catalog assigns to this shard that is not open yet, and closes
    /// (and deletes the files of) every open partition the catalog no longer has.
    pub async fn sync_with(&self, catalog: &Catalog, table: &ShardTable) -> BrokerResult<()> {
        let mut wanted = HashMap::new();
        for stream in catalog.streams.values() {
            for topic in stream.topics.values() {
                for partition in 0..topic.partitions {
                    if table.owner(stream.id, topic.id, partition) == self.shard {
                        let key = PartitionKey { stream_id: stream.id, topic_id: topic.id, partition };
                        wanted.insert(key, (self.config.log_config(&topic.config), topic));
                    }
                }
            }
        }
        let gone: Vec<Rc<Partition>> = {
            let mut open = self.partitions.borrow_mut();
            let keys: Vec<PartitionKey> = open.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
            keys.iter().filter_map(|k| open.remove(k)).collect()
        };
        for partition in gone {
            self.remove(partition).await;
        }
        for (key, (log_config, topic)) in wanted {
            let open = self.partitions.borrow().get(&key).cloned();
            if let Some(partition) = open {
                if partition.retention.borrow().consumers.len() != topic.consumers.len()
                    || partition.retention.borrow().consumers.keys().any(|k| !topic.consumers.contains_key(k))
                {
                    super::durable::open::sync_partition_consumers(&partition, topic).await?;
                    partition.data.notify(usize::MAX);
                }
                continue;
            }
            let dir = self.dir(key);
            let what = format!("shard {} opening partition {}", self.shard, dir.display());
            let (log, repairs) = PartitionLog::open(self.io.clone(), &dir, log_config)
                .await
                .map_err(|e| BrokerError::storage(&what, e))?;
            if !repairs.is_empty() {
                tracing::warn!(shard = self.shard, dir = %dir.display(), repairs = repairs.len(), "partition recovered");
            }
            log.observe_fsyncs(self.metrics.fsync.clone());
            let offsets = OffsetStore::open(self.io.clone(), &dir, self.config.fsync)
                .await
                .map_err(|e| BrokerError::storage(&what, e))?;
            let offsets = async_lock::Mutex::new(offsets);
            let (producer_log, producers) = self.open_producers(&log, &dir).await?;
            let (acks, persisted) = AckLog::open(self.io.clone(), &dir, self.config.fsync)
                .await
                .map_err(|e| BrokerError::storage(&what, e))?;
            let retention = super::durable::open::build(&log, topic, persisted)
                .await
                .map_err(|e| BrokerError::storage(&what, e))?;
            let partition = Rc::new(Partition {
                key,
                log,
                offsets,
                data: Event::new(),
                read_ahead: RefCell::new(None),
                cache: self.cache.partition(),
                ahead: RefCell::new(read::ReadAhead::default()),
                last_poll_end: Cell::new(None),
                producers: RefCell::new(producers),
                producer_log: async_lock::Mutex::new(producer_log),
                named_floors: RefCell::new(BTreeMap::new()),
                producer_snapshot_at: Cell::new(Instant::now()),
                filtered: Cell::new(FilterTally::default()),
                retention: RefCell::new(retention),
                acks: async_lock::Mutex::new(acks),
            });
            if partition.log.write_behind() {
                glommio::spawn_local(write_behind(self.shard, partition.clone())).detach();
            }
            self.partitions.borrow_mut().insert(key, partition);
        }
        Ok(())
    }

    /// Closes a partition whose topic was deleted and removes its files.
    async fn remove(&self, partition: Rc<Partition>) {
        let dir = self.dir(partition.key);
        *partition.ahead.borrow_mut() = read::ReadAhead::default();
        if let Err(error) = partition.log.close().await {
            tracing::warn!(shard = self.shard, %error, "closing a deleted partition");
        }
        let _ = partition.offsets.lock().await.close().await;
        let _ = partition.producer_log.lock().await.close().await;
        let _ = partition.acks.lock().await.close().await;
        partition.data.notify(usize::MAX);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(shard = self.shard, dir = %dir.display(), %error, "removing a deleted partition");
        }
    }

    /// The open partition `key`.
    pub fn get(&self, key: PartitionKey) -> BrokerResult<Rc<Partition>> {
        self.partitions.borrow().get(&key).cloned().ok_or_else(|| {
            BrokerError::new(
                crate::protocol::messages::Status::UnknownPartition,
                format!(
                    "partition {} of topic {} is not served by shard {}",
                    key.partition, key.topic_id, self.shard
                ),
            )
        })
    }

    /// Appends the `batch_count` batches in `frame[payload]` (validated first, all or nothing)
    /// and returns their acknowledgements. Offsets and append times are patched into the frame
    /// in place, which the batch cache then keeps for consumers at the head.
    pub async fn produce(
        &self,
        key: PartitionKey,
        mut frame: FrameBuf,
        payload: Range<usize>,
        batch_count: u32,
    ) -> BrokerResult<Vec<BatchAck>> {
        let partition = self.get(key)?;
        let bounds = split_batches(&frame[payload.clone()], batch_count)?;
        {
            let body = &frame[payload.clone()];
            let batches = bounds.iter().map(|(start, end, _)| &body[*start..*end]);
            super::durable::admit(&partition.retention.borrow(), partition.log.high_watermark(), batches)?;
        }
        if bounds.iter().any(|(_, _, named)| named.is_some()) {
            return self.produce_named(&partition, frame, payload, &bounds).await;
        }
        let appended = {
            let mut batches: Vec<&mut [u8]> = Vec::with_capacity(bounds.len());
            let mut rest = &mut frame[payload.clone()];
            for (start, end, _) in bounds.iter().rev() {
                let (head, batch) = rest.split_at_mut(*start);
                batches.push(&mut batch[..end - start]);
                rest = head;
            }
            batches.reverse();
            // split_batches validated every batch (to name the bad one): no second CRC pass.
            partition.log.append_validated(&mut batches).await
        };
        let what = format!("append to partition {}", key.partition);
        let infos = match appended {
            Ok(infos) => infos,
            Err(error) => {
                partition.data.notify(usize::MAX);
                return Err(BrokerError::storage(&what, error));
            }
        };
        {
            let body = &frame[payload.clone()];
            let batches = bounds.iter().map(|(start, end, _)| &body[*start..*end]);
            let last_us = infos.last().map_or(0, |info| info.append_timestamp_us);
            super::durable::appended(&mut partition.retention.borrow_mut(), batches, last_us);
        }
        if let (Some(first), Some(last)) = (infos.first(), infos.last()) {
            let epoch = partition.log.rollback_epoch();
            let (first, next) = (first.base_offset, last.last_offset + 1);
            let part = PayloadPart::frame(frame, payload, first, next);
            partition.cache.insert(part, epoch, partition.log.high_watermark(), false);
        }
        partition.data.notify(usize::MAX);
        let acks = infos
            .iter()
            .map(|info| BatchAck {
                base_offset: info.base_offset,
                last_offset: info.last_offset,
                append_timestamp_us: info.append_timestamp_us,
                duplicate: false,
            })
            .collect();
        Ok(acks)
    }

    /// Reads what `spec` asks for, waiting up to `spec.max_wait` for data when there is none.
    /// The result holds the segment read buffers themselves; [`LocalPoll::into_outcome`] copies
    /// them once for a poll that another shard asked for.
    ///
    /// A filtered poll that skipped everything up to the end keeps waiting from where it got to
    /// (so a long poll wakes its consumer only for wanted data, or at the deadline) and answers
    /// with `start_offset` where it began and `next_offset` past everything skipped. It answers
    /// at once when it has looked at [`FILTER_SCAN_BYTES_MAX`] bytes without finding any.
    pub async fn poll(&self, key: PartitionKey, spec: &PollSpec) -> BrokerResult<LocalPoll> {
        let partition = self.get(key)?;
        let deadline = Instant::now() + spec.max_wait;
        // Filtered polls that skipped to the end: (where the poll began, where it goes on).
        let mut resume: Option<(u64, u64)> = None;
        let mut skipped = FilterTally::default();
        loop {
            let listener = partition.data.listen();
            let start = match resume {
                Some((_, at)) => at,
                None => self.start_offset(&partition, spec).await?,
            };
            let mut outcome = match &spec.filter {
                None => read_from(&partition, start, spec, self.prefetching()).await?,
                Some(filter) => {
                    let scan_left = (FILTER_SCAN_BYTES_MAX as u64).saturating_sub(skipped.bytes) as usize;
                    let ahead = self.prefetching();
                    filtered::read(&partition, start, spec, filter, scan_left, ahead).await?
                }
            };
            skipped.add(outcome.filtered);
            outcome.filtered = skipped;
            {
                let retention = partition.retention.borrow();
                let marks = &mut outcome.partition;
                if !retention.removed.is_empty() && marks.next_offset > marks.start_offset {
                    marks.removed = retention
                        .removed
                        .ranges()
                        .filter(|r| r.end > marks.start_offset && r.start < marks.next_offset)
                        .map(|r| [r.start.max(marks.start_offset), r.end.min(marks.next_offset)])
                        .collect();
                }
            }
            if let Some((began, _)) = resume {
                outcome.partition.start_offset = began;
            }
            let marks = outcome.partition.clone();
            let scanned_enough = skipped.bytes >= FILTER_SCAN_BYTES_MAX as u64;
            let now = Instant::now();
            if marks.payload_bytes > 0 || now >= deadline || scanned_enough {
                if spec.auto_commit && marks.next_offset > marks.start_offset {
                    let what = format!("auto-commit on partition {}", key.partition);
                    partition
                        .offsets
                        .lock()
                        .await
                        .store(&spec.consumer_key, marks.next_offset)
                        .await
                        .map_err(|e| offset_error(&what, e))?;
                }
                return Ok(outcome);
            }
            if marks.next_offset > start {
                resume = Some((marks.start_offset, marks.next_offset));
            }
            let wait = glommio::timer::sleep(deadline - now).fuse();
            let arrived = listener.fuse();
            futures::pin_mut!(wait, arrived);
            futures::select! {
                () = arrived => {}
                () = wait => {}
            }
        }
    }

    async fn start_offset(&self, partition: &Partition, spec: &PollSpec) -> BrokerResult<u64> {
        let log = &partition.log;
        let first = log.offsets().start.max(partition.retention.borrow().first);
        let end = log.high_watermark();
        let start = match spec.strategy {
            PollStrategy::Offset(offset) => offset,
            PollStrategy::First => first,
            PollStrategy::Last => end.saturating_sub(1).max(first),
            PollStrategy::Next => {
                partition.offsets.lock().await.get(&spec.consumer_key).unwrap_or(first).max(first)
            }
            PollStrategy::Timestamp(ts) => {
                let what = format!("timestamp lookup on partition {}", partition.key.partition);
                log.offset_for_timestamp(ts).await.map_err(|e| BrokerError::storage(&what, e))?.unwrap_or(end)
            }
        };
        Ok(start)
    }

    /// Stores or reads a consumer offset.
    pub async fn offset(
        &self,
        key: PartitionKey,
        consumer_key: &str,
        op: OffsetOp,
    ) -> BrokerResult<OffsetInfo> {
        let partition = self.get(key)?;
        let high_watermark = partition.log.high_watermark();
        if let OffsetOp::Store(offset) = op {
            if offset > high_watermark {
                return Err(BrokerError::new(
                    crate::protocol::messages::Status::InvalidArgument,
                    format!(
                        "offset {offset} is past the end of partition {} ({high_watermark})",
                        key.partition
                    ),
                ));
            }
            let what = format!("store offset on partition {}", key.partition);
            partition
                .offsets
                .lock()
                .await
                .store(consumer_key, offset)
                .await
                .map_err(|e| offset_error(&what, e))?;
        }
        let stored = partition.offsets.lock().await.get(consumer_key);
        Ok(OffsetInfo { stored, high_watermark })
    }

    /// Statistics of every owned partition.
    pub fn stats(&self) -> Vec<(PartitionKey, PartitionStats)> {
        let partitions = self.partitions.borrow();
        let mut out: Vec<(PartitionKey, PartitionStats)> = partitions
            .values()
            .map(|p| {
                let offsets = p.log.offsets();
                let (bytes, segments) = p.log.size();
                let consumers = match p.offsets.try_lock() {
                    Some(store) => store
                        .entries()
                        .filter_map(|(k, _)| k.strip_prefix("c:"))
                        .map(str::to_string)
                        .collect(),
                    None => Vec::new(),
                };
                let next = p.log.high_watermark();
                let (first, live) = {
                    let retention = p.retention.borrow();
                    (retention.first.max(offsets.start), retention.live_messages(next))
                };
                let stats = PartitionStats {
                    id: p.key.partition,
                    shard: self.shard,
                    first_offset: first,
                    next_offset: next,
                    committed_offset: offsets.committed_next,
                    messages: live,
                    bytes,
                    segments: segments as u32,
                    consumers,
                    poisoned: p.log.poisoned(),
                    producers: p.producers.borrow().len() as u32,
                    producer_evictions: p.producers.borrow().evictions,
                    duplicate_batches: p.producers.borrow().duplicates,
                    filtered_batches: p.filtered.get().batches,
                    filtered_bytes: p.filtered.get().bytes,
                };
                (p.key, stats)
            })
            .collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    /// Logs a failed interval fsync. A poisoned log already logged its poisoning once;
    /// repeating it every tick would flood the log.
    fn report_interval_sync(&self, partition: &Partition, what: &str, synced: StorageResult<()>) {
        match synced {
            Ok(()) | Err(crate::storage::StorageError::Poisoned { .. }) => {}
            Err(error) => {
                tracing::error!(shard = self.shard, partition = partition.key.partition, %error, "{what}")
            }
        }
    }

    /// fsyncs partitions whose `--fsync interval` is due, and applies retention when `retention`.
    pub async fn maintain(&self, retention: bool) {
        let all: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        for partition in all {
            let synced = partition.log.sync_if_due().await;
            self.report_interval_sync(&partition, "interval fsync failed", synced);
            // Stored offsets get the same interval (found by the crash test: a commit followed
            // by quiet stayed unsynced until the next commit).
            let synced = match partition.offsets.try_lock() {
                Some(store) => store.sync_if_due().await,
                None => Ok(()), // Busy with a change, which syncs when due itself.
            };
            self.report_interval_sync(&partition, "interval fsync of stored offsets failed", synced);
            self.maintain_producers(&partition).await;
            self.maintain_retention(&partition).await;
            if retention {
                match partition.log.enforce_retention(now_us()).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(
                        shard = self.shard,
                        partition = partition.key.partition,
                        deleted,
                        "retention"
                    ),
                    Err(error) => tracing::warn!(shard = self.shard, %error, "retention failed"),
                }
            }
        }
    }

    /// Applies TTLs and message limits, persists the ack state's changes, and deletes segments
    /// wholly below the first live offset.
    async fn maintain_retention(&self, partition: &Rc<Partition>) {
        let next = partition.log.high_watermark();
        let log_start = partition.log.offsets().start;
        let gone = {
            let mut retention = partition.retention.borrow_mut();
            retention.set_first(log_start);
            retention.enforce(now_us(), next)
        };
        if gone > 0 {
            partition.data.notify(usize::MAX);
        }
        if partition.retention.borrow().has_changes() {
            if let Err(error) = super::durable::fetch::save(partition, false).await {
                tracing::warn!(shard = self.shard, %error, "saving acknowledgements failed");
                return;
            }
        }
        let first = partition.retention.borrow().first;
        if first > log_start {
            // The first offset is durable (saved above) before the segments below it go.
            match partition.log.delete_segments_before(first).await {
                Ok(0) => {}
                Ok(deleted) => tracing::debug!(
                    shard = self.shard,
                    partition = partition.key.partition,
                    deleted,
                    "removed segments"
                ),
                Err(error) => tracing::warn!(shard = self.shard, %error, "deleting removed segments failed"),
            }
        }
    }

    /// Flushes, fsyncs and closes every partition.
    pub async fn close_all(&self) {
        let all: Vec<Rc<Partition>> = self.partitions.borrow_mut().drain().map(|(_, p)| p).collect();
        for partition in all {
            if let Err(error) = partition.log.close().await {
                tracing::error!(shard = self.shard, partition = partition.key.partition, %error, "close failed");
            }
            self.close_producers(&partition).await;
            if let Err(error) = super::durable::fetch::save(&partition, false).await {
                tracing::error!(shard = self.shard, %error, "saving acknowledgements at close failed");
            }
            let _ = partition.acks.lock().await.close().await;
            let _ = partition.offsets.lock().await.close().await;
            partition.data.notify(usize::MAX);
        }
    }

    /// Polling for test helpers: how many partitions are open.
    pub fn len(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// True when no partition is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The flusher of a `--fsync never` partition: writes whatever appends buffered, as soon as they
/// did, and wakes long polls once it is readable. Ends when the partition is closed.
async fn write_behind(shard: u16, partition: Rc<Partition>) {
    loop {
        partition.log.wait_dirty().await;
        if partition.log.is_closed() || partition.log.poisoned().is_some() {
            return;
        }
        if let Err(error) = partition.log.flush().await {
            tracing::error!(
                shard,
                partition = partition.key.partition,
                %error,
                "write-behind failed: acknowledged appends not yet written were dropped"
            );
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        partition.data.notify(usize::MAX);
    }
}

/// Maps an offset-store failure to a status.
fn offset_error(what: &str, error: OffsetError) -> BrokerError {
    match error {
        OffsetError::Storage(error) => BrokerError::storage(what, error),
        other => {
            BrokerError::new(crate::protocol::messages::Status::InvalidArgument, format!("{what}: {other}"))
        }
    }
}

/// Splits a produce payload into its batches' byte ranges; the count must match and every
/// batch must validate, so a bad batch rejects the request before anything is appended.
fn split_batches(payload: &[u8], batch_count: u32) -> BrokerResult<Vec<(usize, usize, Option<NamedBatch>)>> {
    let invalid =
        |message: String| BrokerError::new(crate::protocol::messages::Status::InvalidBatch, message);
    if batch_count == 0 || batch_count as usize > payload.len() / BATCH_BYTES_MIN {
        return Err(invalid(format!(
            "batch count {batch_count} does not fit a payload of {} bytes",
            payload.len()
        )));
    }
    let mut bounds = Vec::with_capacity(batch_count as usize);
    let mut at = 0;
    for index in 0..batch_count {
        let rest = &payload[at..];
        let header = BatchHeader::decode(rest).map_err(|e| invalid(format!("batch {index}: {e}")))?;
        let end = at + header.length as usize;
        let bytes =
            payload.get(at..end).ok_or_else(|| invalid(format!("batch {index} runs past the payload")))?;
        batch::validate(bytes).map_err(|e| invalid(format!("batch {index}: {e}")))?;
        bounds.push((at, end, NamedBatch::of(&header)));
        at = end;
    }
    if at != payload.len() {
        return Err(invalid(format!("{} bytes after the last of {batch_count} batches", payload.len() - at)));
    }
    Ok(bounds)
}
