//! What a poll answer is made of: a [`PayloadPart`] is a run of whole batches, in an O_DIRECT
//! read buffer, in a produce frame (kept by the batch cache, [`super::cache`]), or (for answers
//! from another shard) in an owned copy. Parts are written to the socket from where they are.
//!
//! Lives on the shard that owns the partition (`Rc`, never crosses cores). Invariant: a part
//! holds whole batches with dense offsets `first_offset..next_offset`.

use std::ops::Deref;
use std::rc::Rc;

use glommio::io::ReadResult;

use crate::model::Offset;
use crate::protocol::batch::BatchHeader;
use crate::server::frame_pool::FrameBuf;
use crate::storage::LogRead;

/// A produce frame shared by the batch cache and the poll answers sent from it.
#[derive(Clone)]
pub struct SharedFrame(Rc<FrameBuf>);

impl Deref for SharedFrame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl SharedFrame {
    /// Bytes the frame's allocation holds.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// Whole batches in a produce frame held by the batch cache.
pub type FrameSlice = LogRead<SharedFrame>;

/// Batch bytes of a poll answer.
pub enum PayloadPart {
    /// Whole batches in an O_DIRECT read buffer.
    Read(LogRead<ReadResult>),
    /// Whole batches in a produce frame kept by the batch cache.
    Frame(FrameSlice),
    /// Whole batches copied out of another shard's buffers.
    Owned(Vec<u8>),
}

impl PayloadPart {
    /// A produce frame whose `range` holds whole batches with offsets `first..next`.
    pub fn frame(frame: FrameBuf, range: std::ops::Range<usize>, first: Offset, next: Offset) -> Self {
        PayloadPart::Frame(FrameSlice::new(SharedFrame(Rc::new(frame)), range, first, next))
    }

    /// Another view of the same batches, sharing the buffer (`None` for an owned copy).
    pub fn clone_part(&self) -> Option<PayloadPart> {
        match self {
            PayloadPart::Read(read) => Some(PayloadPart::Read(read.clone())),
            PayloadPart::Frame(slice) => Some(PayloadPart::Frame(slice.clone())),
            PayloadPart::Owned(_) => None,
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            PayloadPart::Read(read) => read.bytes(),
            PayloadPart::Frame(slice) => slice.bytes(),
            PayloadPart::Owned(bytes) => bytes,
        }
    }

    /// The offset of the first batch (`None` for an owned copy, which is never split).
    pub fn first_offset(&self) -> Option<Offset> {
        match self {
            PayloadPart::Read(read) => Some(read.first_offset),
            PayloadPart::Frame(slice) => Some(slice.first_offset),
            PayloadPart::Owned(_) => None,
        }
    }

    /// The offset after the last batch (`None` for an owned copy).
    pub fn next_offset(&self) -> Option<Offset> {
        match self {
            PayloadPart::Read(read) => Some(read.next_offset),
            PayloadPart::Frame(slice) => Some(slice.next_offset),
            PayloadPart::Owned(_) => None,
        }
    }

    /// The byte position where the batch with base offset `offset` starts, if one does.
    pub fn batch_position(&self, offset: Offset) -> Option<usize> {
        let bytes = self.bytes();
        let mut at = 0;
        while at < bytes.len() {
            let header = BatchHeader::decode(&bytes[at..]).ok()?;
            if header.base_offset >= offset {
                return (header.base_offset == offset).then_some(at);
            }
            at += header.length as usize;
        }
        None
    }

    /// The batches from the one holding `offset` on, sharing the buffer (`None` when no batch
    /// here holds it, or for an owned copy).
    pub fn from_offset(&self, offset: Offset) -> Option<PayloadPart> {
        let bytes = self.bytes();
        let mut at = 0;
        while at < bytes.len() {
            let header = BatchHeader::decode(&bytes[at..]).ok()?;
            if header.next_offset() > offset {
                if header.base_offset > offset {
                    return None;
                }
                let mut whole = self.clone_part()?;
                return match at {
                    0 => Some(whole),
                    _ => whole.split_off(at, header.base_offset),
                };
            }
            at += header.length as usize;
        }
        None
    }

    /// Cuts at `at` (a batch boundary, the start of offset `at_offset`): `self` keeps the bytes
    /// before, the returned part (sharing the same buffer) the batches after, if any.
    pub fn split_off(&mut self, at: usize, at_offset: Offset) -> Option<PayloadPart> {
        match self {
            PayloadPart::Read(read) => read.split_off(at, at_offset).map(PayloadPart::Read),
            PayloadPart::Frame(slice) => slice.split_off(at, at_offset).map(PayloadPart::Frame),
            PayloadPart::Owned(_) => None,
        }
    }
}
