//! Request and response bodies of the super-stream kinds (90-94): create, delete, route and list
//! the partitions of a super stream, plus [`SuperStreamInfo`], which `TopicInfo` carries for a
//! topic that is one.
//!
//! A super stream is a topic of a stream whose partitions are chosen by a routing key: by hash
//! (FNV-1a 64 of the key's bytes, modulo the partition count, the same hash as key partitioning)
//! or by binding key (partition `i` has binding key `binding_keys[i]`; a key names every
//! partition bound to it). `docs/protocol.md` section 6b describes the kinds.
//!
//! Pure types, no I/O; used by the server on every shard and by the client. Bodies from the
//! network are validated by [`super::messages::decode`] like every other body. Invariant: field
//! order and enum variants never change once released (the archived layout is the wire format).

use rkyv::{Archive, Deserialize, Serialize};

use super::messages::TopicConfig;

/// How a super stream picks the partitions of a routing key.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuperStreamRouting {
    /// One partition: FNV-1a 64 of the key's bytes modulo the partition count.
    Hash,
    /// Every partition whose binding key equals the routing key (possibly several, possibly
    /// none).
    Key,
}

/// How a super stream is laid out at creation.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum SuperStreamLayout {
    /// This many partitions, routed by hash by default; partition `i` gets binding key `"i"`
    /// (decimal), as RabbitMQ's `--partitions N` does, so key routing works on it too.
    Partitions(u32),
    /// One partition per binding key, in order, routed by key by default.
    BindingKeys(Vec<String>),
}

/// [`super::messages::Kind::SuperStreamCreate`]: creates topic `name` in `stream` as a super
/// stream. Answered with the new topic's `TopicInfo`.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SuperStreamCreate {
    /// Stream name.
    pub stream: String,
    /// Super stream (topic) name.
    pub name: String,
    /// Partition count or binding keys.
    pub layout: SuperStreamLayout,
    /// Allow one binding key on several partitions (a message routed by that key goes to each
    /// of them). Without it a repeated key is refused as a likely mistake.
    pub shared_keys: bool,
    /// Retention and segment settings of every partition; `config.partitions` must be 0 (the
    /// layout decides) or equal the layout's partition count.
    pub config: TopicConfig,
    /// Succeed (returning the existing topic) when a super stream of that name exists already.
    pub if_missing: bool,
}

/// Names one super stream ([`super::messages::Kind::SuperStreamDelete`],
/// [`super::messages::Kind::SuperStreamPartitions`]).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SuperStreamRef {
    /// Stream name.
    pub stream: String,
    /// Super stream (topic) name.
    pub name: String,
}

/// [`super::messages::Kind::SuperStreamRoute`]: the partitions a routing key goes to.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SuperStreamRoute {
    /// Stream name.
    pub stream: String,
    /// Super stream (topic) name.
    pub name: String,
    /// The routing key (at most `KEY_BYTES_MAX` bytes).
    pub routing_key: String,
    /// Hash or binding key; none = the super stream's own routing (hash when created with a
    /// partition count, key when created with binding keys).
    pub routing: Option<SuperStreamRouting>,
}

/// Answer to [`super::messages::Kind::SuperStreamRoute`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SuperStreamRouted {
    /// The routing applied.
    pub routing: SuperStreamRouting,
    /// The partitions, ascending; never empty (no partition is the `NoRoute` status).
    pub partitions: Vec<u32>,
}

/// One partition of a super stream.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SuperStreamPartition {
    /// Partition id.
    pub id: u32,
    /// Its binding key.
    pub binding_key: String,
    /// Owning shard.
    pub shard: u16,
}

/// Answer to [`super::messages::Kind::SuperStreamPartitions`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SuperStreamPartitions {
    /// Super stream (topic) name.
    pub name: String,
    /// Its default routing.
    pub routing: SuperStreamRouting,
    /// Every partition in id order.
    pub partitions: Vec<SuperStreamPartition>,
}

/// What `TopicInfo.super_stream` says of a topic that is a super stream.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SuperStreamInfo {
    /// Its default routing.
    pub routing: SuperStreamRouting,
    /// Partition `i`'s binding key is `binding_keys[i]`.
    pub binding_keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::super::messages::{decode, encode};
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let create = SuperStreamCreate {
            stream: "billing".into(),
            name: "invoices".into(),
            layout: SuperStreamLayout::BindingKeys(vec!["amer".into(), "emea".into()]),
            shared_keys: false,
            config: TopicConfig::default(),
            if_missing: true,
        };
        let bytes = encode(&create).expect("encode");
        assert_eq!(decode::<SuperStreamCreate>(&bytes).expect("decode"), create);
        let route = SuperStreamRoute {
            stream: "billing".into(),
            name: "invoices".into(),
            routing_key: "emea".into(),
            routing: Some(SuperStreamRouting::Key),
        };
        let bytes = encode(&route).expect("encode");
        assert_eq!(decode::<SuperStreamRoute>(&bytes).expect("decode"), route);
        for cut in 0..bytes.len() {
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&bytes[..cut]);
            assert!(decode::<SuperStreamRoute>(&aligned).is_err(), "truncated at {cut}");
        }
    }
}
