//! One Kafka connection's state: who it runs as, where SASL is, and what it needs to name brokers.
//!
//! Lives on the connection's shard, shared (`Rc`) by the reader and the request tasks. Invariants:
//! data requests run only once `authenticated`; the session is the native one (user, producer
//! leases), so rights and leases are checked exactly as for a native client.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::server::connection::Session;
use crate::server::handlers::{logged_in, Context};
use crate::shard::error::BrokerResult;
use crate::shard::Shard;

/// One connection.
pub(crate) struct Conn {
    /// Its shard.
    pub(crate) shard: Rc<Shard>,
    /// The native session it runs as.
    pub(crate) session: Rc<Session>,
    /// SASL succeeded, or the listener lets loopback clients in as root without it.
    pub(crate) authenticated: Cell<bool>,
    /// SaslHandshake chose PLAIN: SaslAuthenticate may follow.
    pub(crate) handshaken: Cell<bool>,
    /// SaslHandshake v0: the PLAIN token follows as a raw size-prefixed frame, not a request.
    pub(crate) raw_sasl_next: Cell<bool>,
    /// Named producers this connection declared for Kafka producer ids (leases it renews).
    pub(crate) producers: RefCell<super::produce::Declared>,
    /// Reused buffer produce requests are converted in.
    pub(crate) scratch: RefCell<Vec<u8>>,
}

impl Conn {
    /// The handler context of the logged-in user.
    pub(crate) fn context(&self) -> BrokerResult<Context<'_>> {
        let user = logged_in(&self.shard, &self.session)?;
        Ok(Context { shard: &self.shard, session: &self.session, user })
    }

    /// The broker stream holding Kafka topics.
    pub(crate) fn broker_stream(&self) -> &str {
        &self.shard.config.kafka_stream
    }
}
