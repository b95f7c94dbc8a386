//! The aligned appender: turns a stream of appended bytes into O_DIRECT-sized writes.
//!
//! Owned by one segment on the shard that owns the partition. Appended bytes are copied once into
//! aligned chunks of `chunk_bytes`; a batch may straddle chunks. [`AlignedAppender::take_writes`]
//! hands out every buffered chunk as a disjoint, aligned write; the last, partly filled block is
//! zero-padded for its write and its bytes are kept so the next write rewrites that block with more
//! data behind them.
//!
//! Invariants:
//! * `written_len <= buffered_len`; bytes below `written_len` are in the file (unless a later
//!   write failed and [`AlignedAppender::rollback`] was called, which moves `buffered_len` back).
//! * Writes handed out by one `take_writes` call never overlap each other; they overlap the
//!   previous call's last block at most, so calls must complete in order (the log's flush lock).
//! * Every write position and length is a multiple of the file's alignment.

use std::rc::Rc;

use crate::io::{align_down, align_up, IoBuffer, IoFile};

/// One aligned write: `buffer` goes to the file at `position`.
pub(crate) struct PendingWrite<B> {
    pub(crate) buffer: B,
    pub(crate) position: u64,
}

/// Buffers appended bytes in aligned chunks for one file.
pub(crate) struct AlignedAppender<F: IoFile> {
    file: Rc<F>,
    alignment: usize,
    chunk_bytes: usize,
    /// Full chunks waiting to be written.
    full: Vec<PendingWrite<F::Buffer>>,
    /// The chunk being filled, its file position (aligned) and how many bytes it holds.
    current: Option<F::Buffer>,
    current_position: u64,
    current_len: usize,
    /// Bytes of the last partial block, kept between `take_writes` and the next append.
    tail: Vec<u8>,
    buffered_len: u64,
    written_len: u64,
}

impl<F: IoFile> AlignedAppender<F> {
    /// An appender for a file whose first `len` bytes are already on disk; `tail` holds the bytes
    /// of the last partial block (`len % alignment` of them).
    pub(crate) fn new(file: Rc<F>, len: u64, tail: &[u8], chunk_bytes: usize) -> Self {
        let alignment = file.alignment();
        assert!(chunk_bytes >= alignment && chunk_bytes % alignment == 0, "chunk {chunk_bytes}");
        assert_eq!(tail.len() as u64, len % alignment as u64, "tail must be the partial block");
        let mut kept = Vec::with_capacity(alignment);
        kept.extend_from_slice(tail);
        Self {
            file,
            alignment,
            chunk_bytes,
            full: Vec::new(),
            current: None,
            current_position: align_down(len, alignment),
            current_len: 0,
            tail: kept,
            buffered_len: len,
            written_len: len,
        }
    }

    /// The file this appender writes.
    pub(crate) fn file(&self) -> &Rc<F> {
        &self.file
    }

    /// Total bytes appended (written or buffered).
    pub(crate) fn buffered_len(&self) -> u64 {
        self.buffered_len
    }

    /// Bytes known to be in the file.
    #[cfg(test)]
    pub(crate) fn written_len(&self) -> u64 {
        self.written_len
    }

    /// Bytes appended but not yet written.
    pub(crate) fn dirty_bytes(&self) -> u64 {
        self.buffered_len - self.written_len
    }

    /// Copies `bytes` into the chunks.
    pub(crate) fn append(&mut self, mut bytes: &[u8]) {
        self.buffered_len += bytes.len() as u64;
        while !bytes.is_empty() {
            let (buffer, len) = self.chunk_with_room();
            let room = buffer.as_ref().len() - len;
            let take = room.min(bytes.len());
            buffer.as_mut()[len..len + take].copy_from_slice(&bytes[..take]);
            self.current_len += take;
            bytes = &bytes[take..];
            self.seal_if_full();
        }
    }

    /// The current chunk (allocating it, seeded with the kept tail, if needed) and its fill.
    fn chunk_with_room(&mut self) -> (&mut F::Buffer, usize) {
        if self.current.is_none() {
            let mut buffer = self.file.alloc(self.chunk_bytes);
            buffer.as_mut()[..self.tail.len()].copy_from_slice(&self.tail);
            self.current_len = self.tail.len();
            self.tail.clear();
            self.current = Some(buffer);
        }
        let len = self.current_len;
        match self.current.as_mut() {
            Some(buffer) => (buffer, len),
            None => unreachable!("current chunk was just installed"),
        }
    }

    fn seal_if_full(&mut self) {
        if self.current_len < self.chunk_bytes {
            return;
        }
        if let Some(buffer) = self.current.take() {
            let position = self.current_position;
            self.full.push(PendingWrite { buffer, position });
            self.current_position += self.chunk_bytes as u64;
            self.current_len = 0;
        }
    }

    /// Hands out every buffered byte as aligned writes, and the length the file will have once
    /// they all complete. The caller must pass that length to [`Self::complete`] on success or call
    /// [`Self::rollback`] on failure before taking writes again.
    pub(crate) fn take_writes(&mut self) -> (Vec<PendingWrite<F::Buffer>>, u64) {
        let mut writes = std::mem::take(&mut self.full);
        if let Some(mut buffer) = self.current.take() {
            let len = self.current_len;
            let padded = align_up(len as u64, self.alignment) as usize;
            let partial_start = align_down(len as u64, self.alignment) as usize;
            buffer.as_mut()[len..padded].fill(0);
            self.tail.clear();
            self.tail.extend_from_slice(&buffer.as_ref()[partial_start..len]);
            buffer.trim(padded);
            writes.push(PendingWrite { buffer, position: self.current_position });
            self.current_position += partial_start as u64;
            self.current_len = 0;
        }
        (writes, self.buffered_len)
    }

    /// Records that the writes of one `take_writes` call, ending at `len`, are in the file.
    pub(crate) fn complete(&mut self, len: u64) {
        assert!(len >= self.written_len && len <= self.buffered_len, "complete {len}");
        self.written_len = len;
    }

    /// Forgets every byte past `written_len` after a failed write. `tail` must hold the file's
    /// bytes of the block containing `written_len` (`written_len % alignment` of them).
    pub(crate) fn rollback(&mut self, tail: &[u8]) {
        assert_eq!(tail.len() as u64, self.written_len % self.alignment as u64);
        self.full.clear();
        self.current = None;
        self.current_len = 0;
        self.current_position = align_down(self.written_len, self.alignment);
        self.tail.clear();
        self.tail.extend_from_slice(tail);
        self.buffered_len = self.written_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::fault::FaultIo;
    use crate::io::Io;
    use futures_lite::future::block_on;
    use std::path::Path;

    async fn write_all<F: IoFile>(appender: &mut AlignedAppender<F>) {
        let (writes, len) = appender.take_writes();
        for write in writes {
            let expected = write.buffer.as_ref().len();
            let done = appender.file().write_at(write.buffer, write.position).await;
            assert_eq!(done.ok(), Some(expected));
        }
        appender.complete(len);
    }

    #[test]
    fn appends_straddle_chunks_and_rewrite_the_partial_block() {
        block_on(async {
            let io = FaultIo::new();
            let _ = io.create_dir_all(Path::new("/d")).await;
            let file = Rc::new(io.open(Path::new("/d/f"), true).await.ok().unwrap());
            let mut appender = AlignedAppender::new(file.clone(), 0, &[], 8192);
            let mut expected = Vec::new();
            for round in 0..50_u32 {
                let piece: Vec<u8> = (0..(round * 397 % 9000 + 1)).map(|i| (i ^ round) as u8).collect();
                appender.append(&piece);
                expected.extend_from_slice(&piece);
                if round % 3 == 0 {
                    write_all(&mut appender).await;
                }
            }
            write_all(&mut appender).await;
            assert_eq!(appender.written_len(), expected.len() as u64);
            let read = file.read_at(0, expected.len()).await.ok().unwrap();
            assert_eq!(&read[..], &expected[..]);
        });
    }
}
