//! The RabbitMQ Streams listener (`--rabbitmq-listen`): RabbitMQ's stream protocol over the
//! broker's own semantics, so that rstream, the Java, Go, .NET and Rust stream clients work
//! against ringbroker unchanged.

pub mod chunk;
pub mod codec;
mod connection;
mod consume;
mod dispatch;
pub mod encode;
pub mod entries;
mod handshake;
mod names;
mod native;
mod publish;
mod push;
mod state;
mod streams;

pub use connection::serve_tcp;
