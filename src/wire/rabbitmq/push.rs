//! Push frames for RabbitMQ connections: the broker's subscription pumps
//! (`crate::server::subscriptions`) deliver batches, and this turns each into an Osiris chunk in
//! a Deliver frame (`super::chunk`), a single-active hand-over into ConsumerUpdate, and the end
//! of a subscription (its partition deleted or unreadable) into MetadataUpdate.
//!
//! Runs on the connection's shard, inside the pump that delivers. Invariant: one chunk per stored
//! batch, so a credit (one batch on the native side) is one chunk, as RabbitMQ counts it; a batch
//! that yields no chunk (outside the window, or filtered out to the last record) gives its credit
//! back. A filtering subscription gets only the records that match its filter exactly.

use std::rc::Rc;

use super::chunk::deliver_frames;
use super::codec::codes;
use super::encode;
use super::state::Shared;
use crate::protocol::subscriptions::{ConsumerUpdate, Deliver};
use crate::server::subscriptions::PushFrames;
use crate::shard::error::BrokerError;
use crate::shard::partitions::PayloadPart;

/// The RabbitMQ connection's push frames.
pub(super) struct RabbitFrames {
    /// The connection's shared state.
    pub(super) shared: Rc<Shared>,
}

impl PushFrames for RabbitFrames {
    fn deliver(&self, body: &Deliver, parts: Vec<PayloadPart>) -> Option<(Vec<u8>, Vec<PayloadPart>, u32)> {
        let id = u8::try_from(body.subscription_id).ok()?;
        let filter = self.shared.subscriptions.borrow().get(&id).and_then(|info| info.filter.clone());
        let marks = &body.partition;
        let committed = marks.high_watermark.saturating_sub(1);
        let version = self.shared.deliver_version.get();
        let mut frames = Vec::with_capacity(parts.iter().map(|part| part.bytes().len() + 64).sum());
        let mut chunks = 0;
        for part in &parts {
            let window = (marks.start_offset, marks.next_offset);
            match deliver_frames(id, version, committed, part.bytes(), window, filter.as_deref(), &mut frames)
            {
                Ok(written) => chunks += written,
                Err(error) => {
                    tracing::warn!(subscription = id, %error, "a stored batch could not become a chunk");
                    return None;
                }
            }
        }
        Some((frames, Vec::new(), chunks))
    }

    fn consumer_update(&self, correlation: u64, update: &ConsumerUpdate) -> Option<Vec<u8>> {
        let id = u8::try_from(update.subscription_id).ok()?;
        let correlation = u32::try_from(correlation).ok()?;
        Some(encode::consumer_update(correlation, id, update.active))
    }

    fn failure(&self, id: u32, _partition: u32, error: &BrokerError) -> Option<Vec<u8>> {
        let id = u8::try_from(id).ok()?;
        let stream = self.shared.subscriptions.borrow_mut().remove(&id)?.stream;
        tracing::debug!(subscription = id, %error.message, "rabbitmq subscription ended");
        Some(encode::metadata_update(codes::STREAM_NOT_AVAILABLE, &stream))
    }
}
