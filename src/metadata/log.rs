//! The metadata log: every [`MetadataOp`] ever committed, in order, durably.
//!
//! What it owns: a [`PartitionLog`] in `data_dir/metadata/`, opened with `fsync always` and
//! 64 MiB segments. Each op is one batch holding one record whose payload is the op's rkyv
//! archive; the batch CRC covers it, and the batch's producer id carries
//! [`METADATA_OP_FORMAT_VERSION`] so a future format can be told apart. Segments are never
//! deleted (metadata is small; compaction into a snapshot is future work).
//!
//! Which core: the controller shard alone opens the log and calls [`MetadataLog::commit`]; it is
//! `!Send` like every log. Commits must not overlap: `commit` takes the catalog by `&mut`, so the
//! controller keeps its catalog behind an async mutex held across the commit, then broadcasts
//! the new catalog.
//!
//! Invariants: the catalog equals the replay of the log; `catalog.revision` equals the log's next
//! offset (op `n` is at offset `n` and produces revision `n + 1`), checked on every commit and
//! replay; an op is applied to a clone first, so an invalid op touches neither the log nor the
//! catalog; an op is acknowledged only once fsynced. A failed fsync poisons the log (as any
//! [`PartitionLog`]): later commits fail until the broker restarts, and the failed op may or may
//! not be there after the restart, as its client was told (an error, not a refusal). Replay
//! refuses, naming the offset, any op that does not decode or apply: skipping it would serve a
//! catalog missing streams or users.

use std::path::Path;

use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;

use super::catalog::{Catalog, MetadataOp};
use super::MetadataError;
use crate::io::Io;
use crate::protocol::batch::{self, Batch, BatchBuilder, BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::storage::{FsyncPolicy, LogConfig, PartitionLog};

/// The metadata log's directory under the data directory.
pub const METADATA_DIR: &str = "metadata";

/// Segment size of the metadata log.
pub const METADATA_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Format version of the archived [`MetadataOp`], written as each batch's producer id.
pub const METADATA_OP_FORMAT_VERSION: u64 = 1;

/// Bytes read per step while replaying.
const REPLAY_READ_BYTES: usize = 1024 * 1024;

/// The durable log of catalog changes. See the module documentation.
pub struct MetadataLog<I: Io> {
    log: PartitionLog<I>,
}

impl<I: Io> MetadataLog<I> {
    /// Opens (creating if missing) the metadata log under `data_dir` and replays it into a
    /// catalog. Fails on a storage error or on any op that does not decode or apply.
    pub async fn open(io: I, data_dir: &Path) -> Result<(MetadataLog<I>, Catalog), MetadataError> {
        let config = LogConfig {
            fsync: FsyncPolicy::Always,
            segment_bytes: METADATA_SEGMENT_BYTES,
            ..LogConfig::default()
        };
        let (log, _repairs) = PartitionLog::open(io, &data_dir.join(METADATA_DIR), config).await?;
        let catalog = replay(&log).await?;
        tracing::info!(
            dir = %log.dir().display(),
            revision = catalog.revision,
            streams = catalog.streams.len(),
            users = catalog.users.len(),
            "metadata replayed"
        );
        Ok((MetadataLog { log }, catalog))
    }

    /// Applies `op` to a clone of `catalog`, appends it durably (fsynced), then replaces
    /// `catalog` with the clone. An invalid op is refused before anything is written; on a
    /// storage error `catalog` is unchanged.
    pub async fn commit(&self, catalog: &mut Catalog, op: MetadataOp) -> Result<(), MetadataError> {
        let mut next = catalog.clone();
        next.apply(&op)?;
        let mut batch = encode(&op)?;
        let info = self.log.append(&mut batch).await?;
        assert_eq!(
            info.base_offset, catalog.revision,
            "metadata log offset and catalog revision diverged (overlapping commits?)"
        );
        assert_eq!(next.revision, info.last_offset + 1);
        *catalog = next;
        Ok(())
    }

    /// Flushes and closes the log; later commits fail.
    pub async fn close(&self) -> Result<(), MetadataError> {
        Ok(self.log.close().await?)
    }

    /// The directory holding the log's files.
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }
}

/// One batch holding `op`, checked to decode back to `op` before it is written.
fn encode(op: &MetadataOp) -> Result<Vec<u8>, MetadataError> {
    let payload = rkyv::to_bytes::<RkyvError>(op)
        .map_err(|e| MetadataError::InvalidArgument(format!("cannot archive the metadata op: {e}")))?;
    assert_eq!(decode(&payload).as_ref(), Ok(op), "a metadata op must decode to itself");
    let capacity = BATCH_HEADER_BYTES + RECORD_HEADER_BYTES + payload.len() + 64;
    let mut builder = BatchBuilder::with_capacity(METADATA_OP_FORMAT_VERSION, 0, capacity);
    let batch = builder.push_payload(&payload).and_then(|()| builder.finish());
    batch.map_err(|e| MetadataError::Storage(e.into()))
}

/// Decodes an archived op, copying it to aligned memory first (inside a batch it may be at any
/// address).
fn decode(payload: &[u8]) -> Result<MetadataOp, String> {
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<MetadataOp, RkyvError>(&aligned).map_err(|e| e.to_string())
}

/// Replays every op of `log` into a fresh catalog.
async fn replay<I: Io>(log: &PartitionLog<I>) -> Result<Catalog, MetadataError> {
    let mut catalog = Catalog::new();
    let start = log.offsets().start;
    if start != 0 {
        let reason = "the metadata log does not start at offset 0".to_string();
        return Err(MetadataError::Replay { offset: start, reason });
    }
    let mut offset = 0;
    while let Some(read) = log.read(offset, REPLAY_READ_BYTES).await? {
        for found in batch::batches(read.bytes()) {
            let replay_error = |reason: String| MetadataError::Replay { offset, reason };
            let found = found.map_err(|e| replay_error(e.to_string()))?;
            let op = op_of(&found, offset).map_err(replay_error)?;
            catalog.apply(&op).map_err(|e| replay_error(format!("{op:?}: {e}")))?;
            assert_eq!(catalog.revision, offset + 1, "one op per offset");
            offset = found.header().next_offset();
        }
        if offset != read.next_offset {
            let reason = format!("the read ended at {} but its batches at {offset}", read.next_offset);
            return Err(MetadataError::Replay { offset, reason });
        }
    }
    Ok(catalog)
}

/// The op in `found`, the batch expected at `offset`.
fn op_of(found: &Batch<'_>, offset: u64) -> Result<MetadataOp, String> {
    let header = found.header();
    if header.base_offset != offset {
        return Err(format!("batch has base offset {}, expected {offset}", header.base_offset));
    }
    if header.producer_id != METADATA_OP_FORMAT_VERSION {
        return Err(format!(
            "op format version {} is not {METADATA_OP_FORMAT_VERSION} (written by another release?)",
            header.producer_id
        ));
    }
    let mut records = found.records();
    match (records.next(), records.next()) {
        (Some(record), None) if header.record_count == 1 => decode(record.payload),
        _ => Err(format!("batch holds {} records, expected 1", header.record_count)),
    }
}
