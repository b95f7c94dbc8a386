//! Kafka framing: one size-prefixed request in, its header and typed body out; one typed response
//! in, its size-prefixed bytes out. The codecs are the `kafka-protocol` crate's (vendored with
//! allocations bounded by the bytes present, `vendor/kafka-protocol/RINGBROKER-PATCH.md`); this
//! module only decides which API keys and versions the listener accepts, and turns every way a
//! peer's bytes can be wrong into a [`FrameError`] that still names the correlation id to answer.
//!
//! Runs on the connection's shard, on untrusted bytes: nothing here panics, and nothing is
//! allocated beyond what the crate's bounded decoders allocate for the frame's own bytes.
//!
//! Invariants: [`decode_request`] only returns requests whose key is in [`SUPPORTED`] at a
//! version in its range; the versions there never exceed what the crate encodes and decodes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// The API keys the listener serves, with the version range of each: the crate's range cut to the
/// versions whose semantics the listener implements (no topic ids, no KIP-848 groups, no
/// transactions). kcat (librdkafka 2.x) and kafka-python pick their highest common version.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The size of a frame's length prefix.
pub const LENGTH_BYTES: usize = 4;

/// The request header's fixed start: api key, api version, correlation id.
const HEADER_FIXED_BYTES: usize = 8;

/// Kafka's error code for a version the broker does not serve.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// Kafka's error code for a request the broker could not parse.
pub const INVALID_REQUEST: i16 = 42;

/// The version range the listener serves for `key`, if it serves it.
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == key).map(|&(_, min, max)| (min, max))
}

/// One decoded request.
#[derive(Debug)]
pub struct Request {
    /// Its API key.
    pub api_key: ApiKey,
    /// Its version, within the key's [`SUPPORTED`] range.
    pub version: i16,
    /// Its header (correlation id, client id).
    pub header: RequestHeader,
    /// Its body.
    pub body: RequestKind,
}

/// Why a frame's bytes are not a request the listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than the 8 bytes of a header's fixed start: nothing to answer, close.
    Truncated,
    /// An API key Kafka does not define, or a version of it no Kafka release has: there is no
    /// response to give, so the connection closes (as Kafka's does).
    UnknownKey {
        /// The key as sent.
        api_key: i16,
        /// The correlation id to log.
        correlation_id: i32,
    },
    /// A key Kafka defines, at a version the crate encodes, that the listener does not serve (the
    /// key, or this version of it): ApiVersions gets its v0 error answer with the supported
    /// ranges (so the client retries), other keys their response with `UNSUPPORTED_VERSION`
    /// (`unsupported`).
    UnsupportedVersion {
        /// The key.
        api_key: ApiKey,
        /// The version as sent.
        version: i16,
        /// The correlation id to answer.
        correlation_id: i32,
    },
    /// A served key and version whose header or body did not decode.
    Malformed {
        /// The key.
        api_key: ApiKey,
        /// The version.
        version: i16,
        /// The correlation id to answer.
        correlation_id: i32,
        /// What the decoder said.
        reason: String,
    },
}

impl FrameError {
    /// The correlation id an answer would carry, when the frame had one.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            FrameError::Truncated => None,
            FrameError::UnknownKey { correlation_id, .. }
            | FrameError::UnsupportedVersion { correlation_id, .. }
            | FrameError::Malformed { correlation_id, .. } => Some(*correlation_id),
        }
    }
}

/// Decodes one request from a frame's bytes (the length prefix already removed).
pub fn decode_request(mut frame: Bytes) -> Result<Request, FrameError> {
    if frame.len() < HEADER_FIXED_BYTES {
        return Err(FrameError::Truncated);
    }
    let mut fixed = &frame[..HEADER_FIXED_BYTES];
    let (key, version, correlation_id) = (fixed.get_i16(), fixed.get_i16(), fixed.get_i32());
    let Ok(api_key) = ApiKey::try_from(key) else {
        return Err(FrameError::UnknownKey { api_key: key, correlation_id });
    };
    let served = supported_versions(api_key);
    let Some((min, max)) = served.filter(|(min, max)| (*min..=*max).contains(&version)) else {
        // Kafka defines the key: answer it at the request's version if the crate encodes that.
        let known = api_key.valid_versions();
        // ApiVersions is the exception: a newer client asks at a version no broker knows yet,
        // and gets the v0 answer (KIP-511).
        if api_key != ApiKey::ApiVersions && (version < known.min || version > known.max) {
            return Err(FrameError::UnknownKey { api_key: key, correlation_id });
        }
        return Err(FrameError::UnsupportedVersion { api_key, version, correlation_id });
    };
    debug_assert!(min <= version && version <= max);
    let malformed = |reason: String| FrameError::Malformed { api_key, version, correlation_id, reason };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| malformed(format!("request header: {e:#}")))?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(|e| malformed(format!("{e:#}")))?;
    Ok(Request { api_key, version, header, body })
}

/// Appends one response frame (length prefix, header, body) to `out`.
pub fn encode_response(
    out: &mut BytesMut,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    response: &ResponseKind,
) -> Result<(), String> {
    let start = out.len();
    out.put_u32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encoded = header
        .encode(out, api_key.response_header_version(version))
        .and_then(|()| response.encode(out, version));
    if let Err(error) = encoded {
        out.truncate(start);
        return Err(format!("encoding the {api_key:?} v{version} response: {error:#}"));
    }
    let size = out.len() - start - LENGTH_BYTES;
    let Ok(size) = u32::try_from(size) else {
        out.truncate(start);
        return Err(format!("a {api_key:?} response of {size} bytes"));
    };
    out[start..start + LENGTH_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Reads the length prefix at the start of `bytes`, when all four bytes are there. A negative
/// size reads as a huge one (the caller refuses it against its frame limit).
pub fn frame_length(bytes: &[u8]) -> Option<usize> {
    let prefix: [u8; LENGTH_BYTES] = bytes.get(..LENGTH_BYTES)?.try_into().ok()?;
    Some(u32::from_be_bytes(prefix) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn frame(key: ApiKey, version: i16, correlation_id: i32, body: &RequestKind) -> Bytes {
        let mut out = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        header.encode(&mut out, key.request_header_version(version)).unwrap();
        body.encode(&mut out, version).unwrap();
        out.freeze()
    }

    #[test]
    fn decodes_every_supported_version_of_a_request() {
        for version in 0..=3 {
            let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
            let request = decode_request(frame(ApiKey::ApiVersions, version, 7, &body)).unwrap();
            assert_eq!(
                (request.api_key, request.version, request.header.correlation_id),
                (ApiKey::ApiVersions, version, 7)
            );
        }
        let body = RequestKind::Metadata(MetadataRequest::default());
        let request = decode_request(frame(ApiKey::Metadata, 9, 8, &body)).unwrap();
        assert!(matches!(request.body, RequestKind::Metadata(_)));
    }

    #[test]
    fn refuses_what_it_does_not_serve_with_the_correlation_id() {
        let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
        let mut bytes = frame(ApiKey::ApiVersions, 3, 9, &body).to_vec();
        bytes[2..4].copy_from_slice(&99_i16.to_be_bytes());
        assert_eq!(
            decode_request(Bytes::from(bytes.clone())).unwrap_err(),
            FrameError::UnsupportedVersion { api_key: ApiKey::ApiVersions, version: 99, correlation_id: 9 }
        );
        bytes[0..2].copy_from_slice(&31_000_i16.to_be_bytes());
        assert_eq!(
            decode_request(Bytes::from(bytes.clone())).unwrap_err(),
            FrameError::UnknownKey { api_key: 31_000, correlation_id: 9 }
        );
        // DescribeConfigs (32) v1: defined by Kafka, not served.
        bytes[0..2].copy_from_slice(&32_i16.to_be_bytes());
        bytes[2..4].copy_from_slice(&1_i16.to_be_bytes());
        assert_eq!(
            decode_request(Bytes::from(bytes)).unwrap_err(),
            FrameError::UnsupportedVersion {
                api_key: ApiKey::DescribeConfigs,
                version: 1,
                correlation_id: 9
            }
        );
        assert_eq!(decode_request(Bytes::from_static(&[0, 3, 0])).unwrap_err(), FrameError::Truncated);
    }

    #[test]
    fn a_huge_array_count_is_an_error_not_an_allocation() {
        // Metadata v1: topics array of i32::MAX entries, then nothing.
        let mut bytes = BytesMut::new();
        bytes.put_i16(ApiKey::Metadata as i16);
        bytes.put_i16(1);
        bytes.put_i32(5);
        bytes.put_i16(-1);
        bytes.put_i32(i32::MAX);
        let error = decode_request(bytes.freeze()).unwrap_err();
        assert!(matches!(error, FrameError::Malformed { correlation_id: 5, .. }), "{error:?}");
    }
}
