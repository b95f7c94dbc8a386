//! Compressed sub-entry batches: the codecs a producer may compress a batch's records section
//! with (zstd, LZ4), RabbitMQ sub-entries stored as they came (codec 3, [`sub_entry`]), and
//! [`inflate`], which turns a compressed batch back into the plain batch it stands for.
//!
//! Pure functions with no I/O and no shared state. Producers compress (in
//! [`BatchBuilder`](super::batch::BatchBuilder)); consumers inflate. The broker never inflates
//! to store: it indexes, deduplicates and Bloom-filters from the header, which stays
//! uncompressed. It inflates only to serve: a durable topic's ledger counts a compressed batch's
//! records, and the RabbitMQ Deliver path hands native zstd/LZ4 batches to RabbitMQ consumers as
//! plain messages.
//!
//! Invariants:
//! * [`inflate`] never produces more than the header's `records_bytes` bytes, nor more than the
//!   caller's limit: a decompression bomb fails with [`BatchError::Decompress`] after writing at
//!   most that many bytes, and nothing panics on hostile input.
//! * What [`inflate`] returns passed [`validate`] in full: every record and the header's summary
//!   fields (maximum timestamp, filter bit, Bloom bits) were checked against the inflated
//!   records, so a producer cannot lie about them.

use std::fmt;
use std::str::FromStr;

use super::batch::{crc32_of, validate, BatchError, BatchHeader, ATTRIBUTE_CODEC_MASK, BATCH_HEADER_BYTES};
use super::batch::{CODEC_LZ4, CODEC_NONE, CODEC_RABBITMQ, CODEC_ZSTD, ZSTD_LEVEL};

pub mod sub_entry;

/// How a producer compresses its batches' records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None,
    /// LZ4 block (`lz4_flex`): cheap, about 2× on text.
    Lz4,
    /// zstd at [`ZSTD_LEVEL`]: slower, a better ratio.
    Zstd,
}

impl Compression {
    /// The header's codec bits, or `None` for no compression.
    pub fn codec(self) -> Option<u8> {
        match self {
            Compression::None => None,
            Compression::Lz4 => Some(CODEC_LZ4),
            Compression::Zstd => Some(CODEC_ZSTD),
        }
    }

    /// The name used on command lines: `none`, `lz4` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression \"{other}\" (expected none, lz4 or zstd)")),
        }
    }
}

/// Compresses `records` with `codec` into `out` (cleared first). On the producer.
pub(crate) fn compress_records(records: &[u8], codec: u8, out: &mut Vec<u8>) {
    out.clear();
    match codec {
        CODEC_LZ4 => {
            out.resize(lz4_flex::block::get_maximum_output_size(records.len()), 0);
            // The output has the documented maximum size, so the block always fits.
            let written = lz4_flex::block::compress_into(records, out).unwrap_or(0);
            out.truncate(written);
        }
        CODEC_ZSTD => {
            // Writing to a Vec cannot fail for lack of room; an error leaves `out` empty and the
            // builder then stores the records uncompressed.
            if let Ok(bytes) = zstd::bulk::compress(records, ZSTD_LEVEL) {
                *out = bytes;
            }
        }
        _ => {}
    }
}

/// Turns a compressed batch (already through [`validate`], CRC included) into the plain batch
/// it stands for: the same header with the codec bits cleared, the length and CRC of the plain
/// batch, then the inflated records (for a RabbitMQ sub-entry, one record per message, its value
/// the message's bytes; snappy, gzip, LZ4 frames and zstd are read). Refuses with [`BatchError::Decompress`] compressed bytes
/// that are corrupt, truncated, of the wrong codec, or that inflate to anything but exactly the
/// header's `records_bytes`, or past `limit_bytes` (so a bomb costs at most the limit), and with
/// the usual [`BatchError`]s a plain batch whose records break the format or disagree with the
/// header. An uncompressed batch is returned as a copy after [`validate`].
pub fn inflate(batch: &[u8], limit_bytes: usize) -> Result<Vec<u8>, BatchError> {
    let header = validate(batch)?.header().to_owned();
    if !header.is_compressed() {
        return Ok(batch.to_vec());
    }
    let records_bytes = header.records_bytes as usize;
    let plain_length = BATCH_HEADER_BYTES + records_bytes;
    if plain_length > limit_bytes {
        return Err(BatchError::Decompress(format!(
            "the batch says it inflates to {plain_length} bytes, above the reader's limit of {limit_bytes}"
        )));
    }
    let compressed = &batch[BATCH_HEADER_BYTES..];
    let mut out = vec![0u8; plain_length];
    let written = decompress_into(header.codec(), compressed, &mut out[BATCH_HEADER_BYTES..])?;
    if written != records_bytes {
        return Err(BatchError::Decompress(format!(
            "the records inflated to {written} bytes, the header says {records_bytes}"
        )));
    }
    let plain = BatchHeader {
        attributes: header.attributes & !ATTRIBUTE_CODEC_MASK,
        length: plain_length as u32,
        crc32: 0,
        ..header
    };
    out[..BATCH_HEADER_BYTES].copy_from_slice(&plain.encode());
    let crc32 = crc32_of(&out);
    out[..BATCH_HEADER_BYTES].copy_from_slice(&BatchHeader { crc32, ..plain }.encode());
    validate(&out)?;
    Ok(out)
}

/// Inflates `compressed` into `out`, which has exactly the room the header promises; returns the
/// bytes written. Output past `out` is an error, never a reallocation.
fn decompress_into(codec: u8, compressed: &[u8], out: &mut [u8]) -> Result<usize, BatchError> {
    let failed = |what: &str, error: &dyn fmt::Display| BatchError::Decompress(format!("{what}: {error}"));
    match codec {
        CODEC_RABBITMQ => sub_entry::inflate_sub_entry(compressed, out),
        CODEC_LZ4 => lz4_flex::block::decompress_into(compressed, out).map_err(|e| failed("lz4", &e)),
        CODEC_ZSTD => {
            let mut decompressor = zstd::bulk::Decompressor::new().map_err(|e| failed("zstd", &e))?;
            decompressor.decompress_to_buffer(compressed, out).map_err(|e| failed("zstd", &e))
        }
        CODEC_NONE => Err(BatchError::Decompress("the batch is not compressed".into())),
        other => Err(BatchError::UnsupportedCodec(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{BatchBuilder, Message, BATCH_BYTES_MIN};

    fn json_like(i: usize) -> Vec<u8> {
        format!(
            r#"{{"id":{i},"user":"user-{}","event":"page_view","path":"/products/{}","ok":true}}"#,
            i % 97,
            i % 13
        )
        .into_bytes()
    }

    fn build(compression: Compression, count: usize) -> (Vec<u8>, Vec<u8>) {
        let mut plain = BatchBuilder::new(9, 100);
        let mut packed = BatchBuilder::new(9, 100);
        packed.set_compression(compression);
        for i in 0..count {
            let payload = json_like(i);
            let filter = format!("f{}", i % 3);
            let message = Message {
                key: Some(b"k"),
                filter_value: Some(filter.as_bytes()),
                ..Message::payload(&payload)
            };
            plain.push(&Message { timestamp_us: Some(1_000 + i as u64), ..message }).expect("push");
            packed.push(&Message { timestamp_us: Some(1_000 + i as u64), ..message }).expect("push");
        }
        (plain.finish().expect("finish"), packed.finish().expect("finish"))
    }

    #[test]
    fn every_codec_round_trips_and_shrinks_json() {
        for compression in [Compression::Lz4, Compression::Zstd] {
            let (plain, packed) = build(compression, 500);
            let header = *validate(&packed).expect("valid").header();
            assert_eq!(header.codec(), compression.codec().expect("codec"));
            assert!(packed.len() * 3 < plain.len(), "{compression}: {} vs {}", packed.len(), plain.len());
            assert_eq!(validate(&packed).expect("valid").records().count(), 0);
            let inflated = inflate(&packed, usize::MAX).expect("inflate");
            assert_eq!(inflated, plain, "{compression}: the inflated batch is the plain batch");
        }
    }

    #[test]
    fn incompressible_records_stay_plain() {
        let mut builder = BatchBuilder::new(0, 0);
        builder.set_compression(Compression::Zstd);
        builder.push_payload(b"x").expect("push");
        let bytes = builder.finish().expect("finish");
        assert!(!validate(&bytes).expect("valid").is_compressed());
        assert!(bytes.len() >= BATCH_BYTES_MIN);
    }

    /// Re-seals a tampered compressed batch (new CRC) so only the records are wrong.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        let header = BatchHeader::decode(&bytes).expect("header");
        let length = bytes.len() as u32;
        bytes[..BATCH_HEADER_BYTES].copy_from_slice(&BatchHeader { length, crc32: 0, ..header }.encode());
        let crc32 = crc32_of(&bytes);
        bytes[..BATCH_HEADER_BYTES].copy_from_slice(&BatchHeader { length, crc32, ..header }.encode());
        bytes
    }

    #[test]
    fn hostile_compressed_batches_fail_cleanly() {
        for compression in [Compression::Lz4, Compression::Zstd] {
            let (_, packed) = build(compression, 200);
            // Truncated compressed bytes.
            let truncated = reseal(packed[..packed.len() - 20].to_vec());
            assert!(
                matches!(inflate(&truncated, usize::MAX), Err(BatchError::Decompress(_))),
                "{compression}"
            );
            // The wrong codec bits.
            let mut wrong = packed.clone();
            let other = if compression == Compression::Lz4 { CODEC_ZSTD } else { CODEC_LZ4 };
            wrong[6] = (wrong[6] & !(ATTRIBUTE_CODEC_MASK as u8)) | other;
            let wrong = reseal(wrong);
            assert!(inflate(&wrong, usize::MAX).is_err(), "{compression}: wrong codec");
            // A lying uncompressed length, smaller and larger.
            for delta in [-7_i64, 7] {
                let mut lying = packed.clone();
                let records = u32::from_le_bytes(lying[36..40].try_into().expect("4")) as i64 + delta;
                lying[36..40].copy_from_slice(&(records as u32).to_le_bytes());
                let lying = reseal(lying);
                assert!(
                    matches!(inflate(&lying, usize::MAX), Err(BatchError::Decompress(_))),
                    "{compression} {delta}"
                );
            }
            // A limit below the declared size.
            assert!(matches!(inflate(&packed, 1024), Err(BatchError::Decompress(_))));
        }
    }

    #[test]
    fn a_bomb_stops_at_the_declared_size() {
        // 16 MiB of zeros compresses to a few hundred bytes; the header claims 1 KiB.
        let zeros = vec![0u8; 16 << 20];
        for codec in [CODEC_LZ4, CODEC_ZSTD] {
            let mut compressed = Vec::new();
            compress_records(&zeros, codec, &mut compressed);
            let (_, mut template) =
                build(if codec == CODEC_LZ4 { Compression::Lz4 } else { Compression::Zstd }, 50);
            template.truncate(BATCH_HEADER_BYTES);
            template.extend_from_slice(&compressed);
            template[36..40].copy_from_slice(&1024_u32.to_le_bytes());
            let bomb = reseal(template);
            assert!(matches!(inflate(&bomb, usize::MAX), Err(BatchError::Decompress(_))), "codec {codec}");
        }
    }
}
