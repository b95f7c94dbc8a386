//! Consumer group coordination: who is in each group and which partitions each member reads.
//!
//! What it owns: the live state of every consumer group of the broker — members, their last
//! heartbeat and session timeout, the topic's partition count, the group's generation and the
//! current assignment. It is pure state over `std`: no I/O, no clock reads, no persistence. Every
//! method that depends on time takes `now`, so tests drive it with made-up instants. Group
//! *offsets* are not kept here; they are stored per partition by `storage::offsets`.
//!
//! Which core: the controller shard. Requests from any shard (join, leave, heartbeat, describe)
//! are forwarded there, and a timer there calls [`GroupCoordinator::expire`]. Nothing here is
//! shared across cores, and member state is lost on restart: members simply join again.
//!
//! # Assignment rule
//!
//! Deterministic and even. Members are sorted by id (oldest member first, since ids only grow);
//! partitions `0..n` are dealt round-robin, so with `m` members the member at position `i` gets
//! partitions `i, i + m, i + 2m, ...`. Every partition has exactly one owner, sizes differ by at
//! most one (the first `n % m` members get one more), and members beyond the `n`-th get nothing.
//! The same membership and partition count always give the same assignment.
//!
//! # Invariants
//!
//! * Member ids are unique and never reused: they are `seed, seed + 1, ...` from the seed given to
//!   [`GroupCoordinator::new`], shared by all groups.
//! * A group's generation increases by one on every change of its membership or partition count
//!   (joins, leaves, expiries, [`GroupCoordinator::set_partitions`]), and only then.
//! * After every change the members' partitions are disjoint and cover `0..partitions` exactly.
//! * A group holds at most [`MEMBERS_PER_GROUP_MAX`] members; every session timeout lies within
//!   [`SESSION_TIMEOUT_MIN`]`..=`[`SESSION_TIMEOUT_MAX`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// The most members one group may hold; a join beyond it fails with
/// [`GroupError::TooManyMembers`].
pub const MEMBERS_PER_GROUP_MAX: usize = 1024;

/// The shortest session timeout; shorter requests are raised to it.
pub const SESSION_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// The longest session timeout; longer requests are lowered to it.
pub const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(300);

/// A session timeout for clients that do not ask for one.
pub const SESSION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

const _: () = assert!(SESSION_TIMEOUT_MIN.as_nanos() <= SESSION_TIMEOUT_DEFAULT.as_nanos());
const _: () = assert!(SESSION_TIMEOUT_DEFAULT.as_nanos() <= SESSION_TIMEOUT_MAX.as_nanos());
const _: () = assert!(MEMBERS_PER_GROUP_MAX > 0);

/// Names one consumer group: a group belongs to one topic of one stream.
///
/// Ordered by stream, then topic, then name, so the groups of one topic are adjacent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// The stream holding the topic.
    pub stream_id: u32,
    /// The topic the group consumes.
    pub topic_id: u32,
    /// The group's name, unique within the topic.
    pub name: String,
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {} topic {} group {:?}", self.stream_id, self.topic_id, self.name)
    }
}

/// What one member reads, as of one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The member.
    pub member_id: u64,
    /// The group's generation this assignment belongs to.
    pub generation: u64,
    /// The partitions the member owns, ascending (possibly none).
    pub partitions: Vec<u32>,
}

/// One member as seen by [`GroupCoordinator::describe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    /// The member.
    pub member_id: u64,
    /// The partitions it owns, ascending.
    pub partitions: Vec<u32>,
    /// Time since its last heartbeat (or its join).
    pub idle: Duration,
    /// Its session timeout (after clamping).
    pub session_timeout: Duration,
}

/// A group's state as seen by [`GroupCoordinator::describe`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupSnapshot {
    /// The group's current generation.
    pub generation: u64,
    /// The topic's partition count the assignment covers.
    pub partitions: u32,
    /// The members, sorted by id.
    pub members: Vec<MemberSnapshot>,
}

/// Why a group request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    /// No such group (never created, or removed).
    UnknownGroup,
    /// The group has no such member (never joined, left, or expired).
    UnknownMember,
    /// The group already holds [`MEMBERS_PER_GROUP_MAX`] members.
    TooManyMembers,
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::UnknownGroup => write!(f, "unknown consumer group"),
            GroupError::UnknownMember => {
                write!(f, "unknown group member (it left or its session expired; join again)")
            }
            GroupError::TooManyMembers => {
                write!(f, "consumer group is full ({MEMBERS_PER_GROUP_MAX} members at most)")
            }
        }
    }
}

impl std::error::Error for GroupError {}

/// One member's live state.
#[derive(Debug)]
struct Member {
    last_heartbeat: Instant,
    session_timeout: Duration,
    /// Owned partitions, ascending; rewritten by every rebalance.
    partitions: Vec<u32>,
}

impl Member {
    /// True when the last heartbeat is older than the session timeout at `now`.
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heartbeat) > self.session_timeout
    }
}

/// One group's live state.
#[derive(Debug)]
struct Group {
    partitions: u32,
    generation: u64,
    /// Members by id; the map's order is the assignment order.
    members: BTreeMap<u64, Member>,
}

impl Group {
    fn new(partitions: u32) -> Self {
        Group { partitions, generation: 0, members: BTreeMap::new() }
    }

    /// Bumps the generation and deals the partitions round-robin over the members sorted by id.
    fn rebalance(&mut self) {
        self.generation += 1;
        let member_count = self.members.len();
        for (position, member) in self.members.values_mut().enumerate() {
            member.partitions.clear();
            // `position < member_count`, so `position + k * member_count` counts up from here.
            let mut partition = position as u64;
            while partition < u64::from(self.partitions) {
                member.partitions.push(partition as u32);
                partition += member_count as u64;
            }
        }
        self.assert_assignment();
    }

    /// Checks the assignment invariant: disjoint, covering, sizes within one of each other.
    fn assert_assignment(&self) {
        let assigned: usize = self.members.values().map(|m| m.partitions.len()).sum();
        if self.members.is_empty() {
            assert_eq!(assigned, 0);
            return;
        }
        assert_eq!(assigned, self.partitions as usize, "every partition has one owner");
        let largest = self.members.values().map(|m| m.partitions.len()).max().unwrap_or(0);
        let smallest = self.members.values().map(|m| m.partitions.len()).min().unwrap_or(0);
        assert!(largest - smallest <= 1, "assignment is even");
        debug_assert!({
            let mut seen = vec![false; self.partitions as usize];
            self.members
                .values()
                .flat_map(|m| &m.partitions)
                .all(|&p| !std::mem::replace(&mut seen[p as usize], true))
        });
    }

    fn assignment_of(&self, member_id: u64) -> Result<Assignment, GroupError> {
        let member = self.members.get(&member_id).ok_or(GroupError::UnknownMember)?;
        Ok(Assignment { member_id, generation: self.generation, partitions: member.partitions.clone() })
    }
}

/// The state of every consumer group. See the module documentation.
#[derive(Debug)]
pub struct GroupCoordinator {
    groups: BTreeMap<GroupKey, Group>,
    /// The id the next joining member gets.
    next_member_id: u64,
}

impl GroupCoordinator {
    /// A coordinator without groups whose first member id is `seed`. Pick a seed that ids handed
    /// out before (for example by an earlier run) cannot reach, such as the start time in µs.
    pub fn new(seed: u64) -> Self {
        GroupCoordinator { groups: BTreeMap::new(), next_member_id: seed }
    }

    /// Creates the group with `partitions` partitions when it does not exist. When it does and
    /// its partition count differs, applies [`set_partitions`](Self::set_partitions). Returns
    /// true when the group was created.
    pub fn ensure_group(&mut self, key: GroupKey, partitions: u32) -> bool {
        match self.groups.get_mut(&key) {
            Some(group) => {
                if group.partitions != partitions {
                    group.partitions = partitions;
                    group.rebalance();
                }
                false
            }
            None => {
                self.groups.insert(key, Group::new(partitions));
                true
            }
        }
    }

    /// Forgets the group and its members. Returns false when there was no such group.
    pub fn remove_group(&mut self, key: &GroupKey) -> bool {
        self.groups.remove(key).is_some()
    }

    /// Changes the group's partition count and rebalances (a new generation) when it differs.
    pub fn set_partitions(&mut self, key: &GroupKey, partitions: u32) -> Result<(), GroupError> {
        let group = self.groups.get_mut(key).ok_or(GroupError::UnknownGroup)?;
        if group.partitions != partitions {
            group.partitions = partitions;
            group.rebalance();
        }
        Ok(())
    }

    /// Adds a new member with a fresh id and a session timeout clamped to
    /// [`SESSION_TIMEOUT_MIN`]`..=`[`SESSION_TIMEOUT_MAX`], rebalances, and returns the new
    /// member's assignment.
    pub fn join(
        &mut self,
        key: &GroupKey,
        session_timeout: Duration,
        now: Instant,
    ) -> Result<Assignment, GroupError> {
        let group = self.groups.get_mut(key).ok_or(GroupError::UnknownGroup)?;
        if group.members.len() >= MEMBERS_PER_GROUP_MAX {
            return Err(GroupError::TooManyMembers);
        }
        let member_id = self.next_member_id;
        // 2^64 joins never happen; wrapping keeps this total without a panic path.
        self.next_member_id = self.next_member_id.wrapping_add(1);
        let member = Member {
            last_heartbeat: now,
            session_timeout: session_timeout.clamp(SESSION_TIMEOUT_MIN, SESSION_TIMEOUT_MAX),
            partitions: Vec::new(),
        };
        let previous = group.members.insert(member_id, member);
        assert!(previous.is_none(), "member id {member_id} reused");
        group.rebalance();
        group.assignment_of(member_id)
    }

    /// Removes the member and rebalances the rest.
    pub fn leave(&mut self, key: &GroupKey, member_id: u64) -> Result<(), GroupError> {
        let group = self.groups.get_mut(key).ok_or(GroupError::UnknownGroup)?;
        group.members.remove(&member_id).ok_or(GroupError::UnknownMember)?;
        group.rebalance();
        Ok(())
    }

    /// Records that the member is alive at `now` and returns its current assignment (a
    /// generation other than the one it holds tells it to switch partitions). A member is only
    /// removed by [`expire`](Self::expire), so a late heartbeat that arrives before the next
    /// expiry pass still keeps it.
    pub fn heartbeat(
        &mut self,
        key: &GroupKey,
        member_id: u64,
        now: Instant,
    ) -> Result<Assignment, GroupError> {
        let group = self.groups.get_mut(key).ok_or(GroupError::UnknownGroup)?;
        let member = group.members.get_mut(&member_id).ok_or(GroupError::UnknownMember)?;
        member.last_heartbeat = member.last_heartbeat.max(now);
        group.assignment_of(member_id)
    }

    /// The member's current assignment, without counting as a heartbeat.
    pub fn assignment(&self, key: &GroupKey, member_id: u64) -> Result<Assignment, GroupError> {
        self.groups.get(key).ok_or(GroupError::UnknownGroup)?.assignment_of(member_id)
    }

    /// Removes every member whose last heartbeat is older than its session timeout at `now`,
    /// rebalances each group that lost members (one new generation per group), and returns who
    /// was removed, ordered by group then member id.
    pub fn expire(&mut self, now: Instant) -> Vec<(GroupKey, u64)> {
        let mut removed = Vec::new();
        for (key, group) in &mut self.groups {
            let before = removed.len();
            group.members.retain(|&member_id, member| {
                let expired = member.expired(now);
                if expired {
                    removed.push((key.clone(), member_id));
                }
                !expired
            });
            if removed.len() > before {
                group.rebalance();
            }
        }
        removed
    }

    /// The group's generation, partition count and members with their partitions and idle time
    /// at `now`.
    pub fn describe(&self, key: &GroupKey, now: Instant) -> Result<GroupSnapshot, GroupError> {
        let group = self.groups.get(key).ok_or(GroupError::UnknownGroup)?;
        let members = group
            .members
            .iter()
            .map(|(&member_id, member)| MemberSnapshot {
                member_id,
                partitions: member.partitions.clone(),
                idle: now.saturating_duration_since(member.last_heartbeat),
                session_timeout: member.session_timeout,
            })
            .collect();
        Ok(GroupSnapshot { generation: group.generation, partitions: group.partitions, members })
    }

    /// The groups of one topic, sorted by name.
    pub fn groups_of(&self, stream_id: u32, topic_id: u32) -> Vec<&GroupKey> {
        let first = GroupKey { stream_id, topic_id, name: String::new() };
        self.groups
            .range(first..)
            .map(|(key, _)| key)
            .take_while(|key| key.stream_id == stream_id && key.topic_id == topic_id)
            .collect()
    }

    /// Every group's key.
    pub fn keys(&self) -> Vec<GroupKey> {
        self.groups.keys().cloned().collect()
    }

    /// The number of groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> GroupKey {
        GroupKey { stream_id: 1, topic_id: 2, name: name.to_string() }
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A coordinator holding group "g" with `partitions` partitions.
    fn coordinator(partitions: u32) -> GroupCoordinator {
        let mut groups = GroupCoordinator::new(100);
        assert!(groups.ensure_group(key("g"), partitions));
        groups
    }

    /// Asserts the group's members split `0..partitions` without overlap; returns their sizes.
    fn check_split(groups: &GroupCoordinator, now: Instant) -> Vec<usize> {
        let snapshot = groups.describe(&key("g"), now).expect("group exists");
        let mut all: Vec<u32> = snapshot.members.iter().flat_map(|m| m.partitions.clone()).collect();
        all.sort_unstable();
        let expected: Vec<u32> =
            if snapshot.members.is_empty() { vec![] } else { (0..snapshot.partitions).collect() };
        assert_eq!(all, expected, "full coverage, no overlap");
        for member in &snapshot.members {
            let assignment = groups.assignment(&key("g"), member.member_id).expect("member");
            assert_eq!(assignment.partitions, member.partitions);
            assert_eq!(assignment.generation, snapshot.generation);
        }
        snapshot.members.iter().map(|m| m.partitions.len()).collect()
    }

    #[test]
    fn two_members_split_eight_partitions() {
        let now = Instant::now();
        let mut groups = coordinator(8);
        let first = groups.join(&key("g"), TIMEOUT, now).expect("join");
        assert_eq!(first.partitions, (0..8).collect::<Vec<_>>());
        let second = groups.join(&key("g"), TIMEOUT, now).expect("join");
        assert_eq!(second.generation, first.generation + 1);
        let first = groups.assignment(&key("g"), first.member_id).expect("member");
        assert_eq!(first.partitions, [0, 2, 4, 6]);
        assert_eq!(second.partitions, [1, 3, 5, 7]);
        assert_eq!(check_split(&groups, now), [4, 4]);
    }

    #[test]
    fn leave_gives_everything_to_the_survivor() {
        let now = Instant::now();
        let mut groups = coordinator(8);
        let first = groups.join(&key("g"), TIMEOUT, now).expect("join");
        let second = groups.join(&key("g"), TIMEOUT, now).expect("join");
        groups.leave(&key("g"), first.member_id).expect("leave");
        let survivor = groups.assignment(&key("g"), second.member_id).expect("member");
        assert_eq!(survivor.partitions, (0..8).collect::<Vec<_>>());
        assert_eq!(survivor.generation, second.generation + 1);
        assert_eq!(groups.assignment(&key("g"), first.member_id), Err(GroupError::UnknownMember));
        assert_eq!(groups.leave(&key("g"), first.member_id), Err(GroupError::UnknownMember));
        assert_eq!(check_split(&groups, now), [8]);
    }

    #[test]
    fn expiry_removes_a_silent_member_and_heartbeats_keep_one_alive() {
        let start = Instant::now();
        let mut groups = coordinator(4);
        let silent = groups.join(&key("g"), TIMEOUT, start).expect("join");
        let alive = groups.join(&key("g"), TIMEOUT, start).expect("join");
        for second in 1..=20 {
            let now = start + Duration::from_secs(second);
            let assignment = groups.heartbeat(&key("g"), alive.member_id, now).expect("alive");
            let removed = groups.expire(now);
            if second <= 10 {
                assert!(removed.is_empty(), "nobody is past the timeout at {second}s");
                assert_eq!(assignment.partitions, [1, 3]);
            } else if second == 11 {
                assert_eq!(removed, [(key("g"), silent.member_id)]);
            } else {
                assert!(removed.is_empty());
                assert_eq!(assignment.partitions, [0, 1, 2, 3]);
            }
        }
        let now = start + Duration::from_secs(20);
        let snapshot = groups.describe(&key("g"), now).expect("group");
        assert_eq!(snapshot.generation, alive.generation + 1);
        assert_eq!(snapshot.members.len(), 1);
        assert_eq!(snapshot.members[0].idle, Duration::ZERO);
        assert_eq!(groups.heartbeat(&key("g"), silent.member_id, now), Err(GroupError::UnknownMember));
        // The survivor goes silent too: the group empties but stays.
        assert_eq!(groups.expire(now + TIMEOUT + Duration::from_millis(1)), [(key("g"), alive.member_id)]);
        assert_eq!(check_split(&groups, now), Vec::<usize>::new());
    }

    #[test]
    fn member_ids_are_never_reused() {
        let now = Instant::now();
        let mut groups = coordinator(3);
        groups.ensure_group(key("other"), 3);
        let mut seen = std::collections::BTreeSet::new();
        for round in 0..50 {
            let name = if round % 2 == 0 { "g" } else { "other" };
            let member = groups.join(&key(name), TIMEOUT, now).expect("join");
            assert!(seen.insert(member.member_id), "id {} reused", member.member_id);
            if round % 3 == 0 {
                groups.leave(&key(name), member.member_id).expect("leave");
            }
        }
        assert_eq!(seen.first(), Some(&100));
        assert_eq!(seen.last(), Some(&149));
    }

    #[test]
    fn three_members_over_eight_partitions() {
        let now = Instant::now();
        let mut groups = coordinator(8);
        let ids: Vec<u64> =
            (0..3).map(|_| groups.join(&key("g"), TIMEOUT, now).expect("join").member_id).collect();
        assert_eq!(check_split(&groups, now), [3, 3, 2]);
        let partitions = |id| groups.assignment(&key("g"), id).expect("member").partitions;
        assert_eq!(partitions(ids[0]), [0, 3, 6]);
        assert_eq!(partitions(ids[1]), [1, 4, 7]);
        assert_eq!(partitions(ids[2]), [2, 5]);
    }

    #[test]
    fn partition_changes_rebalance_and_bump_the_generation() {
        let now = Instant::now();
        let mut groups = coordinator(2);
        for _ in 0..3 {
            groups.join(&key("g"), TIMEOUT, now).expect("join");
        }
        // More members than partitions: the last gets nothing.
        assert_eq!(check_split(&groups, now), [1, 1, 0]);
        let mut generation = groups.describe(&key("g"), now).expect("group").generation;
        for (partitions, sizes) in
            [(7, vec![3, 2, 2]), (5, vec![2, 2, 1]), (0, vec![0, 0, 0]), (10, vec![4, 3, 3])]
        {
            groups.set_partitions(&key("g"), partitions).expect("group");
            generation += 1;
            assert_eq!(groups.describe(&key("g"), now).expect("group").generation, generation);
            assert_eq!(check_split(&groups, now), sizes, "{partitions} partitions");
        }
        // No change, no new generation; ensure_group with another count rebalances.
        groups.set_partitions(&key("g"), 10).expect("group");
        assert_eq!(groups.describe(&key("g"), now).expect("group").generation, generation);
        assert!(!groups.ensure_group(key("g"), 11));
        assert_eq!(groups.describe(&key("g"), now).expect("group").generation, generation + 1);
        assert_eq!(check_split(&groups, now), [4, 4, 3]);
    }

    #[test]
    fn limits_and_unknown_groups() {
        let now = Instant::now();
        let mut groups = coordinator(1);
        let short = groups.join(&key("g"), Duration::ZERO, now).expect("join");
        let long = groups.join(&key("g"), Duration::from_secs(1 << 30), now).expect("join");
        let snapshot = groups.describe(&key("g"), now).expect("group");
        let timeout_of = |id| snapshot.members.iter().find(|m| m.member_id == id).map(|m| m.session_timeout);
        assert_eq!(timeout_of(short.member_id), Some(SESSION_TIMEOUT_MIN));
        assert_eq!(timeout_of(long.member_id), Some(SESSION_TIMEOUT_MAX));
        for _ in 2..MEMBERS_PER_GROUP_MAX {
            groups.join(&key("g"), TIMEOUT, now).expect("join");
        }
        assert_eq!(groups.join(&key("g"), TIMEOUT, now), Err(GroupError::TooManyMembers));
        assert_eq!(check_split(&groups, now).iter().sum::<usize>(), 1);

        assert_eq!(groups.join(&key("nope"), TIMEOUT, now), Err(GroupError::UnknownGroup));
        assert_eq!(groups.heartbeat(&key("nope"), 1, now), Err(GroupError::UnknownGroup));
        assert_eq!(groups.set_partitions(&key("nope"), 1), Err(GroupError::UnknownGroup));
        assert!(groups.remove_group(&key("g")));
        assert!(!groups.remove_group(&key("g")));
        assert_eq!(groups.assignment(&key("g"), short.member_id), Err(GroupError::UnknownGroup));
    }

    #[test]
    fn groups_of_lists_one_topic() {
        let mut groups = GroupCoordinator::new(0);
        for (stream_id, topic_id, name) in [(1, 2, "b"), (1, 2, "a"), (1, 3, "a"), (0, 2, "z"), (2, 2, "")] {
            groups.ensure_group(GroupKey { stream_id, topic_id, name: name.to_string() }, 1);
        }
        let names = |s, t| groups.groups_of(s, t).iter().map(|k| k.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(1, 2), ["a", "b"]);
        assert_eq!(names(1, 3), ["a"]);
        assert_eq!(names(2, 2), [""]);
        assert!(names(3, 0).is_empty());
        assert_eq!(groups.group_count(), 5);
    }
}
