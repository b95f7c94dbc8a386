//! Planned reads: a sequential reader's next stretch of a log cut into chunks that start and end
//! on batch boundaries the index knows, so that several chunks can be read at once (each one an
//! O_DIRECT read of exactly its bytes) instead of each read waiting for the one before it to
//! say where the next batch starts.
//!
//! Runs on the partition's owner shard, like the rest of the log. Invariants: a chunk lies inside
//! one segment and below its visible mark when planned; its bytes are whole batches with dense
//! offsets `first..next`, checked when read (a mismatch is reported as corruption, never served).

use super::{visible_mark, PartitionLog, StorageError, StorageResult};
use crate::io::{Io, IoFile};
use crate::model::Offset;
use crate::protocol::batch::BatchHeader;
use crate::storage::LogRead;

/// One planned read: the batches `first..next`, at `position..position + len` of a segment file.
#[derive(Clone)]
pub struct ReadChunk<F> {
    /// Offset of the first batch.
    pub first: Offset,
    /// Offset after the last batch.
    pub next: Offset,
    position: u64,
    len: usize,
    file: std::rc::Rc<F>,
}

impl<F> ReadChunk<F> {
    /// Bytes the chunk reads.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a plan has at least one batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<I: Io> PartitionLog<I> {
    /// Plans a read of about `chunk_bytes` from the batch holding `offset`. The chunk starts at
    /// the index entry at or before it (so it may begin a little before `offset`) and ends at an
    /// index entry or the segment's visible end: the next chunk can be planned at once from
    /// `next`. `None` when `offset` is below the log start or nothing visible holds it.
    pub fn plan_read(&self, offset: Offset, chunk_bytes: usize) -> Option<ReadChunk<I::File>> {
        let state = self.state.borrow();
        let i = state.segments.partition_point(|s| s.base_offset <= offset).checked_sub(1)?;
        let segment = &state.segments[i];
        let visible = visible_mark(&state, i, self.config.fsync);
        if offset >= visible.next_offset {
            return None;
        }
        let entries = segment.index.entries();
        let (first, position) = segment.index.lookup_offset(offset);
        let want_end = position + chunk_bytes.max(1) as u64;
        let after = entries.partition_point(|e| u64::from(e.position) < want_end);
        let (next, end) = match entries.get(after) {
            Some(e) if u64::from(e.position) < visible.len => {
                (segment.base_offset + u64::from(e.relative_offset), u64::from(e.position))
            }
            _ => (visible.next_offset, visible.len),
        };
        if end <= position || next <= offset {
            return None;
        }
        Some(ReadChunk { first, next, position, len: (end - position) as usize, file: segment.log.clone() })
    }

    /// Reads a planned chunk and checks that it holds exactly its batches.
    pub async fn read_chunk(
        &self,
        chunk: &ReadChunk<I::File>,
    ) -> StorageResult<LogRead<<I::File as IoFile>::ReadBuf>> {
        let buffer = chunk.file.read_at(chunk.position, chunk.len).await?;
        let corrupt = |reason| StorageError::Corrupt { position: chunk.position, reason };
        if buffer.len() != chunk.len {
            return Err(corrupt("short read of a planned chunk"));
        }
        let (mut at, mut offset) = (0_usize, chunk.first);
        while at < buffer.len() {
            let header = BatchHeader::decode(&buffer[at..])?;
            if header.base_offset != offset {
                return Err(corrupt("batch offset out of sequence in a planned chunk"));
            }
            at += header.length as usize;
            offset = header.next_offset();
        }
        if at != buffer.len() || offset != chunk.next {
            return Err(corrupt("a planned chunk does not end on its last batch"));
        }
        Ok(LogRead::new(buffer, 0..chunk.len, chunk.first, chunk.next))
    }
}
