//! The I/O layer: a small async file trait that storage is written against, and its two
//! implementations.
//!
//! * [`dma::DmaIo`] is the production one: glommio DMA files (O_DIRECT through io_uring), aligned
//!   buffers from the executor's registered `io_memory`, and the start-up work glommio needs on
//!   these machines (priming the polled-I/O probe, sizing `io_memory` under `RLIMIT_MEMLOCK`).
//! * [`fault::FaultIo`] is an in-memory file system for tests that remembers which bytes were
//!   made durable by `sync`, and can tear a chosen write at a chosen byte, fail a chosen fsync, and
//!   "crash": every file falls back to its durable contents plus a seeded random subset of the
//!   writes issued since (each kept whole, dropped or torn).
//!
//! Both run on the calling core only: files and buffers are `!Send` and never leave the executor
//! that opened them. Futures are not `Send` either, which is why the trait uses plain `async fn`.
//!
//! Invariants every implementation keeps: `write_at` takes a position and a buffer length that
//! are multiples of [`IoFile::alignment`]; `read_at` takes any position and length and returns
//! fewer bytes only at the end of the file; errors carry the operation and the path.

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};

pub mod dma;
pub mod fault;

/// An I/O failure with the operation and path it happened on.
#[derive(Debug)]
pub struct IoError {
    /// What was being done ("write", "fdatasync", ...).
    pub operation: &'static str,
    /// The file or directory involved.
    pub path: PathBuf,
    /// The underlying OS error.
    pub source: std::io::Error,
}

impl IoError {
    /// Wraps `source` with its context.
    pub fn new(operation: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self { operation, path: path.to_path_buf(), source }
    }

    /// True when the device is out of space (ENOSPC or EDQUOT).
    pub fn is_out_of_space(&self) -> bool {
        matches!(self.source.raw_os_error(), Some(28) | Some(122))
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.operation, self.path.display(), self.source)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Result of an I/O operation.
pub type IoResult<T> = Result<T, IoError>;

/// An aligned, writable buffer handed to [`IoFile::write_at`].
pub trait IoBuffer: AsRef<[u8]> + AsMut<[u8]> + 'static {
    /// Shortens the buffer to `len` bytes (destructive; `len` must not exceed the current length).
    fn trim(&mut self, len: usize);
}

/// A file opened through an [`Io`].
pub trait IoFile: 'static {
    /// The aligned buffer type this file writes from.
    type Buffer: IoBuffer;
    /// The bytes a read returns: cheap to clone, dereferences to the bytes read.
    type ReadBuf: Deref<Target = [u8]> + Clone + 'static;

    /// The O_DIRECT alignment of write positions and lengths (a power of two).
    fn alignment(&self) -> usize;
    /// Allocates an aligned buffer of `len` bytes (contents unspecified).
    fn alloc(&self, len: usize) -> Self::Buffer;
    /// Writes the whole buffer at `position`; both must be aligned. Returns the bytes written.
    async fn write_at(&self, buffer: Self::Buffer, position: u64) -> IoResult<usize>;
    /// Reads up to `len` bytes at `position` (any alignment); short only at the end of file.
    async fn read_at(&self, position: u64, len: usize) -> IoResult<Self::ReadBuf>;
    /// Makes every completed write durable (fdatasync).
    async fn sync(&self) -> IoResult<()>;
    /// Sets the file length.
    async fn truncate(&self, len: u64) -> IoResult<()>;
    /// The current file length.
    async fn size(&self) -> IoResult<u64>;
    /// The path this file was opened with.
    fn path(&self) -> &Path;
    /// Closes the file.
    async fn close(self) -> IoResult<()>;
}

/// A file system: opens files and manages directories.
pub trait Io: Clone + 'static {
    /// The file type this I/O opens.
    type File: IoFile;

    /// Opens `path` for reading and writing, creating it when `create` is set.
    async fn open(&self, path: &Path, create: bool) -> IoResult<Self::File>;
    /// Removes a file.
    async fn remove(&self, path: &Path) -> IoResult<()>;
    /// Renames a file, replacing `to` if it exists.
    async fn rename(&self, from: &Path, to: &Path) -> IoResult<()>;
    /// Lists the file names (not paths) in `dir`, sorted.
    async fn list(&self, dir: &Path) -> IoResult<Vec<String>>;
    /// Creates `dir` and its parents.
    async fn create_dir_all(&self, dir: &Path) -> IoResult<()>;
    /// True when `path` exists.
    async fn exists(&self, path: &Path) -> bool;
}

/// Rounds `value` down to a multiple of `alignment` (a power of two).
pub const fn align_down(value: u64, alignment: usize) -> u64 {
    value & !(alignment as u64 - 1)
}

/// Rounds `value` up to a multiple of `alignment` (a power of two).
pub const fn align_up(value: u64, alignment: usize) -> u64 {
    align_down(value + alignment as u64 - 1, alignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_down(4097, 4096), 4096);
        assert_eq!(align_up(4097, 4096), 8192);
        assert_eq!(align_up(4096, 4096), 4096);
        assert_eq!(align_up(0, 4096), 0);
    }
}
