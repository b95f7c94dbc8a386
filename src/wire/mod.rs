//! Foreign wire protocols: front-ends that decode another system's frames into the broker's own
//! requests and encode the answers (DESIGN §7, "one semantics, many wires").
//!
//! Each wire owns its codec and its mapping; connection limits, TLS, users and every semantic
//! (named producers, subscriptions, single active consumers, filters, super streams) are the
//! native ones, run on the connection's shard and forwarded to owner shards as native requests
//! are. The native protocol itself stays in `crate::server`.

pub mod kafka;
pub mod rabbitmq;
