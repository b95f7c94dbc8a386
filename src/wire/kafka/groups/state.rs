//! One classic consumer group's membership state machine: members, generation, leader,
//! protocol, the rebalance in progress and the leader's assignment.
//!
//! Pure: no I/O, no clock reads (every operation takes `now`), no executor. Lives inside the
//! coordinator shard's group table (`super::Coordinator`), touched only from that shard's
//! thread. Waiting JoinGroup and SyncGroup requests are the receiving ends of oneshot channels
//! the state answers when the rebalance moves on.
//!
//! Invariants: a member id appears at most once in `members`, and at most
//! [`MEMBERS_PER_GROUP_MAX`] members plus pending ids exist; `leader` names a member or is
//! none; every parked join or sync waiter is answered exactly once (by completion, an error,
//! or being dropped when the group is dropped); phases move Empty → PreparingRebalance →
//! CompletingRebalance → Stable, and back to PreparingRebalance on any membership change;
//! the generation grows by one each time a rebalance completes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;

use super::super::errors::{
    ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, MEMBER_ID_REQUIRED, REBALANCE_IN_PROGRESS,
    UNKNOWN_MEMBER_ID,
};
pub(crate) use super::answers::{JoinArgs, Joined, Outcome, Synced};

/// Members (joined or given an id to join with) one group holds at most.
pub(crate) const MEMBERS_PER_GROUP_MAX: usize = 1000;
/// Kafka's `GROUP_MAX_SIZE_REACHED`.
pub(crate) const GROUP_MAX_SIZE_REACHED: i16 = 81;

/// Where a group's rebalance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Phase {
    /// No members.
    #[default]
    Empty,
    /// Waiting for every member to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned.
    Stable,
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    /// Rejoined in the rebalance in progress.
    joined: bool,
    join_waiter: Option<oneshot::Sender<Joined>>,
    sync_waiter: Option<oneshot::Sender<Synced>>,
    assignment: Bytes,
    last_heard: Instant,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    /// Waiting in a JoinGroup or SyncGroup keeps a member alive (clients do not heartbeat then).
    fn expired(&self, now: Instant) -> bool {
        self.join_waiter.is_none()
            && self.sync_waiter.is_none()
            && now.saturating_duration_since(self.last_heard) > self.session_timeout
    }
}

/// One group.
#[derive(Debug, Default)]
pub(crate) struct Group {
    phase: Phase,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In join order (the first is the leader when one must be chosen).
    members: Vec<Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, and when they lapse unused.
    pending: Vec<(String, Instant)>,
    /// When the rebalance in progress stops waiting for members to rejoin.
    rebalance_deadline: Option<Instant>,
}

fn later(now: Instant, after: Duration) -> Instant {
    now.checked_add(after).unwrap_or(now)
}

impl Group {
    /// The phase.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The generation.
    #[cfg(test)]
    pub(crate) fn generation(&self) -> i32 {
        self.generation
    }

    /// The leader's member id.
    #[cfg(test)]
    pub(crate) fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Member ids in join order.
    #[cfg(test)]
    pub(crate) fn member_ids(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.id.as_str()).collect()
    }

    /// What the group holds: members plus ids handed out, and the bytes of their ids,
    /// metadata and assignments.
    pub(crate) fn footprint(&self) -> (usize, usize) {
        let bytes = self.members.iter().fold(0_usize, |sum, m| {
            let metadata = m
                .protocols
                .iter()
                .fold(0_usize, |s, (n, d)| s.saturating_add(n.len()).saturating_add(d.len()));
            sum.saturating_add(m.id.len()).saturating_add(metadata).saturating_add(m.assignment.len())
        });
        let pending = self.pending.iter().fold(0_usize, |sum, (id, _)| sum.saturating_add(id.len()));
        (self.members.len().saturating_add(self.pending.len()), bytes.saturating_add(pending))
    }

    /// No members and no ids handed out: the group may be dropped.
    pub(crate) fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty() && self.phase == Phase::Empty
    }

    /// A member's rebalance timeout (zero for an unknown member).
    pub(crate) fn rebalance_timeout_of(&self, member_id: &str) -> Duration {
        self.members.iter().find(|m| m.id == member_id).map_or(Duration::ZERO, |m| m.rebalance_timeout)
    }

    fn position(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == member_id)
    }

    /// Whether `protocols` of `protocol_type` fit the group's other members.
    fn compatible(&self, member_id: &str, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let mut others = self.members.iter().filter(|m| m.id != member_id).peekable();
        if others.peek().is_none() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let others: Vec<&Member> = others.collect();
        protocols.iter().any(|(name, _)| others.iter().all(|m| m.supports(name)))
    }

    /// JoinGroup. `new_id` makes a fresh member id.
    pub(crate) fn join(
        &mut self,
        args: JoinArgs,
        new_id: impl FnOnce() -> String,
        now: Instant,
    ) -> Outcome<Joined> {
        if !self.compatible(&args.member_id, &args.protocol_type, &args.protocols) {
            return Outcome::Now(Joined::error(INCONSISTENT_GROUP_PROTOCOL, &args.member_id));
        }
        let member_id = if args.member_id.is_empty() {
            if self.members.len().saturating_add(self.pending.len()) >= MEMBERS_PER_GROUP_MAX {
                return Outcome::Now(Joined::error(GROUP_MAX_SIZE_REACHED, ""));
            }
            let id = new_id();
            if args.require_known_member_id {
                self.pending.push((id.clone(), later(now, args.session_timeout)));
                return Outcome::Now(Joined::error(MEMBER_ID_REQUIRED, &id));
            }
            id
        } else if let Some(index) = self.pending.iter().position(|(id, _)| *id == args.member_id) {
            self.pending.swap_remove(index);
            args.member_id.clone()
        } else if self.position(&args.member_id).is_some() {
            args.member_id.clone()
        } else {
            return Outcome::Now(Joined::error(UNKNOWN_MEMBER_ID, &args.member_id));
        };
        if let Some(member) = self.members.iter_mut().find(|m| m.id == member_id) {
            // A member rejoining unchanged (it may have missed the answer) gets the current
            // generation back instead of a new rebalance, unless it leads a stable group (a
            // leader rejoins to have the assignment redone).
            let unchanged = member.protocols == args.protocols;
            let leads = self.leader.as_deref() == Some(member_id.as_str());
            if unchanged
                && (self.phase == Phase::CompletingRebalance || (self.phase == Phase::Stable && !leads))
            {
                member.last_heard = now;
                return Outcome::Now(self.current(&member_id));
            }
        }
        if self.members.is_empty() {
            self.protocol_type = Some(args.protocol_type.clone());
        }
        let index = match self.position(&member_id) {
            Some(index) => index,
            None => {
                self.members.push(Member {
                    id: member_id.clone(),
                    instance_id: None,
                    session_timeout: args.session_timeout,
                    rebalance_timeout: args.rebalance_timeout,
                    protocols: Vec::new(),
                    joined: false,
                    join_waiter: None,
                    sync_waiter: None,
                    assignment: Bytes::new(),
                    last_heard: now,
                });
                self.members.len().saturating_sub(1)
            }
        };
        if let Some(member) = self.members.get_mut(index) {
            member.instance_id = args.instance_id;
            member.session_timeout = args.session_timeout;
            member.rebalance_timeout = args.rebalance_timeout;
            member.protocols = args.protocols;
            member.last_heard = now;
        }
        if self.phase != Phase::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        let (sender, receiver) = oneshot::channel();
        if let Some(member) = self.members.get_mut(index) {
            member.joined = true;
            if let Some(old) = member.join_waiter.replace(sender) {
                let _ = old.send(Joined::error(REBALANCE_IN_PROGRESS, &member_id));
            }
        }
        self.try_complete_join(now);
        Outcome::Later(receiver)
    }

    /// Starts a rebalance: every member must rejoin before the slowest one's rebalance timeout.
    fn prepare_rebalance(&mut self, now: Instant) {
        let mut timeout = Duration::ZERO;
        for member in &mut self.members {
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(Synced::error(REBALANCE_IN_PROGRESS));
            }
            member.joined = false;
            timeout = timeout.max(member.rebalance_timeout);
        }
        self.phase = Phase::PreparingRebalance;
        self.rebalance_deadline = Some(later(now, timeout));
    }

    /// Completes the rebalance once every member rejoined or its deadline passed: members that
    /// did not rejoin are removed, the generation grows, the leader gets every member's metadata.
    fn try_complete_join(&mut self, now: Instant) {
        if self.phase != Phase::PreparingRebalance {
            return;
        }
        let overdue = self.rebalance_deadline.is_none_or(|deadline| now >= deadline);
        if !overdue && !self.members.iter().all(|m| m.joined) {
            return;
        }
        self.members.retain(|m| m.joined);
        self.generation = if self.generation == i32::MAX { 1 } else { self.generation.saturating_add(1) };
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        self.protocol = Some(self.choose_protocol());
        if self.leader.as_ref().is_none_or(|leader| self.position(leader).is_none()) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        self.phase = Phase::CompletingRebalance;
        let mut answers = Vec::with_capacity(self.members.len());
        for member in &mut self.members {
            member.assignment = Bytes::new();
            member.last_heard = now;
            if let Some(waiter) = member.join_waiter.take() {
                answers.push((waiter, member.id.clone()));
            }
        }
        for (waiter, member_id) in answers {
            let _ = waiter.send(self.current(&member_id));
        }
    }

    /// The JoinGroup answer of the current generation for `member_id`: the leader gets every
    /// member's metadata for the chosen assignor, followers none.
    fn current(&self, member_id: &str) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if member_id == leader {
            self.members
                .iter()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: Some(protocol),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// The assignor every member supports that most members prefer (the first member's
    /// order breaks ties).
    fn choose_protocol(&self) -> String {
        let Some(first) = self.members.first() else { return String::new() };
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect();
        let mut best: Option<(&str, usize)> = None;
        for candidate in &candidates {
            let votes = self
                .members
                .iter()
                .filter(|m| {
                    m.protocols.iter().map(|(n, _)| n.as_str()).find(|n| candidates.contains(n))
                        == Some(candidate)
                })
                .count();
            if best.is_none_or(|(_, most)| votes > most) {
                best = Some((candidate, votes));
            }
        }
        best.map(|(name, _)| name)
            .or_else(|| first.protocols.first().map(|(name, _)| name.as_str()))
            .unwrap_or_default()
            .to_string()
    }

    /// SyncGroup: followers wait for the leader's assignment; the leader's completes everyone's.
    pub(crate) fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Outcome<Synced> {
        let Some(index) = self.position(member_id) else {
            return Outcome::Now(Synced::error(UNKNOWN_MEMBER_ID));
        };
        if generation != self.generation {
            return Outcome::Now(Synced::error(ILLEGAL_GENERATION));
        }
        let (protocol_type, protocol_name) = protocol;
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return Outcome::Now(Synced::error(INCONSISTENT_GROUP_PROTOCOL));
        }
        let answer = |assignment: Bytes, group: &Self| Synced {
            error: 0,
            assignment,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol.clone(),
        };
        match self.phase {
            Phase::Empty => Outcome::Now(Synced::error(UNKNOWN_MEMBER_ID)),
            Phase::PreparingRebalance => Outcome::Now(Synced::error(REBALANCE_IN_PROGRESS)),
            Phase::Stable => {
                let assignment = self.members.get(index).map(|m| m.assignment.clone()).unwrap_or_default();
                if let Some(member) = self.members.get_mut(index) {
                    member.last_heard = now;
                }
                Outcome::Now(answer(assignment, self))
            }
            Phase::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                if let Some(member) = self.members.get_mut(index) {
                    member.last_heard = now;
                    if let Some(old) = member.sync_waiter.replace(sender) {
                        let _ = old.send(Synced::error(REBALANCE_IN_PROGRESS));
                    }
                }
                if self.leader.as_deref() == Some(member_id) {
                    for (id, assignment) in assignments {
                        if let Some(member) = self.members.iter_mut().find(|m| m.id == id) {
                            member.assignment = assignment;
                        }
                    }
                    self.phase = Phase::Stable;
                    let mut answers = Vec::new();
                    for member in &mut self.members {
                        if let Some(waiter) = member.sync_waiter.take() {
                            answers.push((waiter, member.assignment.clone()));
                        }
                    }
                    for (waiter, assignment) in answers {
                        let _ = waiter.send(answer(assignment, self));
                    }
                }
                Outcome::Later(receiver)
            }
        }
    }

    /// Heartbeat: an error code (REBALANCE_IN_PROGRESS tells the member to rejoin).
    pub(crate) fn heartbeat(&mut self, member_id: &str, generation: i32, now: Instant) -> i16 {
        let Some(member) = self.members.iter_mut().find(|m| m.id == member_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        member.last_heard = now;
        if self.phase == Phase::PreparingRebalance {
            return REBALANCE_IN_PROGRESS;
        }
        if generation != self.generation {
            return ILLEGAL_GENERATION;
        }
        0
    }

    /// LeaveGroup of one member, by id, or by instance id when the id is empty.
    pub(crate) fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> i16 {
        let index = if member_id.is_empty() {
            instance_id.and_then(|i| self.members.iter().position(|m| m.instance_id.as_deref() == Some(i)))
        } else {
            self.position(member_id)
        };
        match index {
            Some(index) => {
                self.remove(index, now);
                0
            }
            None => UNKNOWN_MEMBER_ID,
        }
    }

    fn remove(&mut self, index: usize, now: Instant) {
        if index >= self.members.len() {
            return;
        }
        let member = self.members.remove(index);
        if let Some(waiter) = member.join_waiter {
            let _ = waiter.send(Joined::error(UNKNOWN_MEMBER_ID, &member.id));
        }
        if let Some(waiter) = member.sync_waiter {
            let _ = waiter.send(Synced::error(UNKNOWN_MEMBER_ID));
        }
        if self.leader.as_deref() == Some(member.id.as_str()) {
            self.leader = None;
        }
        match self.phase {
            Phase::Empty => {}
            Phase::PreparingRebalance => self.try_complete_join(now),
            Phase::CompletingRebalance | Phase::Stable => {
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
        }
    }

    /// OffsetCommit's membership check: 0 when `member_id` of `generation` may commit.
    /// Commits with a negative generation to a group without members are allowed (a client that
    /// assigns partitions itself).
    pub(crate) fn check_commit(&mut self, member_id: &str, generation: i32, now: Instant) -> i16 {
        if generation < 0 && self.members.is_empty() {
            return 0;
        }
        if self.phase == Phase::CompletingRebalance {
            return REBALANCE_IN_PROGRESS;
        }
        let Some(member) = self.members.iter_mut().find(|m| m.id == member_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if generation != self.generation {
            return ILLEGAL_GENERATION;
        }
        member.last_heard = now;
        0
    }

    /// The timer: ids handed out and never used lapse, silent members are removed, and a
    /// rebalance past its deadline completes without the members that did not rejoin.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.pending.retain(|(_, until)| *until > now);
        while let Some(index) = self.members.iter().position(|m| m.expired(now)) {
            self.remove(index, now);
        }
        self.try_complete_join(now);
    }
}
