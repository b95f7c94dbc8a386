//! Shards: one glommio executor pinned per core, each owning a set of partitions outright.
//!
//! A [`Shard`] is created on its own executor thread and never leaves it. It holds the catalog
//! snapshot and partition→shard table every shard shares, the partitions it owns, the mesh of
//! channels to the other shards, and (on shard 0) the [`controller::Controller`]. [`run`] is the
//! shard's mesh loop: it answers requests other shards forward to it, each in its own task so a
//! long poll never blocks the loop.
//!
//! Invariants: a partition is served only by the shard the table names; catalog updates are
//! applied in the order the controller sends them, and a shard acknowledges an update only once
//! its partitions match it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub mod cache;
pub mod controller;
pub mod durable;
pub mod error;
pub mod groups;
pub mod leases;
pub mod mesh;
pub mod partitions;
pub mod payload;
pub mod producer_ops;
pub mod producers;
pub mod sac;

use error::{BrokerError, BrokerResult};
use mesh::{Mesh, ShardMessage};
use partitions::{LocalPoll, PartitionManager};

use crate::metadata::catalog::Catalog;
use crate::metadata::table::ShardTable;
use crate::protocol::messages::ServerCounters;
use crate::server::config::ServerConfig;

/// Counters shared by every shard (atomics; read by Stats).
#[derive(Debug, Default)]
pub struct SharedCounters {
    /// Open connections.
    pub connections: AtomicU64,
    /// Requests forwarded to another shard.
    pub forwarded_requests: AtomicU64,
    /// Forwarded produce bytes that arrived in the buffer they were read into.
    pub forwarded_bytes_zero_copy: AtomicU64,
    /// Forwarded produce bytes that arrived elsewhere (a copy; should stay 0).
    pub forwarded_bytes_copied: AtomicU64,
    /// Push subscriptions open now.
    pub subscriptions: AtomicU64,
    /// `Deliver` frames queued for subscriptions.
    pub deliveries: AtomicU64,
    /// Batch bytes in those frames.
    pub delivered_bytes: AtomicU64,
    /// Batches filtered polls skipped.
    pub filtered_batches: AtomicU64,
    /// Their bytes.
    pub filtered_bytes: AtomicU64,
}

impl SharedCounters {
    /// A snapshot for the wire.
    pub fn snapshot(&self, shards: u16) -> ServerCounters {
        ServerCounters {
            shards,
            connections: self.connections.load(Ordering::Relaxed),
            forwarded_requests: self.forwarded_requests.load(Ordering::Relaxed),
            forwarded_bytes_zero_copy: self.forwarded_bytes_zero_copy.load(Ordering::Relaxed),
            forwarded_bytes_copied: self.forwarded_bytes_copied.load(Ordering::Relaxed),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            delivered_bytes: self.delivered_bytes.load(Ordering::Relaxed),
            filtered_batches: self.filtered_batches.load(Ordering::Relaxed),
            filtered_bytes: self.filtered_bytes.load(Ordering::Relaxed),
        }
    }
}

/// One shard's state, on its own core.
pub struct Shard {
    /// Shard id (0 is the controller).
    pub id: u16,
    /// Server configuration.
    pub config: Arc<ServerConfig>,
    /// Channels to every shard.
    pub mesh: Mesh,
    /// Counters shared by all shards.
    pub counters: Arc<SharedCounters>,
    /// This shard's own metrics (written only here; the metrics endpoint reads them).
    pub metrics: Arc<crate::metrics::ShardMetrics>,
    /// The partitions this shard owns.
    pub partitions: PartitionManager,
    /// Shard 0 only.
    pub controller: Option<controller::Controller>,
    /// Producer leases of the topics this shard coordinates.
    pub leases: leases::Leases,
    /// Single-active-consumer groups of the topics this shard coordinates.
    pub sac: sac::SacGroups,
    /// Kafka consumer groups this shard coordinates (`crate::wire::kafka::groups`).
    pub(crate) kafka_groups: crate::wire::kafka::groups::Coordinator,
    catalog: RefCell<Arc<Catalog>>,
    catalog_installed: event_listener::Event,
    install_lock: async_lock::Mutex<()>,
    shutting_down: Cell<bool>,
}

impl Shard {
    /// A shard with an empty catalog (the controller's first broadcast fills it).
    pub fn new(
        id: u16,
        config: Arc<ServerConfig>,
        mesh: Mesh,
        counters: Arc<SharedCounters>,
        partitions: PartitionManager,
        controller: Option<controller::Controller>,
    ) -> Self {
        let leases = leases::Leases::new(config.producer_session_timeout);
        Self {
            id,
            config,
            mesh,
            counters,
            metrics: partitions.metrics().clone(),
            partitions,
            controller,
            leases,
            sac: sac::SacGroups::default(),
            kafka_groups: Default::default(),
            catalog: RefCell::new(Arc::new(Catalog::default())),
            catalog_installed: event_listener::Event::new(),
            install_lock: async_lock::Mutex::new(()),
            shutting_down: Cell::new(false),
        }
    }

    /// The catalog this shard serves.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// The partition→shard table for the current catalog.
    pub fn table(&self) -> ShardTable {
        ShardTable::new(self.catalog.borrow().revision, self.mesh.shards() as u16)
    }

    /// Number of shards.
    pub fn shards(&self) -> u16 {
        self.mesh.shards() as u16
    }

    /// True once shutdown began.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Installs a catalog (not older than the one held): opens and closes partitions to match,
    /// then serves it.
    pub async fn install(&self, catalog: Arc<Catalog>) -> BrokerResult<()> {
        let _one_at_a_time = self.install_lock.lock().await;
        if catalog.revision < self.catalog.borrow().revision {
            return Ok(());
        }
        // Open the new partitions before publishing the catalog, so no request on this shard sees
        // a partition it owns that is not open yet.
        let table = crate::metadata::table::ShardTable::new(catalog.revision, self.shards());
        let synced = self.partitions.sync_with(&catalog, &table).await;
        if catalog.revision >= self.catalog.borrow().revision {
            self.catalog.replace(catalog);
        }
        self.catalog_installed.notify(usize::MAX);
        synced
    }

    /// Waits until the controller's first catalog is installed (the root user exists, so the
    /// revision is at least 1).
    pub async fn wait_for_catalog(&self) {
        while self.catalog.borrow().revision == 0 {
            let listener = self.catalog_installed.listen();
            if self.catalog.borrow().revision > 0 {
                break;
            }
            listener.await;
        }
    }

    /// Runs a commit on the controller (forwarding to shard 0 when this is not it) and installs
    /// the resulting catalog here at once.
    pub async fn commit(&self, op: crate::metadata::catalog::MetadataOp) -> BrokerResult<Arc<Catalog>> {
        let catalog = match &self.controller {
            Some(controller) => controller.commit(op).await?,
            None => self.mesh.ask(0, |reply| ShardMessage::Commit { op, reply }).await?,
        };
        if catalog.revision > self.catalog.borrow().revision {
            self.install(catalog.clone()).await?;
        }
        Ok(catalog)
    }

    /// Runs a group operation on the controller.
    pub async fn group(&self, op: mesh::GroupOp) -> BrokerResult<mesh::GroupReply> {
        match &self.controller {
            Some(controller) => controller.group(op),
            None => self.mesh.ask(0, |reply| ShardMessage::Group { op, reply }).await,
        }
    }
}

/// Publishes this shard's partition figures for the metrics endpoint every
/// `--metrics-publish-interval`, until shutdown; returns at once when `--metrics-listen` is off.
pub async fn publish_metrics(shard: Rc<Shard>) {
    if shard.config.metrics_listen.is_none() {
        return;
    }
    let every = shard.config.metrics_publish_interval.max(std::time::Duration::from_millis(10));
    while !shard.shutting_down() {
        let figures = shard.partitions.figures(&shard.catalog(), &shard.metrics.figures());
        shard.metrics.publish(figures);
        glommio::timer::sleep(every).await;
    }
}

/// The shard's mesh loop: serves forwarded requests until a shutdown message arrives.
pub async fn run(shard: Rc<Shard>, receiver: flume::Receiver<ShardMessage>) {
    while let Ok(message) = receiver.recv_async().await {
        match message {
            ShardMessage::Catalog { catalog, ack } => {
                if let Err(error) = shard.install(catalog).await {
                    tracing::error!(shard = shard.id, %error, "applying a catalog update");
                }
                let _ = ack.send(());
            }
            ShardMessage::Shutdown { ack } => {
                shard.shutting_down.set(true);
                shard.partitions.close_all().await;
                if let Some(controller) = &shard.controller {
                    controller.close().await;
                }
                let _ = ack.send(());
                tracing::info!(shard = shard.id, "shard stopped");
                return;
            }
            message => {
                let shard = shard.clone();
                glommio::spawn_local(async move { serve(&shard, message).await }).detach();
            }
        }
    }
}

/// Answers one forwarded request.
async fn serve(shard: &Rc<Shard>, message: ShardMessage) {
    match message {
        ShardMessage::Produce(job) => {
            let arrived = job.frame[job.payload.clone()].as_ptr() as usize;
            let bytes = job.payload.len() as u64;
            let counter = if arrived == job.payload_address {
                &shard.counters.forwarded_bytes_zero_copy
            } else {
                &shard.counters.forwarded_bytes_copied
            };
            counter.fetch_add(bytes, Ordering::Relaxed);
            let result = shard.partitions.produce(job.key, job.frame, job.payload, job.batch_count).await;
            let _ = job.reply.send(result);
        }
        ShardMessage::Poll { key, spec, reply } => {
            let _ = reply.send(shard.partitions.poll(key, &spec).await.map(LocalPoll::into_outcome));
        }
        ShardMessage::Offset { key, consumer_key, op, reply } => {
            let _ = reply.send(shard.partitions.offset(key, &consumer_key, op).await);
        }
        ShardMessage::Durable { key, op, reply } => {
            let result = durable::ops::run(shard, key, op).await.map(durable::ops::DurableReply::into_sent);
            let _ = reply.send(result);
        }
        ShardMessage::Stats { reply } => {
            let _ = reply.send(shard.partitions.stats());
        }
        ShardMessage::Commit { op, reply } => {
            let result = match &shard.controller {
                Some(controller) => controller.commit(op).await,
                None => Err(BrokerError::new(
                    crate::protocol::messages::Status::Internal,
                    "commit sent to a non-controller shard",
                )),
            };
            let _ = reply.send(result);
        }
        ShardMessage::Group { op, reply } => {
            let result = match &shard.controller {
                Some(controller) => controller.group(op),
                None => Err(BrokerError::new(
                    crate::protocol::messages::Status::Internal,
                    "group op sent to a non-controller shard",
                )),
            };
            let _ = reply.send(result);
        }
        ShardMessage::Producer { op, reply } => {
            let _ = reply.send(shard.run_producer_op(op).await);
        }
        ShardMessage::Sac { op, reply } => {
            shard.run_sac_op(op);
            let _ = reply.send(Ok(()));
        }
        ShardMessage::SacMember { update, reply } => {
            let _ = reply.send(crate::server::subscriptions::member_update(update).await);
        }
        ShardMessage::KafkaGroup { version, user, request, reply } => {
            let response = crate::wire::kafka::groups::forwarded(shard, version, user, *request).await;
            let _ = reply.send(Ok(response));
        }
        ShardMessage::Catalog { .. } | ShardMessage::Shutdown { .. } => {}
    }
}
