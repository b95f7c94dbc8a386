//! The `loopback` workload: no broker, only loopback TCP between tokio senders and receivers in
//! this process. Its throughput is the ceiling the broker workloads are compared against.
//!
//! Each of `--producers` pairs is a sender thread and a receiver thread, each with its own
//! current-thread runtime (pinned with `--cores`: sender of pair i is actor 2i, its receiver
//! 2i + 1). A sender writes chunks of one batch's payload bytes (`--batch` × `--message-size`),
//! bounded by `--batches` or `--duration`, then closes; its receiver reads until end of stream.
//! Latency is the time of one chunk's `write_all`.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::report::{self, ActorResult, Role};
use crate::{current_thread_runtime, Bound, Settings};

/// The receivers' read buffer.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Runs the pairs and returns senders' and receivers' results.
pub fn run(settings: &Settings) -> Result<Vec<ActorResult>, String> {
    let barrier = Arc::new(Barrier::new(2 * settings.producers as usize));
    let mut threads = Vec::new();
    for pair in 0..settings.producers {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|error| format!("cannot listen on loopback: {error}"))?;
        let address = listener.local_addr().map_err(|error| format!("loopback address: {error}"))?;
        let (sender_settings, receiver_settings) = (settings.clone(), settings.clone());
        let (sender_barrier, receiver_barrier) = (barrier.clone(), barrier.clone());
        let sender_core = settings.core_of(2 * pair as usize);
        let receiver_core = settings.core_of(2 * pair as usize + 1);
        threads.push(spawn(format!("ringbench-send-{pair}"), move || {
            actor(sender_core, &sender_barrier, |runtime| {
                let stream = runtime
                    .block_on(TcpStream::connect(address))
                    .map_err(|error| connect_error(address, error))?;
                Ok(move |runtime: &tokio::runtime::Runtime| {
                    runtime.block_on(send(&sender_settings, pair, stream))
                })
            })
        })?);
        threads.push(spawn(format!("ringbench-receive-{pair}"), move || {
            actor(receiver_core, &receiver_barrier, |runtime| {
                let listener = {
                    let _entered = runtime.enter();
                    TcpListener::from_std(listener).map_err(|error| format!("loopback listener: {error}"))?
                };
                Ok(move |runtime: &tokio::runtime::Runtime| {
                    runtime.block_on(receive(&receiver_settings, pair, listener))
                })
            })
        })?);
    }
    let mut results = Vec::new();
    for thread in threads {
        results.push(thread.join().map_err(|_| "a loopback thread panicked".to_string())??);
    }
    Ok(results)
}

fn spawn(
    name: String,
    body: impl FnOnce() -> Result<ActorResult, String> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<ActorResult, String>>, String> {
    std::thread::Builder::new()
        .name(name)
        .spawn(body)
        .map_err(|error| format!("cannot start a thread: {error}"))
}

/// Pins, prepares on a fresh runtime, waits for every other actor, then runs.
fn actor<Run>(
    core: Option<usize>,
    barrier: &Barrier,
    prepare: impl FnOnce(&tokio::runtime::Runtime) -> Result<Run, String>,
) -> Result<ActorResult, String>
where
    Run: FnOnce(&tokio::runtime::Runtime) -> Result<ActorResult, String>,
{
    let prepared = (|| {
        if let Some(id) = core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                return Err(format!("cannot pin to core {id}"));
            }
        }
        let runtime = current_thread_runtime()?;
        let run = prepare(&runtime)?;
        Ok((runtime, run))
    })();
    // Every thread reaches the barrier, failed or not, so none waits forever.
    barrier.wait();
    let (runtime, run) = prepared?;
    run(&runtime)
}

fn connect_error(address: SocketAddr, error: std::io::Error) -> String {
    format!("cannot connect to {address}: {error}")
}

async fn send(settings: &Settings, pair: u32, mut stream: TcpStream) -> Result<ActorResult, String> {
    let chunk = vec![0x5a_u8; settings.batch_payload_bytes() as usize];
    let started = Instant::now();
    let measured_from = started + settings.warmup;
    let (chunks_max, deadline) = match settings.bound {
        Bound::Batches(batches) => (batches, None),
        Bound::Duration(duration) => (u64::MAX, Some(started + duration)),
    };
    let mut result = empty(Role::Sender, pair, measured_from)?;
    let mut sent = 0_u64;
    while sent < chunks_max && deadline.is_none_or(|deadline| Instant::now() < deadline) {
        if let Some(mb_per_s) = settings.rate_mb_per_s {
            let due = started + Duration::from_secs_f64(sent as f64 * chunk.len() as f64 / (mb_per_s * 1e6));
            tokio::time::sleep_until(due.into()).await;
        }
        let write_at = Instant::now();
        stream.write_all(&chunk).await.map_err(|error| format!("loopback sender {pair}: {error}"))?;
        let written_at = Instant::now();
        sent += 1;
        if written_at >= measured_from {
            let micros = u64::try_from((written_at - write_at).as_micros()).unwrap_or(u64::MAX);
            report::record(&mut result.latency, micros);
            result.bytes += chunk.len() as u64;
            result.messages += u64::from(settings.batch);
        }
    }
    stream.shutdown().await.map_err(|error| format!("loopback sender {pair}: {error}"))?;
    result.finished_at = Instant::now();
    Ok(result)
}

async fn receive(settings: &Settings, pair: u32, listener: TcpListener) -> Result<ActorResult, String> {
    let (mut stream, _) =
        listener.accept().await.map_err(|error| format!("loopback receiver {pair}: {error}"))?;
    let started = Instant::now();
    let measured_from = started + settings.warmup;
    let mut result = empty(Role::Receiver, pair, measured_from)?;
    let mut buffer = vec![0_u8; READ_BUFFER_BYTES];
    loop {
        let read =
            stream.read(&mut buffer).await.map_err(|error| format!("loopback receiver {pair}: {error}"))?;
        if read == 0 {
            break;
        }
        if Instant::now() >= measured_from {
            result.bytes += read as u64;
        }
    }
    result.finished_at = Instant::now();
    result.messages = result.bytes / u64::from(settings.message_size);
    Ok(result)
}

fn empty(role: Role, id: u32, measured_from: Instant) -> Result<ActorResult, String> {
    Ok(ActorResult {
        role,
        id,
        bytes: 0,
        wire_bytes: 0,
        bytes_all: 0,
        wire_bytes_all: 0,
        messages: 0,
        measured_from,
        finished_at: measured_from,
        latency: report::histogram()?,
    })
}
