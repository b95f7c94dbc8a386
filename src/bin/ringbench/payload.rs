//! What producer actors send: the message bodies (`--payload random|json`), the batches built
//! from them (with `--compression` and a named producer's id and epoch in the header), and the
//! rewrite of a prebuilt batch's sequence range for named producers (`--producer-name`).
//!
//! Runs on each actor's thread. Invariants: every body is exactly `--message-size` bytes, so the
//! payload bytes a run reports are the bodies' bytes, whatever the compression; `random` bodies
//! differ from each other within a batch (the compressor finds nothing to share), `json` bodies
//! are compressible, order-like records with repeated field names and small varying numbers; a
//! batch whose sequences are rewritten still passes `validate` (checked in debug builds).

use ringbroker::protocol::batch::{
    crc32_of, BatchBuilder, BatchHeader, Compression, Message, BATCH_HEADER_BYTES,
};

use crate::actors::STAMP_BYTES;

/// Where the CRC sits in a batch header (`docs/format.md`, batch header, bytes 12..16).
const CRC_AT: usize = 12;

/// Per-record overhead allowed for when reserving a batch (record header, generously).
const RECORD_OVERHEAD_BYTES: usize = crate::RECORD_OVERHEAD_BYTES as usize;

/// The message bodies of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// Pseudo-random bytes, a different body for every message of a batch (incompressible).
    Random,
    /// JSON-like order records (several times smaller under zstd or lz4).
    Json,
}

/// What every batch of one producer carries in its header besides its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderStamp {
    /// A named producer's id (0: anonymous).
    pub producer_id: u64,
    /// A named producer's epoch.
    pub epoch: u32,
    /// How the records are compressed.
    pub compression: Compression,
}

/// The bodies of one batch: `count` bodies of `size` bytes, back to back.
pub struct Bodies {
    bytes: Vec<u8>,
    size: usize,
    count: usize,
}

impl Bodies {
    /// `count` bodies of `size` bytes of kind `payload`, generated from `seed`.
    pub fn new(payload: Payload, size: usize, count: usize, seed: u64) -> Bodies {
        let mut rng = XorShift::new(seed);
        let mut bytes = Vec::with_capacity(size * count);
        for index in 0..count {
            match payload {
                Payload::Random => bytes.extend((0..size).map(|_| rng.next() as u8)),
                Payload::Json => bytes.extend_from_slice(&json_record(&mut rng, index, size)),
            }
        }
        debug_assert_eq!(bytes.len(), size * count);
        Bodies { bytes, size, count }
    }

    /// Body `index`.
    fn get_mut(&mut self, index: usize) -> &mut [u8] {
        &mut self.bytes[index * self.size..(index + 1) * self.size]
    }
}

/// One batch of every body, stamped with the time now (its first [`STAMP_BYTES`]) when `stamp`;
/// a named producer's batch starts at `first_sequence`; every record carries `filter_value`.
pub fn build_batch(
    bodies: &mut Bodies,
    stamp: bool,
    header: HeaderStamp,
    first_sequence: u64,
    filter_value: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let capacity = bodies.count * (bodies.size + RECORD_OVERHEAD_BYTES);
    let mut builder = BatchBuilder::with_capacity(header.producer_id, first_sequence, capacity);
    builder.set_producer(header.producer_id, header.epoch);
    builder.set_compression(header.compression);
    for index in 0..bodies.count {
        let body = bodies.get_mut(index);
        if stamp {
            if let Some(head) = body.get_mut(..STAMP_BYTES) {
                head.copy_from_slice(&ringbroker::model::now_us().to_le_bytes());
            }
        }
        let message = Message { filter_value, ..Message::payload(body) };
        builder.push(&message).map_err(|error| format!("building a batch: {error}"))?;
    }
    builder.finish().map_err(|error| format!("building a batch: {error}"))
}

/// Gives a finished batch the sequence range `first_sequence ..= first_sequence + records - 1`
/// and a CRC to match, in place (the records, compressed or not, stay as they are).
pub fn set_sequences(batch: &mut [u8], first_sequence: u64) -> Result<(), String> {
    let mut header = BatchHeader::decode(batch).map_err(|error| format!("rewriting a batch: {error}"))?;
    let records = u64::from(header.record_count);
    header.first_sequence = first_sequence;
    header.last_sequence = first_sequence
        .checked_add(records - 1)
        .ok_or_else(|| format!("sequence {first_sequence} + {records} records overflows"))?;
    let head = batch.get_mut(..BATCH_HEADER_BYTES).ok_or("rewriting a batch: shorter than a header")?;
    head.copy_from_slice(&header.encode());
    let crc = crc32_of(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert!(ringbroker::protocol::batch::validate(batch).is_ok(), "a rewritten batch stays valid");
    Ok(())
}

/// A JSON-like order record of exactly `size` bytes: repeated field names, small varying
/// numbers, line items until the size is nearly reached, then spaces (or cut short when `size`
/// is below one record).
fn json_record(rng: &mut XorShift, index: usize, size: usize) -> Vec<u8> {
    const CITIES: [&str; 6] = ["Berlin", "Lyon", "Porto", "Utrecht", "Brno", "Turku"];
    const STATUSES: [&str; 4] = ["created", "paid", "shipped", "delivered"];
    let mut text = format!(
        r#"{{"order_id":{},"customer":{{"id":"cust-{:06}","tier":"{}","city":"{}"}},"status":"{}","currency":"EUR","created_at":"2025-{:02}-{:02}T{:02}:{:02}:{:02}Z","items":["#,
        1_000_000 + index as u64 * 7 + rng.below(7),
        rng.below(50_000),
        if rng.below(4) == 0 { "gold" } else { "standard" },
        CITIES[rng.below(CITIES.len() as u64) as usize],
        STATUSES[rng.below(STATUSES.len() as u64) as usize],
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
    );
    let closing = r#"],"total_cents":0}"#;
    for item in 0.. {
        let line = format!(
            r#"{}{{"sku":"SKU-{:05}","quantity":{},"unit_price_cents":{},"discount_pct":{}}}"#,
            if item == 0 { "" } else { "," },
            rng.below(20_000),
            1 + rng.below(9),
            99 + rng.below(20_000),
            rng.below(4) * 5,
        );
        if text.len() + line.len() + closing.len() > size {
            break;
        }
        text.push_str(&line);
    }
    text.push_str(closing);
    let mut bytes = text.into_bytes();
    bytes.resize(size, b' ');
    bytes
}

/// xorshift64*: fast, seeded, good enough for benchmark bodies.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 8
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbroker::protocol::batch::{inflate, validate};

    #[test]
    fn bodies_have_the_message_size_and_json_compresses() {
        for size in [16, 100, 1000, 4096] {
            let json = Bodies::new(Payload::Json, size, 10, 1);
            assert_eq!(json.bytes.len(), size * 10);
            let random = Bodies::new(Payload::Random, size, 10, 1);
            assert_eq!(random.bytes.len(), size * 10);
        }
        let text = String::from_utf8(json_record(&mut XorShift::new(3), 0, 1000)).expect("utf-8");
        assert!(text.starts_with(r#"{"order_id":"#) && text.trim_end().ends_with('}'), "{text}");
        assert!(text.trim_end().len() > 900, "mostly record, little padding: {}", text.trim_end().len());

        let stamp = HeaderStamp { compression: Compression::Zstd, ..HeaderStamp::default() };
        let json =
            build_batch(&mut Bodies::new(Payload::Json, 1000, 1000, 7), false, stamp, 0, None).expect("json");
        let random = build_batch(&mut Bodies::new(Payload::Random, 1000, 1000, 7), false, stamp, 0, None)
            .expect("random");
        assert!(json.len() * 3 < 1_000_000, "json compresses at least 3x: {} bytes", json.len());
        assert!(random.len() > 1_000_000, "random bodies do not compress: {} bytes", random.len());
        assert!(!validate(&random).expect("valid").is_compressed(), "stored plain when it does not shrink");
    }

    #[test]
    fn rewritten_sequences_keep_the_batch_valid() {
        let stamp = HeaderStamp { producer_id: 9, epoch: 4, compression: Compression::Lz4 };
        let mut bodies = Bodies::new(Payload::Json, 200, 50, 1);
        let mut batch = build_batch(&mut bodies, true, stamp, 0, None).expect("build");
        set_sequences(&mut batch, 1_000).expect("rewrite");
        let header = *validate(&batch).expect("valid after the rewrite").header();
        assert_eq!((header.first_sequence, header.last_sequence), (1_000, 1_049));
        assert_eq!((header.producer_id, header.producer_epoch), (9, 4));
        assert_eq!(
            inflate(&batch, 1 << 20).expect("inflates").len(),
            BATCH_HEADER_BYTES + header.records_bytes as usize
        );
        assert!(set_sequences(&mut batch, u64::MAX).is_err());
        assert!(set_sequences(&mut batch[..10], 0).is_err());
    }
}
