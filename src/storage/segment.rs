//! One segment: a log file of whole batches, its index files, and opening it after a crash.
//!
//! Owned by the partition log on the shard that owns the partition. A segment covers offsets
//! `base_offset..next_offset`; its log file `NNNNNNNNNNNNNNNNNNNN.log` (20-digit base offset)
//! holds the batches back to back, `.index` and `.timeindex` hold the sparse index.
//!
//! Invariants: `committed <= stable <= (len, next_offset)`; bytes below `stable.len` are whole,
//! CRC-checked batches with dense offsets in the file; only the active segment has a writer.
//! Recovery ([`open_segment`]) restores these invariants from whatever a crash left: it checks the
//! last index point it can trust against the log, verifies every batch after it, truncates the
//! first bad byte and everything behind it, and rewrites an index that disagrees with the log.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::appender::AlignedAppender;
use super::index::{SegmentIndex, INDEX_HEADER_BYTES};
use super::{LogConfig, Repair, StorageResult};
use crate::constants::RECOVERY_READ_BYTES;
use crate::io::{align_down, Io, IoFile};
use crate::model::{Offset, TimestampUs};
use crate::protocol::batch::{self, BatchError, BatchHeader, BATCH_HEADER_BYTES};

/// A durability mark: the log's valid length and the next offset at that length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Mark {
    pub(crate) len: u64,
    pub(crate) next_offset: Offset,
}

/// The writers of the active segment.
pub(crate) struct SegmentWriter<F: IoFile> {
    pub(crate) log: AlignedAppender<F>,
    pub(crate) offset_index: AlignedAppender<F>,
    pub(crate) time_index: AlignedAppender<F>,
    /// Index entries already handed to the index appenders.
    pub(crate) index_entries_appended: usize,
}

/// One segment of a partition log.
pub(crate) struct Segment<F: IoFile> {
    pub(crate) base_offset: Offset,
    pub(crate) log: Rc<F>,
    pub(crate) index: SegmentIndex,
    /// End of everything appended, buffered or not.
    pub(crate) end: Mark,
    /// End of what is written to the file.
    pub(crate) stable: Mark,
    /// End of what is fsynced.
    pub(crate) committed: Mark,
    /// Append time of the first and last batch (None while empty).
    pub(crate) first_append_us: Option<TimestampUs>,
    pub(crate) last_append_us: Option<TimestampUs>,
    pub(crate) writer: Option<SegmentWriter<F>>,
}

/// The file names of the segment starting at `base_offset`.
pub(crate) fn segment_paths(dir: &Path, base_offset: Offset) -> [PathBuf; 3] {
    let stem = format!("{base_offset:020}");
    [
        dir.join(format!("{stem}.log")),
        dir.join(format!("{stem}.index")),
        dir.join(format!("{stem}.timeindex")),
    ]
}

/// Parses a segment log file name back into its base offset.
pub(crate) fn parse_log_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".log")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

impl<F: IoFile> Segment<F> {
    /// Bytes in the segment (appended, buffered or not).
    pub(crate) fn len(&self) -> u64 {
        self.end.len
    }

    /// True when no batch was ever appended.
    pub(crate) fn is_empty(&self) -> bool {
        self.end.len == 0
    }

    /// Records a batch that was just appended at `position` (index and timestamps).
    pub(crate) fn note_append(&mut self, header: &BatchHeader, position: u64) {
        self.index.observe(header.base_offset, position, header.append_timestamp_us);
        self.first_append_us.get_or_insert(header.append_timestamp_us);
        self.last_append_us = Some(header.append_timestamp_us);
        self.end = Mark { len: position + u64::from(header.length), next_offset: header.next_offset() };
    }
}

/// Creates a new, empty active segment.
pub(crate) async fn create_segment<I: Io>(
    io: &I,
    dir: &Path,
    base_offset: Offset,
    config: &LogConfig,
) -> StorageResult<Segment<I::File>> {
    let [log_path, ..] = segment_paths(dir, base_offset);
    let log = Rc::new(io.open(&log_path, true).await?);
    log.truncate(0).await?;
    let index = SegmentIndex::new(base_offset, config.index_interval_bytes);
    let mark = Mark { len: 0, next_offset: base_offset };
    let mut segment = Segment {
        base_offset,
        log,
        index,
        end: mark,
        stable: mark,
        committed: mark,
        first_append_us: None,
        last_append_us: None,
        writer: None,
    };
    segment.writer = Some(open_writer(io, dir, &segment, config, true).await?);
    Ok(segment)
}

/// Opens the index appenders and the log appender of a segment that becomes active. With
/// `rewrite_index` the index files are rewritten from the in-memory index.
async fn open_writer<I: Io>(
    io: &I,
    dir: &Path,
    segment: &Segment<I::File>,
    config: &LogConfig,
    rewrite_index: bool,
) -> StorageResult<SegmentWriter<I::File>> {
    let [_, index_path, time_path] = segment_paths(dir, segment.base_offset);
    let chunk = config.write_chunk_bytes;
    let tail = read_tail(&*segment.log, segment.stable.len).await?;
    let log = AlignedAppender::new(segment.log.clone(), segment.stable.len, &tail, chunk);
    let index_chunk = crate::constants::IO_ALIGNMENT_BYTES * 4;
    let entries = segment.index.entries().len();
    let mut appenders = Vec::with_capacity(2);
    for (path, time) in [(index_path, false), (time_path, true)] {
        let file = Rc::new(io.open(&path, true).await?);
        let entry_bytes =
            if time { super::index::TIME_ENTRY_BYTES } else { super::index::OFFSET_ENTRY_BYTES };
        let len = (INDEX_HEADER_BYTES + entries * entry_bytes) as u64;
        let appender = if rewrite_index {
            file.truncate(0).await?;
            let mut appender = AlignedAppender::new(file, 0, &[], index_chunk);
            let mut bytes = segment.index.encode_header(time).to_vec();
            if time {
                segment.index.encode_time_entries(0, &mut bytes);
            } else {
                segment.index.encode_offset_entries(0, &mut bytes);
            }
            appender.append(&bytes);
            appender
        } else {
            let tail = read_tail(&*file, len).await?;
            AlignedAppender::new(file, len, &tail, index_chunk)
        };
        appenders.push(appender);
    }
    let (Some(time_index), Some(offset_index)) = (appenders.pop(), appenders.pop()) else {
        unreachable!("two index appenders were pushed");
    };
    Ok(SegmentWriter { log, offset_index, time_index, index_entries_appended: entries })
}

/// The bytes of the partial last block of a file whose valid length is `len`.
async fn read_tail<F: IoFile>(file: &F, len: u64) -> StorageResult<Vec<u8>> {
    let start = align_down(len, file.alignment());
    let want = (len - start) as usize;
    if want == 0 {
        return Ok(Vec::new());
    }
    let read = file.read_at(start, want).await?;
    if read.len() != want {
        let detail = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short tail read");
        return Err(crate::io::IoError::new("read tail", file.path(), detail).into());
    }
    Ok(read.to_vec())
}

/// What scanning a segment's log found.
struct Scan {
    valid: Mark,
    last_append_us: Option<TimestampUs>,
    first_append_us: Option<TimestampUs>,
    stop: Option<(BatchError, bool)>,
}

/// Opens an existing segment, repairing what a crash left. `expected_base` is the offset the
/// previous segment ends at (the segment's own base for the first one). With `active` the segment
/// keeps writers open for appends.
pub(crate) async fn open_segment<I: Io>(
    io: &I,
    dir: &Path,
    base_offset: Offset,
    active: bool,
    config: &LogConfig,
    repairs: &mut Vec<Repair>,
) -> StorageResult<Segment<I::File>> {
    let [log_path, index_path, time_path] = segment_paths(dir, base_offset);
    let log = Rc::new(io.open(&log_path, false).await?);
    let file_len = log.size().await?;
    let offset_bytes = read_whole(io, &index_path).await?;
    let time_bytes = read_whole(io, &time_path).await?;
    let interval = config.index_interval_bytes;
    let decoded = SegmentIndex::decode(base_offset, interval, &offset_bytes, &time_bytes, file_len);
    let mut index = decoded.clone();
    let (start_offset, start_position) = last_trusted_point(&*log, &mut index).await?;
    let scan = scan_log(&*log, &mut index, start_offset, start_position, file_len).await?;
    if scan.valid.len < file_len {
        let (reason, zero_padding) = match &scan.stop {
            Some((error, zeros)) => (error.to_string(), *zeros),
            None => ("unknown".to_string(), false),
        };
        log.truncate(scan.valid.len).await?;
        repairs.push(Repair::TruncatedTail {
            segment: base_offset,
            position: scan.valid.len,
            dropped_bytes: file_len - scan.valid.len,
            reason,
            zero_padding,
        });
    }
    let index_exact = index.entries() == decoded.entries()
        && offset_bytes.len()
            == INDEX_HEADER_BYTES + index.entries().len() * super::index::OFFSET_ENTRY_BYTES
        && time_bytes.len() == INDEX_HEADER_BYTES + index.entries().len() * super::index::TIME_ENTRY_BYTES;
    if !index_exact {
        repairs.push(Repair::RebuiltIndex {
            segment: base_offset,
            entries: index.entries().len(),
            trusted_from_file: decoded.entries().len().min(index.entries().len()),
        });
    }
    let first_append_us = match index.entries().first() {
        Some(entry) => Some(entry.timestamp_us),
        None => scan.first_append_us,
    };
    let mut segment = Segment {
        base_offset,
        log,
        index,
        end: scan.valid,
        stable: scan.valid,
        committed: scan.valid,
        first_append_us,
        last_append_us: scan.last_append_us,
        writer: None,
    };
    if active || !index_exact {
        let mut writer = open_writer(io, dir, &segment, config, !index_exact).await?;
        if !active {
            flush_index_now(&mut writer).await?;
        } else {
            segment.writer = Some(writer);
        }
    }
    Ok(segment)
}

/// Writes everything buffered in the index appenders of a writer that is being dropped.
async fn flush_index_now<F: IoFile>(writer: &mut SegmentWriter<F>) -> StorageResult<()> {
    for appender in [&mut writer.offset_index, &mut writer.time_index] {
        let (writes, len) = appender.take_writes();
        for write in writes {
            appender.file().write_at(write.buffer, write.position).await?;
        }
        appender.complete(len);
        appender.file().truncate(len).await?;
        appender.file().sync().await?;
    }
    Ok(())
}

async fn read_whole<I: Io>(io: &I, path: &Path) -> StorageResult<Vec<u8>> {
    if !io.exists(path).await {
        return Ok(Vec::new());
    }
    let file = io.open(path, false).await?;
    let len = file.size().await?;
    let bytes = file.read_at(0, len as usize).await?.to_vec();
    file.close().await?;
    Ok(bytes)
}

/// Index points checked against the log before recovery gives up on the index and scans from 0.
const TRUSTED_POINT_ATTEMPTS: usize = 4;

/// Finds the last index entry whose batch header in the log agrees with it, drops it and every
/// entry after it (the scan re-adds them), and returns where the scan starts.
async fn last_trusted_point<F: IoFile>(log: &F, index: &mut SegmentIndex) -> StorageResult<(Offset, u64)> {
    let base = index.lookup_offset(0).0;
    for _ in 0..TRUSTED_POINT_ATTEMPTS {
        let Some(entry) = index.entries().last().copied() else { break };
        index.truncate(index.entries().len() - 1);
        let bytes = log.read_at(u64::from(entry.position), BATCH_HEADER_BYTES).await?;
        if let Ok(header) = BatchHeader::decode(&bytes) {
            let offset = base + u64::from(entry.relative_offset);
            if header.base_offset == offset && header.append_timestamp_us == entry.timestamp_us {
                return Ok((offset, u64::from(entry.position)));
            }
        }
    }
    index.truncate(0);
    Ok((base, 0))
}

/// Verifies every batch from `position` on; stops at the first that is torn, corrupt or out of
/// sequence. Adds index entries for the batches it accepts.
async fn scan_log<F: IoFile>(
    log: &F,
    index: &mut SegmentIndex,
    mut next_offset: Offset,
    mut position: u64,
    file_len: u64,
) -> StorageResult<Scan> {
    let mut scan = Scan {
        valid: Mark { len: position, next_offset },
        last_append_us: None,
        first_append_us: None,
        stop: None,
    };
    let mut last_append = 0;
    let mut want = RECOVERY_READ_BYTES;
    while position < file_len {
        let read_len = want.min((file_len - position) as usize);
        let bytes = log.read_at(position, read_len).await?;
        let mut consumed = 0_usize;
        let mut need_more = None;
        for item in batch::batches(&bytes) {
            let accepted = match item {
                Ok(found) => {
                    let header = *found.header();
                    if header.base_offset != next_offset {
                        Err(BatchError::Invalid("base offset out of sequence"))
                    } else if header.append_timestamp_us < last_append {
                        Err(BatchError::Invalid("append timestamp went backwards"))
                    } else {
                        Ok(header)
                    }
                }
                Err(BatchError::Truncated { needed, .. })
                    if position + (consumed + needed) as u64 <= file_len =>
                {
                    need_more = Some(needed);
                    break;
                }
                Err(error) => Err(error),
            };
            match accepted {
                Ok(header) => {
                    let at = position + consumed as u64;
                    index.observe(header.base_offset, at, header.append_timestamp_us);
                    scan.first_append_us.get_or_insert(header.append_timestamp_us);
                    scan.last_append_us = Some(header.append_timestamp_us);
                    last_append = header.append_timestamp_us;
                    next_offset = header.next_offset();
                    consumed += header.length as usize;
                    scan.valid = Mark { len: position + consumed as u64, next_offset };
                }
                Err(error) => {
                    let rest = &bytes[consumed..];
                    scan.stop = Some((error, rest.iter().all(|&b| b == 0)));
                    return Ok(scan);
                }
            }
        }
        position += consumed as u64;
        match need_more {
            Some(needed) => want = needed.max(RECOVERY_READ_BYTES),
            None if consumed == 0 => break,
            None => want = RECOVERY_READ_BYTES,
        }
    }
    if scan.valid.len < file_len && scan.stop.is_none() {
        scan.stop = Some((BatchError::Truncated { needed: 0, available: 0 }, false));
    }
    Ok(scan)
}
