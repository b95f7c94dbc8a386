//! The client side of [`super::decode`]: a [`Frame`] back into the bytes a client sends. The
//! server never sends these; the unit tests, the `rabbitmq_frame` fuzz target and test tools use
//! it to build frames and to check that what `decode` accepts is exactly what it describes.
//!
//! Pure. Invariant: `decode(&encode_client_frame(f)[4..]) == Ok(f)` for every frame `decode`
//! returns (its normalisations are fixed points here: a missing reference or filter value is
//! written as null, a Subscribe always writes its property count, an empty SASL response is
//! written with length 0, a ConsumerUpdate answer writes no offset value after a valueless
//! type).

use super::{Command, Entry, Frame, OffsetSpec};
use crate::wire::rabbitmq::encode::FrameWriter;

/// Encodes `frame` as a client would send it, size prefix included.
pub fn encode_client_frame(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = FrameWriter::with_version(&mut out, frame.key, frame.version, 64);
    body(&mut w, &frame.command, frame.version);
    w.finish();
    out
}

fn offset_spec(w: &mut FrameWriter<'_>, offset: Option<OffsetSpec>) {
    match offset {
        None => w.u16(0),
        Some(OffsetSpec::First) => w.u16(1),
        Some(OffsetSpec::Last) => w.u16(2),
        Some(OffsetSpec::Next) => w.u16(3),
        Some(OffsetSpec::Offset(offset)) => {
            w.u16(4);
            w.u64(offset);
        }
        Some(OffsetSpec::Timestamp(timestamp)) => {
            w.u16(5);
            w.i64(timestamp);
        }
    }
}

fn entry(w: &mut FrameWriter<'_>, entry: &Entry<'_>, version: u16) {
    match *entry {
        Entry::Simple { publishing_id, message, filter_value } => {
            w.u64(publishing_id);
            if version >= 2 {
                w.nullable_string(filter_value);
            }
            w.bytes(message);
        }
        Entry::SubEntry { publishing_id, compression, records, uncompressed_bytes, data } => {
            w.u64(publishing_id);
            w.u8(0x80 | (compression & 0x07) << 4);
            w.u16(records);
            w.u32(uncompressed_bytes);
            w.bytes(data);
        }
    }
}

fn body(w: &mut FrameWriter<'_>, command: &Command<'_>, version: u16) {
    if let Some(correlation) = command.correlation() {
        w.u32(correlation);
    }
    match command {
        Command::PeerProperties { properties, .. } => w.string_map(properties),
        Command::SaslHandshake { .. } | Command::Heartbeat => {}
        Command::SaslAuthenticate { mechanism, response, .. } => {
            w.string(mechanism);
            w.bytes(response);
        }
        Command::Tune { frame_max, heartbeat } => {
            w.u32(*frame_max);
            w.u32(*heartbeat);
        }
        Command::Open { virtual_host, .. } => w.string(virtual_host),
        Command::Close { code, reason, .. } => {
            w.u16(*code);
            w.string(reason);
        }
        Command::CloseResponse { code, .. } => w.u16(*code),
        Command::ExchangeCommandVersions { versions, .. } => {
            let count = w.count(versions.len());
            for &(key, min, max) in versions.iter().take(count) {
                w.u16(key);
                w.u16(min);
                w.u16(max);
            }
        }
        Command::Create { stream, arguments, .. } => {
            w.string(stream);
            w.string_map(arguments);
        }
        Command::Delete { stream, .. } | Command::StreamStats { stream, .. } => w.string(stream),
        Command::Metadata { streams, .. } => w.strings(streams),
        Command::DeclarePublisher { publisher_id, reference, stream, .. } => {
            w.u8(*publisher_id);
            w.nullable_string(*reference);
            w.string(stream);
        }
        Command::Publish { publisher_id, entries } => {
            w.u8(*publisher_id);
            let count = w.count(entries.len());
            for item in entries.iter().take(count) {
                entry(w, item, version);
            }
        }
        Command::QueryPublisherSequence { reference, stream, .. }
        | Command::QueryOffset { reference, stream, .. } => {
            w.string(reference);
            w.string(stream);
        }
        Command::DeletePublisher { publisher_id, .. } => w.u8(*publisher_id),
        Command::Subscribe { subscription_id, stream, offset, credit, properties, .. } => {
            w.u8(*subscription_id);
            w.string(stream);
            offset_spec(w, Some(*offset));
            w.u16(*credit);
            w.string_map(properties);
        }
        Command::Credit { subscription_id, credit } => {
            w.u8(*subscription_id);
            w.u16(*credit);
        }
        Command::Unsubscribe { subscription_id, .. } => w.u8(*subscription_id),
        Command::ConsumerUpdateResponse { code, offset, .. } => {
            w.u16(*code);
            offset_spec(w, *offset);
        }
        Command::StoreOffset { reference, stream, offset } => {
            w.string(reference);
            w.string(stream);
            w.u64(*offset);
        }
        Command::CreateSuperStream { name, partitions, binding_keys, arguments, .. } => {
            w.string(name);
            w.strings(partitions);
            w.strings(binding_keys);
            w.string_map(arguments);
        }
        Command::DeleteSuperStream { name, .. } => w.string(name),
        Command::Route { routing_key, super_stream, .. } => {
            w.string(routing_key);
            w.string(super_stream);
        }
        Command::Partitions { super_stream, .. } => w.string(super_stream),
    }
}
