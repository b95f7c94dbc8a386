//! `ringbroker`: the broker binary. Until the network server lands (issue 3) it runs the storage
//! engine end to end: opens (and recovers) a partition log under `--data-dir` on a glommio
//! executor, appends `--batches` batches of `--batch-messages` × `--message-bytes`, reads them all
//! back verifying every CRC, prints the figures and the log's marks, and exits.
//!
//! Runs on one glommio executor thread; the main thread only parses flags and waits.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use ringbroker::io::dma::{run_local, DmaIo};
use ringbroker::protocol::batch::{self, BatchBuilder};
use ringbroker::storage::{FsyncPolicy, LogConfig, PartitionLog};

/// Storage demo of the ringbroker partition log on io_uring (the server arrives in the next
/// release).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory holding the data (created if missing).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Durability: `always` (ack after fdatasync, group commit), `interval=MS`, or `never`.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Size at which a segment is sealed and a new one started.
    #[arg(long, default_value_t = ringbroker::constants::SEGMENT_BYTES_DEFAULT)]
    segment_bytes: u64,
    /// Seal the active segment once its first batch is this many seconds old.
    #[arg(long)]
    segment_max_age_secs: Option<u64>,
    /// Bytes of DMA memory registered with io_uring (fitted under RLIMIT_MEMLOCK).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    io_memory: usize,
    /// Batches to append in this run.
    #[arg(long, default_value_t = 200)]
    batches: u32,
    /// Messages per batch.
    #[arg(long, default_value_t = 1000)]
    batch_messages: u32,
    /// Bytes per message payload.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    match run_local("ringbroker-0", args.io_memory, move || demo(args)) {
        Ok(Ok(())) => {}
        Ok(Err(message)) => {
            eprintln!("ringbroker: {message}");
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!("ringbroker: could not start the executor: {error}");
            std::process::exit(1);
        }
    }
}

async fn demo(args: Args) -> Result<(), String> {
    let io = DmaIo::new(&args.data_dir).await.map_err(|e| e.to_string())?;
    let config = LogConfig {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        segment_max_age: args.segment_max_age_secs.map(Duration::from_secs),
        ..LogConfig::default()
    };
    let dir = args.data_dir.join("demo/events/0");
    let (log, repairs) = PartitionLog::open(io, &dir, config).await.map_err(|e| e.to_string())?;
    println!("opened {} ({} repairs), offsets {:?}", dir.display(), repairs.len(), log.offsets());
    let mut builder = BatchBuilder::new(1, 0);
    let payload = vec![b'x'; args.message_bytes];
    for _ in 0..args.batch_messages {
        builder.push_payload(&payload).map_err(|e| e.to_string())?;
    }
    let template = builder.finish().map_err(|e| e.to_string())?;
    let first = log.offsets().dirty_next;
    let start = Instant::now();
    for _ in 0..args.batches {
        let mut bytes = template.clone();
        log.append(&mut bytes).await.map_err(|e| e.to_string())?;
    }
    report("appended", u64::from(args.batches) * template.len() as u64, start.elapsed());
    let start = Instant::now();
    let (mut offset, mut bytes_read, mut records) = (first, 0_u64, 0_u64);
    while let Some(read) = log.read(offset, 1 << 20).await.map_err(|e| e.to_string())? {
        for found in batch::batches(read.bytes()) {
            let found = found.map_err(|e| format!("corrupt batch read back: {e}"))?;
            records += u64::from(found.header().record_count);
        }
        bytes_read += read.bytes().len() as u64;
        offset = read.next_offset;
    }
    report("read back", bytes_read, start.elapsed());
    println!("verified {records} records; offsets {:?}; fsyncs/appends {:?}", log.offsets(), log.counters());
    log.close().await.map_err(|e| e.to_string())
}

fn report(what: &str, bytes: u64, elapsed: Duration) {
    let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6;
    println!("{what} {:.1} MB in {:.3}s: {rate:.0} MB/s", bytes as f64 / 1e6, elapsed.as_secs_f64());
}
