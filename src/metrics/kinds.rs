//! The `kind` label of native requests: each [`Kind`] by its snake_case name.
//!
//! Pure and static (any thread). Invariant: every kind has its own name, and no name is
//! [`UNKNOWN_KIND`], which counts frames whose kind this server does not know.

use crate::protocol::messages::Kind;

/// The `kind` label of a native frame whose kind is not known.
pub const UNKNOWN_KIND: &str = "unknown";

/// The `kind` label of a native request.
pub fn native_kind_name(kind: Option<Kind>) -> &'static str {
    match kind {
        Some(Kind::Ping) => "ping",
        Some(Kind::Login) => "login",
        Some(Kind::Metadata) => "metadata",
        Some(Kind::UserCreate) => "user_create",
        Some(Kind::UserDelete) => "user_delete",
        Some(Kind::UserList) => "user_list",
        Some(Kind::UserSetPermissions) => "user_set_permissions",
        Some(Kind::StreamCreate) => "stream_create",
        Some(Kind::StreamDelete) => "stream_delete",
        Some(Kind::StreamList) => "stream_list",
        Some(Kind::StreamGet) => "stream_get",
        Some(Kind::TopicCreate) => "topic_create",
        Some(Kind::TopicDelete) => "topic_delete",
        Some(Kind::TopicList) => "topic_list",
        Some(Kind::TopicGet) => "topic_get",
        Some(Kind::PartitionsAdd) => "partitions_add",
        Some(Kind::TopicState) => "topic_state",
        Some(Kind::Produce) => "produce",
        Some(Kind::Poll) => "poll",
        Some(Kind::OffsetStore) => "offset_store",
        Some(Kind::OffsetGet) => "offset_get",
        Some(Kind::GroupCreate) => "group_create",
        Some(Kind::GroupDelete) => "group_delete",
        Some(Kind::GroupJoin) => "group_join",
        Some(Kind::GroupLeave) => "group_leave",
        Some(Kind::GroupHeartbeat) => "group_heartbeat",
        Some(Kind::GroupList) => "group_list",
        Some(Kind::GroupDescribe) => "group_describe",
        Some(Kind::Stats) => "stats",
        Some(Kind::ProducerDeclare) => "producer_declare",
        Some(Kind::ProducerSequence) => "producer_sequence",
        Some(Kind::ProducerDelete) => "producer_delete",
        Some(Kind::ProducerHeartbeat) => "producer_heartbeat",
        Some(Kind::ProducerList) => "producer_list",
        Some(Kind::ProducerClose) => "producer_close",
        Some(Kind::Subscribe) => "subscribe",
        Some(Kind::Credit) => "credit",
        Some(Kind::Unsubscribe) => "unsubscribe",
        Some(Kind::Deliver) => "deliver",
        Some(Kind::ConsumerUpdate) => "consumer_update",
        Some(Kind::SubscribeDurable) => "subscribe_durable",
        Some(Kind::SuperStreamCreate) => "super_stream_create",
        Some(Kind::SuperStreamDelete) => "super_stream_delete",
        Some(Kind::SuperStreamRoute) => "super_stream_route",
        Some(Kind::SuperStreamPartitions) => "super_stream_partitions",
        Some(Kind::ConsumerCreate) => "consumer_create",
        Some(Kind::ConsumerDelete) => "consumer_delete",
        Some(Kind::ConsumerInfo) => "consumer_info",
        Some(Kind::ConsumerList) => "consumer_list",
        Some(Kind::Fetch) => "fetch",
        Some(Kind::Ack) => "ack",
        None => UNKNOWN_KIND,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_snake_case_name() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|&kind| native_kind_name(Some(kind))).collect();
        assert!(names.iter().all(|name| name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        names.push(UNKNOWN_KIND);
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
        assert_eq!(native_kind_name(Some(Kind::SuperStreamCreate)), "super_stream_create");
    }
}
