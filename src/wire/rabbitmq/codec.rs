//! The RabbitMQ Streams frame decoder: one client frame's bytes into a [`Frame`] that borrows
//! them (strings, messages and sub-entry data are slices of the frame, never copies).
//!
//! Runs on the core that owns the connection, on bytes a peer sent, so everything here treats
//! its input as hostile. Layouts follow RabbitMQ's `deps/rabbitmq_stream/docs/PROTOCOL.adoc` and
//! what its reference client (the Java client) and RabbitMQ 3.13 actually put on the wire where
//! the two differ from the document; the differences are noted on each [`Command`] variant.
//!
//! Why hand-written rather than the `rabbitmq-stream-protocol` crate: that crate is a client
//! codec. Its decoders panic on hostile input (unchecked slicing, capacity taken from an
//! attacker's count, `unwrap` on null strings, `panic!` on an unknown offset type), its Publish
//! decoder knows version 1 only and AMQP-decodes every message (we store bytes as they came and
//! must read version 2 filter values and sub-entries), and it has no StreamStats. It is the
//! reference client of our unit tests instead (`codec/crate_*_tests.rs`).
//!
//! Invariants, checked by the tests and the `rabbitmq_frame` fuzz target:
//! - [`decode`] never panics, never overflows, and allocates only vectors whose length was
//!   checked against the bytes left (count × the smallest encoding of one element), so a
//!   decoded frame holds at most a few machine words per input byte;
//! - every byte of the body is accounted for: a frame that ends early is
//!   [`DecodeErrorKind::Truncated`], bytes after the last field are `Malformed`;
//! - a [`DecodeError`] carries the key, and the correlation id as soon as it was read, so the
//!   caller can answer with the command's response key and [`DecodeError::response_code`].

pub mod codes;
pub mod keys;

mod client;
mod parse;
mod publish;
mod reader;

pub use client::encode_client_frame;

#[cfg(test)]
mod crate_requests_tests;
#[cfg(test)]
mod crate_responses_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod seed_frames;
#[cfg(test)]
mod test_bytes;

use std::fmt;

/// A decoded client frame; `body` given to [`decode`] is the frame without its 4-byte size
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The key as it came (with the response bit for `CloseResponse`, `ConsumerUpdateResponse`
    /// and a `Tune` answer sent as a response).
    pub key: u16,
    /// The command version (1, or 2 for a Publish with filter values).
    pub version: u16,
    /// The command.
    pub command: Command<'a>,
}

/// Where a subscription starts (Subscribe) or resumes (ConsumerUpdate response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset of the stream (wire type 1).
    First,
    /// The start of the last chunk (wire type 2).
    Last,
    /// After the last message: new messages only (wire type 3).
    Next,
    /// This offset (wire type 4, a u64).
    Offset(u64),
    /// The first chunk written at or after this time, in milliseconds since the epoch (wire type
    /// 5, an i64).
    Timestamp(i64),
}

/// One published entry of a Publish frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// One message, stored as it came (most clients send AMQP 1.0 bytes).
    Simple {
        /// The client's publishing id (deduplication and confirms).
        publishing_id: u64,
        /// The message bytes.
        message: &'a [u8],
        /// The filter value (version 2 only). A null and an empty string are both `None`: the
        /// Rust client writes a missing filter value as an empty string, the Java client as null.
        filter_value: Option<&'a str>,
    },
    /// A sub-entry batch (version 1 only): `records` messages, compressed together, confirmed
    /// with one publishing id.
    SubEntry {
        /// The client's publishing id of the whole batch.
        publishing_id: u64,
        /// Compression codec, 0..=7 (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd). Not checked here.
        compression: u8,
        /// Messages in the batch, as the client declares it (0 is passed through).
        records: u16,
        /// Bytes of the batch once uncompressed, as the client declares it.
        uncompressed_bytes: u32,
        /// The (compressed) batch: `records` × (u32 size, message) once uncompressed.
        data: &'a [u8],
    },
}

/// A client command. Strings are the protocol's int16-length UTF-8; maps and arrays keep the
/// wire order and any duplicate keys (the caller decides what a duplicate means).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Client properties (product, version, connection name...).
    PeerProperties {
        /// Correlation id.
        correlation: u32,
        /// Properties in wire order.
        properties: Vec<(&'a str, &'a str)>,
    },
    /// The client asks for the SASL mechanisms.
    SaslHandshake {
        /// Correlation id.
        correlation: u32,
    },
    /// A SASL response. A null response (length -1, which RabbitMQ's own client sends for an
    /// empty one) decodes as an empty slice.
    SaslAuthenticate {
        /// Correlation id.
        correlation: u32,
        /// The mechanism, for example `PLAIN`.
        mechanism: &'a str,
        /// The mechanism's opaque bytes (`\0user\0password` for PLAIN).
        response: &'a [u8],
    },
    /// The client's answer to our Tune (key 20, or 0x8014 from the Java client).
    Tune {
        /// Largest frame in bytes the client accepts, 0 for no limit.
        frame_max: u32,
        /// Heartbeat period in seconds, 0 for none.
        heartbeat: u32,
    },
    /// Open a virtual host.
    Open {
        /// Correlation id.
        correlation: u32,
        /// The virtual host.
        virtual_host: &'a str,
    },
    /// The client closes the connection.
    Close {
        /// Correlation id.
        correlation: u32,
        /// The client's closing code.
        code: u16,
        /// The client's reason.
        reason: &'a str,
    },
    /// The client answering our Close (key 0x8016).
    CloseResponse {
        /// The correlation id of our Close.
        correlation: u32,
        /// The client's response code.
        code: u16,
    },
    /// Keep-alive.
    Heartbeat,
    /// The command versions the client supports: (key, min, max).
    ExchangeCommandVersions {
        /// Correlation id.
        correlation: u32,
        /// The client's list, for example (8, 1, 2) when it reads Deliver version 2.
        versions: Vec<(u16, u16, u16)>,
    },
    /// Create a stream.
    Create {
        /// Correlation id.
        correlation: u32,
        /// The stream name.
        stream: &'a str,
        /// Arguments such as `max-length-bytes`, `max-age`, `stream-max-segment-size-bytes`.
        arguments: Vec<(&'a str, &'a str)>,
    },
    /// Delete a stream.
    Delete {
        /// Correlation id.
        correlation: u32,
        /// The stream name.
        stream: &'a str,
    },
    /// Brokers and leaders of these streams.
    Metadata {
        /// Correlation id.
        correlation: u32,
        /// The stream names.
        streams: Vec<&'a str>,
    },
    /// Statistics of a stream.
    StreamStats {
        /// Correlation id.
        correlation: u32,
        /// The stream name.
        stream: &'a str,
    },
    /// Declare a publisher. The Java client writes "no reference" as an empty string, so an
    /// empty reference decodes as `None`, like a null one.
    DeclarePublisher {
        /// Correlation id.
        correlation: u32,
        /// The publisher id, chosen by the client, unique on the connection.
        publisher_id: u8,
        /// The publisher's name for deduplication, if any.
        reference: Option<&'a str>,
        /// The stream it publishes to.
        stream: &'a str,
    },
    /// Publish entries (version 1; or 2, where each entry's publishing id is followed by a
    /// nullable filter value string and then the message, and sub-entries are refused as
    /// RabbitMQ refuses them).
    Publish {
        /// The declared publisher.
        publisher_id: u8,
        /// The entries in wire order.
        entries: Vec<Entry<'a>>,
    },
    /// The last publishing id stored for a named publisher.
    QueryPublisherSequence {
        /// Correlation id.
        correlation: u32,
        /// The publisher's name.
        reference: &'a str,
        /// The stream.
        stream: &'a str,
    },
    /// Delete a publisher.
    DeletePublisher {
        /// Correlation id.
        correlation: u32,
        /// The publisher id.
        publisher_id: u8,
    },
    /// Subscribe. The Java client leaves the properties out entirely (not even a count) when it
    /// has none, as RabbitMQ's own encoder does; that decodes as an empty list.
    Subscribe {
        /// Correlation id.
        correlation: u32,
        /// The subscription id, chosen by the client, unique on the connection.
        subscription_id: u8,
        /// The stream.
        stream: &'a str,
        /// Where to start.
        offset: OffsetSpec,
        /// Initial credit, in chunks.
        credit: u16,
        /// Properties such as `name`, `single-active-consumer`, `super-stream`, `filter.N`,
        /// `match-unfiltered`.
        properties: Vec<(&'a str, &'a str)>,
    },
    /// More credit for a subscription.
    Credit {
        /// The subscription id.
        subscription_id: u8,
        /// Chunks the client can take.
        credit: u16,
    },
    /// End a subscription.
    Unsubscribe {
        /// Correlation id.
        correlation: u32,
        /// The subscription id.
        subscription_id: u8,
    },
    /// The client answering our ConsumerUpdate (key 0x801a). `offset` is `None` when the client
    /// sends offset type 0 ("none"): the Java client does when its listener returns no offset,
    /// typically for a consumer that became inactive. rstream writes an unused 8-byte offset
    /// after every type, valueless ones included; exactly 8 bytes left after type 0, 1, 2 or 3
    /// are read and ignored.
    ConsumerUpdateResponse {
        /// The correlation id of our ConsumerUpdate.
        correlation: u32,
        /// The client's response code.
        code: u16,
        /// Where the now-active consumer wants to start, if it says.
        offset: Option<OffsetSpec>,
    },
    /// Store a consumer offset (no answer).
    StoreOffset {
        /// The consumer's name.
        reference: &'a str,
        /// The stream.
        stream: &'a str,
        /// The offset.
        offset: u64,
    },
    /// Read a stored consumer offset.
    QueryOffset {
        /// Correlation id.
        correlation: u32,
        /// The consumer's name.
        reference: &'a str,
        /// The stream.
        stream: &'a str,
    },
    /// Create a super stream and its partitions.
    CreateSuperStream {
        /// Correlation id.
        correlation: u32,
        /// The super stream's name.
        name: &'a str,
        /// Partition stream names, in order.
        partitions: Vec<&'a str>,
        /// Binding keys, one per partition.
        binding_keys: Vec<&'a str>,
        /// Stream arguments for the partitions.
        arguments: Vec<(&'a str, &'a str)>,
    },
    /// Delete a super stream and its partitions.
    DeleteSuperStream {
        /// Correlation id.
        correlation: u32,
        /// The super stream's name.
        name: &'a str,
    },
    /// The partitions a routing key goes to.
    Route {
        /// Correlation id.
        correlation: u32,
        /// The routing key.
        routing_key: &'a str,
        /// The super stream.
        super_stream: &'a str,
    },
    /// The partitions of a super stream.
    Partitions {
        /// Correlation id.
        correlation: u32,
        /// The super stream.
        super_stream: &'a str,
    },
}

impl Command<'_> {
    /// The correlation id, for commands that carry one.
    pub fn correlation(&self) -> Option<u32> {
        match *self {
            Command::PeerProperties { correlation, .. }
            | Command::SaslHandshake { correlation }
            | Command::SaslAuthenticate { correlation, .. }
            | Command::Open { correlation, .. }
            | Command::Close { correlation, .. }
            | Command::CloseResponse { correlation, .. }
            | Command::ExchangeCommandVersions { correlation, .. }
            | Command::Create { correlation, .. }
            | Command::Delete { correlation, .. }
            | Command::Metadata { correlation, .. }
            | Command::StreamStats { correlation, .. }
            | Command::DeclarePublisher { correlation, .. }
            | Command::QueryPublisherSequence { correlation, .. }
            | Command::DeletePublisher { correlation, .. }
            | Command::Subscribe { correlation, .. }
            | Command::Unsubscribe { correlation, .. }
            | Command::ConsumerUpdateResponse { correlation, .. }
            | Command::QueryOffset { correlation, .. }
            | Command::CreateSuperStream { correlation, .. }
            | Command::DeleteSuperStream { correlation, .. }
            | Command::Route { correlation, .. }
            | Command::Partitions { correlation, .. } => Some(correlation),
            Command::Tune { .. }
            | Command::Heartbeat
            | Command::Publish { .. }
            | Command::Credit { .. }
            | Command::StoreOffset { .. } => None,
        }
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The frame's key as it came (0 when the frame is shorter than a key).
    pub key: u16,
    /// The correlation id, when the frame got that far (also given for an unsupported version
    /// of a command whose version 1 has one, since every request puts it right after the
    /// header).
    pub correlation: Option<u32>,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

/// What was wrong with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The frame ends before a field, or before the bytes a length or count declares.
    Truncated,
    /// No client command has this key.
    UnknownKey,
    /// The command exists, but not in this version.
    UnsupportedVersion(u16),
    /// A field's value is impossible (negative length, null where a string is required, bad
    /// UTF-8, unknown offset type, trailing bytes...).
    Malformed(&'static str),
}

impl DecodeError {
    /// The protocol response code to answer with.
    ///
    /// An unknown key, or a known key in a version we do not speak, is
    /// [`codes::UNKNOWN_FRAME`]: RabbitMQ's parser matches key and version together and answers
    /// both with it. A truncated or malformed body is [`codes::PRECONDITION_FAILED`], the
    /// protocol's code for a request whose arguments are unacceptable; RabbitMQ does not tell
    /// the cases apart (it closes with `UNKNOWN_FRAME` for anything it cannot parse), but a
    /// client that sent a broken body learns more from "precondition failed" on that command
    /// than from "unknown frame". PROTOCOL.adoc names the codes but not which failure gets
    /// which.
    pub fn response_code(&self) -> u16 {
        match self.kind {
            DecodeErrorKind::UnknownKey | DecodeErrorKind::UnsupportedVersion(_) => codes::UNKNOWN_FRAME,
            DecodeErrorKind::Truncated | DecodeErrorKind::Malformed(_) => codes::PRECONDITION_FAILED,
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::Truncated => write!(f, "the frame ends before the data it declares"),
            DecodeErrorKind::UnknownKey => write!(f, "unknown command key"),
            DecodeErrorKind::UnsupportedVersion(version) => write!(f, "unsupported version {version}"),
            DecodeErrorKind::Malformed(what) => write!(f, "malformed: {what}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RabbitMQ Streams frame {} (key {:#06x})", keys::name(self.key), self.key)?;
        if let Some(correlation) = self.correlation {
            write!(f, ", correlation {correlation}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one client frame. `body` is the frame without its 4-byte size prefix (the caller
/// has checked that size against its frame limit and read exactly that many bytes).
pub fn decode(body: &[u8]) -> Result<Frame<'_>, DecodeError> {
    parse::frame(body)
}
