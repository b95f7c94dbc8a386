//! (stub: helper B's chunk builder replaces this file)
#![allow(missing_docs, unused_variables)]
#[derive(Debug)]
pub struct ChunkError;
impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chunk")
    }
}
pub fn deliver_frames(
    subscription_id: u8,
    version: u16,
    committed_offset: u64,
    batches: &[u8],
    start_offset: u64,
    next_offset: u64,
    out: &mut Vec<u8>,
) -> Result<u32, ChunkError> {
    Ok(0)
}
