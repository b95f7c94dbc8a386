//! One RabbitMQ connection's state: where the handshake is, the negotiated frame size and
//! heartbeat, its publishers and what its subscriptions read, and the queue into its writer.
//!
//! Lives on the connection's shard, shared (`Rc`) by the reader, the publish tasks, the
//! heartbeat task and the push frames. Invariants: data commands run only once `opened`; a
//! publisher id maps to one partition for the publisher's life; every frame goes through
//! [`Conn::send`], so frames leave in the order they were queued.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::mpsc;

use super::names::Target;
use crate::server::connection::{Response, Session};
use crate::server::handlers::{logged_in, Context};
use crate::shard::error::BrokerResult;
use crate::shard::Shard;

/// A declared publisher.
pub(super) struct Publisher {
    /// The RabbitMQ stream it publishes to.
    pub(super) stream: String,
    /// Its partition.
    pub(super) target: Target,
    /// The broker producer name of its reference (named publishers deduplicate).
    pub(super) name: Option<String>,
    /// Producer id and epoch written into its batches (0 and 0 when anonymous).
    pub(super) producer_id: u64,
    /// See `producer_id`.
    pub(super) epoch: u32,
    /// Named: the highest publishing id stored or on its way (ids at or below it are duplicates).
    pub(super) last: Cell<Option<u64>>,
}

/// What the push side needs to know of one subscription.
#[derive(Clone)]
pub(super) struct SubscriptionInfo {
    /// The RabbitMQ stream it reads (named in MetadataUpdate when it ends).
    pub(super) stream: String,
    /// Its filter: chunks hold only the records that match it.
    pub(super) filter: Option<std::sync::Arc<crate::protocol::filter::Filter>>,
}

/// State shared by a connection's tasks and its push frames.
pub(super) struct Shared {
    /// Deliver version agreed with ExchangeCommandVersions (1 or 2).
    pub(super) deliver_version: Cell<u16>,
    /// Subscriptions by id.
    pub(super) subscriptions: RefCell<HashMap<u8, SubscriptionInfo>>,
}

/// One connection.
pub(super) struct Conn {
    /// Its shard.
    pub(super) shard: Rc<Shard>,
    /// The native session it runs as (user, producer leases, push subscriptions).
    pub(super) session: Rc<Session>,
    /// Into the writer.
    pub(super) sender: mpsc::UnboundedSender<Response>,
    /// Shared with the push frames.
    pub(super) shared: Rc<Shared>,
    /// SASL succeeded.
    pub(super) authenticated: Cell<bool>,
    /// Open succeeded: data commands allowed.
    pub(super) opened: Cell<bool>,
    /// Largest frame either side may send (negotiated by Tune).
    pub(super) frame_max: Cell<u32>,
    /// Heartbeat interval in seconds (0 = none).
    pub(super) heartbeat: Cell<u32>,
    /// Publishers by id.
    pub(super) publishers: RefCell<HashMap<u8, Rc<Publisher>>>,
    /// Reused buffer the publish path builds batches in.
    pub(super) scratch: RefCell<Vec<u8>>,
    /// The port the client connected to (advertised back in Open).
    pub(super) local_port: u16,
}

impl Conn {
    /// Queues a whole frame for the writer.
    pub(super) fn send(&self, frame: Vec<u8>) {
        if frame.is_empty() {
            return;
        }
        let _ = self.sender.unbounded_send(Response { head: frame, payload: Vec::new(), release: None });
    }

    /// The handler context of the logged-in user.
    pub(super) fn context(&self) -> BrokerResult<Context<'_>> {
        let user = logged_in(&self.shard, &self.session)?;
        Ok(Context { shard: &self.shard, session: &self.session, user })
    }

    /// The broker stream holding RabbitMQ streams.
    pub(super) fn broker_stream(&self) -> &str {
        &self.shard.config.rabbitmq_stream
    }
}
