//! `ringbroker`: the broker binary. Parses the flags (see `--help`), starts one pinned shard per
//! core, prints where it listens, and on SIGINT or SIGTERM shuts down gracefully: every shard
//! stops accepting, flushes, fsyncs and closes its partitions and the metadata log.
//!
//! The main thread only parses flags, waits for signals and joins the shards.

use clap::Parser;
use ringbroker::server::{self, config::ServerConfig};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// mimalloc: per-thread heaps (one per shard) and prompt return of freed pages, so the broker's
/// RSS follows what it holds rather than its peak (docs/architecture.md, "Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = ServerConfig::parse();
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(error) => fail(&format!("installing signal handlers: {error}")),
    };
    let data_dir = config.data_dir.clone();
    let fsync = config.fsync;
    let memory = format!(
        "cache_bytes={} ({} per shard), write_behind_bytes={} per partition, io_memory={} per shard",
        config.cache_bytes_total(),
        config.cache_bytes_per_shard(),
        config.write_behind_bytes,
        config.io_memory
    );
    let running = match server::start(config) {
        Ok(running) => running,
        Err(error) => fail(&error),
    };
    let direct: Vec<String> = running.shard_addresses.iter().flatten().map(|a| a.to_string()).collect();
    println!(
        "ringbroker {} listening on {} ({} shards; direct shard addresses: {}); data in {}; fsync {fsync}",
        env!("CARGO_PKG_VERSION"),
        running.listen,
        running.shard_addresses.len(),
        if direct.is_empty() { "off".to_string() } else { direct.join(", ") },
        data_dir.display(),
    );
    println!("memory: {memory}");
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    running.shutdown();
    println!("ringbroker stopped cleanly");
}

fn fail(message: &str) -> ! {
    eprintln!("ringbroker: {message}");
    std::process::exit(1);
}
