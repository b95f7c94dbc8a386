//! Server → client: every frame `encode` writes, decoded by the `rabbitmq-stream-protocol`
//! crate's client decoder and compared field by field; StreamStats, which the crate lacks, and
//! the parts it does not read (a SASL challenge, the reason of a server Close) are read back
//! byte by byte. Every frame's size prefix must equal the bytes after it (the crate ignores it).

use std::collections::HashMap;

use rabbitmq_stream_protocol::codec::Decoder;
use rabbitmq_stream_protocol::commands::{
    close::CloseResponse, consumer_update::ConsumerUpdateCommand,
    exchange_command_versions::ExchangeCommandVersion,
    exchange_command_versions::ExchangeCommandVersionsResponse, metadata::Broker, metadata::MetadataResponse,
    metadata::StreamMetadata as CrateStreamMetadata, peer_properties::PeerPropertiesResponse,
    publish_confirm::PublishConfirm, publish_error::PublishErrorResponse, query_offset::QueryOffsetResponse,
    query_publisher_sequence::QueryPublisherResponse, superstream_partitions::SuperStreamPartitionsResponse,
    superstream_route::SuperStreamRouteResponse, tune::TunesCommand,
};
use rabbitmq_stream_protocol::types::{Header, PublishingError};
use rabbitmq_stream_protocol::{Response, ResponseCode, ResponseKind};

use super::test_bytes::Fields;
use super::*;
use crate::wire::rabbitmq::encode::*;

/// Checks the size prefix and the key bits, then decodes with the crate; returns the response
/// and the bytes the crate left unread.
fn crate_decode(frame: &[u8], key: u16) -> (Response, Vec<u8>) {
    let size = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(size, frame.len() - 4, "size prefix");
    assert_eq!(u16::from_be_bytes(frame[4..6].try_into().unwrap()), key, "key");
    assert_eq!(u16::from_be_bytes(frame[6..8].try_into().unwrap()), 1, "version");
    let (rest, response) = Response::decode(frame).expect("the crate decodes it");
    (response, rest.to_vec())
}

/// The crate's decoding of a frame it reads entirely.
fn decoded(frame: &[u8], key: u16) -> Response {
    let (response, rest) = crate_decode(frame, key);
    assert!(rest.is_empty(), "{} bytes the client does not read", rest.len());
    response
}

fn expected(key: u16, kind: ResponseKind) -> Response {
    Response::new(Header::new(key, 1), kind)
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn generic_code(response: &Response) -> ResponseCode {
    match response.kind_ref() {
        ResponseKind::Generic(generic) => generic.code().clone(),
        other => panic!("not a generic response: {other:?}"),
    }
}

#[test]
fn generic_responses() {
    for key in [
        keys::CREATE,
        keys::DELETE,
        keys::DECLARE_PUBLISHER,
        keys::DELETE_PUBLISHER,
        keys::SUBSCRIBE,
        keys::UNSUBSCRIBE,
        keys::SASL_AUTHENTICATE,
        keys::CREATE_SUPER_STREAM,
        keys::DELETE_SUPER_STREAM,
    ] {
        let response =
            decoded(&generic_response(key, 40, codes::STREAM_ALREADY_EXISTS), key | keys::RESPONSE);
        assert_eq!(response.correlation_id(), Some(40));
        assert_eq!(generic_code(&response), ResponseCode::StreamAlreadyExists, "key {key}");
    }
    // A refused Open is a generic response; the client reads no properties after the code.
    let response = decoded(&generic_response(keys::OPEN, 41, codes::VIRTUAL_HOST_ACCESS_FAILURE), 0x8015);
    let ResponseKind::Open(open) = response.kind_ref() else { panic!("not Open") };
    assert_eq!(open.code(), &ResponseCode::VirtualHostAccessFailure);
    assert_eq!(response.correlation_id(), Some(41));

    let response = decoded(&close_response(42, codes::OK), keys::CLOSE_RESPONSE);
    assert_eq!(
        response,
        expected(keys::CLOSE, ResponseKind::Close(CloseResponse::new(42, ResponseCode::Ok)))
    );
}

#[test]
fn connection_setup_responses() {
    let properties = [("product", "ringbroker"), ("version", "0.1.0")];
    let response = decoded(&peer_properties_response(43, codes::OK, &properties), 0x8011);
    let kind =
        ResponseKind::PeerProperties(PeerPropertiesResponse::new(43, ResponseCode::Ok, map(&properties)));
    assert_eq!(response, expected(keys::PEER_PROPERTIES, kind));

    let response = decoded(&sasl_handshake_response(44, codes::OK, &["PLAIN", "AMQPLAIN"]), 0x8012);
    let ResponseKind::SaslHandshake(handshake) = response.kind_ref() else { panic!("not SaslHandshake") };
    assert_eq!(handshake.mechanisms(), &vec!["PLAIN".to_string(), "AMQPLAIN".to_string()]);
    assert_eq!(response.correlation_id(), Some(44));
    assert!(format!("{handshake:?}").contains("code: Ok"));

    let response = decoded(&sasl_authenticate_response(45, codes::OK, None), 0x8013);
    assert_eq!((response.correlation_id(), generic_code(&response)), (Some(45), ResponseCode::Ok));
    let response = decoded(&sasl_authenticate_response(45, codes::AUTHENTICATION_FAILURE, None), 0x8013);
    assert_eq!(generic_code(&response), ResponseCode::AuthenticationFailure);

    // A challenge follows the code as `bytes`, which the Java client reads with code 10; the
    // Rust client does not read it.
    let frame = sasl_authenticate_response(46, codes::SASL_CHALLENGE, Some(b"nonce"));
    let (response, rest) = crate_decode(&frame, 0x8013);
    assert_eq!(generic_code(&response), ResponseCode::SaslChallange);
    assert_eq!(rest, [&5u32.to_be_bytes()[..], b"nonce"].concat());

    let response = decoded(&tune(1 << 20, 60), keys::TUNE);
    assert_eq!(response, expected(keys::TUNE, ResponseKind::Tunes(TunesCommand::new(1 << 20, 60))));

    let properties = [("advertised_host", "localhost"), ("advertised_port", "5552")];
    let response = decoded(&open_response(47, codes::OK, &properties), 0x8015);
    let ResponseKind::Open(open) = response.kind_ref() else { panic!("not Open") };
    assert_eq!((open.code(), open.connection_properties()), (&ResponseCode::Ok, &map(&properties)));
    let response = decoded(&open_response(47, codes::OK, &[]), 0x8015);
    let ResponseKind::Open(open) = response.kind_ref() else { panic!("not Open") };
    assert!(open.connection_properties().is_empty());
    let response = decoded(&open_response(48, codes::VIRTUAL_HOST_ACCESS_FAILURE, &properties), 0x8015);
    let ResponseKind::Open(open) = response.kind_ref() else { panic!("not Open") };
    assert_eq!(open.code(), &ResponseCode::VirtualHostAccessFailure);

    // The crate reads a server Close as a response (correlation and code) and leaves the reason;
    // our decoder reads all of it, as the Java client does.
    let frame = close(49, codes::INTERNAL_ERROR, "shutting down");
    let (response, rest) = crate_decode(&frame, keys::CLOSE);
    assert_eq!(
        response,
        expected(keys::CLOSE, ResponseKind::Close(CloseResponse::new(49, ResponseCode::InternalError)))
    );
    assert_eq!(rest, [&13u16.to_be_bytes()[..], b"shutting down"].concat());
    assert_eq!(
        decode(&frame[4..]).map(|frame| frame.command),
        Ok(Command::Close { correlation: 49, code: codes::INTERNAL_ERROR, reason: "shutting down" })
    );

    let frame = heartbeat();
    assert_eq!(frame, [0, 0, 0, 4, 0, 23, 0, 1]);
    assert!(matches!(decoded(&frame, keys::HEARTBEAT).kind_ref(), ResponseKind::Heartbeat(_)));

    let response =
        decoded(&exchange_command_versions_response(50, codes::OK, SERVER_COMMAND_VERSIONS), 0x801b);
    let versions =
        SERVER_COMMAND_VERSIONS.iter().map(|&(k, min, max)| ExchangeCommandVersion::new(k, min, max));
    let response_kind = ExchangeCommandVersionsResponse::new(50, ResponseCode::Ok, versions.collect());
    assert_eq!(
        response,
        expected(keys::EXCHANGE_COMMAND_VERSIONS, ResponseKind::ExchangeCommandVersions(response_kind))
    );
    let ResponseKind::ExchangeCommandVersions(versions) = response.kind_ref() else { panic!() };
    assert_eq!(versions.key_version(keys::PUBLISH), (1, 2), "filtering needs Publish version 2");
}

#[test]
fn metadata_responses() {
    let brokers = [(0, "localhost", 5552), (1, "127.0.0.1", 5553)];
    let streams = [
        StreamMetadata { name: "orders", code: codes::OK, leader: 1, replicas: &[0] },
        StreamMetadata {
            name: "missing",
            code: codes::STREAM_DOES_NOT_EXIST,
            leader: u16::MAX,
            replicas: &[],
        },
    ];
    let response = decoded(&metadata_response(51, &brokers, &streams), 0x800f);
    let ResponseKind::Metadata(MetadataResponse { brokers, stream_metadata, .. }) = response.kind_ref()
    else {
        panic!("not Metadata")
    };
    assert_eq!(response.correlation_id(), Some(51));
    assert_eq!(
        brokers,
        &vec![
            Broker { reference: 0, host: "localhost".into(), port: 5552 },
            Broker { reference: 1, host: "127.0.0.1".into(), port: 5553 },
        ]
    );
    assert_eq!(
        stream_metadata,
        &vec![
            CrateStreamMetadata {
                stream_name: "orders".into(),
                code: ResponseCode::Ok,
                leader_reference: 1,
                replicas_references: vec![0],
            },
            CrateStreamMetadata {
                stream_name: "missing".into(),
                code: ResponseCode::StreamDoesNotExist,
                leader_reference: u16::MAX,
                replicas_references: vec![],
            },
        ]
    );

    let response = decoded(&metadata_update(codes::STREAM_NOT_AVAILABLE, "orders"), keys::METADATA_UPDATE);
    assert_eq!(
        format!("{:?}", response.kind_ref()),
        r#"MetadataUpdate(MetadataUpdateCommand { code: StreamNotAvailable, stream: "orders" })"#
    );
}

#[test]
fn stream_stats_response_as_the_java_client_reads_it() {
    let frame = stream_stats_response(52, codes::OK, &[("first_chunk_id", 0), ("committed_chunk_id", -1)]);
    let mut fields = Fields(&frame);
    assert_eq!(fields.u32() as usize, frame.len() - 4);
    assert_eq!((fields.u16(), fields.u16()), (keys::STREAM_STATS | keys::RESPONSE, 1));
    assert_eq!((fields.u32(), fields.u16(), fields.u32()), (52, codes::OK, 2));
    assert_eq!((fields.string(), fields.i64()), ("first_chunk_id".to_string(), 0));
    assert_eq!((fields.string(), fields.i64()), ("committed_chunk_id".to_string(), -1));
    assert_eq!(fields.rest(), 0);
}

#[test]
fn publishing_responses() {
    let response = decoded(&publish_confirm(5, &[1, 2, u64::MAX]), keys::PUBLISH_CONFIRM);
    let kind = ResponseKind::PublishConfirm(PublishConfirm::new(5, vec![1, 2, u64::MAX]));
    assert_eq!(response, expected(keys::PUBLISH_CONFIRM, kind));

    // Appending frames to one buffer.
    let mut out = Vec::new();
    publish_confirm_into(&mut out, 1, &[7]);
    publish_confirm_into(&mut out, 2, &[]);
    let first_len = 4 + 4 + 1 + 4 + 8;
    let (first, second) = out.split_at(first_len);
    let kind = ResponseKind::PublishConfirm(PublishConfirm::new(1, vec![7]));
    assert_eq!(decoded(first, keys::PUBLISH_CONFIRM), expected(keys::PUBLISH_CONFIRM, kind));
    let kind = ResponseKind::PublishConfirm(PublishConfirm::new(2, vec![]));
    assert_eq!(decoded(second, keys::PUBLISH_CONFIRM), expected(keys::PUBLISH_CONFIRM, kind));

    let response =
        decoded(&publish_error(5, &[(3, codes::PUBLISHER_DOES_NOT_EXIST), (4, codes::INTERNAL_ERROR)]), 4);
    let errors = vec![
        PublishingError::new(3, ResponseCode::PublisherDoesNotExist),
        PublishingError::new(4, ResponseCode::InternalError),
    ];
    let kind = ResponseKind::PublishError(PublishErrorResponse::new(5, errors));
    assert_eq!(response, expected(keys::PUBLISH_ERROR, kind));

    let response = decoded(&query_publisher_sequence_response(53, codes::OK, 99), 0x8005);
    let kind = ResponseKind::QueryPublisherSequence(QueryPublisherResponse::new(53, ResponseCode::Ok, 99));
    assert_eq!(response, expected(keys::QUERY_PUBLISHER_SEQUENCE, kind));
}

#[test]
fn consuming_responses() {
    let response = decoded(&query_offset_response(54, codes::OFFSET_NOT_FOUND, 0), 0x800b);
    let kind = ResponseKind::QueryOffset(QueryOffsetResponse::new(54, ResponseCode::OffsetNotFound, 0));
    assert_eq!(response, expected(keys::QUERY_OFFSET, kind));

    let response = decoded(&credit_response(codes::SUBSCRIPTION_ID_DOES_NOT_EXIST, 3), 0x8009);
    assert_eq!(
        format!("{:?}", response.kind_ref()),
        "Credit(CreditResponse { code: SubscriptionIdDoesNotExist, subscription_id: 3 })"
    );

    let response = decoded(&consumer_update(55, 2, true), keys::CONSUMER_UPDATE);
    let kind = ResponseKind::ConsumerUpdate(ConsumerUpdateCommand::new(55, 2, 1));
    assert_eq!(response, expected(keys::CONSUMER_UPDATE, kind));
    let response = decoded(&consumer_update(56, 2, false), keys::CONSUMER_UPDATE);
    let kind = ResponseKind::ConsumerUpdate(ConsumerUpdateCommand::new(56, 2, 0));
    assert_eq!(response, expected(keys::CONSUMER_UPDATE, kind));
}

#[test]
fn super_stream_responses() {
    let response = decoded(&route_response(57, codes::OK, &["invoices-1"]), 0x8018);
    let kind = ResponseKind::SuperStreamRoute(SuperStreamRouteResponse::new(
        57,
        vec!["invoices-1".into()],
        ResponseCode::Ok,
    ));
    assert_eq!(response, expected(keys::ROUTE, kind));

    let streams = ["invoices-0", "invoices-1", "invoices-2"];
    let response = decoded(&partitions_response(58, codes::OK, &streams), 0x8019);
    let names = streams.iter().map(|s| s.to_string()).collect();
    let kind =
        ResponseKind::SuperStreamPartitions(SuperStreamPartitionsResponse::new(58, names, ResponseCode::Ok));
    assert_eq!(response, expected(keys::PARTITIONS, kind));

    let response = decoded(&partitions_response(59, codes::STREAM_DOES_NOT_EXIST, &[]), 0x8019);
    let kind = ResponseKind::SuperStreamPartitions(SuperStreamPartitionsResponse::new(
        59,
        vec![],
        ResponseCode::StreamDoesNotExist,
    ));
    assert_eq!(response, expected(keys::PARTITIONS, kind));
}

#[test]
fn strings_too_long_for_the_protocol_are_cut_at_a_character_boundary() {
    let long = "é".repeat(20_000); // 40 000 bytes
    let frame = metadata_update(codes::STREAM_NOT_AVAILABLE, &long);
    let mut fields = Fields(&frame);
    assert_eq!(fields.u32() as usize, frame.len() - 4);
    assert_eq!(
        (fields.u16(), fields.u16(), fields.u16()),
        (keys::METADATA_UPDATE, 1, codes::STREAM_NOT_AVAILABLE)
    );
    let cut = fields.string();
    assert_eq!(cut.len(), 32_766);
    assert!(long.starts_with(&cut));
    assert_eq!(fields.rest(), 0);
    assert_eq!(frame_size_prefix(0x0102_0304), [1, 2, 3, 4]);
}
