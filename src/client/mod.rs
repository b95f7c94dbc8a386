//! The low-level async client (tokio): one pipelined connection per [`Client`], a typed method
//! for every request kind, and the pieces producers and consumers are built from.
//!
//! Owns the client side of the wire protocol (`docs/protocol.md`): connection strings
//! ([`ConnectionString`]), framing and body decoding ([`wire`]), the connection's reader and
//! writer tasks with correlation-id matching and reconnection ([`Client`]), the typed request
//! methods, and views over poll answers ([`Polled`]). Depends only on `protocol` and `model`;
//! the server never links it (it sits behind the `client` feature).
//!
//! Runs on a tokio runtime chosen by the caller; a [`Client`] is `Send + Sync` and cheap to clone,
//! so many tasks can share one connection and pipeline their requests on it.
//!
//! Shard awareness: [`Client::metadata`] returns the shard map (each shard's direct address and
//! the owner of each partition); [`Client::connect_to_shard`] opens a client on one shard's
//! direct address, so a producer or consumer can route each partition to its owner.
//!
//! Invariants: every limit (in-flight requests, queued frames, frame size, buffer sizes) is
//! named below and bounded; nothing here panics on what the server sends.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringbroker::client::ClientError> {
//! use ringbroker::client::{Client, ConnectionString};
//! use ringbroker::protocol::batch::BatchBuilder;
//! use ringbroker::protocol::messages::Partitioning;
//! let client = Client::connect(&"ringbroker://ringbroker:ringbroker@127.0.0.1:7720".parse()?).await?;
//! let mut batch = BatchBuilder::new(0, 0);
//! batch.push_payload(b"hello")?;
//! let bytes = batch.finish_in_place()?;
//! let ack = client.produce("orders", "created", Partitioning::Balanced, &[bytes]).await?;
//! println!("partition {} offset {}", ack.partition, ack.acks[0].base_offset);
//! # Ok(()) }
//! ```

mod api;
mod connection;
pub mod consumer;
pub mod durable;
pub mod durable_consumer;
pub mod durable_push;
mod error;
mod polled;
pub mod producer;
mod pushed;
pub mod router;
pub mod stream;
mod subscription;
pub mod super_stream;
mod url;
pub mod wire;

pub use connection::Client;
pub use consumer::{
    AutoCommit, ConsumeError, Consumer, ConsumerBuilder, HandlerError, MessageConsumer, ReceivedMessage,
};
pub use durable::{Fetched, FetchedMessage};
pub use durable_consumer::{
    AckBatcher, DurableConfigExt, DurableConsumer, FetchBuilder, Message as DurableMessage, MessageInfo,
    Messages,
};
pub use durable_push::DurableSubscription;
pub use error::ClientError;
pub use polled::{
    PartitionRecords, Polled, PolledPartitionData, PolledRecord, RefusedBatch, INFLATED_BATCH_BYTES_MAX,
    INFLATED_POLL_BYTES_MAX,
};
pub use producer::{
    BatchReceipt, Confirmation, Partitioning, Producer, ProducerBuilder, ProducerError, ProducerMessage,
    Routing, SuperStreamProducer,
};
pub use router::{RouterSource, ShardRouter};
pub use stream::{RingStream, StreamConfig};
pub use subscription::{ConsumerUpdateRequest, Delivery, Subscription, SubscriptionEvent};
pub use url::{ClientOptions, ConnectionString, PORT_DEFAULT, SCHEME};
pub use wire::{Frame, RequestBody, ResponseBody};

/// Default time a request may wait for its response.
pub const REQUEST_TIMEOUT_DEFAULT_MS: u64 = 30_000;

/// Default number of reconnection attempts after a lost connection.
pub const RECONNECT_RETRIES_DEFAULT: u32 = 5;

/// Default wait before the first reconnection attempt (doubling after each failure).
pub const RECONNECT_INTERVAL_DEFAULT_MS: u64 = 200;

/// The reconnection wait grows to at most this many times the configured interval.
pub const RECONNECT_BACKOFF_MAX_FACTOR: u32 = 8;

/// Default largest response frame: a poll answer of up to 64 MiB of batches.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

/// Default number of requests one client may have awaiting responses.
pub const IN_FLIGHT_MAX_DEFAULT: usize = 1024;

/// Encoded frames queued for the writer task before senders wait.
pub const WRITE_QUEUE_FRAMES: usize = 256;

/// The socket read buffer of the reader task.
pub const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The socket write buffer of the writer task (larger frames go straight to the socket).
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;

const _: () = assert!(FRAME_BYTES_MAX_DEFAULT > crate::constants::BATCH_BYTES_MAX);
const _: () = assert!(IN_FLIGHT_MAX_DEFAULT > 0 && WRITE_QUEUE_FRAMES > 0);
const _: () = assert!(RECONNECT_BACKOFF_MAX_FACTOR >= 1);
