//! The client side of durable consumers and retention: typed requests (`create_consumer`,
//! `fetch`, `ack`, `topic_state`, …) on [`Client`], and [`Fetched`], a fetch answer decoded into
//! owned messages with their delivery metadata.
//!
//! Runs on the caller's task. Invariants: every message of a [`Fetched`] is one the server
//! listed as delivered, in its order, with its record found in the batches that came with it
//! (a listed offset without a record is a [`ClientError::Protocol`] error); compressed batches
//! are inflated within [`INFLATED_BATCH_BYTES_MAX`].

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use super::connection::Client;
use super::error::ClientError;
use super::polled::INFLATED_BATCH_BYTES_MAX;
use crate::protocol::batch;
use crate::protocol::durable::{
    AckKind, AckRequest, AckResponse, Delivered, DurableConfig, DurableCreate, DurableInfo, DurableList,
    DurableRef, FetchRequest, FetchResponse, TopicPolicy, TopicState,
};
use crate::protocol::messages::{CreateTopic, Empty, Kind, TopicConfig, TopicInfo, TopicRef};

/// One fetched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    /// Its partition.
    pub partition: u32,
    /// Its partition offset ("stream sequence").
    pub offset: u64,
    /// The consumer sequence of this delivery.
    pub consumer_sequence: u64,
    /// Deliveries so far, this one included.
    pub deliveries: u32,
    /// The producer's timestamp (µs).
    pub timestamp_us: u64,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its filter value (subject).
    pub filter_value: Option<Bytes>,
    /// Its headers.
    pub headers: Vec<(Bytes, Bytes)>,
    /// Its body.
    pub payload: Bytes,
}

/// A fetch answer, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The partition.
    pub partition: u32,
    /// The messages, in delivery order.
    pub messages: Vec<FetchedMessage>,
    /// Wanted messages left after these.
    pub num_pending: u64,
    /// Delivered and unacknowledged, these included.
    pub ack_pending: u64,
}

impl Fetched {
    /// Decodes an answer: finds each listed offset's record in the batches.
    pub fn new(response: FetchResponse, payload: &[u8]) -> Result<Fetched, ClientError> {
        let wanted: HashMap<u64, Delivered> = response.messages.iter().map(|d| (d.offset, *d)).collect();
        let mut found: HashMap<u64, FetchedMessage> = HashMap::with_capacity(wanted.len());
        let protocol = |what: String| ClientError::Protocol(what);
        for next in batch::batches(payload) {
            let checked = next.map_err(|e| protocol(format!("fetched batch: {e}")))?;
            let plain;
            let checked = if checked.is_compressed() {
                plain = batch::inflate(checked.as_bytes(), INFLATED_BATCH_BYTES_MAX)
                    .map_err(|e| protocol(format!("fetched compressed batch: {e}")))?;
                batch::validate(&plain).map_err(|e| protocol(format!("inflated batch: {e}")))?
            } else {
                checked
            };
            for record in checked.records() {
                let Some(delivered) = wanted.get(&record.offset) else { continue };
                found.entry(record.offset).or_insert_with(|| FetchedMessage {
                    partition: response.partition,
                    offset: record.offset,
                    consumer_sequence: delivered.consumer_sequence,
                    deliveries: delivered.deliveries,
                    timestamp_us: record.timestamp_us,
                    key: record.key.map(Bytes::copy_from_slice),
                    filter_value: record.filter_value.map(Bytes::copy_from_slice),
                    headers: record
                        .headers()
                        .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
                        .collect(),
                    payload: Bytes::copy_from_slice(record.payload),
                });
            }
        }
        let mut messages = Vec::with_capacity(response.messages.len());
        for delivered in &response.messages {
            let mut message = found.get(&delivered.offset).cloned().ok_or_else(|| {
                protocol(format!("offset {} was delivered without its batch", delivered.offset))
            })?;
            message.consumer_sequence = delivered.consumer_sequence;
            message.deliveries = delivered.deliveries;
            messages.push(message);
        }
        Ok(Fetched {
            partition: response.partition,
            messages,
            num_pending: response.num_pending,
            ack_pending: response.ack_pending,
        })
    }
}

impl Client {
    /// Creates a topic with a retention policy; with `if_missing`, an existing one is returned.
    pub async fn create_topic_with_policy(
        &self,
        stream: &str,
        name: &str,
        config: TopicConfig,
        policy: TopicPolicy,
        if_missing: bool,
    ) -> Result<TopicInfo, ClientError> {
        let request =
            CreateTopic { stream: stream.to_string(), name: name.to_string(), config, policy, if_missing };
        Ok(self.request(Kind::TopicCreate, &request, &[]).await?.0)
    }

    /// A topic's live contents per partition and in total.
    pub async fn topic_state(&self, stream: &str, topic: &str) -> Result<TopicState, ClientError> {
        let request = TopicRef { stream: stream.to_string(), topic: topic.to_string() };
        Ok(self.request(Kind::TopicState, &request, &[]).await?.0)
    }

    /// Creates a durable consumer; with `if_missing`, an identical existing one is returned.
    pub async fn create_consumer(
        &self,
        stream: &str,
        topic: &str,
        config: DurableConfig,
        if_missing: bool,
    ) -> Result<DurableInfo, ClientError> {
        let request =
            DurableCreate { stream: stream.to_string(), topic: topic.to_string(), config, if_missing };
        Ok(self.request(Kind::ConsumerCreate, &request, &[]).await?.0)
    }

    /// Deletes a durable consumer (on an interest topic, what only it held is removed).
    pub async fn delete_consumer(&self, stream: &str, topic: &str, name: &str) -> Result<(), ClientError> {
        self.request::<_, Empty>(Kind::ConsumerDelete, &durable_ref(stream, topic, name), &[]).await.map(drop)
    }

    /// A durable consumer's configuration and state per partition.
    pub async fn consumer_info(
        &self,
        stream: &str,
        topic: &str,
        name: &str,
    ) -> Result<DurableInfo, ClientError> {
        Ok(self.request(Kind::ConsumerInfo, &durable_ref(stream, topic, name), &[]).await?.0)
    }

    /// Every durable consumer of a topic (configurations).
    pub async fn list_consumers(&self, stream: &str, topic: &str) -> Result<DurableList, ClientError> {
        let request = TopicRef { stream: stream.to_string(), topic: topic.to_string() };
        Ok(self.request(Kind::ConsumerList, &request, &[]).await?.0)
    }

    /// Fetches for a durable consumer on one partition.
    pub async fn fetch(&self, request: &FetchRequest) -> Result<Fetched, ClientError> {
        let wait = if request.no_wait { Duration::ZERO } else { Duration::from_micros(request.expires_us) };
        let timeout = self.connection_string().options.timeout + wait;
        let (response, payload) =
            self.request_with_timeout::<_, FetchResponse>(Kind::Fetch, request, &[], timeout).await?;
        Fetched::new(response, &payload)
    }

    /// Acknowledges offsets of one partition for a durable consumer.
    #[allow(clippy::too_many_arguments)]
    pub async fn ack(
        &self,
        stream: &str,
        topic: &str,
        partition: u32,
        consumer: &str,
        kind: AckKind,
        offsets: Vec<u64>,
        sync: bool,
    ) -> Result<AckResponse, ClientError> {
        let request = AckRequest {
            stream: stream.to_string(),
            topic: topic.to_string(),
            partition,
            consumer: consumer.to_string(),
            kind,
            offsets,
            sync,
            reason: String::new(),
        };
        Ok(self.request(Kind::Ack, &request, &[]).await?.0)
    }
}

fn durable_ref(stream: &str, topic: &str, name: &str) -> DurableRef {
    DurableRef { stream: stream.to_string(), topic: topic.to_string(), name: name.to_string() }
}
