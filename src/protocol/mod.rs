//! Wire and disk formats with no I/O: the message batch (the unit producers send, segments store
//! and consumers receive, byte for byte the same), the frame every request and response travels
//! in, the rkyv request/response bodies with their kinds and status codes, and the filter-value
//! test the broker applies to batch headers.
//!
//! Pure functions over byte slices; runs on whichever core holds the bytes. Invariant: nothing in
//! here panics on untrusted input; every decoder returns a typed error instead.

pub mod batch;
pub mod compression;
pub mod durable;
pub mod filter;
pub mod frame;
pub mod messages;
pub mod subject;
pub mod subscriptions;
pub mod super_stream;
