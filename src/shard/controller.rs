//! The controller: shard 0's authority over metadata and consumer groups.
//!
//! Runs on shard 0 only. It owns the metadata log and the authoritative [`Catalog`], serialises
//! every change (one commit at a time), persists it before applying it, and broadcasts the new
//! catalog to every shard, replying only once all shards serve it — so a client that created a
//! topic can produce to it through any shard at once. It also coordinates consumer groups
//! (membership lives in memory; group offsets live with the partitions and survive restarts).
//!
//! Invariants: the catalog every shard holds is a snapshot the metadata log can reproduce;
//! revisions only grow; group assignments are recomputed whenever membership or partition counts
//! change.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use async_lock::Mutex;
use futures::channel::oneshot;

use super::error::{BrokerError, BrokerResult};
use super::groups::{GroupCoordinator, GroupError, GroupKey};
use super::mesh::{GroupOp, GroupReply, Mesh, ShardMessage};
use crate::io::dma::DmaIo;
use crate::metadata::catalog::{Catalog, MetadataOp};
use crate::metadata::log::MetadataLog;
use crate::protocol::messages::Status;

/// Shard 0's metadata and group authority.
pub struct Controller {
    log: MetadataLog<DmaIo>,
    catalog: RefCell<Arc<Catalog>>,
    groups: RefCell<GroupCoordinator>,
    commit_lock: Mutex<()>,
    mesh: Mesh,
}

impl Controller {
    /// Opens (replaying) the metadata log under `data_dir`, creating the root user when the
    /// catalog has none.
    pub async fn open(
        io: DmaIo,
        config: &crate::server::config::ServerConfig,
        mesh: Mesh,
    ) -> BrokerResult<Self> {
        let (log, mut catalog) = MetadataLog::open(io, &config.data_dir).await?;
        if catalog.users.is_empty() {
            let (user, password) = config.root_credentials();
            let op = crate::metadata::auth::root_user_op(&user, &password)?;
            log.commit(&mut catalog, op).await?;
            tracing::info!(user, "created the root user");
        }
        tracing::info!(
            revision = catalog.revision,
            streams = catalog.streams.len(),
            users = catalog.users.len(),
            "metadata replayed"
        );
        let seed = crate::model::now_us();
        Ok(Self {
            log,
            catalog: RefCell::new(Arc::new(catalog)),
            groups: RefCell::new(GroupCoordinator::new(seed)),
            commit_lock: Mutex::new(()),
            mesh,
        })
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// Sends the current catalog to every shard and waits until all serve it.
    pub async fn broadcast(&self) -> BrokerResult<()> {
        let catalog = self.catalog();
        let mut acks = Vec::with_capacity(self.mesh.shards());
        for shard in 0..self.mesh.shards() as u16 {
            let (ack, done) = oneshot::channel();
            self.mesh.send(shard, ShardMessage::Catalog { catalog: catalog.clone(), ack }).await?;
            acks.push((shard, done));
        }
        for (shard, done) in acks {
            done.await.map_err(|_| BrokerError::shard_gone(shard))?;
        }
        Ok(())
    }

    /// Validates, persists and broadcasts one change; answers the catalog after it.
    pub async fn commit(&self, op: MetadataOp) -> BrokerResult<Arc<Catalog>> {
        let _guard = self.commit_lock.lock().await;
        let mut next = (*self.catalog()).clone();
        self.log.commit(&mut next, op).await?;
        self.catalog.replace(Arc::new(next));
        self.reconcile_groups();
        self.broadcast().await?;
        Ok(self.catalog())
    }

    /// Brings group state in line with the catalog: removed groups dropped, partition counts
    /// updated (rebalancing).
    fn reconcile_groups(&self) {
        let catalog = self.catalog();
        let mut groups = self.groups.borrow_mut();
        for key in groups.keys() {
            let topic = catalog
                .streams
                .values()
                .find(|s| s.id == key.stream_id)
                .and_then(|s| s.topics.values().find(|t| t.id == key.topic_id));
            match topic {
                Some(topic) if topic.groups.contains(&key.name) => {
                    let _ = groups.set_partitions(&key, topic.partitions);
                }
                _ => {
                    groups.remove_group(&key);
                }
            }
        }
    }

    /// Answers a consumer-group operation.
    pub fn group(&self, op: GroupOp) -> BrokerResult<GroupReply> {
        let mut groups = self.groups.borrow_mut();
        let now = Instant::now();
        let reply = match op {
            GroupOp::Join { key, partitions, session_timeout } => {
                groups.ensure_group(key.clone(), partitions);
                GroupReply::Assignment(groups.join(&key, session_timeout, now).map_err(group_error)?)
            }
            GroupOp::Leave { key, member_id } => {
                groups.leave(&key, member_id).map_err(group_error)?;
                GroupReply::Done
            }
            GroupOp::Heartbeat { key, member_id } => {
                GroupReply::Assignment(groups.heartbeat(&key, member_id, now).map_err(group_error)?)
            }
            GroupOp::Assignment { key, member_id } => {
                GroupReply::Assignment(groups.assignment(&key, member_id).map_err(group_error)?)
            }
            GroupOp::Describe { key } => match groups.describe(&key, now) {
                Ok(snapshot) => GroupReply::Snapshot(snapshot),
                Err(GroupError::UnknownGroup) => GroupReply::Snapshot(Default::default()),
                Err(error) => return Err(group_error(error)),
            },
        };
        Ok(reply)
    }

    /// Removes members whose session timed out (called by a timer).
    pub fn expire_members(&self) {
        for (key, member) in self.groups.borrow_mut().expire(Instant::now()) {
            tracing::info!(group = key.name, member, "member session expired; rebalanced");
        }
    }

    /// Closes the metadata log.
    pub async fn close(&self) {
        if let Err(error) = self.log.close().await {
            tracing::error!(%error, "closing the metadata log");
        }
    }
}

fn group_error(error: GroupError) -> BrokerError {
    let status = match error {
        GroupError::UnknownGroup => Status::UnknownGroup,
        GroupError::UnknownMember => Status::UnknownMember,
        _ => Status::InvalidArgument,
    };
    BrokerError::new(status, error.to_string())
}

/// The group key of `group` on a topic.
pub fn group_key(stream_id: u32, topic_id: u32, group: &str) -> GroupKey {
    GroupKey { stream_id, topic_id, name: group.to_string() }
}
