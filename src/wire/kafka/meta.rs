//! Cluster and topic requests: ApiVersions, Metadata, CreateTopics, DeleteTopics and
//! FindCoordinator, over the topics of the `--kafka-stream` broker stream.
//!
//! Runs on the connection's shard; every change goes through the native admin handlers (metadata
//! log on the controller, rights checks). Invariants: with per-shard ports on (the default),
//! Metadata names one Kafka broker per shard (node id = shard id, its own port) and each
//! partition's owner shard as its leader, so clients produce and fetch where the partition lives
//! and nothing is forwarded; with them off it names one broker, node 0, at the main address.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::{code_of, UNKNOWN_TOPIC_OR_PARTITION};
use super::frame::SUPPORTED;
use super::state::Conn;
use crate::protocol::messages::{
    CreateStream, CreateTopic, Empty, Kind, StreamInfo, TopicConfig, TopicInfo, TopicRef,
};
use crate::shard::error::BrokerResult;
use crate::wire::native_call as call;

/// The cluster id Metadata gives.
const CLUSTER_ID: &str = "ringbroker";

/// Kafka's `INVALID_PARTITIONS`.
const INVALID_PARTITIONS: i16 = 37;
/// Kafka's `INVALID_REPLICATION_FACTOR`.
const INVALID_REPLICATION_FACTOR: i16 = 38;

/// ApiVersions: every served key with its range (also the v0 answer to an unsupported
/// ApiVersions version, with `error_code` 35, so the client retries at a version we serve).
pub(crate) fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys)
}

/// A Kafka broker: node id, host and port.
pub(crate) struct Node {
    /// Node id (the shard id with per-shard ports, else 0).
    pub(crate) id: i32,
    /// Advertised host.
    pub(crate) host: String,
    /// Port.
    pub(crate) port: i32,
}

/// The node serving shard `shard`'s partitions and groups.
pub(crate) fn node_of(conn: &Conn, shard: u16) -> Node {
    let config = &conn.shard.config;
    let host = config.kafka_host();
    match config.kafka_shard_address(shard) {
        Some(address) => Node { id: i32::from(shard), host, port: i32::from(address.port()) },
        None => Node { id: 0, host, port: config.kafka_listen.map_or(9092, |a| i32::from(a.port())) },
    }
}

/// Every node Metadata names.
fn nodes(conn: &Conn) -> Vec<Node> {
    if conn.shard.config.kafka_shard_address(0).is_none() {
        return vec![node_of(conn, 0)];
    }
    (0..conn.shard.shards()).map(|shard| node_of(conn, shard)).collect()
}

/// Metadata: brokers, and the asked topics (all when `topics` is null, or empty before v1)
/// with their partitions' leaders. Unknown topics are created when the client allows it and
/// `--kafka-auto-create-partitions` is not 0.
pub(crate) async fn metadata(conn: &Conn, version: i16, request: MetadataRequest) -> MetadataResponse {
    let brokers = nodes(conn)
        .into_iter()
        .map(|node| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(node.id))
                .with_host(StrBytes::from_string(node.host))
                .with_port(node.port)
        })
        .collect();
    let names: Option<Vec<String>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(topics.into_iter().filter_map(|t| t.name.map(|n| n.0.to_string())).collect()),
    };
    // Before v4 a client could not say; Kafka creates then.
    let auto_create = (version < 4 || request.allow_auto_topic_creation)
        && conn.shard.config.kafka_auto_create_partitions > 0;
    let mut topics = Vec::new();
    match names {
        None => {
            let catalog = conn.shard.catalog();
            if let Ok(stream) = catalog.stream(conn.broker_stream()) {
                for name in stream.topics.keys() {
                    topics.push(topic_metadata(conn, name));
                }
            }
        }
        Some(names) => {
            for name in names {
                if auto_create && !exists(conn, &name) {
                    let partitions = conn.shard.config.kafka_auto_create_partitions;
                    if let Err(error) = create(conn, &name, partitions).await {
                        tracing::debug!(topic = %name, %error, "kafka auto-create failed");
                    }
                }
                topics.push(topic_metadata(conn, &name));
            }
        }
    }
    let mut response =
        MetadataResponse::default().with_brokers(brokers).with_topics(topics).with_controller_id(BrokerId(0));
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    }
    response
}

fn exists(conn: &Conn, name: &str) -> bool {
    conn.shard.catalog().topic(conn.broker_stream(), name).is_ok()
}

fn topic_metadata(conn: &Conn, name: &str) -> MetadataResponseTopic {
    let topic =
        MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_string(name.to_string()))));
    let catalog = conn.shard.catalog();
    let Ok((stream, found)) = catalog.topic(conn.broker_stream(), name) else {
        return topic.with_error_code(UNKNOWN_TOPIC_OR_PARTITION);
    };
    let table = conn.shard.table();
    let partitions = (0..found.partitions)
        .map(|partition| {
            let leader = BrokerId(node_of(conn, table.owner(stream.id, found.id, partition)).id);
            MetadataResponsePartition::default()
                .with_partition_index(partition as i32)
                .with_leader_id(leader)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![leader])
                .with_isr_nodes(vec![leader])
        })
        .collect();
    topic.with_partitions(partitions)
}

/// Creates topic `name` with `partitions` partitions (and the broker stream when missing).
pub(crate) async fn create(conn: &Conn, name: &str, partitions: u32) -> BrokerResult<()> {
    let context = conn.context()?;
    if conn.shard.catalog().stream(conn.broker_stream()).is_err() {
        let request = CreateStream { name: conn.broker_stream().to_string(), if_missing: true };
        let _: StreamInfo = call(&context, Kind::StreamCreate, &request).await?;
    }
    let request = CreateTopic {
        stream: conn.broker_stream().to_string(),
        name: name.to_string(),
        config: TopicConfig { partitions, ..TopicConfig::default() },
        policy: Default::default(),
        if_missing: false,
    };
    let created: BrokerResult<TopicInfo> = call(&context, Kind::TopicCreate, &request).await;
    // The controller answers once the topic is committed; this shard installs the new catalog a
    // moment later. Wait for it (bounded), so the Metadata or produce that follows sees the topic.
    for _ in 0..CATALOG_WAIT_STEPS {
        if exists(conn, name) {
            break;
        }
        glommio::timer::sleep(CATALOG_WAIT_STEP).await;
    }
    created.map(|_| ())
}

/// How long [`create`] waits for this shard's catalog to show a new topic, in steps.
const CATALOG_WAIT_STEPS: u32 = 400;
/// One step of that wait.
const CATALOG_WAIT_STEP: std::time::Duration = std::time::Duration::from_millis(5);

/// CreateTopics: each topic with its partition count (-1: the auto-create count). Replication
/// factors other than -1 and 1 are refused (one machine), manual assignments are ignored.
pub(crate) async fn create_topics(
    conn: &Conn,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let partitions = match topic.num_partitions {
            -1 => conn.shard.config.kafka_auto_create_partitions.max(1),
            n => u32::try_from(n).unwrap_or(0),
        };
        let (code, message) = if partitions == 0 {
            (INVALID_PARTITIONS, Some(format!("{} partitions", topic.num_partitions)))
        } else if topic.replication_factor != -1 && topic.replication_factor != 1 {
            (INVALID_REPLICATION_FACTOR, Some("ringbroker keeps one replica".to_string()))
        } else if request.validate_only {
            (0, None)
        } else {
            match create(conn, &name, partitions).await {
                Ok(()) => (0, None),
                Err(error) => (code_of(&error), Some(error.message.clone())),
            }
        };
        let mut result = CreatableTopicResult::default().with_name(topic.name).with_error_code(code);
        if version >= 1 {
            result.error_message = message.map(StrBytes::from_string);
        }
        if version >= 5 {
            result.num_partitions = partitions as i32;
            result.replication_factor = 1;
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// DeleteTopics: by name (topic ids are not served).
pub(crate) async fn delete_topics(
    conn: &Conn,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let names: Vec<TopicName> = if version >= 6 {
        request.topics.into_iter().filter_map(|t| t.name).collect()
    } else {
        request.topic_names
    };
    let mut responses = Vec::with_capacity(names.len());
    for name in names {
        let code = match delete(conn, name.0.as_str()).await {
            Ok(()) => 0,
            Err(error) => code_of(&error),
        };
        responses.push(DeletableTopicResult::default().with_name(Some(name)).with_error_code(code));
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

async fn delete(conn: &Conn, name: &str) -> BrokerResult<()> {
    let context = conn.context()?;
    let request = TopicRef { stream: conn.broker_stream().to_string(), topic: name.to_string() };
    let _: Empty = call(&context, Kind::TopicDelete, &request).await?;
    Ok(())
}

/// FindCoordinator (groups only; transactions are not served): the node of the shard the
/// group's name hashes to. Group state is broker-wide (`groups`), so any node would do; hashing
/// spreads the groups' connections over the shards.
pub(crate) fn find_coordinator(
    conn: &Conn,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    let keys: Vec<StrBytes> = if version >= 4 { request.coordinator_keys } else { vec![request.key] };
    let key_type = request.key_type;
    let answer = |key: &StrBytes| -> (i16, Node) {
        let shard = (crate::server::data::key_hash(key.as_str().as_bytes())
            % u64::from(conn.shard.shards().max(1))) as u16;
        let node = node_of(conn, shard);
        if key_type != 0 {
            return (COORDINATOR_NOT_AVAILABLE, node);
        }
        (0, node)
    };
    if version >= 4 {
        let coordinators = keys
            .iter()
            .map(|key| {
                let (code, node) = answer(key);
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(node.id))
                    .with_host(StrBytes::from_string(node.host))
                    .with_port(node.port)
                    .with_error_code(code)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let key = keys.into_iter().next().unwrap_or_else(|| StrBytes::from_static_str(""));
    let (code, node) = answer(&key);
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_node_id(BrokerId(node.id))
        .with_host(StrBytes::from_string(node.host))
        .with_port(node.port)
}
