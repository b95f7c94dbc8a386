//! Producer leases on topics: which client sessions hold which named producers, shared or
//! exclusive, and the last epoch handed out per name.
//!
//! What it owns: [`Leases`], the lease table of the topics this shard coordinates. A topic's
//! coordinator is [`coordinator`]`(stream, topic)`, a hash over the shards, so every shard
//! routes a topic's declarations to the same place and no lock or shared map is needed.
//!
//! Which core: the coordinator shard; declarations of one topic run one at a time behind the
//! topic's async mutex (the per-partition epoch writes of a declaration wait on other shards).
//!
//! Invariants: while a live exclusive lease exists on a topic, it is the only live lease there;
//! a lease is live until its session closes, releases it, or sends no heartbeat for the
//! session timeout; re-declaring a name moves its lease to the new session (the old instance is
//! fenced by the new epoch, whatever its session).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::error::{BrokerError, BrokerResult};
use crate::protocol::messages::{AccessMode, Status};

/// A topic, by ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicKey {
    /// Stream id.
    pub stream_id: u32,
    /// Topic id.
    pub topic_id: u32,
}

/// The coordinator shard of a topic's producer leases.
pub fn coordinator(topic: TopicKey, shards: u16) -> u16 {
    let mixed =
        (u64::from(topic.stream_id) << 32 | u64::from(topic.topic_id)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed >> 32) % u64::from(shards.max(1))) as u16
}

/// The client session a lease belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Session id (unique over the broker's shards and life).
    pub session: u64,
    /// Peer address, for `producer list`.
    pub address: String,
}

/// One lease as `producer list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The topic.
    pub topic: TopicKey,
    /// Producer name.
    pub name: String,
    /// Producer id.
    pub id: u64,
    /// Access mode it was declared with.
    pub access: AccessMode,
    /// Who holds it.
    pub holder: Holder,
    /// The epoch it was declared with.
    pub epoch: u32,
}

#[derive(Debug)]
struct Lease {
    info: LeaseInfo,
    expires: Instant,
}

#[derive(Default)]
struct TopicLeases {
    leases: Vec<Lease>,
    /// The last epoch handed out per producer id (the partitions keep it durably).
    epochs: HashMap<u64, u32>,
    declaring: Rc<async_lock::Mutex<()>>,
}

/// The lease table of the topics this shard coordinates. See the module documentation.
pub struct Leases {
    topics: RefCell<HashMap<TopicKey, TopicLeases>>,
    timeout: Duration,
}

impl Leases {
    /// An empty table whose leases last `timeout` without a heartbeat.
    pub fn new(timeout: Duration) -> Self {
        Self { topics: RefCell::new(HashMap::new()), timeout }
    }

    /// The session timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The mutex that serialises declarations on `topic`.
    pub fn declaring(&self, topic: TopicKey) -> Rc<async_lock::Mutex<()>> {
        self.topics.borrow_mut().entry(topic).or_default().declaring.clone()
    }

    /// The last epoch this coordinator handed out for `id` on `topic`.
    pub fn last_epoch(&self, topic: TopicKey, id: u64) -> u32 {
        self.topics.borrow().get(&topic).and_then(|t| t.epochs.get(&id).copied()).unwrap_or(0)
    }

    /// Fails with ProducerBusy when `name` may not be declared with `access` now.
    pub fn check(&self, topic: TopicKey, name: &str, access: AccessMode) -> BrokerResult<()> {
        let now = Instant::now();
        let mut topics = self.topics.borrow_mut();
        let Some(leases) = topics.get_mut(&topic) else { return Ok(()) };
        leases.leases.retain(|lease| lease.expires > now);
        let others = leases.leases.iter().filter(|lease| lease.info.name != name);
        for lease in others {
            let busy = access == AccessMode::Exclusive || lease.info.access == AccessMode::Exclusive;
            if busy {
                let (mode, holder) = (lease.info.access, &lease.info.holder.address);
                return Err(BrokerError::new(
                    Status::ProducerBusy,
                    format!(
                        "producer \"{}\" ({mode:?}, held by {holder}) holds the topic; {} \"{name}\" must wait until it closes or its session times out",
                        lease.info.name,
                        if access == AccessMode::Exclusive { "an exclusive declaration of" } else { "producer" },
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Grants `info` its lease (moving the name's lease, if any, to the new holder).
    pub fn grant(&self, info: LeaseInfo) {
        let mut topics = self.topics.borrow_mut();
        let leases = topics.entry(info.topic).or_default();
        leases.epochs.insert(info.id, info.epoch);
        leases.leases.retain(|lease| lease.info.name != info.name);
        leases.leases.push(Lease { info, expires: Instant::now() + self.timeout });
    }

    /// Extends the lease `session` holds on `name`; false when it holds none (released,
    /// expired, or taken over by a newer declaration).
    pub fn heartbeat(&self, topic: TopicKey, name: &str, session: u64) -> bool {
        let now = Instant::now();
        let mut topics = self.topics.borrow_mut();
        let Some(leases) = topics.get_mut(&topic) else { return false };
        let held = leases.leases.iter_mut().find(|lease| {
            lease.info.name == name && lease.info.holder.session == session && lease.expires > now
        });
        match held {
            Some(lease) => {
                lease.expires = now + self.timeout;
                true
            }
            None => false,
        }
    }

    /// Releases the lease `session` holds on `name`; false when it held none.
    pub fn release(&self, topic: TopicKey, name: &str, session: u64) -> bool {
        let mut topics = self.topics.borrow_mut();
        let Some(leases) = topics.get_mut(&topic) else { return false };
        let before = leases.leases.len();
        leases.leases.retain(|lease| !(lease.info.name == name && lease.info.holder.session == session));
        before != leases.leases.len()
    }

    /// Releases every lease of a closed session.
    pub fn session_ended(&self, session: u64) {
        for leases in self.topics.borrow_mut().values_mut() {
            leases.leases.retain(|lease| lease.info.holder.session != session);
        }
    }

    /// A live lease on `name` held by a session other than `session`.
    pub fn held_elsewhere(&self, topic: TopicKey, name: &str, session: u64) -> Option<LeaseInfo> {
        let now = Instant::now();
        let topics = self.topics.borrow();
        let leases = topics.get(&topic)?;
        leases
            .leases
            .iter()
            .find(|l| l.info.name == name && l.info.holder.session != session && l.expires > now)
            .map(|l| l.info.clone())
    }

    /// Forgets the epochs handed out for `id` (after ProducerDelete).
    pub fn forget(&self, topic: TopicKey, id: u64) {
        if let Some(leases) = self.topics.borrow_mut().get_mut(&topic) {
            leases.epochs.remove(&id);
        }
    }

    /// Every live lease.
    pub fn list(&self) -> Vec<LeaseInfo> {
        let now = Instant::now();
        let topics = self.topics.borrow();
        let mut out: Vec<LeaseInfo> = topics
            .values()
            .flat_map(|t| t.leases.iter().filter(|l| l.expires > now).map(|l| l.info.clone()))
            .collect();
        out.sort_by(|a, b| (a.topic, &a.name).cmp(&(b.topic, &b.name)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: TopicKey = TopicKey { stream_id: 1, topic_id: 2 };

    fn lease(name: &str, access: AccessMode, session: u64) -> LeaseInfo {
        let holder = Holder { session, address: format!("peer-{session}") };
        LeaseInfo { topic: TOPIC, name: name.into(), id: session, access, holder, epoch: 1 }
    }

    #[test]
    fn exclusive_excludes_everyone_else() {
        let leases = Leases::new(Duration::from_secs(30));
        leases.check(TOPIC, "a", AccessMode::Exclusive).unwrap();
        leases.grant(lease("a", AccessMode::Exclusive, 1));
        let busy = |name, access| leases.check(TOPIC, name, access).unwrap_err().status;
        assert_eq!(busy("b", AccessMode::Exclusive), Status::ProducerBusy);
        assert_eq!(busy("b", AccessMode::Shared), Status::ProducerBusy);
        assert!(leases.check(TOPIC, "a", AccessMode::Exclusive).is_ok(), "the same name takes over");
        assert!(leases.release(TOPIC, "a", 1));
        leases.grant(lease("b", AccessMode::Shared, 2));
        assert_eq!(busy("c", AccessMode::Exclusive), Status::ProducerBusy);
        assert!(leases.check(TOPIC, "c", AccessMode::Shared).is_ok());
        leases.session_ended(2);
        assert!(leases.check(TOPIC, "c", AccessMode::Exclusive).is_ok());
    }

    #[test]
    fn leases_expire_without_heartbeats() {
        let leases = Leases::new(Duration::from_millis(30));
        leases.grant(lease("a", AccessMode::Exclusive, 1));
        assert!(leases.heartbeat(TOPIC, "a", 1));
        assert!(!leases.heartbeat(TOPIC, "a", 2), "only the holder's session heartbeats");
        std::thread::sleep(Duration::from_millis(40));
        assert!(!leases.heartbeat(TOPIC, "a", 1));
        assert!(leases.check(TOPIC, "b", AccessMode::Exclusive).is_ok());
        assert!(leases.list().is_empty());
    }

    #[test]
    fn coordinators_spread_and_stay_put() {
        let a = coordinator(TOPIC, 4);
        assert_eq!(a, coordinator(TOPIC, 4));
        assert!(a < 4);
        assert_eq!(coordinator(TOPIC, 1), 0);
    }
}
