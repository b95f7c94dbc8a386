//! ringbroker: a persistent, thread-per-core message-streaming broker for Linux on io_uring.
//!
//! This file holds the lint policy and the module list only. Dependencies point downward in the
//! module map (`docs/architecture.md`): `constants` and `model` at the bottom, then `protocol`
//! (pure formats, no I/O), `io` (the only module that touches glommio files), and `storage`
//! (partition logs written through `io`).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![allow(async_fn_in_trait)]

#[cfg(feature = "client")]
pub mod client;
pub mod constants;
pub mod io;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod storage;
pub mod wire;
