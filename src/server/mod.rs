//! The broker server: starts one pinned glommio executor per shard, wires the mesh, opens the
//! metadata and partitions, accepts connections on every shard, and shuts down gracefully.
//!
//! [`start`] runs on the main thread and returns a [`RunningServer`] once every shard serves;
//! each shard then runs on its own core until [`RunningServer::shutdown`] (SIGINT / SIGTERM in
//! the binary) asks every shard to stop accepting, flush, fsync and close. Invariants: no shard
//! accepts a connection before it holds the controller's catalog; shutdown acknowledges only
//! after every partition and the metadata log are closed.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

pub mod admin;
pub mod config;
pub mod connection;
pub mod data;
pub mod durable;
pub mod frame_pool;
pub mod handlers;
mod ops;
pub mod producers;
pub mod subscriptions;
pub mod super_streams;
pub mod tls;

use crate::io::dma::{plan_io_memory, DmaIo};
use crate::shard::controller::Controller;
use crate::shard::mesh::{mesh, Mesh, ShardMessage};
use crate::shard::partitions::PartitionManager;
use crate::shard::{Shard, SharedCounters};
use config::ServerConfig;

/// How often the controller expires silent group members.
const GROUP_EXPIRY_INTERVAL: Duration = Duration::from_millis(500);
/// How often shards check interval fsyncs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(50);

/// A started server.
pub struct RunningServer {
    mesh: Mesh,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    /// The address every shard listens on.
    pub listen: SocketAddr,
    /// Each shard's direct address, when per-shard listeners are on.
    pub shard_addresses: Vec<Option<SocketAddr>>,
    /// The metrics endpoint (`--metrics-listen`), stopped at shutdown.
    pub metrics: Option<crate::metrics::Endpoint>,
}

/// Starts every shard and returns once all serve (or the first start-up error).
pub fn start(mut config: ServerConfig) -> Result<RunningServer, String> {
    config.check()?;
    // Resolved here, on the starting thread: a shard thread is pinned to one core, so asking
    // for the usable cores from there would count one, and per-shard shares would be totals.
    if config.cores.is_none() {
        config.shards = Some(config.placement().len());
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("creating {}: {e}", config.data_dir.display()))?;
    let placement = config.placement();
    let shards = placement.len();
    let plan = plan_io_memory(config.io_memory, shards);
    let acceptor = tls::load(&config)?;
    let config = Arc::new(config);
    let (mesh_handle, receivers) = mesh(shards);
    let counters = Arc::new(SharedCounters::default());
    let metrics = crate::metrics::Metrics::new(shards);
    let endpoint = start_metrics(&config, &metrics, &counters, shards)?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<u16, String>>();
    let mut threads = Vec::with_capacity(shards);
    for (id, (receiver, core)) in receivers.into_iter().zip(placement).enumerate() {
        let placement = core.map_or(Placement::Unbound, Placement::Fixed);
        let (config, mesh, counters, ready, acceptor) =
            (config.clone(), mesh_handle.clone(), counters.clone(), ready_tx.clone(), acceptor.clone());
        let shard_metrics = metrics.shard(id as u16);
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("ringbroker-shard-{id}"))
            .io_memory(plan.io_memory_per_shard_bytes)
            .ring_depth(config.ring_depth)
            .spin_before_park(config.spin_before_park);
        let handle = builder
            .spawn(move || async move {
                let id = id as u16;
                match boot(id, config, mesh, counters, shard_metrics).await {
                    Ok((shard, listeners)) => serve(shard, listeners, acceptor, receiver, ready).await,
                    Err(error) => {
                        let _ = ready.send(Err(format!("shard {id}: {error}")));
                    }
                }
            })
            .map_err(|e| format!("starting shard {id}: {e}"))?;
        threads.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err("a shard stopped during start-up".to_string()),
        }
    }
    let shard_addresses = (0..shards as u16).map(|s| config.shard_address(s)).collect();
    Ok(RunningServer {
        mesh: mesh_handle,
        threads,
        listen: config.listen,
        shard_addresses,
        metrics: endpoint,
    })
}

/// Starts the metrics endpoint when `--metrics-listen` is given.
fn start_metrics(
    config: &ServerConfig,
    metrics: &crate::metrics::Metrics,
    counters: &Arc<SharedCounters>,
    shards: usize,
) -> Result<Option<crate::metrics::Endpoint>, String> {
    let Some(listen) = config.metrics_listen else { return Ok(None) };
    let counters = counters.clone();
    let broker: crate::metrics::BrokerCounters = Box::new(move || counters.snapshot(shards as u16));
    let endpoint =
        metrics.serve(listen, Some(broker)).map_err(|e| format!("binding --metrics-listen {listen}: {e}"))?;
    Ok(Some(endpoint))
}

impl RunningServer {
    /// Asks every shard to stop (flush, fsync, close) and waits for all of them.
    pub fn shutdown(self) {
        drop(self.metrics);
        let mut acks = Vec::new();
        for shard in 0..self.mesh.shards() as u16 {
            let (ack, done) = oneshot::channel();
            if futures::executor::block_on(self.mesh.send(shard, ShardMessage::Shutdown { ack })).is_ok() {
                acks.push(done);
            }
        }
        for done in acks {
            let _ = futures::executor::block_on(done);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// One shard's listening sockets, by wire.
struct Listeners {
    native: Vec<TcpListener>,
    rabbitmq: Vec<TcpListener>,
    kafka: Vec<TcpListener>,
}

/// Prepares one shard: I/O, the catalog (shard 0 replays the metadata log and broadcasts it;
/// the others wait for it), the partitions it owns, and its listeners.
async fn boot(
    id: u16,
    config: Arc<ServerConfig>,
    mesh: Mesh,
    counters: Arc<SharedCounters>,
    metrics: Arc<crate::metrics::ShardMetrics>,
) -> Result<(Rc<Shard>, Listeners), String> {
    let io = DmaIo::new(&config.data_dir).await.map_err(|e| e.to_string())?;
    let partitions = PartitionManager::new(id, io.clone(), config.clone(), metrics);
    let controller = if id == 0 {
        Some(Controller::open(io, &config, mesh.clone()).await.map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut listeners =
        vec![TcpListener::bind(config.listen).map_err(|e| format!("binding {}: {e}", config.listen))?];
    if let Some(address) = config.shard_address(id) {
        listeners
            .push(TcpListener::bind(address).map_err(|e| format!("binding shard address {address}: {e}"))?);
    }
    let mut rabbitmq = Vec::new();
    if let Some(address) = config.rabbitmq_listen {
        rabbitmq.push(
            TcpListener::bind(address).map_err(|e| format!("binding --rabbitmq-listen {address}: {e}"))?,
        );
    }
    if let Some(address) = config.rabbitmq_shard_address(id) {
        rabbitmq.push(
            TcpListener::bind(address)
                .map_err(|e| format!("binding RabbitMQ shard address {address}: {e}"))?,
        );
    }
    let mut kafka = Vec::new();
    if let Some(address) = config.kafka_listen {
        kafka.push(TcpListener::bind(address).map_err(|e| format!("binding --kafka-listen {address}: {e}"))?);
    }
    if let Some(address) = config.kafka_shard_address(id) {
        kafka.push(
            TcpListener::bind(address).map_err(|e| format!("binding Kafka shard address {address}: {e}"))?,
        );
    }
    let shard = Rc::new(Shard::new(id, config, mesh, counters, partitions, controller));
    Ok((shard, Listeners { native: listeners, rabbitmq, kafka }))
}

/// Runs a booted shard: the controller broadcasts the catalog, every shard serves its mesh,
/// accepts connections, and runs its timers, until shutdown.
async fn serve(
    shard: Rc<Shard>,
    listeners: Listeners,
    acceptor: Option<tls::Acceptor>,
    receiver: flume::Receiver<ShardMessage>,
    ready: mpsc::Sender<Result<u16, String>>,
) {
    let mesh_loop = glommio::spawn_local(crate::shard::run(shard.clone(), receiver));
    if let Some(controller) = &shard.controller {
        if let Err(error) = controller.broadcast().await {
            let _ = ready.send(Err(format!("broadcasting the initial catalog: {error}")));
            return;
        }
        let expiring = shard.clone();
        glommio::spawn_local(async move {
            while !expiring.shutting_down() {
                glommio::timer::sleep(GROUP_EXPIRY_INTERVAL).await;
                if let Some(controller) = &expiring.controller {
                    controller.expire_members();
                }
            }
        })
        .detach();
    }
    shard.wait_for_catalog().await;
    for listener in listeners.native {
        glommio::spawn_local(accept(shard.clone(), listener, acceptor.clone(), Wire::Native)).detach();
    }
    for listener in listeners.rabbitmq {
        glommio::spawn_local(accept(shard.clone(), listener, acceptor.clone(), Wire::RabbitMq)).detach();
    }
    for listener in listeners.kafka {
        glommio::spawn_local(accept(shard.clone(), listener, acceptor.clone(), Wire::Kafka)).detach();
    }
    glommio::spawn_local(maintain(shard.clone())).detach();
    glommio::spawn_local(crate::shard::publish_metrics(shard.clone())).detach();
    let _ = ready.send(Ok(shard.id));
    tracing::info!(shard = shard.id, "serving");
    mesh_loop.await;
}

/// Accepts connections until shutdown; each gets its own task (which runs the TLS handshake
/// first when TLS is on).
async fn accept(shard: Rc<Shard>, listener: TcpListener, acceptor: Option<tls::Acceptor>, wire: Wire) {
    while !shard.shutting_down() {
        match listener.accept().await {
            Ok(stream) => {
                let (shard, acceptor) = (shard.clone(), acceptor.clone());
                match wire {
                    Wire::Native => {
                        glommio::spawn_local(connection::serve_tcp(shard, stream, acceptor)).detach()
                    }
                    Wire::RabbitMq => {
                        glommio::spawn_local(crate::wire::rabbitmq::serve_tcp(shard, stream, acceptor))
                            .detach()
                    }
                    Wire::Kafka => {
                        glommio::spawn_local(crate::wire::kafka::serve_tcp(shard, stream, acceptor)).detach()
                    }
                };
            }
            Err(error) => {
                tracing::warn!(shard = shard.id, %error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Which protocol a listener speaks.
#[derive(Clone, Copy)]
enum Wire {
    Native,
    RabbitMq,
    Kafka,
}

/// Interval fsyncs and retention on this shard's partitions.
async fn maintain(shard: Rc<Shard>) {
    let retention_every =
        (shard.config.retention_check_interval.as_millis() / MAINTENANCE_INTERVAL.as_millis()).max(1) as u64;
    let mut tick = 0_u64;
    while !shard.shutting_down() {
        glommio::timer::sleep(MAINTENANCE_INTERVAL).await;
        tick += 1;
        shard.partitions.maintain(tick % retention_every == 0).await;
    }
}
