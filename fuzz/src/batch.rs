//! The `batch_validate` harness: `BatchHeader::decode`, `validate`, `batches` and the record and
//! header iterators of a valid batch.
//!
//! Input layout: `[flags][bytes...]`. Flag bit 0 rewrites the CRC of every batch found walking
//! `bytes` (see [`fix_crcs`]), so mutations of records get past the CRC and reach the record
//! checks; without it the CRC check itself is fuzzed.
//!
//! Properties checked: nothing panics; an accepted header re-encodes to the bytes it came from;
//! a valid batch yields exactly `record_count` records with dense offsets, in-range timestamps and
//! `header_count` headers each; and rebuilding it with `BatchBuilder` from its records (same
//! producer, timestamps, keys, filter values, headers, payloads) and patching the server fields
//! gives back the same bytes: validate → rebuild is the identity.

use ringbroker::protocol::batch::{
    self, crc32_of, patch_server_fields, validate, Batch, BatchBuilder, BatchHeader, Message, BATCH_BYTES_MIN,
};

/// Flag bit: rewrite each batch's CRC before validating.
pub const FLAG_FIX_CRC: u8 = 1;

/// Runs one input. See the module documentation.
pub fn run(data: &[u8]) {
    let [flags, rest @ ..] = data else { return };
    let mut bytes = rest.to_vec();
    if flags & FLAG_FIX_CRC != 0 {
        fix_crcs(&mut bytes);
    }
    if let Ok(header) = BatchHeader::decode(&bytes) {
        let len = header.header_bytes();
        assert_eq!(&header.encode()[..len], &bytes[..len], "header does not re-encode");
        assert_eq!(BatchHeader::decode(&header.encode()), Ok(header));
    }
    if let Ok(found) = validate(&bytes) {
        check_batch(&found);
    }
    let mut consumed = 0;
    let mut walk = batch::batches(&bytes);
    for item in walk.by_ref() {
        match item {
            Ok(found) => {
                check_batch(&found);
                consumed += found.as_bytes().len();
            }
            Err(_) => break,
        }
    }
    assert_eq!(consumed + walk.remaining().len(), bytes.len(), "batches() lost bytes");
}

/// Walks `bytes` as concatenated batches and writes the right CRC into each one whose header
/// names a length that fits, so record-level mutations are not stopped by the checksum.
pub fn fix_crcs(bytes: &mut [u8]) {
    let mut at = 0;
    while let Some(rest) = bytes.get_mut(at..) {
        let Some(length) = rest.get(8..12) else { return };
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        if length < BATCH_BYTES_MIN || length > rest.len() {
            return;
        }
        let crc = crc32_of(&rest[..length]);
        rest[12..16].copy_from_slice(&crc.to_le_bytes());
        at += length;
    }
}

/// Checks what a valid batch promises; panics when a promise is broken.
pub fn check_batch(found: &Batch<'_>) {
    let header = *found.header();
    let bytes = found.as_bytes();
    assert_eq!(bytes.len(), header.length as usize);
    if found.is_compressed() {
        // The broker-side view: header and CRC only; the records are checked by inflate.
        assert_eq!(found.records().count(), 0, "a compressed batch hands out no records");
        if let Ok(plain) = batch::inflate(bytes, usize::MAX) {
            let plain = validate(&plain).expect("inflate returns a valid batch");
            assert_eq!(plain.header().record_count, header.record_count);
        }
        return;
    }
    let mut builder = BatchBuilder::with_capacity(header.producer_id, header.first_sequence, bytes.len());
    builder.set_producer(header.producer_id, header.producer_epoch);
    builder.set_last_sequence(header.last_sequence);
    let mut count = 0_u32;
    let mut max_timestamp_us = header.first_timestamp_us;
    for record in found.records() {
        assert_eq!(record.offset, header.base_offset + u64::from(count), "offsets are not dense");
        assert!(record.timestamp_us >= header.first_timestamp_us);
        if count == 0 {
            assert_eq!(record.timestamp_us, header.first_timestamp_us);
        }
        max_timestamp_us = max_timestamp_us.max(record.timestamp_us);
        let headers: Vec<(&[u8], &[u8])> = record.headers().collect();
        assert_eq!(headers.len(), record.header_count(), "header iterator stopped early");
        if let Some(value) = record.filter_value {
            assert!(header.might_contain_filter(value), "Bloom filter misses a record's value");
        }
        let message = Message {
            key: record.key,
            filter_value: record.filter_value,
            headers: &headers,
            payload: record.payload,
            timestamp_us: Some(record.timestamp_us),
        };
        builder.push(&message).expect("a record of a valid batch can be pushed again");
        count += 1;
    }
    assert_eq!(count, header.record_count, "record iterator stopped early");
    assert_eq!(max_timestamp_us, header.max_timestamp_us);
    let mut rebuilt = builder.finish().expect("a rebuilt batch finishes");
    patch_server_fields(&mut rebuilt, header.base_offset, header.append_timestamp_us);
    if header.version == batch::BATCH_FORMAT_VERSION {
        assert!(rebuilt == bytes, "validate -> rebuild is not the identity");
    } else {
        // A version-1 batch rebuilds as version 2: the same records.
        let again = validate(&rebuilt).expect("the rebuilt batch is valid");
        assert!(again.records().eq(found.records()), "validate -> rebuild changed the records");
    }
}
