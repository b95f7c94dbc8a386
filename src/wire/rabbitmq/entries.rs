//! Published entries into batches: the messages of one Publish frame become batches in our
//! format, ready for the produce path, with RabbitMQ's deduplication rule applied on the way.
//!
//! Pure functions on the connection's shard (in its reader). A message is one record whose value
//! is the published bytes as they came, with the Publish v2 filter value as its filter value. A
//! named publisher's batch carries its producer id and epoch, and the first and last kept
//! publishing ids as sequences. Invariants: every publishing id of the input ends in exactly one
//! of `kept`, `duplicates` and `refused`; for a named publisher the kept ids rise strictly and
//! lie above `last_stored`; nothing panics or allocates beyond the input's size on hostile input.

use super::codec::{codes, Entry};
use crate::protocol::batch::{BatchBuilder, BatchError, Message};

/// What [`build_batches`] did with a frame's entries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Built {
    /// Batches appended to `out`.
    pub batches: usize,
    /// Publishing ids stored by those batches (confirmed once they are written).
    pub kept: Vec<u64>,
    /// Publishing ids at or below the publisher's last: confirmed without being stored.
    pub duplicates: Vec<u64>,
    /// Publishing ids refused, with the RabbitMQ code of the PublishError.
    pub refused: Vec<(u64, u16)>,
}

/// Appends the batches for `entries` to `out` for producer `producer_id`/`epoch` (0/0:
/// anonymous, nothing deduplicated). For a named producer, ids at or below `last_stored` or an
/// earlier kept id of this call are duplicates.
///
/// Sub-entries are stored as anonymous batches of their own: one publishing id stands for all of
/// their records, which a batch's sequences cannot say (RabbitMQ, too, documents sub-entries as
/// deduplicated only loosely). Compressed sub-entries are refused with PRECONDITION_FAILED until
/// the batch format holds them as they came.
pub fn build_batches(
    entries: &[Entry<'_>],
    producer_id: u64,
    epoch: u32,
    last_stored: Option<u64>,
    out: &mut Vec<u8>,
) -> Built {
    let mut built = Built::default();
    let named = producer_id != 0;
    let mut high = last_stored;
    let mut open: Option<(BatchBuilder, u64, u64)> = None;
    for entry in entries {
        let id = match entry {
            Entry::Simple { publishing_id, .. } | Entry::SubEntry { publishing_id, .. } => *publishing_id,
        };
        if named && high.is_some_and(|high| id <= high) {
            built.duplicates.push(id);
            continue;
        }
        match entry {
            Entry::Simple { message, filter_value, .. } => {
                let record =
                    Message { filter_value: filter_value.map(str::as_bytes), ..Message::payload(message) };
                if push_simple(&mut open, &mut built, out, (producer_id, epoch), id, &record).is_err() {
                    built.refused.push((id, codes::PRECONDITION_FAILED));
                    continue;
                }
            }
            Entry::SubEntry { compression, records, data, .. } => {
                flush(&mut open, &mut built, out);
                match sub_entry_batch(*compression, *records, data) {
                    Ok(batch) => {
                        out.extend_from_slice(&batch);
                        built.batches += 1;
                    }
                    Err(()) => {
                        built.refused.push((id, codes::PRECONDITION_FAILED));
                        continue;
                    }
                }
            }
        }
        built.kept.push(id);
        if named {
            high = Some(id);
        }
    }
    flush(&mut open, &mut built, out);
    built
}

/// Adds one message to the open batch, starting a new one when it is full.
fn push_simple(
    open: &mut Option<(BatchBuilder, u64, u64)>,
    built: &mut Built,
    out: &mut Vec<u8>,
    (producer_id, epoch): (u64, u32),
    id: u64,
    record: &Message<'_>,
) -> Result<(), BatchError> {
    if let Some((builder, _, last)) = open.as_mut() {
        match builder.push(record) {
            Ok(()) => {
                *last = id;
                return Ok(());
            }
            Err(BatchError::TooLarge { .. } | BatchError::TooManyRecords { .. }) => flush(open, built, out),
            Err(error) => return Err(error),
        }
    }
    let sequence = if producer_id != 0 { id } else { 0 };
    let mut builder = BatchBuilder::with_capacity(producer_id, sequence, 64 * 1024);
    builder.set_producer(producer_id, epoch);
    builder.push(record)?;
    *open = Some((builder, id, id));
    Ok(())
}

/// Finishes the open batch, if any, into `out`.
fn flush(open: &mut Option<(BatchBuilder, u64, u64)>, built: &mut Built, out: &mut Vec<u8>) {
    let Some((mut builder, first, last)) = open.take() else { return };
    if builder.record_count() == 0 {
        return;
    }
    if last > first {
        builder.set_last_sequence(last);
    }
    if let Ok(bytes) = builder.finish_in_place() {
        out.extend_from_slice(bytes);
        built.batches += 1;
    }
}

/// An uncompressed sub-entry's records (each a big-endian u32 size, then the bytes) as one
/// anonymous batch; `Err` when the sub-entry is compressed or does not add up.
fn sub_entry_batch(compression: u8, records: u16, data: &[u8]) -> Result<Vec<u8>, ()> {
    if compression != 0 || records == 0 {
        return Err(());
    }
    let mut builder = BatchBuilder::with_capacity(0, 0, data.len() + 256);
    let mut rest = data;
    for _ in 0..records {
        let (size, tail) = rest.split_first_chunk::<4>().ok_or(())?;
        let size = u32::from_be_bytes(*size) as usize;
        if size > tail.len() {
            return Err(());
        }
        let (message, tail) = tail.split_at(size);
        builder.push(&Message::payload(message)).map_err(|_| ())?;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(());
    }
    builder.finish().map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::validate;

    fn simple(id: u64, message: &[u8]) -> Entry<'_> {
        Entry::Simple { publishing_id: id, message, filter_value: None }
    }

    #[test]
    fn anonymous_publishers_keep_everything_in_one_batch() {
        let entries = [simple(5, b"a"), simple(3, b"b"), simple(9, b"c")];
        let mut out = Vec::new();
        let built = build_batches(&entries, 0, 0, None, &mut out);
        assert_eq!((built.batches, built.kept.as_slice()), (1, &[5, 3, 9][..]));
        let batch = validate(&out).expect("valid");
        let values: Vec<&[u8]> = batch.records().map(|r| r.payload).collect();
        assert_eq!(values, [b"a", b"b", b"c"]);
    }

    #[test]
    fn named_publishers_drop_ids_at_or_below_the_last() {
        let entries = [simple(4, b"old"), simple(6, b"x"), simple(6, b"again"), simple(8, b"y")];
        let mut out = Vec::new();
        let built = build_batches(&entries, 77, 2, Some(5), &mut out);
        assert_eq!(built.kept, [6, 8]);
        assert_eq!(built.duplicates, [4, 6]);
        let batch = validate(&out).expect("valid");
        let header = batch.header();
        assert_eq!((header.producer_id, header.producer_epoch), (77, 2));
        assert_eq!((header.first_sequence, header.last_sequence), (6, 8));
    }

    #[test]
    fn filter_values_become_record_filter_values() {
        let entries = [Entry::Simple { publishing_id: 1, message: b"m", filter_value: Some("eu") }];
        let mut out = Vec::new();
        build_batches(&entries, 0, 0, None, &mut out);
        let batch = validate(&out).expect("valid");
        assert_eq!(batch.records().next().and_then(|r| r.filter_value), Some(&b"eu"[..]));
    }

    #[test]
    fn uncompressed_sub_entries_become_records_and_lies_are_refused() {
        let mut data = Vec::new();
        for message in [&b"one"[..], b"two"] {
            data.extend_from_slice(&(message.len() as u32).to_be_bytes());
            data.extend_from_slice(message);
        }
        let good = Entry::SubEntry {
            publishing_id: 1,
            compression: 0,
            records: 2,
            uncompressed_bytes: 14,
            data: &data,
        };
        let lying = Entry::SubEntry {
            publishing_id: 2,
            compression: 0,
            records: 3,
            uncompressed_bytes: 14,
            data: &data,
        };
        let gzip = Entry::SubEntry {
            publishing_id: 3,
            compression: 1,
            records: 2,
            uncompressed_bytes: 14,
            data: &data,
        };
        let mut out = Vec::new();
        let built = build_batches(&[good, lying, gzip], 0, 0, None, &mut out);
        assert_eq!(built.kept, [1]);
        assert_eq!(built.refused, [(2, codes::PRECONDITION_FAILED), (3, codes::PRECONDITION_FAILED)]);
        let values: Vec<&[u8]> = validate(&out).expect("valid").records().map(|r| r.payload).collect();
        assert_eq!(values, [b"one", b"two"]);
    }
}
