//! Delivery: what the producer handle and its background task share ([`Shared`]), routing a
//! message to its partition, sending a partition's batches to its owner shard with retries, and
//! keeping failures for the next report.
//!
//! Runs on the caller's task (direct mode, routing) and on the background task. Invariant: a
//! failure is reported once; a request is retried only after errors that leave its fate unknown
//! or are transient, and a retry sends the very same bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::batching::{append, finished, request_len, Limits};
use super::{key_partition, Partitioning, ProducerError, ProducerMessage};
use crate::client::connection::Client;
use crate::client::error::ClientError;
use crate::client::router::ShardRouter;
use crate::protocol::batch::BatchBuilder;
use crate::protocol::messages::{Partitioning as WirePartitioning, Status};

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
    partition: u32,
    messages: u64,
    source: ClientError,
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

    /// Reports (and forgets) the failure kept since the last report.
    pub(super) fn take_failure(&self) -> Result<(), ProducerError> {
        match lock(&self.failure).take() {
            Some(Failure { partition, messages, source }) => {
                Err(ProducerError::Delivery { partition, messages, source })
            }
            None => Ok(()),
        }
    }

    /// Sends finished batches to one partition's owner as one request, retrying connection
    /// failures as configured.
    pub(super) async fn deliver(&self, partition: u32, batches: &[&[u8]]) -> Result<(), ClientError> {
        let (stream, topic) = (self.stream.as_str(), self.topic.as_str());
        let mut attempt = 0;
        loop {
            let outcome = match self.router.client_for(stream, topic, partition).await {
                Ok(client) => produce(&client, stream, topic, partition, batches).await,
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if attempt >= self.retry.retries || !self.may_retry(&error, partition).await {
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

    /// Direct mode: batches the messages per partition and sends every partition's batches
    /// at once, each partition's requests one after another.
    pub(super) async fn send_direct(
        &self,
        messages: Vec<ProducerMessage>,
        routes: Vec<u32>,
    ) -> Result<(), ProducerError> {
        let mut slots: HashMap<u32, usize> = HashMap::new();
        let mut partitions: Vec<(u32, Vec<BatchBuilder>)> = Vec::new();
        let mut open: Vec<Option<BatchBuilder>> = Vec::new();
        let mut no_pool = Vec::new();
        for (message, partition) in messages.iter().zip(routes) {
            let slot = *slots.entry(partition).or_insert_with(|| {
                partitions.push((partition, Vec::new()));
                open.push(None);
                partitions.len() - 1
            });
            let sealed = &mut partitions[slot].1;
            append(&mut open[slot], message, self.limits, &mut no_pool, |batch| sealed.push(batch))
                .map_err(|error| ProducerError::InvalidMessage(error.to_string()))?;
        }
        for ((_, sealed), open) in partitions.iter_mut().zip(open) {
            sealed.extend(open.filter(|batch| !batch.is_empty()));
        }
        let sends = partitions.iter_mut().map(|(partition, batches)| self.deliver_all(*partition, batches));
        let mut failure: Option<Failure> = None;
        for (partition, messages, source) in
            futures::future::join_all(sends).await.into_iter().filter_map(Result::err)
        {
            tracing::error!(
                stream = %self.stream, topic = %self.topic, partition, messages, error = %source,
                "messages not delivered"
            );
            match failure.as_mut() {
                Some(first) => first.messages = first.messages.saturating_add(messages),
                None => failure = Some(Failure { partition, messages, source }),
            }
        }
        match failure {
            Some(Failure { partition, messages, source }) => {
                Err(ProducerError::Delivery { partition, messages, source })
            }
            None => Ok(()),
        }
    }

    /// Sends one partition's batches in requests of at most [`REQUEST_BATCHES_MAX`] batches and
    /// [`REQUEST_BYTES_MAX`] bytes, in order, stopping at the first failure (which counts the
    /// messages not delivered).
    pub(super) async fn deliver_all(
        &self,
        partition: u32,
        batches: &mut [BatchBuilder],
    ) -> Result<(), (u32, u64, ClientError)> {
        let mut start = 0;
        while start < batches.len() {
            let end = start + request_len(batches[start..].iter().map(BatchBuilder::byte_len));
            let request = &mut batches[start..end];
            let outcome = match finished(request) {
                Ok(slices) => self.deliver(partition, &slices).await,
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                let lost = batches[start..].iter().map(|batch| u64::from(batch.record_count())).sum();
                return Err((partition, lost, error));
            }
            start = end;
        }
        Ok(())
    }
}

/// One produce request to `partition` on `client`; checks the answer names that partition.
pub(super) async fn produce(
    client: &Client,
    stream: &str,
    topic: &str,
    partition: u32,
    batches: &[&[u8]],
) -> Result<(), ClientError> {
    let response = client.produce(stream, topic, WirePartitioning::Partition(partition), batches).await?;
    if response.partition != partition {
        return Err(ClientError::Protocol(format!(
            "produce to partition {partition} answered for partition {}",
            response.partition
        )));
    }
    Ok(())
}
