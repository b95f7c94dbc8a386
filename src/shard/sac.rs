//! Single active consumer: the groups of subscriptions that share a consumer name on a
//! partition (or on every partition of a super stream), which member of each is active, and the
//! hand-over between members.
//!
//! What it owns: [`SacGroups`], the groups of the topics this shard coordinates (the same hash
//! as producer leases, [`coordinator`](super::leases::coordinator)), and the rebalancing that
//! tells member shards to deactivate and activate subscriptions ([`MemberUpdate`], answered by
//! the member's connection shard once its client answered `ConsumerUpdate`).
//!
//! Which core: the coordinator shard. A group's changes run one at a time behind its async
//! mutex; joins and leaves only record membership and answer at once, and the hand-over runs in
//! a task of its own (the member being activated must be free to receive `ConsumerUpdate`
//! before its `Subscribe` is answered).
//!
//! Invariants:
//! * members keep registration order; on a single partition the first member is active, on a
//!   super stream partition `i` goes to member `i % members` (RabbitMQ's rule);
//! * at most one member is active per partition: a partition's active member is deactivated
//!   (and its answer awaited, so it can store its offset) before the next one is activated;
//! * a member that left, disconnected or cannot be reached is dropped without waiting.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::leases::TopicKey;
use super::mesh::ShardMessage;
use super::Shard;

/// A group: a consumer name on one partition, or on a whole topic (super stream).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SacKey {
    /// The topic.
    pub topic: TopicKey,
    /// The consumer name.
    pub name: String,
    /// The partition, or `None` for the super-stream group over every partition.
    pub partition: Option<u32>,
    /// A one-partition group of a super stream's member (RabbitMQ's `super-stream` property):
    /// partition `i` goes to member `i % members`, so that consumers subscribing to every member
    /// stream spread over them; otherwise the first member is active.
    pub spread: bool,
}

/// One member: a subscription on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SacMember {
    /// The shard serving the member's connection.
    pub shard: u16,
    /// The connection's session id.
    pub session: u64,
    /// The subscription.
    pub subscription_id: u32,
}

/// Membership changes sent to the coordinator.
#[derive(Debug, Clone)]
pub enum SacOp {
    /// `member` subscribed; the topic has `partitions` partitions.
    Join {
        /// The group.
        key: SacKey,
        /// Who.
        member: SacMember,
        /// Partitions of the topic.
        partitions: u32,
    },
    /// `member` unsubscribed.
    Leave {
        /// The group.
        key: SacKey,
        /// Who.
        member: SacMember,
    },
    /// Every member on this session is gone.
    SessionEnded {
        /// The session.
        session: u64,
    },
}

/// Sent to a member's shard: its subscription becomes active or inactive on a partition.
#[derive(Debug, Clone, Copy)]
pub struct MemberUpdate {
    /// The member.
    pub member: SacMember,
    /// The partition.
    pub partition: u32,
    /// Active from now on, or no longer.
    pub active: bool,
}

#[derive(Default)]
struct Group {
    members: Vec<SacMember>,
    partitions: u32,
    active: BTreeMap<u32, SacMember>,
    lock: Rc<async_lock::Mutex<()>>,
}

impl Group {
    /// Who should be active on each partition now.
    fn wanted(&self, key: &SacKey) -> BTreeMap<u32, SacMember> {
        let mut wanted = BTreeMap::new();
        if self.members.is_empty() {
            return wanted;
        }
        match key.partition {
            Some(partition) => {
                let index = if key.spread { partition as usize % self.members.len() } else { 0 };
                wanted.insert(partition, self.members[index]);
            }
            None => {
                for partition in 0..self.partitions {
                    wanted.insert(partition, self.members[partition as usize % self.members.len()]);
                }
            }
        }
        wanted
    }
}

/// The single-active-consumer groups a coordinator shard holds.
#[derive(Default)]
pub struct SacGroups {
    groups: RefCell<HashMap<SacKey, Group>>,
}

impl SacGroups {
    /// Records a change; true when the group needs rebalancing.
    fn apply(&self, op: &SacOp) -> Vec<SacKey> {
        let mut groups = self.groups.borrow_mut();
        match op {
            SacOp::Join { key, member, partitions } => {
                let group = groups.entry(key.clone()).or_default();
                group.partitions = *partitions;
                if !group.members.contains(member) {
                    group.members.push(*member);
                }
                vec![key.clone()]
            }
            SacOp::Leave { key, member } => match groups.get_mut(key) {
                Some(group) => {
                    group.members.retain(|m| m != member);
                    group.active.retain(|_, m| m != member);
                    vec![key.clone()]
                }
                None => Vec::new(),
            },
            SacOp::SessionEnded { session } => {
                let mut touched = Vec::new();
                for (key, group) in groups.iter_mut() {
                    let before = group.members.len();
                    group.members.retain(|m| m.session != *session);
                    group.active.retain(|_, m| m.session != *session);
                    if group.members.len() != before {
                        touched.push(key.clone());
                    }
                }
                touched
            }
        }
    }

    /// The active member of a partition, for tests and listings.
    pub fn active(&self, key: &SacKey, partition: u32) -> Option<SacMember> {
        self.groups.borrow().get(key).and_then(|group| group.active.get(&partition).copied())
    }
}

impl Shard {
    /// Coordinator side of a membership change: records it and starts the hand-over.
    pub fn run_sac_op(self: &Rc<Self>, op: SacOp) {
        for key in self.sac.apply(&op) {
            let shard = self.clone();
            glommio::spawn_local(async move { shard.rebalance(key).await }).detach();
        }
    }

    /// Brings a group's active members in line with its membership, one partition at a time:
    /// deactivate the current one (awaiting its answer), then activate the wanted one. A member
    /// that fails to answer is dropped and the group rebalanced again.
    async fn rebalance(self: Rc<Self>, key: SacKey) {
        let Some(lock) = self.sac.groups.borrow().get(&key).map(|group| group.lock.clone()) else { return };
        let _one_at_a_time = lock.lock().await;
        loop {
            let changes: Vec<(u32, Option<SacMember>, Option<SacMember>)> = {
                let groups = self.sac.groups.borrow();
                let Some(group) = groups.get(&key) else { return };
                let wanted = group.wanted(&key);
                let partitions = group
                    .active
                    .keys()
                    .chain(wanted.keys())
                    .copied()
                    .collect::<std::collections::BTreeSet<_>>();
                partitions
                    .into_iter()
                    .map(|p| (p, group.active.get(&p).copied(), wanted.get(&p).copied()))
                    .filter(|(_, now, wanted)| now != wanted)
                    .collect()
            };
            if changes.is_empty() {
                let mut groups = self.sac.groups.borrow_mut();
                if groups.get(&key).is_some_and(|group| group.members.is_empty()) {
                    groups.remove(&key);
                }
                return;
            }
            let mut dropped = None;
            for (partition, now, wanted) in changes {
                if let Some(now) = now {
                    // Its answer lets it store its offset first; a failure only means it is gone.
                    let _ = self.member_update(MemberUpdate { member: now, partition, active: false }).await;
                    if let Some(group) = self.sac.groups.borrow_mut().get_mut(&key) {
                        group.active.remove(&partition);
                    }
                }
                if let Some(wanted) = wanted {
                    match self.member_update(MemberUpdate { member: wanted, partition, active: true }).await {
                        Ok(()) => {
                            if let Some(group) = self.sac.groups.borrow_mut().get_mut(&key) {
                                group.active.insert(partition, wanted);
                            }
                        }
                        Err(error) => {
                            tracing::debug!(partition, %error.message, "a single-active member is gone");
                            dropped = Some(wanted);
                            break;
                        }
                    }
                }
            }
            if let Some(member) = dropped {
                self.sac.apply(&SacOp::Leave { key: key.clone(), member });
            }
        }
    }

    /// Tells a member's shard about an activation change and waits for its client's answer.
    async fn member_update(&self, update: MemberUpdate) -> super::error::BrokerResult<()> {
        if update.member.shard == self.id {
            return crate::server::subscriptions::member_update(update).await;
        }
        self.mesh.ask(update.member.shard, |reply| ShardMessage::SacMember { update, reply }).await
    }

    /// Sends a membership change to `coordinator` (the topic's, by
    /// [`coordinator`](super::leases::coordinator)); answered once recorded.
    pub async fn sac_op_on(self: &Rc<Self>, coordinator: u16, op: SacOp) -> super::error::BrokerResult<()> {
        if coordinator == self.id {
            self.run_sac_op(op);
            return Ok(());
        }
        self.mesh.ask(coordinator, |reply| ShardMessage::Sac { op, reply }).await
    }
}
