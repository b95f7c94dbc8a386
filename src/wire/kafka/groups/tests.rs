//! Unit tests of the group state machine (`super::state`): pure, no I/O, a hand-moved clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::errors::{
    ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, MEMBER_ID_REQUIRED, REBALANCE_IN_PROGRESS,
    UNKNOWN_MEMBER_ID,
};
use super::state::{Group, JoinArgs, Joined, Outcome, Phase, MEMBERS_PER_GROUP_MAX};

const SESSION: Duration = Duration::from_secs(10);
const REBALANCE: Duration = Duration::from_secs(30);

fn args(member_id: &str, protocols: &[(&str, &str)]) -> JoinArgs {
    JoinArgs {
        member_id: member_id.to_string(),
        instance_id: None,
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        protocol_type: "consumer".to_string(),
        protocols: protocols
            .iter()
            .map(|(name, metadata)| (name.to_string(), Bytes::copy_from_slice(metadata.as_bytes())))
            .collect(),
        require_known_member_id: true,
    }
}

fn range(member_id: &str) -> JoinArgs {
    args(member_id, &[("range", member_id)])
}

/// The answer, when it is there.
fn ready<T>(outcome: &mut Outcome<T>) -> Option<T>
where
    T: Clone,
{
    match outcome {
        Outcome::Now(answer) => Some(answer.clone()),
        Outcome::Later(receiver) => receiver.try_recv().ok().flatten(),
    }
}

fn pending<T: Clone>(outcome: &mut Outcome<T>) {
    assert!(ready(outcome).is_none(), "answered too early");
}

/// Joins a new member through MEMBER_ID_REQUIRED; returns its id and the parked join.
fn new_member(group: &mut Group, name: &str, now: Instant) -> (String, Outcome<Joined>) {
    let id = format!("{name}-id");
    let mut first = group.join(range(""), || id.clone(), now);
    let refused = ready(&mut first).expect("answered at once");
    assert_eq!(refused.error, MEMBER_ID_REQUIRED);
    assert_eq!(refused.member_id, id);
    let join = group.join(range(&id), || unreachable!(), now);
    (id, join)
}

/// Two members through one rebalance: `a` leads, both synced with their assignments.
fn stable_pair(group: &mut Group, now: Instant) -> (String, String) {
    let (a, mut join_a) = new_member(group, "a", now);
    let joined_a = ready(&mut join_a).expect("a single member completes at once");
    assert_eq!((joined_a.generation, joined_a.leader.as_str()), (1, a.as_str()));
    let (b, mut join_b) = new_member(group, "b", now);
    pending(&mut join_b);
    assert_eq!(group.heartbeat(&a, 1, now), REBALANCE_IN_PROGRESS);
    let mut rejoin_a = group.join(range(&a), || unreachable!(), now);
    let leader = ready(&mut rejoin_a).expect("everyone rejoined");
    let follower = ready(&mut join_b).expect("everyone rejoined");
    assert_eq!(leader.generation, 2);
    assert_eq!(follower.generation, 2);
    assert_eq!(leader.leader, a);
    assert_eq!(follower.leader, a);
    let metadata: Vec<(&str, &[u8])> =
        leader.members.iter().map(|(id, _, metadata)| (id.as_str(), metadata.as_ref())).collect();
    assert_eq!(metadata, vec![(a.as_str(), a.as_bytes()), (b.as_str(), b.as_bytes())]);
    assert!(follower.members.is_empty(), "followers get no metadata");
    assert_eq!(group.phase(), Phase::CompletingRebalance);
    let mut sync_b = group.sync(&b, 2, (None, None), Vec::new(), now);
    pending(&mut sync_b);
    let assignments =
        vec![(a.clone(), Bytes::from_static(b"p0p1")), (b.clone(), Bytes::from_static(b"p2p3"))];
    let mut sync_a = group.sync(&a, 2, (Some("consumer"), Some("range")), assignments, now);
    assert_eq!(ready(&mut sync_a).map(|s| s.assignment), Some(Bytes::from_static(b"p0p1")));
    let synced_b = ready(&mut sync_b).expect("the leader's sync completes the followers'");
    assert_eq!(synced_b.assignment, Bytes::from_static(b"p2p3"));
    assert_eq!(synced_b.protocol_name.as_deref(), Some("range"));
    assert_eq!(group.phase(), Phase::Stable);
    (a, b)
}

#[test]
fn a_new_member_needs_an_id_then_joins_and_leads() {
    let now = Instant::now();
    let mut group = Group::default();
    let (a, mut join) = new_member(&mut group, "a", now);
    let joined = ready(&mut join).expect("completes at once");
    assert_eq!(joined.error, 0);
    assert_eq!(joined.member_id, a);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(group.leader(), Some(a.as_str()));
    assert_eq!(group.phase(), Phase::CompletingRebalance);
}

#[test]
fn before_v4_a_new_member_joins_at_once_and_unknown_ids_are_refused() {
    let now = Instant::now();
    let mut group = Group::default();
    let old = JoinArgs { require_known_member_id: false, ..range("") };
    let mut join = group.join(old, || "x-1".to_string(), now);
    assert_eq!(ready(&mut join).map(|j| (j.error, j.member_id)), Some((0, "x-1".to_string())));
    let mut unknown = group.join(range("nobody"), || unreachable!(), now);
    assert_eq!(ready(&mut unknown).map(|j| j.error), Some(UNKNOWN_MEMBER_ID));
}

#[test]
fn two_members_split_and_the_leader_relays_assignments() {
    let now = Instant::now();
    let mut group = Group::default();
    let (a, b) = stable_pair(&mut group, now);
    assert_eq!(group.heartbeat(&a, 2, now), 0);
    assert_eq!(group.heartbeat(&b, 1, now), ILLEGAL_GENERATION);
    assert_eq!(group.heartbeat("stranger", 2, now), UNKNOWN_MEMBER_ID);
    // A later SyncGroup in the same generation gets the stored assignment again.
    let mut again = group.sync(&b, 2, (None, None), Vec::new(), now);
    assert_eq!(ready(&mut again).map(|s| s.assignment), Some(Bytes::from_static(b"p2p3")));
    let mut stale = group.sync(&b, 1, (None, None), Vec::new(), now);
    assert_eq!(ready(&mut stale).map(|s| s.error), Some(ILLEGAL_GENERATION));
}

#[test]
fn commits_check_membership_and_generation() {
    let now = Instant::now();
    let mut empty = Group::default();
    assert_eq!(empty.check_commit("", -1, now), 0, "a self-assigning client may commit");
    let mut group = Group::default();
    let (a, _) = stable_pair(&mut group, now);
    assert_eq!(group.check_commit(&a, 2, now), 0);
    assert_eq!(group.check_commit(&a, 1, now), ILLEGAL_GENERATION);
    assert_eq!(group.check_commit("", -1, now), UNKNOWN_MEMBER_ID);
    assert_eq!(group.check_commit("stranger", 2, now), UNKNOWN_MEMBER_ID);
}

#[test]
fn a_leaving_member_hands_its_partitions_to_the_rest() {
    let now = Instant::now();
    let mut group = Group::default();
    let (a, b) = stable_pair(&mut group, now);
    assert_eq!(group.leave(&a, None, now), 0);
    assert_eq!(group.leave(&a, None, now), UNKNOWN_MEMBER_ID);
    assert_eq!(group.phase(), Phase::PreparingRebalance);
    assert_eq!(group.heartbeat(&b, 2, now), REBALANCE_IN_PROGRESS);
    assert_eq!(group.check_commit(&b, 2, now), 0, "commits go on while members rejoin");
    let mut rejoin = group.join(range(&b), || unreachable!(), now);
    let joined = ready(&mut rejoin).expect("the only member rejoined");
    assert_eq!((joined.generation, joined.leader.as_str()), (3, b.as_str()));
    assert_eq!(joined.members.len(), 1);
    let assignment = vec![(b.clone(), Bytes::from_static(b"p0p1p2p3"))];
    let mut sync = group.sync(&b, 3, (None, None), assignment, now);
    assert_eq!(ready(&mut sync).map(|s| s.assignment), Some(Bytes::from_static(b"p0p1p2p3")));
    assert_eq!(group.leave(&b, None, now), 0);
    assert_eq!(group.phase(), Phase::Empty);
    assert_eq!(group.generation(), 4);
    assert!(group.is_idle());
}

#[test]
fn silent_members_expire_and_waiting_ones_do_not() {
    let start = Instant::now();
    let mut group = Group::default();
    let (a, b) = stable_pair(&mut group, start);
    assert_eq!(group.heartbeat(&b, 2, start + SESSION / 2), 0);
    group.tick(start + SESSION);
    assert_eq!(group.member_ids(), vec![a.as_str(), b.as_str()], "nobody overdue yet");
    let expiry = start + SESSION + Duration::from_millis(1);
    group.tick(expiry);
    assert_eq!(group.member_ids(), vec![b.as_str()], "a expired");
    assert_eq!(group.phase(), Phase::PreparingRebalance);
    // b waits in JoinGroup far past its session timeout without expiring.
    let mut rejoin = group.join(range(&b), || unreachable!(), expiry);
    assert_eq!(ready(&mut rejoin).map(|j| j.generation), Some(3));
    let mut sync = group.sync(&b, 3, (None, None), Vec::new(), expiry);
    assert!(ready(&mut sync).is_some());
}

#[test]
fn a_rebalance_drops_members_that_miss_its_deadline() {
    let start = Instant::now();
    let mut group = Group::default();
    let (a, b) = stable_pair(&mut group, start);
    let (c, mut join_c) = new_member(&mut group, "c", start);
    let mut rejoin_a = group.join(range(&a), || unreachable!(), start);
    // b keeps heartbeating but never rejoins.
    let mut now = start;
    for second in 1..REBALANCE.as_secs() {
        now = start + Duration::from_secs(second);
        assert_eq!(group.heartbeat(&b, 2, now), REBALANCE_IN_PROGRESS);
        group.tick(now);
    }
    pending(&mut join_c);
    group.tick(start + REBALANCE);
    let joined_a = ready(&mut rejoin_a).expect("completed at the deadline");
    let joined_c = ready(&mut join_c).expect("completed at the deadline");
    assert_eq!(joined_a.generation, 3);
    assert_eq!(joined_c.leader, a);
    assert_eq!(group.member_ids(), vec![a.as_str(), c.as_str()]);
    assert_eq!(group.heartbeat(&b, 2, now), UNKNOWN_MEMBER_ID);
}

#[test]
fn a_join_during_completion_sends_waiting_syncs_back_to_rejoin() {
    let now = Instant::now();
    let mut group = Group::default();
    let (a, mut join_a) = new_member(&mut group, "a", now);
    assert!(ready(&mut join_a).is_some());
    let (b, mut join_b) = new_member(&mut group, "b", now);
    let mut rejoin_a = group.join(range(&a), || unreachable!(), now);
    assert!(ready(&mut rejoin_a).is_some() && ready(&mut join_b).is_some());
    let mut sync_b = group.sync(&b, 2, (None, None), Vec::new(), now);
    pending(&mut sync_b);
    let (_, mut join_c) = new_member(&mut group, "c", now);
    assert_eq!(ready(&mut sync_b).map(|s| s.error), Some(REBALANCE_IN_PROGRESS));
    pending(&mut join_c);
    let mut late_sync = group.sync(&a, 2, (None, None), Vec::new(), now);
    assert_eq!(ready(&mut late_sync).map(|s| s.error), Some(REBALANCE_IN_PROGRESS));
}

#[test]
fn protocols_must_fit_and_the_favourite_common_one_wins() {
    let now = Instant::now();
    let mut group = Group::default();
    let mut bad_type = group.join(JoinArgs { protocol_type: String::new(), ..range("") }, String::new, now);
    assert_eq!(ready(&mut bad_type).map(|j| j.error), Some(INCONSISTENT_GROUP_PROTOCOL));
    let mut first = group.join(range(""), || "a-id".to_string(), now);
    assert_eq!(ready(&mut first).map(|j| j.error), Some(MEMBER_ID_REQUIRED));
    let mut join_a = group.join(args("a-id", &[("roundrobin", "a"), ("range", "a")]), String::new, now);
    assert!(ready(&mut join_a).is_some());
    let mut other = group.join(args("", &[("sticky", "x")]), || unreachable!(), now);
    assert_eq!(ready(&mut other).map(|j| j.error), Some(INCONSISTENT_GROUP_PROTOCOL));
    let mut first = group.join(range(""), || "b-id".to_string(), now);
    assert!(ready(&mut first).is_some());
    let mut join_b = group.join(args("b-id", &[("range", "b"), ("roundrobin", "b")]), String::new, now);
    let mut join_c_first = group.join(range(""), || "c-id".to_string(), now);
    assert!(ready(&mut join_c_first).is_some());
    let mut join_c = group.join(args("c-id", &[("range", "c"), ("roundrobin", "c")]), String::new, now);
    let mut rejoin_a = group.join(args("a-id", &[("roundrobin", "a"), ("range", "a")]), String::new, now);
    let leader = ready(&mut rejoin_a).expect("all rejoined");
    assert_eq!(leader.protocol_name.as_deref(), Some("range"), "two of three prefer range");
    let metadata: Vec<&[u8]> = leader.members.iter().map(|(_, _, m)| m.as_ref()).collect();
    assert_eq!(metadata, vec![&b"a"[..], &b"b"[..], &b"c"[..]]);
    assert!(ready(&mut join_b).is_some() && ready(&mut join_c).is_some());
}

#[test]
fn ids_handed_out_lapse_and_the_group_size_is_bounded() {
    let now = Instant::now();
    let mut group = Group::default();
    for counter in 1..=MEMBERS_PER_GROUP_MAX {
        let mut answer = group.join(range(""), || format!("m{counter}"), now);
        assert_eq!(ready(&mut answer).map(|j| j.error), Some(MEMBER_ID_REQUIRED));
    }
    let mut full = group.join(range(""), || unreachable!(), now);
    assert_eq!(ready(&mut full).map(|j| j.error), Some(super::state::GROUP_MAX_SIZE_REACHED));
    assert!(!group.is_idle());
    group.tick(now + SESSION + Duration::from_millis(1));
    assert!(group.is_idle(), "unused ids lapse after a session timeout");
    let mut lapsed = group.join(range("m1"), || unreachable!(), now);
    assert_eq!(ready(&mut lapsed).map(|j| j.error), Some(UNKNOWN_MEMBER_ID));
}

#[test]
fn leaving_while_waiting_answers_the_wait() {
    let now = Instant::now();
    let mut group = Group::default();
    let (a, b) = stable_pair(&mut group, now);
    let (_, mut join_c) = new_member(&mut group, "c", now);
    let mut rejoin_b = group.join(range(&b), || unreachable!(), now);
    assert_eq!(group.leave(&b, None, now), 0);
    assert_eq!(ready(&mut rejoin_b).map(|j| j.error), Some(UNKNOWN_MEMBER_ID));
    pending(&mut join_c);
    let mut rejoin_a = group.join(range(&a), || unreachable!(), now);
    assert_eq!(ready(&mut rejoin_a).map(|j| j.members.len()), Some(2));
    assert!(ready(&mut join_c).is_some());
}

#[test]
fn an_unchanged_follower_rejoining_gets_the_current_generation() {
    let now = Instant::now();
    let mut group = Group::default();
    let (a, b) = stable_pair(&mut group, now);
    let mut again = group.join(range(&b), || unreachable!(), now);
    let joined = ready(&mut again).expect("answered at once");
    assert_eq!((joined.error, joined.generation, joined.leader.as_str()), (0, 2, a.as_str()));
    assert!(joined.members.is_empty());
    assert_eq!(group.phase(), Phase::Stable, "no new rebalance");
    let mut sync = group.sync(&b, 2, (None, None), Vec::new(), now);
    assert_eq!(ready(&mut sync).map(|s| s.assignment), Some(Bytes::from_static(b"p2p3")));
    // Changed metadata, or the leader rejoining, starts a rebalance.
    let mut changed = group.join(args(&b, &[("range", "new")]), || unreachable!(), now);
    pending(&mut changed);
    assert_eq!(group.phase(), Phase::PreparingRebalance);
    let mut leader = group.join(range(&a), || unreachable!(), now);
    assert_eq!(ready(&mut leader).map(|j| j.generation), Some(3));
    assert_eq!(ready(&mut changed).map(|j| j.generation), Some(3));
    // In CompletingRebalance an unchanged rejoin (a lost answer) gets the same generation.
    let mut lost = group.join(range(&a), || unreachable!(), now);
    let joined = ready(&mut lost).expect("answered at once");
    assert_eq!((joined.generation, joined.members.len()), (3, 2));
    assert_eq!(group.phase(), Phase::CompletingRebalance);
    let mut leader_in_stable = group.sync(&a, 3, (None, None), Vec::new(), now);
    assert!(ready(&mut leader_in_stable).is_some());
    let mut rebalance = group.join(range(&a), || unreachable!(), now);
    pending(&mut rebalance);
}
