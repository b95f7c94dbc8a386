//! The Kafka listener (`--kafka-listen`): Kafka's wire protocol over the broker's own semantics,
//! so that kcat, librdkafka, kafka-python and the Java clients produce, fetch and run classic
//! consumer groups against ringbroker.
//!
//! A Kafka topic `T` is topic `T` of the stream `--kafka-stream` (default `kafka`), with its
//! partitions; records are converted to our batch format once on produce and back once on fetch
//! (`records`). Codecs are the `kafka-protocol` crate's (`frame`). Every request becomes the
//! native operation of the same meaning, on the connection's shard or the owner's.

mod connection;
mod dispatch;
mod errors;
mod fetch;
pub mod frame;
pub(crate) mod groups;
mod meta;
mod produce;
pub mod records;
mod sasl;
mod state;
mod unsupported;

pub use connection::serve_tcp;
