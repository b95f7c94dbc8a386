//! Confirmations (publisher confirms, as RabbitMQ streams call them): what the producer tells the
//! application about each batch once the broker has answered for it, through the builder's
//! [`on_confirm`](super::ProducerBuilder::on_confirm) callback, and the receipts that
//! [`send_batch`](super::Producer::send_batch) returns.
//!
//! The callback runs on the task that settled the batch: the background task in background mode,
//! the caller's task in direct mode. It should be quick (hand the confirmation to a channel if
//! there is real work to do); a slow callback holds up every later batch.
//!
//! Invariants: the callback is called exactly once per batch queued for sending, whether the
//! batch was stored, recognised as a duplicate or failed (also when an earlier failure kept it
//! from being sent), and for one partition in the order the batches were sealed; a panicking
//! callback is logged and does not stop the producer.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::client::error::ClientError;
use crate::protocol::batch::BatchBuilder;
use crate::protocol::messages::BatchAck;

/// What became of one batch.
#[derive(Debug, Clone)]
pub struct Confirmation {
    /// The partition the batch was sent to.
    pub partition: u32,
    /// Messages in the batch.
    pub messages: u32,
    /// The producer sequences of its first and last message (named producers; `None` for an
    /// anonymous producer).
    pub sequences: Option<(u64, u64)>,
    /// The broker's acknowledgement, or why the batch failed after its retries. After a
    /// connection error the batch's fate is unknown; after a refusal it is not stored.
    pub result: Result<BatchAck, ClientError>,
}

impl Confirmation {
    /// Whether the broker holds the batch (stored now, or earlier for a duplicate).
    pub fn is_confirmed(&self) -> bool {
        self.result.is_ok()
    }

    /// Whether the batch had been stored already (a retry of a named producer's batch): it was
    /// not written again.
    pub fn is_duplicate(&self) -> bool {
        self.result.as_ref().is_ok_and(|ack| ack.duplicate)
    }

    /// The offsets of the batch's first and last message, when known (not for a failure, nor
    /// for a duplicate whose original offsets the partition no longer remembers).
    pub fn offsets(&self) -> Option<(u64, u64)> {
        self.result
            .as_ref()
            .ok()
            .filter(|ack| ack.has_offsets())
            .map(|ack| (ack.base_offset, ack.last_offset))
    }
}

/// One acknowledged batch of a [`send_batch`](super::Producer::send_batch) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReceipt {
    /// The partition written.
    pub partition: u32,
    /// Messages in the batch.
    pub messages: u32,
    /// Where it landed (see [`BatchAck::has_offsets`] and [`BatchAck::duplicate`]).
    pub ack: BatchAck,
}

impl BatchReceipt {
    /// The offset of the batch's first message, when known.
    pub fn base_offset(&self) -> Option<u64> {
        self.ack.has_offsets().then_some(self.ack.base_offset)
    }
}

/// The confirmation callback's type.
pub type ConfirmHandler = Arc<dyn Fn(Confirmation) + Send + Sync + 'static>;

/// The producer's callback, if it has one.
#[derive(Clone, Default)]
pub(super) struct Confirmer {
    handler: Option<ConfirmHandler>,
}

impl Confirmer {
    pub(super) fn new(handler: Option<ConfirmHandler>) -> Confirmer {
        Confirmer { handler }
    }

    /// Tells the callback what became of `batch` (still holding its records and sequences).
    pub(super) fn batch(
        &self,
        partition: u32,
        batch: &BatchBuilder,
        named: bool,
        result: &Result<BatchAck, ClientError>,
    ) {
        let Some(handler) = &self.handler else { return };
        let confirmation = Confirmation {
            partition,
            messages: batch.record_count(),
            sequences: named.then(|| (batch.first_sequence(), batch.last_sequence())),
            result: result.clone(),
        };
        if catch_unwind(AssertUnwindSafe(|| handler(confirmation))).is_err() {
            tracing::error!(partition, "the producer's confirmation callback panicked");
        }
    }
}

impl fmt::Debug for Confirmer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.handler.is_some() { "Confirmer(callback)" } else { "Confirmer(none)" })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::protocol::messages::Status;

    #[test]
    fn confirmations_tell_stored_duplicate_and_failed_apart() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let confirmer = Confirmer::new(Some(Arc::new(move |confirmation: Confirmation| {
            sink.lock().expect("lock").push(confirmation);
        })));
        let mut batch = BatchBuilder::new(9, 10);
        batch.push_payload(b"a").expect("push");
        batch.push_payload(b"b").expect("push");
        let stored = BatchAck { base_offset: 4, last_offset: 5, append_timestamp_us: 1, duplicate: false };
        let forgotten = BatchAck {
            base_offset: BatchAck::UNKNOWN,
            last_offset: BatchAck::UNKNOWN,
            append_timestamp_us: BatchAck::UNKNOWN,
            duplicate: true,
        };
        let fenced = ClientError::Server { status: Status::ProducerFenced, message: "old epoch".into() };
        confirmer.batch(3, &batch, true, &Ok(stored));
        confirmer.batch(3, &batch, false, &Ok(forgotten));
        confirmer.batch(3, &batch, true, &Err(fenced));
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 3);
        assert_eq!(
            (seen[0].offsets(), seen[0].messages, seen[0].sequences),
            (Some((4, 5)), 2, Some((10, 11)))
        );
        assert!(seen[0].is_confirmed() && !seen[0].is_duplicate());
        assert!(seen[1].is_duplicate() && seen[1].offsets().is_none() && seen[1].sequences.is_none());
        assert!(!seen[2].is_confirmed());
        assert!(seen[2].result.as_ref().is_err_and(ClientError::is_producer_fenced));
    }

    #[test]
    fn a_panicking_callback_is_contained() {
        let confirmer = Confirmer::new(Some(Arc::new(|_| panic!("callback bug"))));
        let mut batch = BatchBuilder::new(0, 0);
        batch.push_payload(b"x").expect("push");
        confirmer.batch(0, &batch, false, &Err(ClientError::Timeout));
        Confirmer::default().batch(0, &batch, false, &Err(ClientError::Timeout));
    }
}
