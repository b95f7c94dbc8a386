//! Delivery: what the producer handle and its background task share ([`Shared`]), routing a
//! message to its partition, sending a partition's batches to its owner shard with retries, and
//! keeping failures for the next report.
//!
//! Runs on the caller's task (direct mode, routing) and on the background task. Invariants: a
//! failure is reported once; a request is retried only after errors that leave its fate unknown
//! or are transient, and a retry sends the very same bytes (so a named producer's retry of a
//! stored batch is acknowledged as a duplicate, not stored twice); once a named producer is
//! fenced, nothing more is sent and every call reports [`ProducerError::Fenced`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::batching::Limits;
use super::confirm::Confirmer;
use super::named::Named;
use super::{key_partition, Partitioning, ProducerError, ProducerMessage};
use crate::client::connection::Client;
use crate::client::error::ClientError;
use crate::client::router::ShardRouter;
use crate::protocol::messages::{BatchAck, Partitioning as WirePartitioning, Status};

/// How often and how far apart a failed request is tried again.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    pub(super) retries: u32,
    pub(super) interval: Duration,
}

/// Whether a failed request may succeed if sent again: its connection failed, or the server
/// was stopping or too busy to take it.
pub(super) fn is_retryable(error: &ClientError) -> bool {
    error.is_connection_error()
        || matches!(error.status(), Some(Status::ShuttingDown | Status::TooManyInFlight))
}

/// A failure not reported to the user yet.
pub(super) struct Failure {
    pub(super) partition: u32,
    pub(super) messages: u64,
    pub(super) source: ClientError,
}

/// What the producer handle and its task share.
pub(super) struct Shared {
    pub(super) router: ShardRouter,
    pub(super) stream: String,
    pub(super) topic: String,
    pub(super) limits: Limits,
    pub(super) linger: Duration,
    pub(super) partitioning: Partitioning,
    pub(super) retry: RetryPolicy,
    pub(super) round_robin: AtomicU64,
    pub(super) failure: Mutex<Option<Failure>>,
    /// The named producer's identity and lease (`None` for an anonymous producer).
    pub(super) named: Option<Named>,
    /// The broker's `ProducerFenced` refusal, once it came: final.
    pub(super) fenced: Mutex<Option<ClientError>>,
    /// The confirmation callback.
    pub(super) confirm: Confirmer,
    /// Direct mode: the next sequence per partition. A named producer's direct send holds it
    /// from numbering its batches until they are answered, so that its requests to a partition
    /// reach the broker in sequence order (a later batch stored first would make an earlier one
    /// look like a duplicate).
    pub(super) direct_sequences: tokio::sync::Mutex<Vec<u64>>,
}

/// Locks a std mutex, recovering it if a panicking thread poisoned it (the failure slot is
/// always consistent).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The partition of `message` among `partitions`.
    pub(super) fn route(&self, message: &ProducerMessage, partitions: u32) -> Result<u32, ProducerError> {
        if partitions == 0 {
            return Err(ProducerError::InvalidMessage(format!(
                "{}/{} has no partitions",
                self.stream, self.topic
            )));
        }
        let partition = match (message.partition, &self.partitioning) {
            (Some(partition), _) => partition,
            (None, Partitioning::Partition(partition)) => *partition,
            (None, Partitioning::Key(key)) => key_partition(key, partitions),
            (None, Partitioning::Balanced) => match &message.key {
                Some(key) => key_partition(key, partitions),
                None => (self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(partitions)) as u32,
            },
        };
        if partition >= partitions {
            return Err(ProducerError::InvalidMessage(format!(
                "partition {partition} does not exist: {}/{} has {partitions}",
                self.stream, self.topic
            )));
        }
        Ok(partition)
    }

    /// Logs a delivery failure and keeps it for the next `send` or `flush`.
    pub(super) fn record_failure(&self, partition: u32, messages: u64, source: ClientError) {
        tracing::error!(
            stream = %self.stream, topic = %self.topic, partition, messages, error = %source,
            "messages not delivered"
        );
        let mut failure = lock(&self.failure);
        match failure.as_mut() {
            Some(earlier) => earlier.messages = earlier.messages.saturating_add(messages),
            None => *failure = Some(Failure { partition, messages, source }),
        }
    }

    /// Reports (and forgets) the failure kept since the last report; a fenced producer reports
    /// that it is fenced, every time.
    pub(super) fn take_failure(&self) -> Result<(), ProducerError> {
        self.check_fenced()?;
        match lock(&self.failure).take() {
            Some(Failure { partition, messages, source }) => {
                Err(ProducerError::Delivery { partition, messages, source })
            }
            None => Ok(()),
        }
    }

    /// Whether the broker fenced this named producer.
    pub(super) fn is_fenced(&self) -> bool {
        lock(&self.fenced).is_some()
    }

    /// [`ProducerError::Fenced`] once the producer is fenced.
    pub(super) fn check_fenced(&self) -> Result<(), ProducerError> {
        match (lock(&self.fenced).as_ref(), &self.named) {
            (Some(source), Some(named)) => Err(ProducerError::Fenced {
                name: named.name.clone(),
                epoch: named.epoch,
                source: source.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Looks at a failure of a request on the producer's behalf: `ProducerFenced` fences a named
    /// producer for good.
    pub(super) fn note_failure(&self, error: &ClientError) {
        let Some(named) = &self.named else { return };
        if !error.is_producer_fenced() {
            return;
        }
        let mut fenced = lock(&self.fenced);
        if fenced.is_none() {
            tracing::error!(
                stream = %self.stream, topic = %self.topic, name = %named.name, epoch = named.epoch,
                %error, "named producer fenced: a newer instance declared the same name"
            );
            *fenced = Some(error.clone());
        }
    }

    /// The error a call reports for messages that failed with `source`: fenced, or a delivery
    /// failure.
    pub(super) fn delivery_error(&self, partition: u32, messages: u64, source: ClientError) -> ProducerError {
        match self.check_fenced() {
            Err(fenced) => fenced,
            Ok(()) => ProducerError::Delivery { partition, messages, source },
        }
    }

    /// Sends finished batches to one partition's owner as one request, retrying connection
    /// failures as configured; answers with one acknowledgement per batch. A fenced producer
    /// sends nothing and fails at once.
    pub(super) async fn deliver(
        &self,
        partition: u32,
        batches: &[&[u8]],
    ) -> Result<Vec<BatchAck>, ClientError> {
        let (stream, topic) = (self.stream.as_str(), self.topic.as_str());
        let mut attempt = 0;
        loop {
            if let Some(fenced) = lock(&self.fenced).as_ref() {
                return Err(fenced.clone());
            }
            let outcome = match self.router.client_for(stream, topic, partition).await {
                Ok(client) => produce(&client, stream, topic, partition, batches).await,
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(acks) => return Ok(acks),
                Err(error) => error,
            };
            if attempt >= self.retry.retries || !self.may_retry(&error, partition).await {
                self.note_failure(&error);
                return Err(error);
            }
            attempt += 1;
            tracing::warn!(%stream, %topic, partition, attempt, %error, "produce failed; retrying");
            tokio::time::sleep(self.retry.interval).await;
        }
    }

    /// Whether a produce that failed with `error` may succeed if sent again: after a
    /// connection error, `ShuttingDown` or `TooManyInFlight`; or after `UnknownStream`,
    /// `UnknownTopic` or `UnknownPartition` when a fresh shard map still lists the partition (a
    /// stale map, or a shard still opening its partitions after a restart). Refusals such as
    /// `InvalidBatch` or `PermissionDenied` never are.
    pub(super) async fn may_retry(&self, error: &ClientError, partition: u32) -> bool {
        if is_retryable(error) {
            return true;
        }
        if !matches!(
            error.status(),
            Some(Status::UnknownStream | Status::UnknownTopic | Status::UnknownPartition)
        ) {
            return false;
        }
        match self.router.refresh().await {
            Ok(()) => self.router.owner(&self.stream, &self.topic, partition).is_some(),
            Err(refresh_error) => is_retryable(&refresh_error),
        }
    }
}

/// One produce request to `partition` on `client`; checks the answer names that partition.
pub(super) async fn produce(
    client: &Client,
    stream: &str,
    topic: &str,
    partition: u32,
    batches: &[&[u8]],
) -> Result<Vec<BatchAck>, ClientError> {
    let response = client.produce(stream, topic, WirePartitioning::Partition(partition), batches).await?;
    if response.partition != partition {
        return Err(ClientError::Protocol(format!(
            "produce to partition {partition} answered for partition {}",
            response.partition
        )));
    }
    if response.acks.len() != batches.len() {
        return Err(ClientError::Protocol(format!(
            "{} batches answered with {} acknowledgements",
            batches.len(),
            response.acks.len()
        )));
    }
    Ok(response.acks)
}
