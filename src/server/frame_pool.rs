//! Reusable request-frame buffers, one small pool per thread.
//!
//! A produce frame is read from the socket into a 16-byte aligned buffer, handed to the
//! partition's owner (on this shard or, moved, on another) and dropped once the batches are
//! buffered for the segment. Allocating a fresh megabyte for every frame costs a zero-fill and
//! page faults on first touch; a [`FrameBuf`] instead goes back to the pool of the thread that
//! drops it, keeping its initialised length, so the next frame of the same size reuses it with
//! neither. Safe code only: a pooled buffer is shrunk with `resize` (which only moves the
//! length) and grown with `resize` (which fills only the new part).
//!
//! Runs on every shard thread (and on whichever thread drops a frame). Invariants: a pool holds at
//! most [`POOL_BUFFERS_MAX`] buffers and [`POOL_BYTES_MAX`] bytes; buffers smaller than
//! [`POOLED_BYTES_MIN`] or larger than [`POOLED_BYTES_MAX`] are never pooled; a taken buffer's
//! contents past the frame header are stale until the caller overwrites them.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use rkyv::util::AlignedVec;

/// Most buffers one thread keeps.
pub const POOL_BUFFERS_MAX: usize = 8;
/// Most bytes (capacity) one thread keeps.
pub const POOL_BYTES_MAX: usize = 24 * 1024 * 1024;
/// Frames smaller than this are allocated plainly (cheap, and most are small requests).
pub const POOLED_BYTES_MIN: usize = 64 * 1024;
/// Frames larger than this are allocated plainly and freed (rare; would pin memory).
pub const POOLED_BYTES_MAX: usize = 4 * 1024 * 1024;

thread_local! {
    static POOL: RefCell<Vec<AlignedVec<16>>> = const { RefCell::new(Vec::new()) };
}

/// A request frame's buffer: an [`AlignedVec`] that returns to a pool when dropped.
pub struct FrameBuf {
    bytes: Option<AlignedVec<16>>,
}

impl FrameBuf {
    /// A buffer of exactly `len` bytes. From the pool when one fits; its bytes are then stale
    /// (not zeroed): the caller overwrites all of them.
    pub fn take(len: usize) -> FrameBuf {
        let pooled = if (POOLED_BYTES_MIN..=POOLED_BYTES_MAX).contains(&len) {
            POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                // Prefer a buffer already initialised to at least `len` (no fill at all).
                let index = pool
                    .iter()
                    .position(|buffer| buffer.len() >= len)
                    .or_else(|| pool.iter().position(|buffer| buffer.capacity() >= len));
                index.map(|index| pool.swap_remove(index))
            })
        } else {
            None
        };
        let mut bytes = pooled.unwrap_or_else(|| AlignedVec::with_capacity(len));
        bytes.resize(len, 0);
        FrameBuf { bytes: Some(bytes) }
    }

    /// How many buffers this thread's pool holds (for tests and stats).
    pub fn pooled() -> usize {
        POOL.with(|pool| pool.borrow().len())
    }
}

impl Deref for FrameBuf {
    type Target = AlignedVec<16>;

    fn deref(&self) -> &AlignedVec<16> {
        self.bytes.as_ref().unwrap_or_else(|| unreachable!("a FrameBuf holds its buffer until dropped"))
    }
}

impl DerefMut for FrameBuf {
    fn deref_mut(&mut self) -> &mut AlignedVec<16> {
        self.bytes.as_mut().unwrap_or_else(|| unreachable!("a FrameBuf holds its buffer until dropped"))
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        let Some(bytes) = self.bytes.take() else { return };
        if !(POOLED_BYTES_MIN..=POOLED_BYTES_MAX).contains(&bytes.capacity()) {
            return;
        }
        // `try_with`: during thread teardown the pool may already be gone; then just free.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let held: usize = pool.iter().map(AlignedVec::capacity).sum();
            if pool.len() < POOL_BUFFERS_MAX && held + bytes.capacity() <= POOL_BYTES_MAX {
                pool.push(bytes);
            }
        });
    }
}

impl std::fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameBuf").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_a_dropped_buffer_without_losing_length_or_alignment() {
        let len = 256 * 1024;
        let first = FrameBuf::take(len);
        let address = first.as_ptr() as usize;
        assert_eq!(first.len(), len);
        assert_eq!(address % 16, 0);
        drop(first);
        assert_eq!(FrameBuf::pooled(), 1);
        let second = FrameBuf::take(len - 100);
        assert_eq!(second.as_ptr() as usize, address, "the pooled buffer is reused");
        assert_eq!(second.len(), len - 100);
        assert_eq!(FrameBuf::pooled(), 0);
        drop(second);
        let third = FrameBuf::take(len);
        assert_eq!(third.len(), len);
    }

    #[test]
    fn small_and_huge_frames_are_not_pooled() {
        drop(FrameBuf::take(100));
        drop(FrameBuf::take(POOLED_BYTES_MAX + 1));
        assert_eq!(FrameBuf::pooled(), 0);
    }

    #[test]
    fn the_pool_is_bounded() {
        let buffers: Vec<FrameBuf> =
            (0..POOL_BUFFERS_MAX + 4).map(|_| FrameBuf::take(POOLED_BYTES_MAX)).collect();
        drop(buffers);
        assert!(FrameBuf::pooled() <= POOL_BUFFERS_MAX);
        let held = POOL.with(|pool| pool.borrow().iter().map(AlignedVec::capacity).sum::<usize>());
        assert!(held <= POOL_BYTES_MAX);
    }
}
