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
    if !config.allow_thp {
        disable_transparent_huge_pages();
    }
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(error) => fail(&format!("installing signal handlers: {error}")),
    };
    let data_dir = config.data_dir.clone();
    let fsync = config.fsync;
    let memory = format!(
        "cache_bytes={} ({} per shard, growing {} bytes/s), write_behind_bytes={} per partition, io_memory={} per shard",
        config.cache_bytes_total(),
        config.cache_bytes_per_shard(),
        config.cache_growth,
        config.write_behind_bytes,
        config.io_memory
    );
    let rabbitmq = config.rabbitmq_listen.map(|listen| {
        let shards = config.shards.unwrap_or_else(|| config.placement().len()) as u16;
        let direct: Vec<String> =
            (0..shards).filter_map(|s| config.rabbitmq_shard_address(s)).map(|a| a.to_string()).collect();
        let direct = if direct.is_empty() { "off".to_string() } else { direct.join(", ") };
        format!(
            "rabbitmq streams on {listen} (per shard: {direct}; broker stream \"{}\")",
            config.rabbitmq_stream
        )
    });
    let kafka = config.kafka_listen.map(|listen| {
        let shards = config.shards.unwrap_or_else(|| config.placement().len()) as u16;
        let direct: Vec<String> =
            (0..shards).filter_map(|s| config.kafka_shard_address(s)).map(|a| a.to_string()).collect();
        let direct = if direct.is_empty() { "off".to_string() } else { direct.join(", ") };
        format!("kafka on {listen} (per shard: {direct}; broker stream \"{}\")", config.kafka_stream)
    });
    let publish_every = config.metrics_publish_interval;
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
    if let Some(rabbitmq) = rabbitmq {
        println!("{rabbitmq}");
    }
    if let Some(kafka) = kafka {
        println!("{kafka}");
    }
    if let Some(endpoint) = &running.metrics {
        println!(
            "metrics on http://{}/metrics (partition figures every {publish_every:?})",
            endpoint.address()
        );
    }
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

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`). The broker's large
/// buffers (request frames, cached batches, O_DIRECT chunks) are about 1 MiB each; backed by
/// 2 MiB pages, each fresh one zero-fills twice what it uses and RSS runs up to twice what the
/// cache accounts for (measured: 1.5 GB RSS for a 0.7 GB cache, and lower produce throughput).
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integer arguments and touches no memory.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not turn transparent huge pages off");
    }
}
