//! Direct mode: the caller's own task batches its messages per partition, sends every
//! partition's batches at once (each partition's requests one after another) and returns when
//! all are answered. Also how [`send_batch`](super::Producer::send_batch) works in direct mode.
//!
//! Runs on the caller's task. Invariants: a named producer's direct sends are serialised (the
//! partition sequences stay locked from numbering until the answers), so its batches reach each
//! partition in sequence order; each batch is confirmed once, those never sent after an earlier
//! failure included.

use std::collections::HashMap;

use super::batching::{append, finished, request_len, Limits};
use super::confirm::BatchReceipt;
use super::delivery::{Failure, Shared};
use super::{ProducerError, ProducerMessage};
use crate::client::error::ClientError;
use crate::protocol::batch::BatchBuilder;

/// One partition's sealed batches.
type PartitionBatches = (u32, Vec<BatchBuilder>);

impl Shared {
    /// Batches `messages` (bound for `routes[i]`) within `limits` and sends them; the receipts
    /// of every batch acknowledged, in partition then sealing order, or the failure (partitions
    /// that succeeded keep their messages).
    pub(super) async fn send_direct(
        &self,
        messages: Vec<ProducerMessage>,
        routes: Vec<u32>,
        limits: Limits,
    ) -> Result<Vec<BatchReceipt>, ProducerError> {
        self.check_fenced()?;
        let mut sequences = self.direct_sequences.lock().await;
        let mut partitions = batch_per_partition(&messages, routes, limits, &mut sequences)?;
        if !limits.stamp.is_named() {
            // Anonymous batches need no order across calls: let other sends go meanwhile.
            drop(sequences);
        }
        let sends = partitions.iter_mut().map(|(partition, batches)| self.deliver_all(*partition, batches));
        let mut receipts = Vec::new();
        let mut failure: Option<Failure> = None;
        for (acknowledged, failed) in futures::future::join_all(sends).await {
            receipts.extend(acknowledged);
            let Some((partition, messages, source)) = failed else { continue };
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
                Err(self.delivery_error(partition, messages, source))
            }
            None => Ok(receipts),
        }
    }

    /// Sends one partition's batches in requests of at most `REQUEST_BATCHES_MAX` batches and
    /// `REQUEST_BYTES_MAX` bytes, in order, stopping at the first failure. Confirms every
    /// batch; answers with the receipts of those acknowledged and, after a failure, the
    /// partition, the messages not delivered and the error.
    async fn deliver_all(
        &self,
        partition: u32,
        batches: &mut [BatchBuilder],
    ) -> (Vec<BatchReceipt>, Option<(u32, u64, ClientError)>) {
        let named = self.named.is_some();
        let mut receipts = Vec::with_capacity(batches.len());
        let mut start = 0;
        while start < batches.len() {
            let end = start + request_len(batches[start..].iter().map(BatchBuilder::byte_len));
            let request = &mut batches[start..end];
            let outcome = match finished(request) {
                Ok(slices) => self.deliver(partition, &slices).await,
                Err(error) => Err(error),
            };
            match outcome {
                Ok(acks) => {
                    for (batch, ack) in batches[start..end].iter().zip(acks) {
                        self.confirm.batch(partition, batch, named, &Ok(ack));
                        receipts.push(BatchReceipt { partition, messages: batch.record_count(), ack });
                    }
                }
                Err(error) => {
                    let failed = Err(error.clone());
                    for batch in &batches[start..] {
                        self.confirm.batch(partition, batch, named, &failed);
                    }
                    let lost = batches[start..].iter().map(|batch| u64::from(batch.record_count())).sum();
                    return (receipts, Some((partition, lost, error)));
                }
            }
            start = end;
        }
        (receipts, None)
    }
}

/// Batches each message into its partition's batches, numbering a named producer's batches
/// from `sequences` (which then hold each partition's next sequence).
fn batch_per_partition(
    messages: &[ProducerMessage],
    routes: Vec<u32>,
    limits: Limits,
    sequences: &mut Vec<u64>,
) -> Result<Vec<PartitionBatches>, ProducerError> {
    let mut slots: HashMap<u32, usize> = HashMap::new();
    let mut partitions: Vec<PartitionBatches> = Vec::new();
    let mut open: Vec<Option<BatchBuilder>> = Vec::new();
    let mut next: Vec<u64> = Vec::new();
    let mut no_pool = Vec::new();
    for (message, partition) in messages.iter().zip(routes) {
        let slot = *slots.entry(partition).or_insert_with(|| {
            partitions.push((partition, Vec::new()));
            open.push(None);
            next.push(sequences.get(partition as usize).copied().unwrap_or(0));
            partitions.len() - 1
        });
        let sealed = &mut partitions[slot].1;
        append(&mut open[slot], &mut next[slot], message, limits, &mut no_pool, |batch| sealed.push(batch))
            .map_err(|error| ProducerError::InvalidMessage(error.to_string()))?;
    }
    for (((partition, sealed), open), next) in partitions.iter_mut().zip(open).zip(next) {
        sealed.extend(open.filter(|batch| !batch.is_empty()));
        if limits.stamp.is_named() {
            let index = *partition as usize;
            if sequences.len() <= index {
                sequences.resize(index + 1, 0);
            }
            debug_assert!(next >= sequences[index]);
            sequences[index] = next;
        }
    }
    Ok(partitions)
}
