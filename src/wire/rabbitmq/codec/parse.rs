//! The per-command layouts of client frames: header, version check, then each command's
//! fields in wire order (PROTOCOL.adoc, and the Java client where it differs).
//!
//! Pure, runs on the connection's core. Invariants: the version is checked before any field of
//! the body is read; the correlation id is recorded as soon as it is read, so the error of a
//! later field carries it; a body must be consumed exactly.

use super::publish;
use super::reader::Reader;
use super::{keys, Command, DecodeError, DecodeErrorKind, Frame, OffsetSpec};

type Result<T> = std::result::Result<T, DecodeErrorKind>;

/// The highest version of each client command we decode (all start at 1); `None` for keys that
/// are not client commands.
fn max_version(key: u16) -> Option<u16> {
    match key {
        keys::PUBLISH => Some(2),
        keys::DECLARE_PUBLISHER
        | keys::QUERY_PUBLISHER_SEQUENCE
        | keys::DELETE_PUBLISHER
        | keys::SUBSCRIBE
        | keys::CREDIT
        | keys::STORE_OFFSET
        | keys::QUERY_OFFSET
        | keys::UNSUBSCRIBE
        | keys::CREATE
        | keys::DELETE
        | keys::METADATA
        | keys::PEER_PROPERTIES
        | keys::SASL_HANDSHAKE
        | keys::SASL_AUTHENTICATE
        | keys::TUNE
        | keys::TUNE_RESPONSE
        | keys::OPEN
        | keys::CLOSE
        | keys::CLOSE_RESPONSE
        | keys::HEARTBEAT
        | keys::ROUTE
        | keys::PARTITIONS
        | keys::CONSUMER_UPDATE_RESPONSE
        | keys::EXCHANGE_COMMAND_VERSIONS
        | keys::STREAM_STATS
        | keys::CREATE_SUPER_STREAM
        | keys::DELETE_SUPER_STREAM => Some(1),
        _ => None,
    }
}

/// Whether the command's version 1 starts its body with a correlation id.
fn has_correlation(key: u16) -> bool {
    !matches!(
        key,
        keys::PUBLISH
            | keys::CREDIT
            | keys::STORE_OFFSET
            | keys::TUNE
            | keys::TUNE_RESPONSE
            | keys::HEARTBEAT
    )
}

/// Decodes a whole frame body (see [`super::decode`]).
pub(super) fn frame(body: &[u8]) -> std::result::Result<Frame<'_>, DecodeError> {
    let mut reader = Reader::new(body);
    let key = match reader.u16() {
        Ok(key) => key,
        Err(kind) => return Err(DecodeError { key: 0, correlation: None, kind }),
    };
    let version = reader.u16().map_err(|kind| DecodeError { key, correlation: None, kind })?;
    let Some(max) = max_version(key) else {
        return Err(DecodeError { key, correlation: None, kind: DecodeErrorKind::UnknownKey });
    };
    if !(1..=max).contains(&version) {
        // Every request puts its correlation id right after the header, in every version the
        // protocol has had, so the caller can still answer this one.
        let correlation = if has_correlation(key) { reader.u32().ok() } else { None };
        return Err(DecodeError { key, correlation, kind: DecodeErrorKind::UnsupportedVersion(version) });
    }
    let mut correlation = None;
    let command = match command(key, version, &mut reader, &mut correlation) {
        Ok(command) => reader.finish().map(|()| command),
        Err(kind) => Err(kind),
    };
    match command {
        Ok(command) => Ok(Frame { key, version, command }),
        Err(kind) => Err(DecodeError { key, correlation, kind }),
    }
}

/// Reads the correlation id and records it for the error path.
fn correlation_id(reader: &mut Reader<'_>, slot: &mut Option<u32>) -> Result<u32> {
    let correlation = reader.u32()?;
    *slot = Some(correlation);
    Ok(correlation)
}

/// An OffsetSpecification: u16 type, then a u64 offset (4) or an i64 timestamp (5). Type 0
/// ("none") is `None`; only a ConsumerUpdate response may use it.
fn offset_spec(reader: &mut Reader<'_>) -> Result<Option<OffsetSpec>> {
    Ok(Some(match reader.u16()? {
        0 => return Ok(None),
        1 => OffsetSpec::First,
        2 => OffsetSpec::Last,
        3 => OffsetSpec::Next,
        4 => OffsetSpec::Offset(reader.u64()?),
        5 => OffsetSpec::Timestamp(reader.i64()?),
        _ => return Err(DecodeErrorKind::Malformed("unknown offset specification type")),
    }))
}

fn command<'a>(
    key: u16,
    version: u16,
    reader: &mut Reader<'a>,
    slot: &mut Option<u32>,
) -> Result<Command<'a>> {
    let command = match key {
        keys::PEER_PROPERTIES => Command::PeerProperties {
            correlation: correlation_id(reader, slot)?,
            properties: reader.string_map()?,
        },
        keys::SASL_HANDSHAKE => Command::SaslHandshake { correlation: correlation_id(reader, slot)? },
        keys::SASL_AUTHENTICATE => Command::SaslAuthenticate {
            correlation: correlation_id(reader, slot)?,
            mechanism: reader.string()?,
            response: reader.nullable_bytes()?.unwrap_or_default(),
        },
        keys::TUNE | keys::TUNE_RESPONSE => {
            Command::Tune { frame_max: reader.u32()?, heartbeat: reader.u32()? }
        }
        keys::OPEN => {
            Command::Open { correlation: correlation_id(reader, slot)?, virtual_host: reader.string()? }
        }
        keys::CLOSE => Command::Close {
            correlation: correlation_id(reader, slot)?,
            code: reader.u16()?,
            reason: reader.string()?,
        },
        keys::CLOSE_RESPONSE => {
            Command::CloseResponse { correlation: correlation_id(reader, slot)?, code: reader.u16()? }
        }
        keys::HEARTBEAT => Command::Heartbeat,
        keys::EXCHANGE_COMMAND_VERSIONS => {
            let correlation = correlation_id(reader, slot)?;
            let count = reader.count(6)?;
            let mut versions = Vec::with_capacity(count);
            for _ in 0..count {
                versions.push((reader.u16()?, reader.u16()?, reader.u16()?));
            }
            Command::ExchangeCommandVersions { correlation, versions }
        }
        keys::CREATE => Command::Create {
            correlation: correlation_id(reader, slot)?,
            stream: reader.string()?,
            arguments: reader.string_map()?,
        },
        keys::DELETE => {
            Command::Delete { correlation: correlation_id(reader, slot)?, stream: reader.string()? }
        }
        keys::METADATA => {
            Command::Metadata { correlation: correlation_id(reader, slot)?, streams: reader.string_array()? }
        }
        keys::STREAM_STATS => {
            Command::StreamStats { correlation: correlation_id(reader, slot)?, stream: reader.string()? }
        }
        keys::DECLARE_PUBLISHER => Command::DeclarePublisher {
            correlation: correlation_id(reader, slot)?,
            publisher_id: reader.u8()?,
            reference: reader.nullable_string()?.filter(|reference| !reference.is_empty()),
            stream: reader.string()?,
        },
        keys::PUBLISH => {
            Command::Publish { publisher_id: reader.u8()?, entries: publish::entries(reader, version)? }
        }
        keys::QUERY_PUBLISHER_SEQUENCE => Command::QueryPublisherSequence {
            correlation: correlation_id(reader, slot)?,
            reference: reader.string()?,
            stream: reader.string()?,
        },
        keys::DELETE_PUBLISHER => Command::DeletePublisher {
            correlation: correlation_id(reader, slot)?,
            publisher_id: reader.u8()?,
        },
        keys::SUBSCRIBE => subscribe(reader, slot)?,
        keys::CREDIT => Command::Credit { subscription_id: reader.u8()?, credit: reader.u16()? },
        keys::UNSUBSCRIBE => {
            Command::Unsubscribe { correlation: correlation_id(reader, slot)?, subscription_id: reader.u8()? }
        }
        keys::CONSUMER_UPDATE_RESPONSE => {
            let correlation = correlation_id(reader, slot)?;
            let code = reader.u16()?;
            let offset = offset_spec(reader)?;
            // rstream writes an offset value (0) for every type, valueless ones included.
            if matches!(offset, None | Some(OffsetSpec::First | OffsetSpec::Last | OffsetSpec::Next))
                && reader.remaining() == 8
            {
                reader.u64()?;
            }
            Command::ConsumerUpdateResponse { correlation, code, offset }
        }
        keys::STORE_OFFSET => Command::StoreOffset {
            reference: reader.string()?,
            stream: reader.string()?,
            offset: reader.u64()?,
        },
        keys::QUERY_OFFSET => Command::QueryOffset {
            correlation: correlation_id(reader, slot)?,
            reference: reader.string()?,
            stream: reader.string()?,
        },
        keys::CREATE_SUPER_STREAM => Command::CreateSuperStream {
            correlation: correlation_id(reader, slot)?,
            name: reader.string()?,
            partitions: reader.string_array()?,
            binding_keys: reader.string_array()?,
            arguments: reader.string_map()?,
        },
        keys::DELETE_SUPER_STREAM => {
            Command::DeleteSuperStream { correlation: correlation_id(reader, slot)?, name: reader.string()? }
        }
        keys::ROUTE => Command::Route {
            correlation: correlation_id(reader, slot)?,
            routing_key: reader.string()?,
            super_stream: reader.string()?,
        },
        keys::PARTITIONS => {
            Command::Partitions { correlation: correlation_id(reader, slot)?, super_stream: reader.string()? }
        }
        // `max_version` admitted the key, so this is unreachable; refuse rather than panic.
        _ => return Err(DecodeErrorKind::UnknownKey),
    };
    Ok(command)
}

/// Subscribe: the properties map may be absent altogether (the Java client and RabbitMQ's own
/// encoder leave it out when empty).
fn subscribe<'a>(reader: &mut Reader<'a>, slot: &mut Option<u32>) -> Result<Command<'a>> {
    let correlation = correlation_id(reader, slot)?;
    let subscription_id = reader.u8()?;
    let stream = reader.string()?;
    let offset = offset_spec(reader)?
        .ok_or(DecodeErrorKind::Malformed("offset specification type 0 (none) in a subscription"))?;
    let credit = reader.u16()?;
    let properties = if reader.remaining() == 0 { Vec::new() } else { reader.string_map()? };
    Ok(Command::Subscribe { correlation, subscription_id, stream, offset, credit, properties })
}
