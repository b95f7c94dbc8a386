//! The partition log: an ordered set of segments with one active segment at the end.
//!
//! A [`PartitionLog`] lives on the shard that owns its partition and is only touched from that
//! core (it is `!Send`). Many tasks of that core may call it at once: appends assign offsets and
//! copy their bytes synchronously (so offset order is position order), then wait for the flush
//! their durability level needs. One flush runs at a time (the flush lock); whoever runs it writes
//! and fsyncs everything buffered so far, so concurrent appenders share one write and one
//! `fdatasync` (group commit).
//!
//! Three marks per log, as in Redpanda: *dirty* (assigned and buffered), *stable* (written to the
//! file) and *committed* (fsynced). Readers see up to stable, or up to committed under
//! `--fsync always`, so a consumer never sees a message that a crash could take back.
//!
//! Invariants: offsets are dense from the first segment's base; `committed <= stable <= dirty`;
//! a failed write rolls the log back to stable and fails every append not yet written; a failed
//! fsync poisons the log and every later append fails with [`StorageError::Poisoned`].

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

mod chunks;
pub use chunks::ReadChunk;

use async_lock::Mutex;
use event_listener::Event;
use futures::future::try_join_all;

use super::segment::{create_segment, open_segment, parse_log_name, segment_paths, Mark, Segment};
use super::{FsyncPolicy, LogConfig, LogOffsets, Repair, StorageError, StorageResult};
use crate::constants::READ_SCAN_BYTES_MIN;
use crate::io::{Io, IoFile};
use crate::model::{now_us, Offset, TimestampUs};
use crate::protocol::batch::{self, BatchHeader, BATCH_HEADER_BYTES, BATCH_HEADER_V1_BYTES};

/// What an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Offset of the batch's last record.
    pub last_offset: Offset,
    /// The append timestamp written into the batch.
    pub append_timestamp_us: TimestampUs,
}

/// Whole batches read from a log: `bytes()` is one or more batches back to back, exactly as
/// appended (server fields patched). Also a view of whole batches in any shared buffer (the
/// tail cache keeps produce frames as `LogRead`s).
#[derive(Clone)]
pub struct LogRead<B> {
    buffer: B,
    start: usize,
    len: usize,
    /// Offset of the first batch returned (may be below the offset asked for).
    pub first_offset: Offset,
    /// Offset after the last batch returned.
    pub next_offset: Offset,
}

impl<B: std::ops::Deref<Target = [u8]>> LogRead<B> {
    /// A view of `buffer[range]`, which holds whole batches with offsets `first_offset..next_offset`.
    pub fn new(buffer: B, range: std::ops::Range<usize>, first_offset: Offset, next_offset: Offset) -> Self {
        debug_assert!(range.end <= buffer.len());
        LogRead { buffer, start: range.start, len: range.len(), first_offset, next_offset }
    }

    /// The batches' bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }

    /// The whole buffer the batches are in.
    pub fn buffer(&self) -> &B {
        &self.buffer
    }
}

impl<B: std::ops::Deref<Target = [u8]> + Clone> LogRead<B> {
    /// Cuts at `at` (a batch boundary, the start of offset `at_offset`): `self` keeps the bytes
    /// before, the returned read (sharing the same buffer) the whole batches after, if any.
    pub fn split_off(&mut self, at: usize, at_offset: Offset) -> Option<LogRead<B>> {
        if at >= self.len {
            return None;
        }
        let rest = LogRead {
            buffer: self.buffer.clone(),
            start: self.start + at,
            len: self.len - at,
            first_offset: at_offset,
            next_offset: self.next_offset,
        };
        self.len = at;
        self.next_offset = at_offset;
        Some(rest)
    }
}

/// Which mark an append waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Stable,
    Committed,
}

struct LogState<F: IoFile> {
    /// Sealed segments, oldest first, then the active segment last (never empty).
    segments: Vec<Segment<F>>,
    last_append_us: TimestampUs,
    poisoned: Option<String>,
    /// Bumped on every rollback; appends remember the epoch they were buffered in.
    rollback_epoch: u64,
    last_write_error: Option<String>,
    last_sync: Instant,
    closed: bool,
    fsyncs: u64,
    appends: u64,
}

/// A partition's log. See the module documentation.
pub struct PartitionLog<I: Io> {
    io: I,
    dir: PathBuf,
    config: LogConfig,
    state: RefCell<LogState<I::File>>,
    flush_lock: Mutex<()>,
    /// Append order: the next ticket to hand out, the ticket allowed to buffer now, and an event
    /// fired when that changes.
    next_ticket: Cell<u64>,
    serving: Cell<u64>,
    turn_changed: Event,
    /// Fired when write-behind appends leave bytes to write, and on close.
    dirty: Event,
    /// Where append-path fdatasync latencies go (`--metrics-listen`), once attached.
    fsync_latency: std::cell::OnceCell<std::sync::Arc<crate::metrics::Histogram>>,
}

/// An appender's turn to buffer; passes the turn on when dropped.
struct Turn<'a> {
    serving: &'a Cell<u64>,
    changed: &'a Event,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.serving.set(self.serving.get() + 1);
        self.changed.notify(usize::MAX);
    }
}

impl<I: Io> PartitionLog<I> {
    /// Opens the log in `dir` (created if missing), recovering every segment found there.
    /// Returns the log and what recovery repaired (also logged).
    pub async fn open(io: I, dir: &Path, config: LogConfig) -> StorageResult<(Self, Vec<Repair>)> {
        config.check()?;
        io.create_dir_all(dir).await?;
        let mut repairs = Vec::new();
        let names = io.list(dir).await?;
        let mut bases: Vec<Offset> = names.iter().filter_map(|n| parse_log_name(n)).collect();
        bases.sort_unstable();
        let mut segments: Vec<Segment<I::File>> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let expected = segments.last().map(|s| s.end.next_offset);
            if expected.is_some_and(|next| next != base) {
                remove_segments(&io, dir, &bases[i..], &mut repairs, "offset gap after a torn segment")
                    .await?;
                break;
            }
            let active = i + 1 == bases.len();
            let segment = open_segment(&io, dir, base, active, &config, &mut repairs).await?;
            segments.push(segment);
        }
        remove_orphan_indexes(&io, dir, &names, &bases, &mut repairs).await?;
        if segments.last().is_none_or(|s| s.writer.is_none()) {
            let base = segments.last().map_or(0, |s| s.end.next_offset);
            segments.push(create_segment(&io, dir, base, &config).await?);
        }
        for repair in &repairs {
            match repair {
                Repair::TruncatedTail { zero_padding: true, .. } => {
                    tracing::info!(dir = %dir.display(), "recovery: {repair}")
                }
                _ => tracing::warn!(dir = %dir.display(), "recovery: {repair}"),
            }
        }
        let last_append_us = segments.iter().filter_map(|s| s.last_append_us).max().unwrap_or(0);
        let state = LogState {
            segments,
            last_append_us,
            poisoned: None,
            rollback_epoch: 0,
            last_write_error: None,
            last_sync: Instant::now(),
            closed: false,
            fsyncs: 0,
            appends: 0,
        };
        let log = Self {
            io,
            dir: dir.to_path_buf(),
            config,
            state: RefCell::new(state),
            flush_lock: Mutex::new(()),
            next_ticket: Cell::new(0),
            serving: Cell::new(0),
            turn_changed: Event::new(),
            dirty: Event::new(),
            fsync_latency: std::cell::OnceCell::new(),
        };
        Ok((log, repairs))
    }

    /// The directory holding this log's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration this log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Validates `batch` (one whole batch from an untrusted producer), assigns its base offset and
    /// append timestamp by patching its header, buffers it, and returns once it is as durable as
    /// the fsync policy promises.
    pub async fn append(&self, batch: &mut [u8]) -> StorageResult<AppendInfo> {
        let mut infos = self.append_batches(&mut [batch]).await?;
        infos.pop().ok_or(StorageError::Corrupt { position: 0, reason: "append produced no acknowledgement" })
    }

    /// Appends several batches as one unit: all are validated first (one bad batch refuses them
    /// all), they get consecutive offsets in the given order, and one wait covers their
    /// durability. Appends keep the order in which they were called, also when some of them
    /// must wait for a segment roll or for the disk.
    pub async fn append_batches(&self, batches: &mut [&mut [u8]]) -> StorageResult<Vec<AppendInfo>> {
        for batch in batches.iter() {
            batch::validate(batch)?;
        }
        self.append_validated(batches).await
    }

    /// [`Self::append_batches`] for callers that already ran [`batch::validate`] on every batch
    /// (the shard does, to name the bad batch in its error): the CRC is computed once per batch,
    /// not twice.
    pub async fn append_validated(&self, batches: &mut [&mut [u8]]) -> StorageResult<Vec<AppendInfo>> {
        self.check_writable()?;
        let total: usize = batches.iter().map(|b| b.len()).sum();
        let (infos, epoch) = {
            let _turn = self.wait_turn().await;
            self.make_room(total).await?;
            let now = now_us();
            let mut infos = Vec::with_capacity(batches.len());
            let mut epoch = 0;
            for batch in batches.iter_mut() {
                let (info, buffered_epoch) = self.buffer_batch(batch, now)?;
                infos.push(info);
                epoch = buffered_epoch;
            }
            (infos, epoch)
        };
        let level = match self.config.fsync {
            FsyncPolicy::Always => Level::Committed,
            FsyncPolicy::Interval(_) => Level::Stable,
            FsyncPolicy::Never => {
                // Write-behind: acknowledged once buffered; the owner's flusher writes it now.
                self.dirty.notify(usize::MAX);
                return Ok(infos);
            }
        };
        if let Some(last) = infos.last() {
            self.wait_for(last.last_offset, epoch, level).await?;
        }
        Ok(infos)
    }

    /// True when appends are acknowledged before their write (`--fsync never`): the owner must
    /// run a flusher that calls [`Self::wait_dirty`] and [`Self::flush`] in a loop.
    pub fn write_behind(&self) -> bool {
        self.config.fsync == FsyncPolicy::Never
    }

    /// Waits until some appended bytes are not yet written, or the log is closed or poisoned.
    pub async fn wait_dirty(&self) {
        loop {
            let listener = self.dirty.listen();
            {
                let state = self.state.borrow();
                let dirty = state.segments.last().is_some_and(|s| s.end.next_offset > s.stable.next_offset);
                if dirty || state.closed || state.poisoned.is_some() {
                    return;
                }
            }
            listener.await;
        }
    }

    /// Writes everything appended so far (no fsync unless the policy's interval is due).
    pub async fn flush(&self) -> StorageResult<()> {
        let _guard = self.flush_lock.lock().await;
        self.check_writable()?;
        self.flush_locked(Level::Stable).await
    }

    /// True once [`Self::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    /// Waits until every earlier caller of `append_batches` has buffered its batches; the
    /// returned guard lets the next one go when dropped (also on error or cancellation).
    async fn wait_turn(&self) -> Turn<'_> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        while self.serving.get() != ticket {
            let listener = self.turn_changed.listen();
            if self.serving.get() == ticket {
                break;
            }
            listener.await;
        }
        Turn { serving: &self.serving, changed: &self.turn_changed }
    }

    fn check_writable(&self) -> StorageResult<()> {
        let state = self.state.borrow();
        if state.closed {
            return Err(StorageError::Closed);
        }
        match &state.poisoned {
            Some(reason) => Err(self.poisoned_error(reason)),
            None => Ok(()),
        }
    }

    fn poisoned_error(&self, reason: &str) -> StorageError {
        StorageError::Poisoned { dir: self.dir.clone(), reason: reason.to_string() }
    }

    /// Rolls the active segment or flushes until a batch of `len` bytes may be buffered.
    async fn make_room(&self, len: usize) -> StorageResult<()> {
        loop {
            let (roll, flush) = {
                let state = self.state.borrow();
                (self.needs_roll(&state, len), self.dirty_bytes(&state) > self.config.dirty_bytes_max as u64)
            };
            if !roll && !flush {
                return Ok(());
            }
            let _guard = self.flush_lock.lock().await;
            self.check_writable()?;
            let roll = self.needs_roll(&self.state.borrow(), len);
            if roll {
                self.roll_locked().await?;
            } else {
                self.flush_locked(Level::Stable).await?;
            }
        }
    }

    fn needs_roll(&self, state: &LogState<I::File>, len: usize) -> bool {
        let Some(active) = state.segments.last() else { return false };
        if active.is_empty() {
            return false;
        }
        let full = active.len() + len as u64 > self.config.segment_bytes;
        let old = match (self.config.segment_max_age, active.first_append_us) {
            (Some(age), Some(first)) => now_us().saturating_sub(first) >= age.as_micros() as u64,
            _ => false,
        };
        full || old
    }

    fn dirty_bytes(&self, state: &LogState<I::File>) -> u64 {
        state.segments.last().and_then(|s| s.writer.as_ref()).map_or(0, |w| w.log.dirty_bytes())
    }

    /// Assigns offsets and copies the batch into the active segment. No await inside: offset
    /// order is position order.
    fn buffer_batch(&self, batch: &mut [u8], now: TimestampUs) -> StorageResult<(AppendInfo, u64)> {
        let mut state = self.state.borrow_mut();
        let append_timestamp_us = now.max(state.last_append_us);
        state.last_append_us = append_timestamp_us;
        state.appends += 1;
        let epoch = state.rollback_epoch;
        let Some(active) = state.segments.last_mut() else {
            return Err(StorageError::Closed);
        };
        let base_offset = active.end.next_offset;
        batch::patch_server_fields(batch, base_offset, append_timestamp_us);
        let header = BatchHeader::decode(batch)?;
        let position = active.end.len;
        let Some(writer) = active.writer.as_mut() else { return Err(StorageError::Closed) };
        writer.log.append(batch);
        debug_assert_eq!(writer.log.buffered_len(), position + batch.len() as u64);
        active.note_append(&header, position);
        let info = AppendInfo { base_offset, last_offset: header.last_offset(), append_timestamp_us };
        Ok((info, epoch))
    }

    /// Waits until `offset` reached `level`, flushing (for everyone) when nobody else is.
    async fn wait_for(&self, offset: Offset, epoch: u64, level: Level) -> StorageResult<()> {
        loop {
            if self.reached(offset, epoch, level)? {
                return Ok(());
            }
            let _guard = self.flush_lock.lock().await;
            if self.reached(offset, epoch, level)? {
                return Ok(());
            }
            self.flush_locked(level).await?;
        }
    }

    fn reached(&self, offset: Offset, epoch: u64, level: Level) -> StorageResult<bool> {
        let state = self.state.borrow();
        let mark = match level {
            Level::Stable => state.stable_next(),
            Level::Committed => state.committed_next(),
        };
        if mark > offset {
            return Ok(true);
        }
        if state.rollback_epoch != epoch {
            let reason = state.last_write_error.clone().unwrap_or_default();
            return Err(StorageError::WriteFailed { dir: self.dir.clone(), reason });
        }
        match &state.poisoned {
            Some(reason) => Err(self.poisoned_error(reason)),
            None => Ok(false),
        }
    }

    /// Writes everything buffered in the active segment, then fsyncs when `level` or the
    /// interval policy asks. Caller holds the flush lock.
    async fn flush_locked(&self, level: Level) -> StorageResult<()> {
        let (file, writes, end, index_writes) = {
            let mut state = self.state.borrow_mut();
            let Some(active) = state.segments.last_mut() else { return Ok(()) };
            let end = active.end;
            let Some(writer) = active.writer.as_mut() else { return Ok(()) };
            let (writes, len) = writer.log.take_writes();
            debug_assert_eq!(len, end.len);
            let index_writes = take_index_writes(active, false);
            (active.log.clone(), writes, end, index_writes)
        };
        let written = try_join_all(writes.into_iter().map(|w| file.write_at(w.buffer, w.position))).await;
        if let Err(error) = written {
            return self.rollback(error.into()).await;
        }
        self.complete_write(end);
        if let Some((writes, lens)) = index_writes {
            self.write_index(writes, lens).await?;
        }
        if self.sync_due(level) {
            self.sync_active(&file).await?;
        }
        Ok(())
    }

    fn complete_write(&self, end: Mark) {
        let mut state = self.state.borrow_mut();
        if let Some(active) = state.segments.last_mut() {
            if let Some(writer) = active.writer.as_mut() {
                writer.log.complete(end.len);
            }
            active.stable = end;
        }
    }

    fn sync_due(&self, level: Level) -> bool {
        let state = self.state.borrow();
        if state.committed_next() == state.stable_next() {
            return false;
        }
        match self.config.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => level == Level::Committed || state.last_sync.elapsed() >= every,
            FsyncPolicy::Never => level == Level::Committed,
        }
    }

    /// fdatasyncs the active segment's log; on failure the log is poisoned.
    async fn sync_active(&self, file: &Rc<I::File>) -> StorageResult<()> {
        let stable = match self.state.borrow().segments.last() {
            Some(active) => active.stable,
            None => return Ok(()),
        };
        let started = Instant::now();
        let synced = file.sync().await;
        if let Some(histogram) = self.fsync_latency.get() {
            histogram.observe(started.elapsed());
        }
        if let Err(error) = synced {
            let reason = error.to_string();
            tracing::error!(dir = %self.dir.display(), %reason, "fdatasync failed: partition poisoned");
            self.state.borrow_mut().poisoned = Some(reason.clone());
            return Err(self.poisoned_error(&reason));
        }
        let mut state = self.state.borrow_mut();
        state.fsyncs += 1;
        state.last_sync = Instant::now();
        if let Some(active) = state.segments.last_mut() {
            active.committed = stable;
        }
        Ok(())
    }

    async fn write_index(&self, writes: IndexWrites<I::File>, lens: [u64; 2]) -> StorageResult<()> {
        let [(offset_file, offset_writes), (time_file, time_writes)] = writes;
        let offsets = offset_writes.into_iter().map(|w| offset_file.write_at(w.buffer, w.position));
        let times = time_writes.into_iter().map(|w| time_file.write_at(w.buffer, w.position));
        try_join_all(offsets.chain(times)).await?;
        let mut state = self.state.borrow_mut();
        if let Some(writer) = state.segments.last_mut().and_then(|s| s.writer.as_mut()) {
            writer.offset_index.complete(lens[0]);
            writer.time_index.complete(lens[1]);
        }
        Ok(())
    }

    /// After a failed write: forgets everything not yet written, fails its appenders, and
    /// returns the error. The file is cut back to the stable length so nothing unacknowledged
    /// can reappear after a restart.
    async fn rollback(&self, error: StorageError) -> StorageResult<()> {
        let reason = error.to_string();
        tracing::warn!(dir = %self.dir.display(), %reason, "write failed; rolling back unwritten appends");
        let (file, stable) = {
            let state = self.state.borrow();
            match state.segments.last() {
                Some(active) => (active.log.clone(), active.stable),
                None => return Err(error),
            }
        };
        let alignment = file.alignment() as u64;
        let tail_start = crate::io::align_down(stable.len, alignment as usize);
        let tail = file.read_at(tail_start, (stable.len - tail_start) as usize).await;
        // Cut the file back and make the cut durable, so a rolled-back append cannot reappear.
        let cut = match file.truncate(stable.len).await {
            Ok(()) => file.sync().await,
            Err(error) => Err(error),
        };
        let mut state = self.state.borrow_mut();
        state.rollback_epoch += 1;
        state.last_write_error = Some(reason.clone());
        match (tail, cut) {
            (Ok(tail), Ok(())) if tail.len() as u64 == stable.len - tail_start => {
                if let Some(active) = state.segments.last_mut() {
                    rollback_segment(active, stable, &tail);
                }
            }
            _ => {
                tracing::error!(dir = %self.dir.display(), "could not restore the tail after a failed write: partition poisoned");
                state.poisoned = Some(format!("rollback failed after: {reason}"));
            }
        }
        Err(StorageError::WriteFailed { dir: self.dir.clone(), reason })
    }

    /// Seals the active segment (flushed, fsynced, index written in full) and starts a new one.
    /// Caller holds the flush lock.
    async fn roll_locked(&self) -> StorageResult<()> {
        self.seal_active_locked().await?;
        let base = self.state.borrow().segments.last().map_or(0, |s| s.end.next_offset);
        let new = create_segment(&self.io, &self.dir, base, &self.config).await?;
        let mut state = self.state.borrow_mut();
        if let Some(active) = state.segments.last_mut() {
            active.writer = None;
        }
        tracing::debug!(dir = %self.dir.display(), base, "rolled segment");
        state.segments.push(new);
        Ok(())
    }

    /// Flushes and fsyncs the active segment, writes its index in full, and cuts every file to
    /// its exact length, fsynced: the segment is then complete on disk. Caller holds the lock.
    async fn seal_active_locked(&self) -> StorageResult<()> {
        self.flush_locked(Level::Committed).await?;
        let (log_file, index_writes, len) = {
            let mut state = self.state.borrow_mut();
            let Some(active) = state.segments.last_mut() else { return Ok(()) };
            (active.log.clone(), take_index_writes(active, true), active.end.len)
        };
        if let Some((writes, lens)) = index_writes {
            let files = [writes[0].0.clone(), writes[1].0.clone()];
            self.write_index(writes, lens).await?;
            for (file, len) in files.iter().zip(lens) {
                file.truncate(len).await?;
                file.sync().await?;
            }
        }
        log_file.truncate(len).await?;
        self.sync_active(&log_file).await
    }

    /// Seals the active segment now (if it holds anything) and starts a new one.
    pub async fn roll(&self) -> StorageResult<()> {
        let _guard = self.flush_lock.lock().await;
        self.check_writable()?;
        if self.state.borrow().segments.last().is_some_and(|s| !s.is_empty()) {
            self.roll_locked().await?;
        }
        Ok(())
    }

    /// Deletes every sealed segment whose batches all lie below `offset` (used by compacted
    /// logs once a snapshot at or after `offset` is stored). Returns how many were deleted.
    pub async fn delete_segments_before(&self, offset: Offset) -> StorageResult<usize> {
        let mut deleted = 0;
        loop {
            let victim = {
                let state = self.state.borrow();
                match state.segments.first() {
                    Some(oldest) if state.segments.len() > 1 && oldest.end.next_offset <= offset => {
                        Some(oldest.base_offset)
                    }
                    _ => None,
                }
            };
            let Some(base) = victim else { return Ok(deleted) };
            self.delete_oldest(base).await?;
            deleted += 1;
        }
    }

    async fn delete_oldest(&self, base: Offset) -> StorageResult<()> {
        self.state.borrow_mut().segments.remove(0);
        for path in segment_paths(&self.dir, base) {
            if self.io.exists(&path).await {
                self.io.remove(&path).await?;
            }
        }
        tracing::info!(dir = %self.dir.display(), base, "deleted segment");
        Ok(())
    }

    /// Flushes and fsyncs everything appended so far, whatever the policy.
    pub async fn sync(&self) -> StorageResult<()> {
        let _guard = self.flush_lock.lock().await;
        self.check_writable()?;
        self.flush_locked(Level::Committed).await
    }

    /// Under `--fsync interval=MS`: flushes and fsyncs when the interval has passed since the last
    /// fsync. A shard timer calls this; appends also do it on their way.
    pub async fn sync_if_due(&self) -> StorageResult<()> {
        let FsyncPolicy::Interval(every) = self.config.fsync else { return Ok(()) };
        if self.state.borrow().last_sync.elapsed() < every {
            return Ok(());
        }
        self.sync().await
    }

    /// The log's marks.
    pub fn offsets(&self) -> LogOffsets {
        let state = self.state.borrow();
        LogOffsets {
            start: state.segments.first().map_or(0, |s| s.base_offset),
            dirty_next: state.segments.last().map_or(0, |s| s.end.next_offset),
            stable_next: state.stable_next(),
            committed_next: state.committed_next(),
        }
    }

    /// The offset after the last batch readers may see (committed under `--fsync always`,
    /// stable otherwise).
    pub fn high_watermark(&self) -> Offset {
        self.visible_next(&self.state.borrow())
    }

    /// Bumped whenever a failed write forgets buffered batches (their offsets are then reused):
    /// anything cached by offset under an older epoch may be stale.
    pub fn rollback_epoch(&self) -> u64 {
        self.state.borrow().rollback_epoch
    }

    /// fdatasync calls and appends so far (group commit shows as fewer syncs than appends).
    pub fn counters(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.fsyncs, state.appends)
    }

    /// Total bytes of all segments and the number of segments.
    pub fn size(&self) -> (u64, usize) {
        let state = self.state.borrow();
        (state.segments.iter().map(|s| s.len()).sum(), state.segments.len())
    }

    /// Sends the latency of every append-path fdatasync to `histogram` from now on (the first
    /// histogram attached stays).
    pub fn observe_fsyncs(&self, histogram: std::sync::Arc<crate::metrics::Histogram>) {
        let _ = self.fsync_latency.set(histogram);
    }

    /// Bytes appended (and, under `--fsync never`, acknowledged) but not yet written.
    pub fn write_behind_bytes(&self) -> u64 {
        self.dirty_bytes(&self.state.borrow())
    }

    /// Why the log refuses writes, if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.state.borrow().poisoned.clone()
    }

    /// The end of what readers may see.
    fn visible_next(&self, state: &LogState<I::File>) -> Offset {
        match self.config.fsync {
            FsyncPolicy::Always => state.committed_next(),
            _ => state.stable_next(),
        }
    }

    /// Reads whole batches starting with the one holding `offset`, at most `max_bytes` of them
    /// (but always at least one batch), from one segment. `Ok(None)` when `offset` is at or past
    /// the visible end; an error when it is below the log start.
    pub async fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
    ) -> StorageResult<Option<LogRead<<I::File as IoFile>::ReadBuf>>> {
        let (file, start_offset, start_position, visible) = {
            let state = self.state.borrow();
            let visible_next = self.visible_next(&state);
            let start = state.segments.first().map_or(0, |s| s.base_offset);
            if offset < start {
                return Err(StorageError::OffsetOutOfRange { requested: offset, start, next: visible_next });
            }
            if offset >= visible_next {
                return Ok(None);
            }
            let i = state.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
            let segment = &state.segments[i];
            let visible = visible_mark(&state, i, self.config.fsync);
            let (o, p) = segment.index.lookup_offset(offset);
            (segment.log.clone(), o, p, visible)
        };
        read_batches(&*file, start_position, start_offset, visible, max_bytes, |h| h.last_offset() >= offset)
            .await
    }

    /// The offset of the first batch appended at or after `timestamp_us` (its first record), or
    /// `None` when every visible batch is older.
    pub async fn offset_for_timestamp(&self, timestamp_us: TimestampUs) -> StorageResult<Option<Offset>> {
        let (file, start_offset, start_position, visible) = {
            let state = self.state.borrow();
            let found =
                state.segments.iter().position(|s| s.last_append_us.is_some_and(|t| t >= timestamp_us));
            let Some(i) = found else { return Ok(None) };
            let visible = visible_mark(&state, i, self.config.fsync);
            let (o, p) = state.segments[i].index.lookup_timestamp(timestamp_us);
            (state.segments[i].log.clone(), o, p, visible)
        };
        let read = read_batches(&*file, start_position, start_offset, visible, BATCH_HEADER_BYTES, |h| {
            h.append_timestamp_us >= timestamp_us
        })
        .await?;
        Ok(read.map(|r| r.first_offset))
    }

    /// Deletes sealed segments past the retention limits (age of their newest batch, total
    /// bytes), oldest first. Never deletes the active segment. Returns how many were deleted.
    pub async fn enforce_retention(&self, now: TimestampUs) -> StorageResult<usize> {
        let mut deleted = 0;
        loop {
            let victim = {
                let state = self.state.borrow();
                let total: u64 = state.segments.iter().map(|s| s.len()).sum();
                match state.segments.first() {
                    Some(oldest) if state.segments.len() > 1 => {
                        let too_old = match (self.config.retention_max_age, oldest.last_append_us) {
                            (Some(age), Some(last)) => now.saturating_sub(last) > age.as_micros() as u64,
                            _ => false,
                        };
                        let too_big = self.config.retention_max_bytes.is_some_and(|max| total > max);
                        (too_old || too_big).then_some(oldest.base_offset)
                    }
                    _ => None,
                }
            };
            let Some(base) = victim else { return Ok(deleted) };
            self.delete_oldest(base).await?;
            deleted += 1;
        }
    }

    /// Flushes, fsyncs, writes the active index in full and closes. Later calls fail with
    /// [`StorageError::Closed`].
    pub async fn close(&self) -> StorageResult<()> {
        let _guard = self.flush_lock.lock().await;
        if self.state.borrow().poisoned.is_none() {
            self.seal_active_locked().await?;
        }
        self.state.borrow_mut().closed = true;
        self.dirty.notify(usize::MAX);
        Ok(())
    }
}

type IndexWrites<F> = [(Rc<F>, Vec<super::appender::PendingWrite<<F as IoFile>::Buffer>>); 2];

/// Hands the index entries not yet given to the index appenders to them, and takes their writes
/// when enough are pending (or always with `all`).
fn take_index_writes<F: IoFile>(segment: &mut Segment<F>, all: bool) -> Option<(IndexWrites<F>, [u64; 2])> {
    let writer = segment.writer.as_mut()?;
    let from = writer.index_entries_appended;
    let pending = segment.index.entries().len() - from;
    let unwritten = writer.offset_index.dirty_bytes() > 0;
    if !all && pending < crate::constants::INDEX_FLUSH_ENTRIES {
        return None;
    }
    if pending == 0 && !unwritten {
        return None;
    }
    let mut bytes = Vec::with_capacity(pending * super::index::TIME_ENTRY_BYTES);
    segment.index.encode_offset_entries(from, &mut bytes);
    writer.offset_index.append(&bytes);
    bytes.clear();
    segment.index.encode_time_entries(from, &mut bytes);
    writer.time_index.append(&bytes);
    writer.index_entries_appended = segment.index.entries().len();
    let (offset_writes, offset_len) = writer.offset_index.take_writes();
    let (time_writes, time_len) = writer.time_index.take_writes();
    let files = [
        (writer.offset_index.file().clone(), offset_writes),
        (writer.time_index.file().clone(), time_writes),
    ];
    Some((files, [offset_len, time_len]))
}

fn rollback_segment<F: IoFile>(segment: &mut Segment<F>, stable: Mark, tail: &[u8]) {
    if let Some(writer) = segment.writer.as_mut() {
        writer.log.rollback(tail);
    }
    let relative = stable.next_offset - segment.base_offset;
    let keep = segment.index.entries().partition_point(|e| u64::from(e.relative_offset) < relative);
    segment.index.truncate(keep);
    if let Some(writer) = segment.writer.as_mut() {
        writer.index_entries_appended = writer.index_entries_appended.min(keep);
    }
    segment.end = stable;
}

impl<F: IoFile> LogState<F> {
    fn stable_next(&self) -> Offset {
        self.segments.last().map_or(0, |s| s.stable.next_offset)
    }

    fn committed_next(&self) -> Offset {
        self.segments.last().map_or(0, |s| s.committed.next_offset)
    }
}

fn visible_mark<F: IoFile>(state: &LogState<F>, i: usize, fsync: FsyncPolicy) -> Mark {
    let segment = &state.segments[i];
    match fsync {
        FsyncPolicy::Always => segment.committed,
        _ => segment.stable,
    }
}

/// Reads from `position` (a batch start at `offset`) up to `visible`, skips batches until
/// `wanted` holds, and returns that batch and those after it within `max_bytes` (the first one
/// always, whatever its size).
async fn read_batches<F: IoFile>(
    file: &F,
    mut position: u64,
    mut offset: Offset,
    visible: Mark,
    max_bytes: usize,
    wanted: impl Fn(&BatchHeader) -> bool,
) -> StorageResult<Option<LogRead<F::ReadBuf>>> {
    let scan_bytes = max_bytes.max(READ_SCAN_BYTES_MIN);
    loop {
        if position >= visible.len {
            return Ok(None);
        }
        let len = (scan_bytes as u64).min(visible.len - position) as usize;
        let buffer = file.read_at(position, len).await?;
        let mut at = 0_usize;
        let mut first: Option<usize> = None;
        // At least the header every version shares (a version-1 batch may be shorter than a
        // version-2 header); a version-2 header cut by the buffer's end is read again next round.
        while buffer.len().saturating_sub(at) >= BATCH_HEADER_V1_BYTES {
            let header = match BatchHeader::decode(&buffer[at..]) {
                Ok(header) => header,
                Err(batch::BatchError::Truncated { .. }) if at > 0 => break,
                Err(error) => return Err(error.into()),
            };
            if header.base_offset != offset {
                let position = position + at as u64;
                return Err(StorageError::Corrupt { position, reason: "batch offset out of sequence" });
            }
            let end = at + header.length as usize;
            match first {
                None if !wanted(&header) => {}
                None => first = Some(at),
                Some(start) if end > buffer.len() || end - start > max_bytes => break,
                Some(_) => {}
            }
            if first == Some(at) && end > buffer.len() {
                break;
            }
            at = end;
            offset = header.next_offset();
        }
        match first {
            Some(start) if at > start => {
                let (first_offset, next_offset) = (batch_offset(&buffer, start)?, offset);
                return Ok(Some(LogRead { buffer, start, len: at - start, first_offset, next_offset }));
            }
            Some(start) => return read_one(file, position + start as u64).await.map(Some),
            None => position += at as u64,
        }
    }
}

fn batch_offset(buffer: &[u8], at: usize) -> StorageResult<Offset> {
    Ok(BatchHeader::decode(&buffer[at..])?.base_offset)
}

/// Reads the single batch at `position`, however large.
async fn read_one<F: IoFile>(file: &F, position: u64) -> StorageResult<LogRead<F::ReadBuf>> {
    let header = BatchHeader::decode(&file.read_at(position, BATCH_HEADER_BYTES).await?)?;
    let len = header.length as usize;
    let buffer = file.read_at(position, len).await?;
    if buffer.len() < len {
        return Err(StorageError::Corrupt { position, reason: "short read of a batch" });
    }
    let (first_offset, next_offset) = (header.base_offset, header.next_offset());
    Ok(LogRead { buffer, start: 0, len, first_offset, next_offset })
}

async fn remove_segments<I: Io>(
    io: &I,
    dir: &Path,
    bases: &[Offset],
    repairs: &mut Vec<Repair>,
    reason: &'static str,
) -> StorageResult<()> {
    for &base in bases {
        for path in segment_paths(dir, base) {
            if io.exists(&path).await {
                io.remove(&path).await?;
            }
        }
        repairs.push(Repair::RemovedSegment { segment: base, reason });
    }
    Ok(())
}

async fn remove_orphan_indexes<I: Io>(
    io: &I,
    dir: &Path,
    names: &[String],
    bases: &[Offset],
    repairs: &mut Vec<Repair>,
) -> StorageResult<()> {
    for name in names {
        let stem = name.strip_suffix(".timeindex").or_else(|| name.strip_suffix(".index"));
        let Some(base) = stem.and_then(|s| parse_log_name(&format!("{s}.log"))) else { continue };
        if !bases.contains(&base) {
            io.remove(&dir.join(name)).await?;
            repairs.push(Repair::RemovedOrphanIndex { file: name.clone() });
        }
    }
    Ok(())
}
