//! cargo-fuzz target `kafka_request`: the Kafka listener's request path, from a frame's bytes
//! to our batches and back: `wire::kafka::frame::decode_request` (framing and the
//! `kafka-protocol` crate's decoders), then for a Produce request every partition's records
//! through `records::produce_batches` (RecordBatch v2, CRC-32C, bounded inflate of gzip,
//! snappy, LZ4 and zstd), every batch written through `validate`, and back through
//! `records::fetch_records` into Kafka batches the crate decodes. The harness is
//! `ringbroker::wire::kafka::records::fuzz_request` (the conversion is crate-private);
//! docs/fuzzing.md says how to run it.
//!
//! Input layout: byte 0 picks the mode. Even: the rest is one request frame without its 4-byte
//! size prefix. Odd: the rest is one partition's records, with each batch's CRC-32C rewritten
//! first so that mutations reach the checks behind it. Seeds: `fuzz/corpus/kafka_request/seed-*`
//! (Produce v3 and v9 requests with plain, idempotent and every codec's batches, and those
//! batches alone), written by
//! `RINGBROKER_WRITE_SEEDS=1 cargo test --lib wire::kafka::records::tests_codecs::seeds`.
//!
//! Properties (a failure panics, which libFuzzer reports as a crash): nothing panics, overflows
//! or allocates without bound (inflating is capped at 1 MiB per partition); a conversion that
//! fails leaves its output as it was; one that succeeds writes batches that all validate, with
//! the counts, producer and first sequence of the input; fetched back from offset 0 they decode
//! to the input's keys, values (null read back as empty), headers and create times at dense
//! offsets; a fetch with `max_bytes` 1 still returns a batch.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringbroker::wire::kafka::records::fuzz_request(data));
