//! The production I/O: glommio DMA files (O_DIRECT, io_uring) behind the [`Io`] trait.
//!
//! Runs on the glommio executor that created the [`DmaIo`]; files, buffers and futures never leave
//! that core. Two facts about these machines are handled here and nowhere else:
//!
//! * **The polled-I/O probe.** glommio decides once per block device whether the poll ring can
//!   serve reads, by reading the first block of the first DMA file opened on it. On an empty file
//!   the probe wrongly succeeds and every later DMA read fails with EOPNOTSUPP (os error 95).
//!   [`DmaIo::new`] therefore writes a one-block sentinel file into the data directory and opens
//!   it before any segment, so the probe always reads real bytes.
//! * **Locked memory.** glommio registers `io_memory` bytes per executor with io_uring, which
//!   counts against `RLIMIT_MEMLOCK` (8 MiB here, below glommio's 10 MiB default).
//!   [`plan_io_memory`] raises the limit when the process may, and otherwise shrinks the per-shard
//!   `io_memory` to fit, and says which it did.
//!
//! Invariants: write positions and lengths are multiples of [`IoFile::alignment`] (checked before
//! submission); a write that returns fewer bytes than given is an error; every error names the
//! operation and the path.

use std::path::{Path, PathBuf};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::{Io, IoBuffer, IoError, IoFile, IoResult};

/// Name prefix of the sentinel files that prime glommio's polled-I/O probe.
pub const PROBE_FILE_NAME: &str = ".ringbroker-io-probe";

/// The glommio DMA file system. Create one per executor with [`DmaIo::new`].
#[derive(Clone, Debug)]
pub struct DmaIo {
    _primed: (),
}

impl DmaIo {
    /// Prepares DMA I/O for files under `dir` (created if missing): writes the probe sentinel
    /// (one non-empty block) and opens it through glommio so the per-device polled-I/O probe reads
    /// real bytes. Must run inside a glommio executor, before any other DMA file is opened.
    pub async fn new(dir: &Path) -> IoResult<DmaIo> {
        std::fs::create_dir_all(dir).map_err(|e| IoError::new("create_dir_all", dir, e))?;
        // One probe file per call: shards start concurrently in one data directory, and a probe
        // truncated by a neighbour would read as empty and mislead glommio's probe.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unique = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{PROBE_FILE_NAME}-{}-{unique}", std::process::id()));
        let block = vec![0xA5_u8; crate::constants::IO_ALIGNMENT_BYTES];
        std::fs::write(&path, &block).map_err(|e| IoError::new("write probe", &path, e))?;
        let file = DmaFile::open(&path).await.map_err(|e| glommio_error("open probe", &path, e))?;
        let read = file.read_at(0, block.len()).await;
        let _ = file.close().await;
        let _ = std::fs::remove_file(&path);
        let read = read.map_err(|e| glommio_error("read probe", &path, e))?;
        if read.len() != block.len() {
            let detail = std::io::Error::other(format!("probe read returned {} bytes", read.len()));
            return Err(IoError::new("read probe", &path, detail));
        }
        tracing::debug!(path = %path.display(), "primed glommio polled-I/O probe");
        Ok(DmaIo { _primed: () })
    }
}

fn glommio_error<T: std::fmt::Debug>(
    operation: &'static str,
    path: &Path,
    error: glommio::GlommioError<T>,
) -> IoError {
    IoError::new(operation, path, std::io::Error::from(error))
}

/// An aligned buffer from the executor's DMA memory.
pub struct DmaIoBuffer(DmaBuffer);

impl AsRef<[u8]> for DmaIoBuffer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl AsMut<[u8]> for DmaIoBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
}

impl IoBuffer for DmaIoBuffer {
    fn trim(&mut self, len: usize) {
        assert!(len <= self.0.len(), "trim {len} beyond buffer length {}", self.0.len());
        self.0.trim_to_size(len);
    }
}

/// A glommio DMA file opened read-write.
pub struct DmaIoFile {
    file: DmaFile,
    path: PathBuf,
}

impl IoFile for DmaIoFile {
    type Buffer = DmaIoBuffer;
    type ReadBuf = ReadResult;

    fn alignment(&self) -> usize {
        (self.file.alignment() as usize).max(crate::constants::IO_ALIGNMENT_BYTES)
    }

    fn alloc(&self, len: usize) -> DmaIoBuffer {
        DmaIoBuffer(self.file.alloc_dma_buffer(len))
    }

    async fn write_at(&self, buffer: DmaIoBuffer, position: u64) -> IoResult<usize> {
        let alignment = self.alignment() as u64;
        let len = buffer.0.len() as u64;
        if position % alignment != 0 || len % alignment != 0 {
            let detail = std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unaligned write of {len} bytes at {position}"),
            );
            return Err(IoError::new("write", &self.path, detail));
        }
        let written = (self.file.write_at(buffer.0, position).await)
            .map_err(|e| glommio_error("write", &self.path, e))?;
        // A short O_DIRECT write is a failed write: the caller rolls back instead of counting
        // bytes as stable that may not be in the file.
        if (written as u64) < len {
            let detail = std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at {position}"),
            );
            return Err(IoError::new("write", &self.path, detail));
        }
        Ok(written)
    }

    async fn read_at(&self, position: u64, len: usize) -> IoResult<ReadResult> {
        (self.file.read_at(position, len).await).map_err(|e| glommio_error("read", &self.path, e))
    }

    async fn sync(&self) -> IoResult<()> {
        (self.file.fdatasync().await).map_err(|e| glommio_error("fdatasync", &self.path, e))
    }

    async fn truncate(&self, len: u64) -> IoResult<()> {
        (self.file.truncate(len).await).map_err(|e| glommio_error("truncate", &self.path, e))
    }

    async fn size(&self) -> IoResult<u64> {
        (self.file.file_size().await).map_err(|e| glommio_error("stat", &self.path, e))
    }

    fn path(&self) -> &Path {
        &self.path
    }

    async fn close(self) -> IoResult<()> {
        (self.file.close().await).map_err(|e| glommio_error("close", &self.path, e))
    }
}

impl Io for DmaIo {
    type File = DmaIoFile;

    async fn open(&self, path: &Path, create: bool) -> IoResult<DmaIoFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(|e| glommio_error("open", path, e))?;
        Ok(DmaIoFile { file, path: path.to_path_buf() })
    }

    async fn remove(&self, path: &Path) -> IoResult<()> {
        std::fs::remove_file(path).map_err(|e| IoError::new("remove", path, e))
    }

    async fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        std::fs::rename(from, to).map_err(|e| IoError::new("rename", from, e))?;
        if let Some(dir) = to.parent() {
            sync_directory(dir)?;
        }
        Ok(())
    }

    async fn list(&self, dir: &Path) -> IoResult<Vec<String>> {
        let entries = std::fs::read_dir(dir).map_err(|e| IoError::new("list", dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| IoError::new("list", dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn create_dir_all(&self, dir: &Path) -> IoResult<()> {
        std::fs::create_dir_all(dir).map_err(|e| IoError::new("create_dir_all", dir, e))
    }

    async fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// fsyncs a directory so that entries created, renamed or removed in it survive power loss.
fn sync_directory(dir: &Path) -> IoResult<()> {
    let handle = std::fs::File::open(dir).map_err(|e| IoError::new("open dir", dir, e))?;
    handle.sync_all().map_err(|e| IoError::new("fsync dir", dir, e))
}

/// How much DMA memory each executor registers with io_uring, and how that was made to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoMemoryPlan {
    /// Bytes of `io_memory` to give each executor.
    pub io_memory_per_shard_bytes: usize,
    /// `RLIMIT_MEMLOCK` (soft) in force after planning, or `None` when unlimited.
    pub memlock_limit_bytes: Option<u64>,
    /// True when the soft limit was raised by this process.
    pub raised_limit: bool,
}

/// Bytes of locked memory kept free for io_uring rings and everything else that locks memory.
const MEMLOCK_RESERVE_BYTES: u64 = 1024 * 1024;

/// Smallest io_memory worth registering per shard.
const IO_MEMORY_MIN_BYTES: usize = 512 * 1024;

/// Fits `wanted_per_shard` bytes of io_memory for `shards` executors under `RLIMIT_MEMLOCK`:
/// raises the soft limit (and the hard one, when the process has CAP_SYS_RESOURCE) when that is
/// enough, otherwise shrinks the per-shard figure. Logs which it did.
pub fn plan_io_memory(wanted_per_shard: usize, shards: usize) -> IoMemoryPlan {
    let shards = shards.max(1) as u64;
    let needed = wanted_per_shard as u64 * shards + MEMLOCK_RESERVE_BYTES;
    let Some(limit) = memlock_limit() else {
        tracing::warn!("getrlimit(RLIMIT_MEMLOCK) failed; keeping io_memory {wanted_per_shard}");
        return IoMemoryPlan {
            io_memory_per_shard_bytes: wanted_per_shard,
            memlock_limit_bytes: None,
            raised_limit: false,
        };
    };
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= needed {
        let memlock_limit_bytes = (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur);
        return IoMemoryPlan {
            io_memory_per_shard_bytes: wanted_per_shard,
            memlock_limit_bytes,
            raised_limit: false,
        };
    }
    let hard = if limit.rlim_max == libc::RLIM_INFINITY { needed } else { limit.rlim_max.max(needed) };
    let raised =
        set_memlock_limit(needed, hard) || set_memlock_limit(needed.min(limit.rlim_max), limit.rlim_max);
    let current = memlock_limit().map_or(limit.rlim_cur, |l| l.rlim_cur);
    if raised && current >= needed {
        tracing::info!(limit = current, "raised RLIMIT_MEMLOCK to fit io_memory");
        return IoMemoryPlan {
            io_memory_per_shard_bytes: wanted_per_shard,
            memlock_limit_bytes: Some(current),
            raised_limit: true,
        };
    }
    let available = current.saturating_sub(MEMLOCK_RESERVE_BYTES) / shards;
    let per_shard =
        (available as usize).clamp(IO_MEMORY_MIN_BYTES, wanted_per_shard.max(IO_MEMORY_MIN_BYTES)) & !4095;
    tracing::info!(
        memlock = current,
        wanted = wanted_per_shard,
        granted = per_shard,
        "RLIMIT_MEMLOCK too low and not raisable; shrank io_memory per shard to fit"
    );
    IoMemoryPlan {
        io_memory_per_shard_bytes: per_shard,
        memlock_limit_bytes: Some(current),
        raised_limit: false,
    }
}

fn memlock_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0).then_some(limit)
}

fn set_memlock_limit(soft: u64, hard: u64) -> bool {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) == 0 }
}

/// Runs `make()`'s future to completion on a new glommio executor thread (unpinned), with
/// `io_memory` fitted under `RLIMIT_MEMLOCK` by [`plan_io_memory`]. For tools, tests and
/// benchmarks; the server builds its pinned executors in `shard`.
pub fn run_local<G, F, T>(name: &str, wanted_io_memory_bytes: usize, make: G) -> std::io::Result<T>
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let plan = plan_io_memory(wanted_io_memory_bytes, 1);
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name(name)
        .io_memory(plan.io_memory_per_shard_bytes)
        .spawn(make)
        .map_err(std::io::Error::from)?;
    handle.join().map_err(std::io::Error::from)
}
