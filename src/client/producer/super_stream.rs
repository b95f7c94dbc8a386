//! [`SuperStreamProducer`]: a [`Producer`] on a super stream that picks each message's partitions
//! from a routing key the application extracts from the message.
//!
//! Built with [`ProducerBuilder::super_stream`], so every producer setting (background or direct,
//! batching, linger, retries, compression, a name for exactly-once, confirmations) applies: the
//! super-stream producer only decides partitions and hands the messages, each bound to its
//! partition, to the ordinary producer. Routing:
//!
//! * [`Routing::Hash`]: FNV-1a 64 of the key's UTF-8 bytes modulo the partition count, computed
//!   here with the server's function ([`key_partition`]), so it agrees with the broker's `Route`, with keyed
//!   produce requests and with every client of this crate. (RabbitMQ's clients hash with 32-bit
//!   MurmurHash3 instead: the same key can land on another partition, see `docs/protocol.md`.)
//! * [`Routing::Key`]: the partitions whose binding key equals the key, asked of the broker
//!   (`SuperStreamRoute`) once per key and cached (at most [`ROUTE_CACHE_KEYS_MAX`] keys; the
//!   cache starts over when full). A message whose key names several partitions is sent to each;
//!   a key that names none fails the call with the `NoRoute` status before any of its messages
//!   is accepted.
//!
//! Runs on the caller's tokio runtime, like [`Producer`]. Invariants: routes are computed for a
//! whole call before anything is sent, so a call either routes every message or accepts none;
//! a super stream's partition count never changes (the broker refuses to add partitions to
//! one), so the count read at build time stays right for hash routing; a message's own
//! `partition` is replaced by its route.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::{key_partition, BatchReceipt, Producer, ProducerBuilder, ProducerError, ProducerMessage};
use crate::protocol::super_stream::SuperStreamRouting;

/// Most routing keys whose partitions a key-routing producer remembers.
pub const ROUTE_CACHE_KEYS_MAX: usize = 10_000;

/// How a super-stream producer maps a routing key to partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// One partition by hash (FNV-1a 64 modulo the partition count), computed locally.
    Hash,
    /// The partitions bound to the key, asked of the broker and cached.
    Key,
}

/// Extracts a message's routing key.
pub type RoutingKeyFn = Arc<dyn Fn(&ProducerMessage) -> String + Send + Sync>;

/// A [`ProducerBuilder`] turned into a super-stream producer's; see [`ProducerBuilder::super_stream`].
pub struct SuperStreamProducerBuilder {
    producer: ProducerBuilder,
    routing: Routing,
    routing_key: RoutingKeyFn,
}

impl ProducerBuilder {
    /// Makes this a producer on a super stream (the builder's topic): each message goes to the
    /// partitions `routing` gives for the key `routing_key` extracts from it. The super stream
    /// must exist ([`Client::create_super_stream`](crate::client::Client::create_super_stream));
    /// `create_if_missing` would make a plain topic, which `build` then refuses.
    pub fn super_stream(
        self,
        routing: Routing,
        routing_key: impl Fn(&ProducerMessage) -> String + Send + Sync + 'static,
    ) -> SuperStreamProducerBuilder {
        SuperStreamProducerBuilder { producer: self, routing, routing_key: Arc::new(routing_key) }
    }
}

impl SuperStreamProducerBuilder {
    /// Builds the producer and checks that its topic is a super stream (`NotASuperStream`
    /// otherwise), reading its partition count.
    pub async fn build(self) -> Result<SuperStreamProducer, ProducerError> {
        let producer = self.producer.build().await?;
        let partitions =
            producer.router().base().super_stream_partitions(producer.stream(), producer.topic()).await?;
        let count = u32::try_from(partitions.partitions.len())
            .map_err(|_| ProducerError::InvalidConfig("too many partitions".into()))?;
        Ok(SuperStreamProducer {
            producer,
            routing: self.routing,
            routing_key: self.routing_key,
            partitions: count,
            routes: Mutex::new(HashMap::new()),
        })
    }
}

/// A producer on a super stream; see the module documentation.
pub struct SuperStreamProducer {
    producer: Producer,
    routing: Routing,
    routing_key: RoutingKeyFn,
    partitions: u32,
    /// Key routing: the partitions of each key asked so far.
    routes: Mutex<HashMap<String, Arc<[u32]>>>,
}

impl SuperStreamProducer {
    /// The ordinary producer underneath (stream, topic, name, fencing, router).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The super stream's partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The routing in use.
    pub fn routing(&self) -> Routing {
        self.routing
    }

    /// The partitions `message` goes to.
    pub async fn route(&self, message: &ProducerMessage) -> Result<Arc<[u32]>, ProducerError> {
        let key = (self.routing_key)(message);
        match self.routing {
            Routing::Hash => Ok(Arc::from([key_partition(key.as_bytes(), self.partitions)])),
            Routing::Key => self.key_route(key).await,
        }
    }

    /// Sends one message to each of its partitions; see [`Producer::send`].
    pub async fn send_one(&self, message: impl Into<ProducerMessage>) -> Result<(), ProducerError> {
        self.send(vec![message.into()]).await
    }

    /// Routes every message, then sends each to each of its partitions, in order per partition
    /// ([`Producer::send`]: background mode returns once queued, direct mode once acknowledged).
    /// A key without a route fails the call and accepts none of its messages.
    pub async fn send(&self, messages: Vec<ProducerMessage>) -> Result<(), ProducerError> {
        let routed = self.bind(messages).await?;
        self.producer.send(routed).await
    }

    /// Routes every message and sends them as one batch per partition, returning one receipt
    /// per batch; see [`Producer::send_batch`].
    pub async fn send_batch(
        &self,
        messages: Vec<ProducerMessage>,
    ) -> Result<Vec<BatchReceipt>, ProducerError> {
        let routed = self.bind(messages).await?;
        self.producer.send_batch(routed).await
    }

    /// Waits until everything accepted is acknowledged; see [`Producer::flush`].
    pub async fn flush(&self) -> Result<(), ProducerError> {
        self.producer.flush().await
    }

    /// Flushes and stops; see [`Producer::shutdown`].
    pub async fn shutdown(self) -> Result<(), ProducerError> {
        self.producer.shutdown().await
    }

    /// Each message once per partition it routes to, bound to that partition.
    async fn bind(&self, messages: Vec<ProducerMessage>) -> Result<Vec<ProducerMessage>, ProducerError> {
        let mut routed = Vec::with_capacity(messages.len());
        for message in messages {
            let partitions = self.route(&message).await?;
            debug_assert!(!partitions.is_empty() && partitions.iter().all(|&p| p < self.partitions));
            if let Some((&last, others)) = partitions.split_last() {
                for &partition in others {
                    routed.push(message.clone().with_partition(partition));
                }
                routed.push(message.with_partition(last));
            }
        }
        Ok(routed)
    }

    /// The cached partitions of `key`, or the broker's answer (then cached).
    async fn key_route(&self, key: String) -> Result<Arc<[u32]>, ProducerError> {
        if let Some(partitions) = self.cache().get(&key) {
            return Ok(partitions.clone());
        }
        let (stream, topic) = (self.producer.stream(), self.producer.topic());
        let base = self.producer.router().base();
        let routed = base.route_super_stream(stream, topic, &key, Some(SuperStreamRouting::Key)).await?;
        if let Some(&partition) = routed.partitions.iter().find(|&&p| p >= self.partitions) {
            return Err(ProducerError::InvalidMessage(format!(
                "routing key `{key}` names partition {partition}, but {stream}/{topic} has {}",
                self.partitions
            )));
        }
        let partitions: Arc<[u32]> = Arc::from(routed.partitions);
        let mut cache = self.cache();
        if cache.len() >= ROUTE_CACHE_KEYS_MAX {
            cache.clear();
        }
        cache.insert(key, partitions.clone());
        Ok(partitions)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<[u32]>>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for SuperStreamProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuperStreamProducer")
            .field("producer", &self.producer)
            .field("routing", &self.routing)
            .field("partitions", &self.partitions)
            .finish()
    }
}
