//! The `metadata_replay` and `segment_recovery` harnesses: arbitrary bytes written as the files of
//! a metadata log or a partition log in a temporary directory, then opened through the public API
//! the broker uses on start-up (`MetadataLog::open`, `PartitionLog::open`) on real glommio DMA
//! files.
//!
//! Which core: one glommio executor per fuzzing process, made on the fuzzing thread at the first
//! input and reused for every later one (`ringbroker::io::dma::run_local` would build a new
//! executor thread, register `io_memory` and prime the polled-I/O probe per input, which costs
//! milliseconds). Its `io_memory` is fitted under `RLIMIT_MEMLOCK` by `plan_io_memory`, as
//! `run_local` does. The directory is `$RINGBROKER_FUZZ_TMPDIR`, else `/dev/shm` (tmpfs: fsync is
//! free there) when it exists, else the system temporary directory; each input gets the same
//! subdirectory, emptied first.
//!
//! Input layouts (little-endian lengths; a length past the end takes what is left):
//! * `metadata_replay`: `[mode][rest]`. Mode bit 0 clear: `rest` is the metadata log's segment
//!   file as is. Set: `rest` is a list of `[u16 length][op bytes]`, each wrapped in one valid
//!   batch (one record, producer id = op format version, base offset = its index, append time
//!   increasing) so libFuzzer reaches rkyv op decoding and `Catalog::apply` past the batch CRC.
//!   Bit 1 gives every batch base offset 0; bit 2 writes producer id 0.
//! * `segment_recovery`: `[flags][base][u16 n][log n bytes][u16 n][.index][u16 n][.timeindex]`
//!   `[rest: a second segment's log]`. Flag bit 0 rewrites the CRC of every batch in both logs
//!   (`batch::fix_crcs`); bit 1 writes a correct 16-byte header over each index file (when it has
//!   16 bytes); bit 2 puts an offset gap before the second segment; bit 3 uses a 64-byte index
//!   interval (many index entries) instead of 4096. `base` picks the first segment's base offset
//!   (0, a multiple of 1000, near `u32::MAX`, or near `u64::MAX`). The second segment starts
//!   where the first one's valid batches end.
//!
//! Properties checked: opening never panics; when no index files were given (so recovery
//! verifies every byte), the opened log serves only valid batches with dense offsets from its
//! start to its high watermark, and closing and opening it again repairs nothing more and keeps
//! the offsets (recovery is idempotent). With index files, recovery trusts the bytes before the
//! last index point that matches its batch header (see `read_everything`), so only the absence of
//! panics is checked. For the metadata log, a second replay gives the same catalog.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use ringbroker::io::dma::{plan_io_memory, DmaIo};
use ringbroker::metadata::log::{METADATA_DIR, METADATA_OP_FORMAT_VERSION};
use ringbroker::metadata::MetadataLog;
use ringbroker::protocol::batch::{self, patch_server_fields, BatchBuilder, Message};
use ringbroker::storage::index::{SegmentIndex, INDEX_HEADER_BYTES};
use ringbroker::storage::{FsyncPolicy, LogConfig, LogOffsets, PartitionLog};

/// `io_memory` wanted for the fuzzing executor (shrunk to fit `RLIMIT_MEMLOCK`).
const IO_MEMORY_BYTES: usize = 4 * 1024 * 1024;

/// One executor, its DMA I/O and a scratch directory, for the life of the fuzzing process.
struct Runtime {
    executor: LocalExecutor,
    io: DmaIo,
    root: tempfile::TempDir,
    runs: Cell<u64>,
}

thread_local! {
    static RUNTIME: Runtime = Runtime::new();
}

impl Runtime {
    fn new() -> Runtime {
        let plan = plan_io_memory(IO_MEMORY_BYTES, 1);
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("ringbroker-fuzz")
            .io_memory(plan.io_memory_per_shard_bytes)
            .make()
            .expect("glommio executor");
        let root = tempfile::Builder::new()
            .prefix("ringbroker-fuzz-")
            .tempdir_in(scratch_parent())
            .expect("scratch directory");
        let path = root.path().to_path_buf();
        let io = executor.run(async move { DmaIo::new(&path).await }).expect("DMA I/O");
        Runtime { executor, io, root, runs: Cell::new(0) }
    }

    /// An empty directory for this input (the same path every time).
    fn fresh_dir(&self) -> PathBuf {
        self.runs.set(self.runs.get() + 1);
        let dir = self.root.path().join("input");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("empty the scratch directory");
        }
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    }
}

/// Where the scratch directory goes: `$RINGBROKER_FUZZ_TMPDIR`, `/dev/shm`, or the system's.
fn scratch_parent() -> PathBuf {
    if let Some(dir) = std::env::var_os("RINGBROKER_FUZZ_TMPDIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// A bounds-checked reader of the input layouts.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&byte, rest)) => {
                self.rest = rest;
                byte
            }
            None => 0,
        }
    }

    /// A `u16`-length-prefixed section (or what is left).
    fn section(&mut self) -> &'a [u8] {
        let len = usize::from(u16::from_le_bytes([self.byte(), self.byte()]));
        let (taken, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        taken
    }
}

/// Runs one `metadata_replay` input. See the module documentation. Returns the replayed
/// catalog's revision, `None` when the log was refused.
pub fn metadata_replay(data: &[u8]) -> Option<u64> {
    let mut cursor = Cursor { rest: data };
    let mode = cursor.byte();
    let log_bytes = if mode & 1 == 0 { cursor.rest.to_vec() } else { ops_log(&mut cursor, mode) };
    RUNTIME.with(|runtime| {
        let data_dir = runtime.fresh_dir();
        let segment_dir = data_dir.join(METADATA_DIR);
        std::fs::create_dir_all(&segment_dir).expect("create the metadata directory");
        std::fs::write(segment_dir.join(log_name(0)), &log_bytes).expect("write the log");
        let io = runtime.io.clone();
        runtime.executor.run(async move {
            let (log, catalog) = MetadataLog::open(io.clone(), &data_dir).await.ok()?;
            log.close().await.expect("close the metadata log");
            let (again, replayed) =
                MetadataLog::open(io, &data_dir).await.expect("a replayed log opens again");
            assert_eq!(replayed, catalog, "a second replay gives another catalog");
            again.close().await.expect("close the metadata log");
            Some(catalog.revision)
        })
    })
}

/// The metadata log file for mode 1: each section wrapped in a valid one-record batch.
fn ops_log(cursor: &mut Cursor<'_>, mode: u8) -> Vec<u8> {
    let producer_id = if mode & 4 == 0 { METADATA_OP_FORMAT_VERSION } else { 0 };
    let mut log = Vec::new();
    let mut offset = 0_u64;
    while !cursor.rest.is_empty() {
        let op = cursor.section();
        let mut builder = BatchBuilder::with_capacity(producer_id, 0, op.len() + 256);
        let message = Message { timestamp_us: Some(1_000_000 + offset), ..Message::payload(op) };
        let Ok(mut bytes) = builder.push(&message).and_then(|()| builder.finish()) else { break };
        let base = if mode & 2 == 0 { offset } else { 0 };
        patch_server_fields(&mut bytes, base, 2_000_000 + offset);
        log.extend_from_slice(&bytes);
        offset += 1;
    }
    log
}

/// Runs one `segment_recovery` input. See the module documentation. Returns the recovered log's
/// offsets and the number of repairs, `None` when the log could not be opened.
pub fn segment_recovery(data: &[u8]) -> Option<(LogOffsets, usize)> {
    let mut cursor = Cursor { rest: data };
    let flags = cursor.byte();
    let base = base_offset(cursor.byte());
    let mut log = cursor.section().to_vec();
    let mut offset_index = cursor.section().to_vec();
    let mut time_index = cursor.section().to_vec();
    let mut second_log = cursor.rest.to_vec();
    if flags & 1 != 0 {
        crate::batch::fix_crcs(&mut log);
        crate::batch::fix_crcs(&mut second_log);
    }
    if flags & 2 != 0 {
        let index = SegmentIndex::new(base, 1);
        for (file, time) in [(&mut offset_index, false), (&mut time_index, true)] {
            if let Some(header) = file.get_mut(..INDEX_HEADER_BYTES) {
                header.copy_from_slice(&index.encode_header(time));
            }
        }
    }
    let strict = offset_index.is_empty() && time_index.is_empty();
    let second_base = valid_end(&log, base).saturating_add(u64::from(flags & 4 != 0));
    let config = LogConfig {
        index_interval_bytes: if flags & 8 != 0 { 64 } else { 4096 },
        write_chunk_bytes: 16 * 1024,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    };
    RUNTIME.with(|runtime| {
        let dir = runtime.fresh_dir();
        let stem = format!("{base:020}");
        std::fs::write(dir.join(format!("{stem}.log")), &log).expect("write the log");
        if !offset_index.is_empty() {
            std::fs::write(dir.join(format!("{stem}.index")), &offset_index).expect("write the index");
        }
        if !time_index.is_empty() {
            std::fs::write(dir.join(format!("{stem}.timeindex")), &time_index).expect("write the index");
        }
        if !second_log.is_empty() && second_base != base {
            std::fs::write(dir.join(log_name(second_base)), &second_log).expect("write the log");
        }
        let io = runtime.io.clone();
        runtime.executor.run(async move {
            let (log, first_repairs) = PartitionLog::open(io.clone(), &dir, config.clone()).await.ok()?;
            let offsets = log.offsets();
            read_everything(&log, strict).await;
            log.close().await.expect("close the log");
            let (again, repairs) =
                PartitionLog::open(io, &dir, config).await.expect("a recovered log opens again");
            if strict {
                // With index files given, the first open may have trusted bytes it did not verify
                // (see `read_everything`) and rewritten the index; the second may then verify them.
                assert!(repairs.is_empty(), "recovery is not idempotent: {repairs:?}");
                assert_eq!(again.offsets(), offsets, "reopening moved the offsets");
            }
            read_everything(&again, strict).await;
            again.close().await.expect("close the log");
            Some((offsets, first_repairs.len()))
        })
    })
}

/// The first segment's base offset for a `base` selector byte.
fn base_offset(selector: u8) -> u64 {
    let low = u64::from(selector >> 2);
    match selector & 3 {
        0 => 0,
        1 => low * 1000,
        2 => u64::from(u32::MAX) - 32 + low,
        _ => u64::MAX - low,
    }
}

/// The offset after the valid batches at the start of `log` (recovery's view, ignoring sequence).
fn valid_end(log: &[u8], base: u64) -> u64 {
    batch::batches(log).map_while(Result::ok).last().map_or(base, |b| b.header().next_offset())
}

/// A segment log file name.
fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// Reads the whole visible log. With `strict` (no index files were given, so recovery verified
/// every byte) it must be made of valid batches with dense offsets. Without it, recovery trusts
/// the bytes before the last index point that matches its batch header (by design: the index
/// spares a full scan), so a lying index file can make it serve bytes that fail their CRC, which
/// consumers' CRC checks catch; then the read must only not panic and make progress.
async fn read_everything(log: &PartitionLog<DmaIo>, strict: bool) {
    let offsets = log.offsets();
    let high_watermark = log.high_watermark();
    let mut offset = offsets.start;
    loop {
        let read = match log.read(offset, 64 * 1024).await {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(error) => {
                assert!(!strict, "a recovered log fails to read at {offset}: {error}");
                return;
            }
        };
        assert!(read.first_offset <= offset, "read started past the offset asked for");
        let mut next = read.first_offset;
        for found in batch::batches(read.bytes()) {
            match found {
                Ok(found) => {
                    assert!(!strict || found.header().base_offset == next, "served offsets are not dense");
                    next = found.header().next_offset();
                }
                Err(error) => {
                    assert!(!strict, "a recovered log serves an invalid batch: {error}");
                    return;
                }
            }
        }
        if !strict && (next != read.next_offset || next <= offset) {
            return;
        }
        assert_eq!(next, read.next_offset, "read's next offset disagrees with its batches");
        assert!(next > offset, "read made no progress");
        offset = next;
    }
    assert_eq!(offset.max(offsets.start), high_watermark.max(offsets.start), "read stopped early");
}
