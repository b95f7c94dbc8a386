//! The RabbitMQ Streams frame encoder: the server's frames (responses and server-initiated
//! commands), each a whole frame including its 4-byte big-endian size prefix. Deliver frames
//! are built around stored batches in `chunk.rs`, not here.
//!
//! Pure, runs on the connection's core. Responses set the key's top bit (`key | 0x8000`);
//! server-initiated commands (Tune, Close, Heartbeat, MetadataUpdate, PublishConfirm,
//! PublishError, ConsumerUpdate) do not. Every frame is version 1.
//!
//! Invariants: nothing here panics or fails. The protocol cannot carry a string over 32 767
//! bytes, an array over `i32::MAX` elements or a frame over `u32::MAX` bytes; such inputs come
//! from the server's own state (names are limited far below), and are cut rather than panicking:
//! a string at the last character boundary that fits, an array after `i32::MAX` elements. The
//! size prefix always equals the bytes that follow it (checked by the tests against the
//! `rabbitmq-stream-protocol` client decoder).

use super::codec::keys;

/// The commands and versions we serve, for the ExchangeCommandVersions response: what RabbitMQ
/// 3.13 advertises (Publish 1..=2, so that clients turn filtering on: the Java client requires
/// the server to advertise Publish version 2; everything else 1..=1), plus Deliver 1..=2.
/// RabbitMQ leaves Deliver out, since the Deliver version is chosen from the client's list
/// (the Java client advertises Deliver 1..=2), but listing it is harmless and says we write
/// version 2.
pub const SERVER_COMMAND_VERSIONS: &[(u16, u16, u16)] = &[
    (keys::DECLARE_PUBLISHER, 1, 1),
    (keys::PUBLISH, 1, 2),
    (keys::QUERY_PUBLISHER_SEQUENCE, 1, 1),
    (keys::DELETE_PUBLISHER, 1, 1),
    (keys::SUBSCRIBE, 1, 1),
    (keys::DELIVER, 1, 2),
    (keys::CREDIT, 1, 1),
    (keys::STORE_OFFSET, 1, 1),
    (keys::QUERY_OFFSET, 1, 1),
    (keys::UNSUBSCRIBE, 1, 1),
    (keys::CREATE, 1, 1),
    (keys::DELETE, 1, 1),
    (keys::METADATA, 1, 1),
    (keys::CLOSE, 1, 1),
    (keys::HEARTBEAT, 1, 1),
    (keys::ROUTE, 1, 1),
    (keys::PARTITIONS, 1, 1),
    (keys::STREAM_STATS, 1, 1),
    (keys::CREATE_SUPER_STREAM, 1, 1),
    (keys::DELETE_SUPER_STREAM, 1, 1),
];

/// The version of every frame we write here.
const VERSION: u16 = 1;

/// Largest string the protocol's int16 length can carry.
const MAX_STRING_BYTES: usize = i16::MAX as usize;
/// Largest array count the protocol's int32 can carry.
const MAX_ARRAY_COUNT: usize = i32::MAX as usize;

/// The 4-byte size prefix of a frame of `frame_len` bytes (not counting the prefix).
pub fn frame_size_prefix(frame_len: u32) -> [u8; 4] {
    frame_len.to_be_bytes()
}

/// One frame being written into a buffer; [`FrameWriter::finish`] fills in its size prefix.
/// Also used by the client-side encoder of the codec (`codec::encode_client_frame`).
pub(super) struct FrameWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> FrameWriter<'a> {
    /// Starts a frame with `key` (responses pass `key | keys::RESPONSE`), reserving `body_hint`
    /// bytes after the header.
    pub(super) fn new(out: &'a mut Vec<u8>, key: u16, body_hint: usize) -> Self {
        Self::with_version(out, key, VERSION, body_hint)
    }

    /// Starts a frame of another version (the client-side encoder's Publish version 2).
    pub(super) fn with_version(out: &'a mut Vec<u8>, key: u16, version: u16, body_hint: usize) -> Self {
        out.reserve(8usize.saturating_add(body_hint));
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut writer = FrameWriter { out, start };
        writer.u16(key);
        writer.u16(version);
        writer
    }

    /// Raw bytes, as they are.
    pub(super) fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// `bytes`: an int32 length, then the bytes (cut after `i32::MAX`).
    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        let len = bytes.len().min(MAX_ARRAY_COUNT);
        self.u32(len as u32);
        self.raw(bytes.get(..len).unwrap_or_default());
    }

    /// A string that may be null (int16 length -1).
    pub(super) fn nullable_string(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.string(value),
            None => self.u16(u16::MAX),
        }
    }

    pub(super) fn u8(&mut self, value: u8) {
        self.out.push(value);
    }

    pub(super) fn u16(&mut self, value: u16) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn i64(&mut self, value: i64) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    /// An array count; returns how many elements the caller may write.
    pub(super) fn count(&mut self, len: usize) -> usize {
        let count = len.min(MAX_ARRAY_COUNT);
        self.u32(count as u32);
        count
    }

    /// A string, cut to the last character boundary within 32 767 bytes.
    pub(super) fn string(&mut self, value: &str) {
        let mut end = value.len().min(MAX_STRING_BYTES);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = value.as_bytes().get(..end).unwrap_or_default();
        self.u16(end as u16);
        self.out.extend_from_slice(bytes);
    }

    pub(super) fn strings(&mut self, values: &[&str]) {
        let count = self.count(values.len());
        for value in values.iter().take(count) {
            self.string(value);
        }
    }

    pub(super) fn string_map(&mut self, entries: &[(&str, &str)]) {
        let count = self.count(entries.len());
        for (key, value) in entries.iter().take(count) {
            self.string(key);
            self.string(value);
        }
    }

    /// Writes the size prefix: the bytes after it (saturating at `u32::MAX`, which no frame we
    /// build reaches).
    pub(super) fn finish(self) {
        let len = self.out.len().saturating_sub(self.start).saturating_sub(4);
        let prefix = frame_size_prefix(u32::try_from(len).unwrap_or(u32::MAX));
        if let Some(slot) = self.out.get_mut(self.start..self.start + 4) {
            slot.copy_from_slice(&prefix);
        }
    }
}

/// Builds one frame into a new vector.
fn build(key: u16, body_hint: usize, body: impl FnOnce(&mut FrameWriter<'_>)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = FrameWriter::new(&mut out, key, body_hint);
    body(&mut writer);
    writer.finish();
    out
}

fn response_key(key: u16) -> u16 {
    key | keys::RESPONSE
}

/// Bytes of a string map's encoding (count, then 2-byte lengths and contents).
fn map_hint(entries: &[(&str, &str)]) -> usize {
    entries.iter().fold(4, |total: usize, (key, value)| {
        total.saturating_add(key.len()).saturating_add(value.len()).saturating_add(4)
    })
}

fn strings_hint(values: &[&str]) -> usize {
    values.iter().fold(4, |total: usize, value| total.saturating_add(value.len()).saturating_add(2))
}

/// A response of only a correlation id and a code: Create, Delete, DeclarePublisher,
/// DeletePublisher, Subscribe, Unsubscribe, Open on error, SaslAuthenticate without challenge,
/// CreateSuperStream, DeleteSuperStream, and a DecodeError's answer. `key` is the request's key
/// (the response bit is set here).
pub fn generic_response(key: u16, correlation: u32, code: u16) -> Vec<u8> {
    build(response_key(key), 6, |w| {
        w.u32(correlation);
        w.u16(code);
    })
}

/// PeerProperties response: the server's properties (product, version, ...).
pub fn peer_properties_response(correlation: u32, code: u16, properties: &[(&str, &str)]) -> Vec<u8> {
    build(response_key(keys::PEER_PROPERTIES), map_hint(properties).saturating_add(6), |w| {
        w.u32(correlation);
        w.u16(code);
        w.string_map(properties);
    })
}

/// SaslHandshake response: the mechanisms offered.
pub fn sasl_handshake_response(correlation: u32, code: u16, mechanisms: &[&str]) -> Vec<u8> {
    build(response_key(keys::SASL_HANDSHAKE), strings_hint(mechanisms).saturating_add(6), |w| {
        w.u32(correlation);
        w.u16(code);
        w.strings(mechanisms);
    })
}

/// SaslAuthenticate response; the challenge (int32-length bytes, read by clients only with code
/// [`codes::SASL_CHALLENGE`](super::codec::codes::SASL_CHALLENGE)) is written only when given. Without one the frame is a plain
/// generic response, which is what rstream expects.
pub fn sasl_authenticate_response(correlation: u32, code: u16, challenge: Option<&[u8]>) -> Vec<u8> {
    let hint = challenge.map_or(0, |bytes| bytes.len().saturating_add(4)).saturating_add(6);
    build(response_key(keys::SASL_AUTHENTICATE), hint, |w| {
        w.u32(correlation);
        w.u16(code);
        if let Some(bytes) = challenge {
            w.bytes(bytes);
        }
    })
}

/// The server's Tune (key 20, server-initiated): the largest frame in bytes (0 = no limit) and
/// the heartbeat period in seconds (0 = none) we propose.
pub fn tune(frame_max: u32, heartbeat: u32) -> Vec<u8> {
    build(keys::TUNE, 8, |w| {
        w.u32(frame_max);
        w.u32(heartbeat);
    })
}

/// Open response with connection properties (RabbitMQ sends `advertised_host` and
/// `advertised_port`). With [`codes::OK`](super::codec::codes::OK) the property count is always
/// written, even when zero; with any other code no properties are written (as RabbitMQ answers
/// a refused Open, and as the Rust client reads it), whatever `properties` holds.
pub fn open_response(correlation: u32, code: u16, properties: &[(&str, &str)]) -> Vec<u8> {
    build(response_key(keys::OPEN), map_hint(properties).saturating_add(6), |w| {
        w.u32(correlation);
        w.u16(code);
        if code == super::codec::codes::OK {
            w.string_map(properties);
        }
    })
}

/// The server closing the connection (key 22, server-initiated); the client answers with a
/// `CloseResponse` carrying `correlation`.
pub fn close(correlation: u32, code: u16, reason: &str) -> Vec<u8> {
    build(keys::CLOSE, reason.len().saturating_add(8), |w| {
        w.u32(correlation);
        w.u16(code);
        w.string(reason);
    })
}

/// The answer to a client's Close.
pub fn close_response(correlation: u32, code: u16) -> Vec<u8> {
    generic_response(keys::CLOSE, correlation, code)
}

/// A heartbeat (key 23, no body).
pub fn heartbeat() -> Vec<u8> {
    build(keys::HEARTBEAT, 0, |_| {})
}

/// ExchangeCommandVersions response: (key, min version, max version) per command we serve,
/// normally [`SERVER_COMMAND_VERSIONS`].
pub fn exchange_command_versions_response(
    correlation: u32,
    code: u16,
    versions: &[(u16, u16, u16)],
) -> Vec<u8> {
    build(
        response_key(keys::EXCHANGE_COMMAND_VERSIONS),
        versions.len().saturating_mul(6).saturating_add(10),
        |w| {
            w.u32(correlation);
            w.u16(code);
            let count = w.count(versions.len());
            for &(key, min, max) in versions.iter().take(count) {
                w.u16(key);
                w.u16(min);
                w.u16(max);
            }
        },
    )
}

/// One stream of a Metadata response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMetadata<'a> {
    /// The stream name, as the client asked for it.
    pub name: &'a str,
    /// `codes::OK`, or why there is no leader (`codes::STREAM_DOES_NOT_EXIST`,
    /// `codes::STREAM_NOT_AVAILABLE`).
    pub code: u16,
    /// The leader's broker reference; RabbitMQ writes `0xffff` (-1) with a failure code.
    pub leader: u16,
    /// Replica broker references (empty with a failure code).
    pub replicas: &'a [u16],
}

/// Metadata response: brokers as (reference, host, port), then each stream's leader and replica
/// references into that list. There is no response code at the top: each stream has its own.
pub fn metadata_response(
    correlation: u32,
    brokers: &[(u16, &str, u32)],
    streams: &[StreamMetadata<'_>],
) -> Vec<u8> {
    let brokers_hint =
        brokers.iter().fold(4usize, |total, (_, host, _)| total.saturating_add(host.len()).saturating_add(8));
    let streams_hint = streams.iter().fold(4usize, |total, stream| {
        total
            .saturating_add(stream.name.len())
            .saturating_add(stream.replicas.len().saturating_mul(2))
            .saturating_add(10)
    });
    build(
        response_key(keys::METADATA),
        4usize.saturating_add(brokers_hint).saturating_add(streams_hint),
        |w| {
            w.u32(correlation);
            let count = w.count(brokers.len());
            for &(reference, host, port) in brokers.iter().take(count) {
                w.u16(reference);
                w.string(host);
                w.u32(port);
            }
            let count = w.count(streams.len());
            for stream in streams.iter().take(count) {
                w.string(stream.name);
                w.u16(stream.code);
                w.u16(stream.leader);
                let replicas = w.count(stream.replicas.len());
                for &replica in stream.replicas.iter().take(replicas) {
                    w.u16(replica);
                }
            }
        },
    )
}

/// MetadataUpdate (key 16, server-initiated). A deleted stream is
/// [`codes::STREAM_NOT_AVAILABLE`](super::codec::codes::STREAM_NOT_AVAILABLE) as RabbitMQ sends it: the Java client acts on that code only and drains others.
pub fn metadata_update(code: u16, stream: &str) -> Vec<u8> {
    build(keys::METADATA_UPDATE, stream.len().saturating_add(4), |w| {
        w.u16(code);
        w.string(stream);
    })
}

/// StreamStats response: named statistics such as `first_chunk_id`, `committed_chunk_id`.
pub fn stream_stats_response(correlation: u32, code: u16, stats: &[(&str, i64)]) -> Vec<u8> {
    let hint =
        stats.iter().fold(10usize, |total, (name, _)| total.saturating_add(name.len()).saturating_add(10));
    build(response_key(keys::STREAM_STATS), hint, |w| {
        w.u32(correlation);
        w.u16(code);
        let count = w.count(stats.len());
        for &(name, value) in stats.iter().take(count) {
            w.string(name);
            w.i64(value);
        }
    })
}

/// PublishConfirm (key 3, server-initiated): these publishing ids are written.
pub fn publish_confirm(publisher_id: u8, publishing_ids: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    publish_confirm_into(&mut out, publisher_id, publishing_ids);
    out
}

/// [`publish_confirm`] appended to `out` (the hot path: one buffer for many frames).
pub fn publish_confirm_into(out: &mut Vec<u8>, publisher_id: u8, publishing_ids: &[u64]) {
    let mut w = FrameWriter::new(
        out,
        keys::PUBLISH_CONFIRM,
        publishing_ids.len().saturating_mul(8).saturating_add(5),
    );
    w.u8(publisher_id);
    let count = w.count(publishing_ids.len());
    for &id in publishing_ids.iter().take(count) {
        w.u64(id);
    }
    w.finish();
}

/// PublishError (key 4, server-initiated): (publishing id, code) per refused entry.
pub fn publish_error(publisher_id: u8, errors: &[(u64, u16)]) -> Vec<u8> {
    build(keys::PUBLISH_ERROR, errors.len().saturating_mul(10).saturating_add(5), |w| {
        w.u8(publisher_id);
        let count = w.count(errors.len());
        for &(id, code) in errors.iter().take(count) {
            w.u64(id);
            w.u16(code);
        }
    })
}

/// QueryPublisherSequence response: the last publishing id stored for the reference (0 when
/// none, as RabbitMQ answers).
pub fn query_publisher_sequence_response(correlation: u32, code: u16, sequence: u64) -> Vec<u8> {
    build(response_key(keys::QUERY_PUBLISHER_SEQUENCE), 14, |w| {
        w.u32(correlation);
        w.u16(code);
        w.u64(sequence);
    })
}

/// QueryOffset response: the stored offset (`codes::OFFSET_NOT_FOUND` and 0 when none).
pub fn query_offset_response(correlation: u32, code: u16, offset: u64) -> Vec<u8> {
    build(response_key(keys::QUERY_OFFSET), 14, |w| {
        w.u32(correlation);
        w.u16(code);
        w.u64(offset);
    })
}

/// Credit response, sent only when a Credit fails (for example an unknown subscription). It has
/// no correlation id: the code comes first, then the subscription id.
pub fn credit_response(code: u16, subscription_id: u8) -> Vec<u8> {
    build(response_key(keys::CREDIT), 3, |w| {
        w.u16(code);
        w.u8(subscription_id);
    })
}

/// ConsumerUpdate (key 26, server-initiated): a single-active-consumer subscription becomes
/// active (or not); the client answers with a `ConsumerUpdateResponse` carrying `correlation`
/// and the offset to start from.
pub fn consumer_update(correlation: u32, subscription_id: u8, active: bool) -> Vec<u8> {
    build(keys::CONSUMER_UPDATE, 6, |w| {
        w.u32(correlation);
        w.u8(subscription_id);
        w.u8(u8::from(active));
    })
}

/// Route response: the partition streams the routing key goes to.
pub fn route_response(correlation: u32, code: u16, streams: &[&str]) -> Vec<u8> {
    build(response_key(keys::ROUTE), strings_hint(streams).saturating_add(6), |w| {
        w.u32(correlation);
        w.u16(code);
        w.strings(streams);
    })
}

/// Partitions response: the super stream's partition streams, in order.
pub fn partitions_response(correlation: u32, code: u16, streams: &[&str]) -> Vec<u8> {
    build(response_key(keys::PARTITIONS), strings_hint(streams).saturating_add(6), |w| {
        w.u32(correlation);
        w.u16(code);
        w.strings(streams);
    })
}
