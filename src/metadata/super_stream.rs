//! Super streams in the catalog: the [`SuperStream`] a topic may carry (its default routing and
//! binding-key table), the ops that create and delete one, their validation, and routing a key
//! to partitions.
//!
//! What it owns: the rules of the binding-key table (at most [`SUPER_STREAM_PARTITIONS_MAX`]
//! partitions; keys 1..=[`BINDING_KEY_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`, so that
//! `NAME-<key>`, RabbitMQ's partition name, is a valid name too; a key repeated only when the
//! creator asked for shared keys) and the routing functions every shard answers `Route` with.
//!
//! Which core: the controller applies the ops (through [`super::MetadataLog::commit`]) like every
//! other op; routing is pure and runs on whichever shard holds a catalog copy, with no
//! cross-core traffic.
//!
//! Invariants: a super stream's `binding_keys.len()` equals its topic's partition count, which
//! never changes (adding partitions to a super stream is refused, since it would move every
//! hashed key); a refused op changes nothing; the op carries the whole table (a `Partitions(n)`
//! layout is expanded to `"0".."n-1"` before it is logged), so replay never derives anything.
//! Validation rules are part of the replay contract, as for every op (see [`super::catalog`]).

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use super::catalog::{CreateTopicOp, PARTITIONS_PER_TOPIC_MAX};
use super::{validate_name, MetadataError};
use crate::constants::KEY_BYTES_MAX;
use crate::protocol::messages::{Status, TopicConfig};
use crate::protocol::super_stream::{SuperStreamInfo, SuperStreamLayout, SuperStreamRouting};

/// The most partitions (hence binding keys) of one super stream.
pub const SUPER_STREAM_PARTITIONS_MAX: u32 = 1024;

/// The longest binding key (AMQP's short-string limit, and the name limit).
pub const BINDING_KEY_BYTES_MAX: usize = 255;

/// The longest routing key a `Route` request may carry (the message key limit).
pub const ROUTING_KEY_BYTES_MAX: usize = KEY_BYTES_MAX;

const _: () = assert!(SUPER_STREAM_PARTITIONS_MAX <= PARTITIONS_PER_TOPIC_MAX);
const _: () = assert!(BINDING_KEY_BYTES_MAX <= ROUTING_KEY_BYTES_MAX);

/// What makes a topic a super stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperStream {
    /// How `Route` picks partitions when the request names no routing.
    pub routing: SuperStreamRouting,
    /// Partition `i`'s binding key; as long as the topic has partitions.
    pub binding_keys: Vec<String>,
}

/// [`super::MetadataOp::CreateSuperStream`]: a topic and its binding-key table, in one op.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateSuperStreamOp {
    /// Stream name.
    pub stream: String,
    /// Super stream (topic) name.
    pub name: String,
    /// Settings; `config.partitions` equals `binding_keys.len()`.
    pub config: TopicConfig,
    /// Default routing.
    pub routing: SuperStreamRouting,
    /// Partition `i`'s binding key.
    pub binding_keys: Vec<String>,
    /// Whether a key may name several partitions.
    pub shared_keys: bool,
    /// Creation time (µs since the epoch), taken by the controller.
    pub created_us: u64,
}

impl CreateSuperStreamOp {
    /// The op for a request's layout: expands `Partitions(n)` to keys `"0".."n-1"` with hash
    /// routing, takes binding keys with key routing, and settles `config.partitions` (0 in the
    /// request means "as the layout says"; any other value must agree).
    pub fn from_layout(
        stream: &str,
        name: &str,
        layout: SuperStreamLayout,
        shared_keys: bool,
        mut config: TopicConfig,
        created_us: u64,
    ) -> Result<Self, MetadataError> {
        validate_name(name)?;
        let (routing, binding_keys) = match layout {
            SuperStreamLayout::Partitions(count) => {
                check_partition_count(count)?;
                (SuperStreamRouting::Hash, (0..count).map(|i| i.to_string()).collect())
            }
            SuperStreamLayout::BindingKeys(keys) => (SuperStreamRouting::Key, keys),
        };
        let count = partition_count(&binding_keys)?;
        if config.partitions != 0 && config.partitions != count {
            return Err(MetadataError::InvalidArgument(format!(
                "config.partitions is {} but the layout has {count} partitions (leave it 0)",
                config.partitions
            )));
        }
        config.partitions = count;
        let op = CreateSuperStreamOp {
            stream: stream.to_string(),
            name: name.to_string(),
            config,
            routing,
            binding_keys,
            shared_keys,
            created_us,
        };
        op.check()?;
        Ok(op)
    }

    /// Checks the table and that the config agrees with it (the topic rules are checked when
    /// the topic is created from [`topic_op`](Self::topic_op)).
    pub fn check(&self) -> Result<SuperStream, MetadataError> {
        let count = partition_count(&self.binding_keys)?;
        if self.config.partitions != count {
            return Err(MetadataError::InvalidArgument(format!(
                "{} partitions configured for {count} binding keys",
                self.config.partitions
            )));
        }
        let mut first_partition: BTreeMap<&str, usize> = BTreeMap::new();
        for (partition, key) in self.binding_keys.iter().enumerate() {
            check_binding_key(key)?;
            let first = *first_partition.entry(key).or_insert(partition);
            if first != partition && !self.shared_keys {
                return Err(MetadataError::InvalidArgument(format!(
                    "binding key `{key}` is given for partitions {first} and {partition}; \
                     ask for shared keys to bind one key to several partitions"
                )));
            }
        }
        Ok(SuperStream { routing: self.routing, binding_keys: self.binding_keys.clone() })
    }

    /// The plain topic this super stream is.
    pub fn topic_op(&self) -> CreateTopicOp {
        CreateTopicOp {
            stream: self.stream.clone(),
            name: self.name.clone(),
            config: self.config.clone(),
            created_us: self.created_us,
        }
    }
}

impl SuperStream {
    /// The wire description.
    pub fn info(&self) -> SuperStreamInfo {
        SuperStreamInfo { routing: self.routing, binding_keys: self.binding_keys.clone() }
    }

    /// The partitions `routing_key` goes to under `routing` (the super stream's own when none),
    /// ascending; an error when the key is too long or no partition is bound to it.
    pub fn route(
        &self,
        routing_key: &str,
        routing: Option<SuperStreamRouting>,
    ) -> Result<(SuperStreamRouting, Vec<u32>), RouteError> {
        if routing_key.len() > ROUTING_KEY_BYTES_MAX {
            return Err(RouteError::KeyTooLong(routing_key.len()));
        }
        let routing = routing.unwrap_or(self.routing);
        let partitions = match routing {
            SuperStreamRouting::Hash => vec![hash_partition(routing_key.as_bytes(), self.partitions())],
            SuperStreamRouting::Key => {
                (0..self.partitions()).filter(|&i| self.binding_keys[i as usize] == routing_key).collect()
            }
        };
        if partitions.is_empty() {
            return Err(RouteError::NoRoute);
        }
        debug_assert!(partitions.windows(2).all(|pair| pair[0] < pair[1]));
        debug_assert!(partitions.iter().all(|&p| p < self.partitions()));
        Ok((routing, partitions))
    }

    /// Partition count (the table's length, checked to fit at creation).
    pub fn partitions(&self) -> u32 {
        self.binding_keys.len() as u32
    }
}

/// Why a routing key has no partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The key is longer than [`ROUTING_KEY_BYTES_MAX`] (its length).
    KeyTooLong(usize),
    /// No partition is bound to the key.
    NoRoute,
}

impl RouteError {
    /// The wire status.
    pub fn status(&self) -> Status {
        match self {
            RouteError::KeyTooLong(_) => Status::InvalidArgument,
            RouteError::NoRoute => Status::NoRoute,
        }
    }
}

/// FNV-1a 64 of `key`, modulo `partitions` (at least 1): the partition hash routing picks, the
/// same function as key partitioning of produce requests (`docs/protocol.md`, section 8).
pub fn hash_partition(key: &[u8], partitions: u32) -> u32 {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // The remainder is below `partitions`, so it fits a u32.
    (hash % u64::from(partitions.max(1))) as u32
}

fn check_partition_count(count: u32) -> Result<(), MetadataError> {
    if !(1..=SUPER_STREAM_PARTITIONS_MAX).contains(&count) {
        return Err(MetadataError::InvalidArgument(format!(
            "a super stream has 1..={SUPER_STREAM_PARTITIONS_MAX} partitions, not {count}"
        )));
    }
    Ok(())
}

/// The partition count of a binding-key table, checked against the limits.
fn partition_count(keys: &[String]) -> Result<u32, MetadataError> {
    let count = u32::try_from(keys.len()).unwrap_or(u32::MAX);
    check_partition_count(count).map_err(|_| {
        MetadataError::InvalidArgument(format!(
            "a super stream has 1..={SUPER_STREAM_PARTITIONS_MAX} binding keys, not {}",
            keys.len()
        ))
    })?;
    Ok(count)
}

fn check_binding_key(key: &str) -> Result<(), MetadataError> {
    validate_name(key).map_err(|error| match error {
        MetadataError::InvalidName { name, reason } => {
            MetadataError::InvalidName { name: format!("binding key {name}"), reason }
        }
        other => other,
    })
}

const _: () = assert!(BINDING_KEY_BYTES_MAX == super::NAME_BYTES_MAX, "keys follow the name rule");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::catalog::{Catalog, CreateStreamOp, MetadataOp, TopicOp};
    use crate::metadata::table::ShardTable;

    fn layout_op(layout: SuperStreamLayout, shared_keys: bool) -> Result<MetadataOp, MetadataError> {
        let op = CreateSuperStreamOp::from_layout("s", "ss", layout, shared_keys, TopicConfig::default(), 7)?;
        Ok(MetadataOp::CreateSuperStream(Box::new(op)))
    }

    fn keys(keys: &[&str]) -> SuperStreamLayout {
        SuperStreamLayout::BindingKeys(keys.iter().map(|k| k.to_string()).collect())
    }

    fn catalog_with(op: MetadataOp) -> Catalog {
        let mut catalog = Catalog::new();
        let stream = MetadataOp::CreateStream(CreateStreamOp { name: "s".into(), created_us: 1 });
        catalog.apply(&stream).expect("stream");
        catalog.apply(&op).expect("super stream");
        catalog
    }

    fn status_of(result: Result<MetadataOp, MetadataError>) -> Status {
        match result {
            Ok(op) => panic!("accepted: {op:?}"),
            Err(error) => error.status(),
        }
    }

    #[test]
    fn a_partition_count_becomes_decimal_keys_with_hash_routing() {
        let catalog = catalog_with(layout_op(SuperStreamLayout::Partitions(3), false).expect("op"));
        let (stream, topic, super_stream) = catalog.super_stream("s", "ss").expect("super stream");
        assert_eq!((topic.partitions, topic.config.partitions), (3, 3));
        assert_eq!(super_stream.routing, SuperStreamRouting::Hash);
        assert_eq!(super_stream.binding_keys, ["0", "1", "2"]);
        let info = catalog.topic_info(stream, topic, &ShardTable::new(catalog.revision, 2));
        assert_eq!(info.super_stream, Some(super_stream.info()));
        let (routing, partitions) = super_stream.route("1", Some(SuperStreamRouting::Key)).expect("key");
        assert_eq!((routing, partitions), (SuperStreamRouting::Key, vec![1]), "RabbitMQ's keys work");
        for key in ["", "a", "customer-17", "ü"] {
            let expected = vec![hash_partition(key.as_bytes(), 3)];
            assert_eq!(super_stream.route(key, None), Ok((SuperStreamRouting::Hash, expected)));
        }
    }

    #[test]
    fn hash_routing_is_fnv1a_64_modulo_the_partition_count() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        assert_eq!(hash_partition(b"a", 1000), (0xaf63_dc4c_8601_ec8c_u64 % 1000) as u32);
        assert_eq!(hash_partition(b"", 7), (0xcbf2_9ce4_8422_2325_u64 % 7) as u32);
        assert_eq!(hash_partition(b"anything", 0), 0, "0 partitions is taken as 1");
        let spread: std::collections::BTreeSet<u32> =
            (0..100).map(|i| hash_partition(format!("key-{i}").as_bytes(), 3)).collect();
        assert_eq!(spread.len(), 3);
    }

    #[test]
    fn key_routing_finds_one_several_or_no_partition() {
        let catalog = catalog_with(layout_op(keys(&["amer", "emea", "amer", "apac"]), true).expect("op"));
        let (_, _, super_stream) = catalog.super_stream("s", "ss").expect("super stream");
        assert_eq!(super_stream.route("emea", None), Ok((SuperStreamRouting::Key, vec![1])));
        assert_eq!(super_stream.route("amer", None), Ok((SuperStreamRouting::Key, vec![0, 2])));
        assert_eq!(super_stream.route("nowhere", None), Err(RouteError::NoRoute));
        assert_eq!(RouteError::NoRoute.status(), Status::NoRoute);
        let long = "k".repeat(ROUTING_KEY_BYTES_MAX + 1);
        assert_eq!(super_stream.route(&long, None), Err(RouteError::KeyTooLong(long.len())));
        let (routing, partitions) = super_stream.route("amer", Some(SuperStreamRouting::Hash)).expect("hash");
        assert_eq!((routing, partitions.len()), (SuperStreamRouting::Hash, 1));
    }

    #[test]
    fn bad_layouts_are_refused_with_clear_statuses() {
        assert_eq!(status_of(layout_op(SuperStreamLayout::Partitions(0), false)), Status::InvalidArgument);
        let too_many = SuperStreamLayout::Partitions(SUPER_STREAM_PARTITIONS_MAX + 1);
        assert_eq!(status_of(layout_op(too_many, false)), Status::InvalidArgument);
        assert_eq!(status_of(layout_op(keys(&[]), false)), Status::InvalidArgument);
        let many: Vec<String> = (0..=SUPER_STREAM_PARTITIONS_MAX).map(|i| format!("k{i}")).collect();
        let many = SuperStreamLayout::BindingKeys(many);
        assert_eq!(status_of(layout_op(many, false)), Status::InvalidArgument);
        assert_eq!(status_of(layout_op(keys(&["a", "b", "a"]), false)), Status::InvalidArgument);
        assert_eq!(status_of(layout_op(keys(&["a", "b c"]), false)), Status::InvalidName);
        assert_eq!(status_of(layout_op(keys(&["a", ""]), false)), Status::InvalidName);
        let long = "k".repeat(BINDING_KEY_BYTES_MAX + 1);
        assert_eq!(status_of(layout_op(keys(&[&long]), false)), Status::InvalidName);
        let bad_name = CreateSuperStreamOp::from_layout(
            "s",
            "bad/name",
            SuperStreamLayout::Partitions(2),
            false,
            TopicConfig::default(),
            0,
        );
        assert_eq!(
            bad_name.map(|op| MetadataOp::CreateSuperStream(Box::new(op))).map_err(|e| e.status()).err(),
            Some(Status::InvalidName)
        );
        let config = TopicConfig { partitions: 5, ..TopicConfig::default() };
        let mismatch =
            CreateSuperStreamOp::from_layout("s", "ss", SuperStreamLayout::Partitions(2), false, config, 0);
        assert_eq!(mismatch.err().map(|e| e.status()), Some(Status::InvalidArgument));
    }

    #[test]
    fn a_logged_op_is_checked_again_on_apply() {
        let mut op = CreateSuperStreamOp::from_layout(
            "s",
            "ss",
            SuperStreamLayout::Partitions(2),
            false,
            TopicConfig::default(),
            0,
        )
        .expect("op");
        op.binding_keys.push("2".into());
        let mut catalog =
            catalog_with(MetadataOp::CreateStream(CreateStreamOp { name: "t".into(), created_us: 1 }));
        let before = catalog.clone();
        let error =
            catalog.apply(&MetadataOp::CreateSuperStream(Box::new(op))).expect_err("mismatched table");
        assert_eq!((error.status(), &catalog), (Status::InvalidArgument, &before));
    }

    #[test]
    fn super_streams_keep_their_partitions_and_only_they_are_deleted_as_such() {
        let mut catalog = catalog_with(layout_op(SuperStreamLayout::Partitions(2), false).expect("op"));
        let plain = CreateSuperStreamOp::from_layout(
            "s",
            "plain",
            SuperStreamLayout::Partitions(1),
            false,
            TopicConfig::default(),
            0,
        )
        .expect("op")
        .topic_op();
        catalog.apply(&MetadataOp::CreateTopic(plain)).expect("plain topic");
        let add = MetadataOp::AddPartitions(crate::metadata::catalog::PartitionsOp {
            stream: "s".into(),
            topic: "ss".into(),
            count: 1,
        });
        assert_eq!(catalog.apply(&add).err().map(|e| e.status()), Some(Status::InvalidArgument));
        let delete =
            |topic: &str| MetadataOp::DeleteSuperStream(TopicOp { stream: "s".into(), topic: topic.into() });
        assert_eq!(catalog.apply(&delete("plain")).err().map(|e| e.status()), Some(Status::NotASuperStream));
        assert_eq!(catalog.apply(&delete("missing")).err().map(|e| e.status()), Some(Status::UnknownTopic));
        catalog.apply(&delete("ss")).expect("delete");
        assert_eq!(catalog.super_stream("s", "ss").err().map(|e| e.status()), Some(Status::UnknownTopic));
        let duplicate = layout_op(SuperStreamLayout::Partitions(2), false).expect("op");
        catalog.apply(&duplicate).expect("recreated");
        assert_eq!(catalog.apply(&duplicate).err().map(|e| e.status()), Some(Status::AlreadyExists));
    }
}
