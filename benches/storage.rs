//! Storage benchmarks on real glommio DMA files in a temporary directory: append of
//! 1000 × 1 KiB batches with fsync never and always (4 concurrent appenders, group commit),
//! sequential read, and sparse index lookup.
//!
//! Run: `cargo bench --bench storage`. Each measurement runs on its own glommio executor thread.

use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringbroker::io::dma::{run_local, DmaIo};
use ringbroker::protocol::batch::BatchBuilder;
use ringbroker::storage::index::SegmentIndex;
use ringbroker::storage::{FsyncPolicy, LogConfig, PartitionLog};

const MESSAGES: u32 = 1000;
const MESSAGE_BYTES: usize = 1024;
const IO_MEMORY_BYTES: usize = 6 * 1024 * 1024;

fn batch() -> Vec<u8> {
    let mut builder = BatchBuilder::with_capacity(1, 0, (MESSAGE_BYTES + 64) * MESSAGES as usize);
    let payload = vec![0x5A_u8; MESSAGE_BYTES];
    for _ in 0..MESSAGES {
        builder.push_payload(&payload).expect("push");
    }
    builder.finish().expect("finish")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringbroker-bench-").tempdir_in(std::env::temp_dir()).expect("tempdir")
}

/// Appends `iterations` batches split over `appenders` concurrent tasks; returns the elapsed
/// time and (fsyncs, appends).
fn timed_appends(iterations: u64, appenders: u64, fsync: FsyncPolicy) -> (Duration, (u64, u64)) {
    let dir = temp_dir();
    let root = dir.path().to_path_buf();
    run_local("bench-append", IO_MEMORY_BYTES, move || async move {
        let io = DmaIo::new(&root).await.expect("io");
        let config = LogConfig { fsync, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(io, &root.join("p"), config).await.expect("open");
        let log = Rc::new(log);
        let per_task = iterations.div_ceil(appenders);
        // `--fsync never` acknowledges on buffering; a flusher writes behind, as the server runs it.
        let flusher = log.write_behind().then(|| {
            let log = log.clone();
            glommio::spawn_local(async move {
                loop {
                    log.wait_dirty().await;
                    if log.is_closed() || log.flush().await.is_err() {
                        return;
                    }
                }
            })
        });
        let start = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|_| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let mut bytes = batch();
                    for _ in 0..per_task {
                        log.append(&mut bytes).await.expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        log.flush().await.expect("flush");
        let elapsed = start.elapsed();
        let counters = log.counters();
        log.close().await.expect("close");
        if let Some(flusher) = flusher {
            flusher.await;
        }
        (elapsed, counters)
    })
    .expect("executor")
}

fn append(c: &mut Criterion) {
    let bytes = batch().len() as u64;
    let mut group = c.benchmark_group("append_1000x1KiB");
    group.throughput(Throughput::Bytes(bytes)).sample_size(20).measurement_time(Duration::from_secs(8));
    group.bench_function("fsync_never", |b| b.iter_custom(|n| timed_appends(n, 1, FsyncPolicy::Never).0));
    group.bench_function("fsync_always_1_appender", |b| {
        b.iter_custom(|n| timed_appends(n, 1, FsyncPolicy::Always).0)
    });
    group.bench_function("fsync_always_4_appenders", |b| {
        b.iter_custom(|n| {
            let (elapsed, (fsyncs, appends)) = timed_appends(n.max(4), 4, FsyncPolicy::Always);
            if n >= 100 {
                eprintln!("group commit: {fsyncs} fdatasyncs for {appends} appends");
            }
            elapsed * n as u32 / n.max(4) as u32
        })
    });
    group.finish();
}

fn sequential_read(c: &mut Criterion) {
    const FILL_BATCHES: u64 = 128;
    let bytes = batch().len() as u64;
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(bytes)).sample_size(20).measurement_time(Duration::from_secs(8));
    group.bench_function("sequential_1MiB_reads", |b| {
        b.iter_custom(|iterations| {
            let dir = temp_dir();
            let root = dir.path().to_path_buf();
            run_local("bench-read", IO_MEMORY_BYTES, move || async move {
                let io = DmaIo::new(&root).await.expect("io");
                let config = LogConfig {
                    fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
                    ..LogConfig::default()
                };
                let (log, _) = PartitionLog::open(io, &root.join("p"), config).await.expect("open");
                let mut bytes = batch();
                for _ in 0..FILL_BATCHES.min(iterations) {
                    log.append(&mut bytes).await.expect("append");
                }
                let end = log.offsets().stable_next;
                let start = Instant::now();
                let mut offset = 0;
                for _ in 0..iterations {
                    let read = log.read(offset, bytes.len()).await.expect("read").expect("data");
                    std::hint::black_box(read.bytes());
                    offset = if read.next_offset >= end { 0 } else { read.next_offset };
                }
                start.elapsed()
            })
            .expect("executor")
        })
    });
    group.finish();
}

fn index_lookup(c: &mut Criterion) {
    let mut index = SegmentIndex::new(0, 4096);
    for i in 0..262_144_u64 {
        index.observe(i * 4, i * 4096, 1_000_000 + i);
    }
    let mut group = c.benchmark_group("index");
    let mut probe = 0_u64;
    group.bench_function("offset_lookup_256k_entries", |b| {
        b.iter_batched(
            || {
                probe = (probe + 7919) % (262_144 * 4);
                probe
            },
            |offset| index.lookup_offset(offset),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("timestamp_lookup_256k_entries", |b| {
        b.iter_batched(
            || {
                probe = (probe + 7919) % 262_144;
                1_000_000 + probe
            },
            |ts| index.lookup_timestamp(ts),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, append, sequential_read, index_lookup);
criterion_main!(benches);
