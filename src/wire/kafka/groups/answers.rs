//! What crosses the group state machine's edge (`super::state`): a JoinGroup's arguments, the
//! JoinGroup and SyncGroup answers before they are encoded at a request's version, and the
//! answer-now-or-later of a request that may wait for a rebalance.
//!
//! Plain data, built and read on the coordinator shard. Invariant: error answers carry no
//! group data (generation -1, no members, no assignment).

use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;

/// A JoinGroup, as the state needs it.
#[derive(Debug, Clone, Default)]
pub(crate) struct JoinArgs {
    /// The member id sent (empty for a new member).
    pub(crate) member_id: String,
    /// Static membership id (kept and relayed; membership is treated as dynamic).
    pub(crate) instance_id: Option<String>,
    /// Without a heartbeat for this long the member is removed.
    pub(crate) session_timeout: Duration,
    /// How long a rebalance waits for this member to rejoin.
    pub(crate) rebalance_timeout: Duration,
    /// "consumer" for consumers.
    pub(crate) protocol_type: String,
    /// Assignor names with the member's metadata, in the member's preference order.
    pub(crate) protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub(crate) require_known_member_id: bool,
}

/// A JoinGroup answer, before it is encoded at the request's version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Joined {
    /// Error code (0: joined).
    pub(crate) error: i16,
    /// The new generation (-1 on errors).
    pub(crate) generation: i32,
    /// The group's protocol type.
    pub(crate) protocol_type: Option<String>,
    /// The chosen assignor.
    pub(crate) protocol_name: Option<String>,
    /// The leader's member id.
    pub(crate) leader: String,
    /// The member's id (also with MEMBER_ID_REQUIRED: the id to join with).
    pub(crate) member_id: String,
    /// The leader only: every member's id, instance id and metadata for the chosen assignor.
    pub(crate) members: Vec<(String, Option<String>, Bytes)>,
}

impl Joined {
    /// An error answer.
    pub(crate) fn error(error: i16, member_id: &str) -> Self {
        Self { error, generation: -1, member_id: member_id.to_string(), ..Self::default() }
    }
}

/// A SyncGroup answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Synced {
    /// Error code (0: assigned).
    pub(crate) error: i16,
    /// The member's assignment, as the leader wrote it.
    pub(crate) assignment: Bytes,
    /// The group's protocol type.
    pub(crate) protocol_type: Option<String>,
    /// The chosen assignor.
    pub(crate) protocol_name: Option<String>,
}

impl Synced {
    /// An error answer.
    pub(crate) fn error(error: i16) -> Self {
        Self { error, ..Self::default() }
    }
}

/// An answer now, or one to wait for.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    /// Answered at once.
    Now(T),
    /// Answered when the rebalance moves on (a dropped sender: the group is gone).
    Later(oneshot::Receiver<T>),
}
