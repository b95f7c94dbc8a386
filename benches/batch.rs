//! Micro-benchmarks of the message batch format (`ringbroker::protocol::batch`): building a batch,
//! validating it, the CRC alone, and iterating its records. Each reports bytes per second, to be
//! read against the machine's disk and loopback ceilings in `/work/shared/DESIGN.md`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringbroker::protocol::batch::{crc32_of, validate, BatchBuilder, Message, BATCH_HEADER_BYTES};

/// Records in the benchmark batch.
const RECORDS: usize = 1000;
/// Payload bytes per record.
const PAYLOAD_BYTES: usize = 1024;
/// Bytes the CRC benchmark hashes.
const CRC_INPUT_BYTES: usize = 1024 * 1024;
/// Fixed create time, so building measures the format rather than the clock.
const TIMESTAMP_US: u64 = 1_700_000_000_000_000;

/// Room for the benchmark batch, so the builder never reallocates.
const BUILDER_CAPACITY_BYTES: usize = BATCH_HEADER_BYTES + RECORDS * (PAYLOAD_BYTES + 64);

fn push_records(builder: &mut BatchBuilder, payload: &[u8]) {
    let message = Message { timestamp_us: Some(TIMESTAMP_US), ..Message::payload(payload) };
    for _ in 0..RECORDS {
        builder.push(&message).expect("the benchmark batch fits");
    }
}

fn sample_batch() -> Vec<u8> {
    let payload = vec![0x5a; PAYLOAD_BYTES];
    let mut builder = BatchBuilder::with_capacity(1, 0, BUILDER_CAPACITY_BYTES);
    push_records(&mut builder, &payload);
    builder.finish().expect("the benchmark batch has records")
}

fn build(c: &mut Criterion) {
    let payload = vec![0x5a; PAYLOAD_BYTES];
    let batch_bytes = sample_batch().len();
    let mut group = c.benchmark_group("batch_build");
    group.throughput(Throughput::Bytes(batch_bytes as u64));
    // The producer's steady state: one builder reused, so no allocation per batch.
    group.bench_function("1000x1KiB_reused", |b| {
        let mut builder = BatchBuilder::with_capacity(1, 0, BUILDER_CAPACITY_BYTES);
        b.iter(|| {
            builder.reset(0);
            push_records(&mut builder, black_box(&payload));
            let bytes = builder.finish_in_place().expect("records pushed");
            black_box(bytes.len())
        })
    });
    group.bench_function("1000x1KiB_fresh", |b| {
        b.iter(|| {
            let mut builder = BatchBuilder::with_capacity(1, 0, BUILDER_CAPACITY_BYTES);
            push_records(&mut builder, black_box(&payload));
            black_box(builder.finish().expect("records pushed"))
        })
    });
    group.finish();
}

fn validate_batch(c: &mut Criterion) {
    let bytes = sample_batch();
    let mut group = c.benchmark_group("batch_validate");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("1000x1KiB", |b| b.iter(|| black_box(validate(black_box(&bytes)).is_ok())));
    group.finish();
}

fn crc32(c: &mut Criterion) {
    let bytes: Vec<u8> = (0..CRC_INPUT_BYTES).map(|i| (i * 31) as u8).collect();
    let mut group = c.benchmark_group("batch_crc32");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("1MiB", |b| b.iter(|| black_box(crc32_of(black_box(&bytes)))));
    group.finish();
}

fn iterate(c: &mut Criterion) {
    let bytes = sample_batch();
    let batch = validate(&bytes).expect("the builder's batch validates");
    let mut group = c.benchmark_group("batch_iterate");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("1000x1KiB", |b| {
        b.iter(|| {
            let payload_bytes: usize = black_box(batch).records().map(|record| record.payload.len()).sum();
            black_box(payload_bytes)
        })
    });
    group.finish();
}

criterion_group!(benches, build, validate_batch, crc32, iterate);
criterion_main!(benches);
