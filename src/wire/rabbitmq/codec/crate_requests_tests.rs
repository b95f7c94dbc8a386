//! Client → server: every request the `rabbitmq-stream-protocol` crate (the official Rust
//! client's codec) can encode, decoded by ours, field by field; then the frames it cannot build
//! (StreamStats, sub-entries, the Java client's and RabbitMQ's own variants), written byte by
//! byte from PROTOCOL.adoc and the Java client.

use std::collections::HashMap;

use rabbitmq_stream_protocol::codec::Encoder;
use rabbitmq_stream_protocol::commands::{
    close::CloseRequest, consumer_update_request::ConsumerUpdateRequestCommand,
    create_stream::CreateStreamCommand, create_super_stream::CreateSuperStreamCommand, credit::CreditCommand,
    declare_publisher::DeclarePublisherCommand, delete::Delete, delete_publisher::DeletePublisherCommand,
    delete_super_stream::DeleteSuperStreamCommand, exchange_command_versions::ExchangeCommandVersion,
    exchange_command_versions::ExchangeCommandVersionsRequest, heart_beat::HeartBeatCommand,
    metadata::MetadataCommand, open::OpenCommand, peer_properties::PeerPropertiesCommand,
    publish::PublishCommand, query_offset::QueryOffsetRequest,
    query_publisher_sequence::QueryPublisherRequest, sasl_authenticate::SaslAuthenticateCommand,
    sasl_handshake::SaslHandshakeCommand, store_offset::StoreOffset, subscribe::OffsetSpecification,
    subscribe::SubscribeCommand, superstream_partitions::SuperStreamPartitionsRequest,
    superstream_route::SuperStreamRouteRequest, tune::TunesCommand, unsubscribe::UnSubscribeCommand,
};
use rabbitmq_stream_protocol::message::Message;
use rabbitmq_stream_protocol::types::PublishedMessage;
use rabbitmq_stream_protocol::{Request, ResponseCode};

use super::test_bytes::Bytes;
use super::*;

/// The crate's encoding of `request`, size prefix included.
fn wire(request: impl Into<Request>) -> Vec<u8> {
    let request: Request = request.into();
    let mut out = Vec::new();
    request.encode(&mut out).expect("the crate encodes");
    out
}

/// Our decoding of a whole frame (size prefix checked and stripped), and the check that our
/// client-side encoder gives back the same bytes.
fn decoded(frame: &[u8]) -> Frame<'_> {
    let (prefix, body) = frame.split_at(4);
    assert_eq!(u32::from_be_bytes(prefix.try_into().unwrap()) as usize, body.len());
    let decoded = decode(body).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(decode(&encode_client_frame(&decoded)[4..]).as_ref(), Ok(&decoded), "re-encodes");
    decoded
}

fn sorted<'a>(mut pairs: Vec<(&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    pairs.sort_unstable();
    pairs
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn connection_setup_commands() {
    let frame = wire(PeerPropertiesCommand::new(7, map(&[("product", "rstream"), ("version", "1.0")])));
    let Frame { key, version, command: Command::PeerProperties { correlation: 7, properties } } =
        decoded(&frame)
    else {
        panic!("not PeerProperties")
    };
    assert_eq!((key, version), (keys::PEER_PROPERTIES, 1));
    assert_eq!(sorted(properties), vec![("product", "rstream"), ("version", "1.0")]);

    let frame = wire(SaslHandshakeCommand::new(8));
    assert_eq!(decoded(&frame).command, Command::SaslHandshake { correlation: 8 });

    let frame = wire(SaslAuthenticateCommand::new(9, "PLAIN".into(), b"\0guest\0secret".to_vec()));
    assert_eq!(
        decoded(&frame).command,
        Command::SaslAuthenticate { correlation: 9, mechanism: "PLAIN", response: b"\0guest\0secret" }
    );

    let frame = wire(TunesCommand::new(1 << 20, 60));
    assert_eq!(decoded(&frame).key, keys::TUNE);
    assert_eq!(decoded(&frame).command, Command::Tune { frame_max: 1 << 20, heartbeat: 60 });

    let frame = wire(OpenCommand::new(10, "/".into()));
    assert_eq!(decoded(&frame).command, Command::Open { correlation: 10, virtual_host: "/" });

    let frame = wire(CloseRequest::new(11, ResponseCode::Ok, "bye".into()));
    assert_eq!(decoded(&frame).command, Command::Close { correlation: 11, code: codes::OK, reason: "bye" });

    let frame = wire(HeartBeatCommand {});
    assert_eq!(decoded(&frame), Frame { key: keys::HEARTBEAT, version: 1, command: Command::Heartbeat });

    let versions =
        vec![ExchangeCommandVersion::new(keys::DELIVER, 1, 2), ExchangeCommandVersion::new(3, 1, 1)];
    let frame = wire(ExchangeCommandVersionsRequest::new(12, versions));
    assert_eq!(
        decoded(&frame).command,
        Command::ExchangeCommandVersions {
            correlation: 12,
            versions: vec![(keys::DELIVER, 1, 2), (3, 1, 1)]
        }
    );
}

#[test]
fn stream_commands() {
    let frame = wire(CreateStreamCommand::new(13, "orders".into(), map(&[("max-length-bytes", "1000")])));
    assert_eq!(
        decoded(&frame).command,
        Command::Create { correlation: 13, stream: "orders", arguments: vec![("max-length-bytes", "1000")] }
    );
    let frame = wire(CreateStreamCommand::new(14, "empty-args".into(), HashMap::new()));
    assert_eq!(
        decoded(&frame).command,
        Command::Create { correlation: 14, stream: "empty-args", arguments: vec![] }
    );

    let frame = wire(Delete::new(15, "orders".into()));
    assert_eq!(decoded(&frame).command, Command::Delete { correlation: 15, stream: "orders" });

    let frame = wire(MetadataCommand::new(16, vec!["a".into(), "b".into()]));
    assert_eq!(decoded(&frame).command, Command::Metadata { correlation: 16, streams: vec!["a", "b"] });
    let frame = wire(MetadataCommand::new(17, vec![]));
    assert_eq!(decoded(&frame).command, Command::Metadata { correlation: 17, streams: vec![] });
}

#[test]
fn publisher_commands() {
    let frame = wire(DeclarePublisherCommand::new(18, 3, Some("producer-1".into()), "orders".into()));
    assert_eq!(
        decoded(&frame).command,
        Command::DeclarePublisher {
            correlation: 18,
            publisher_id: 3,
            reference: Some("producer-1"),
            stream: "orders"
        }
    );
    // The crate writes a missing reference as an empty string, as the Java client does.
    let frame = wire(DeclarePublisherCommand::new(19, 4, None, "orders".into()));
    assert_eq!(
        decoded(&frame).command,
        Command::DeclarePublisher { correlation: 19, publisher_id: 4, reference: None, stream: "orders" }
    );

    let frame = wire(QueryPublisherRequest::new(20, "producer-1".into(), "orders".into()));
    assert_eq!(
        decoded(&frame).command,
        Command::QueryPublisherSequence { correlation: 20, reference: "producer-1", stream: "orders" }
    );

    let frame = wire(DeletePublisherCommand::new(21, 3));
    assert_eq!(decoded(&frame).command, Command::DeletePublisher { correlation: 21, publisher_id: 3 });
}

fn amqp(body: &str) -> (Message, Vec<u8>) {
    let message = Message::builder().body(body.as_bytes().to_vec()).build();
    let mut bytes = Vec::new();
    message.encode(&mut bytes).expect("the crate encodes AMQP");
    (message, bytes)
}

#[test]
fn publish_version_1_keeps_the_amqp_bytes() {
    let (first, first_bytes) = amqp("hello");
    let (second, second_bytes) = amqp("world, a little longer");
    let messages = vec![PublishedMessage::new(1, first, None), PublishedMessage::new(2, second, None)];
    let frame = wire(PublishCommand::new(5, messages, 1));
    let decoded = decoded(&frame);
    assert_eq!((decoded.key, decoded.version), (keys::PUBLISH, 1));
    assert_eq!(
        decoded.command,
        Command::Publish {
            publisher_id: 5,
            entries: vec![
                Entry::Simple { publishing_id: 1, message: &first_bytes, filter_value: None },
                Entry::Simple { publishing_id: 2, message: &second_bytes, filter_value: None },
            ],
        }
    );
}

#[test]
fn publish_version_2_reads_filter_values() {
    let (first, first_bytes) = amqp("eu message");
    let (second, second_bytes) = amqp("no filter");
    let messages =
        vec![PublishedMessage::new(7, first, Some("eu".into())), PublishedMessage::new(8, second, None)];
    let frame = wire(PublishCommand::new(6, messages, 2));
    let decoded = decoded(&frame);
    assert_eq!(decoded.version, 2);
    assert_eq!(
        decoded.command,
        Command::Publish {
            publisher_id: 6,
            entries: vec![
                Entry::Simple { publishing_id: 7, message: &first_bytes, filter_value: Some("eu") },
                // The crate writes "no filter value" as an empty string.
                Entry::Simple { publishing_id: 8, message: &second_bytes, filter_value: None },
            ],
        }
    );
}

#[test]
fn consumer_commands() {
    let specs = [
        (OffsetSpecification::First, OffsetSpec::First),
        (OffsetSpecification::Last, OffsetSpec::Last),
        (OffsetSpecification::Next, OffsetSpec::Next),
        (OffsetSpecification::Offset(u64::MAX), OffsetSpec::Offset(u64::MAX)),
        (OffsetSpecification::Timestamp(-5), OffsetSpec::Timestamp(-5)),
    ];
    for (spec, expected) in specs {
        let properties = map(&[("single-active-consumer", "true"), ("name", "app")]);
        let frame = wire(SubscribeCommand::new(22, 1, "orders".into(), spec, 10, properties));
        let Command::Subscribe { correlation, subscription_id, stream, offset, credit, properties } =
            decoded(&frame).command
        else {
            panic!("not Subscribe")
        };
        assert_eq!((correlation, subscription_id, stream, offset, credit), (22, 1, "orders", expected, 10));
        assert_eq!(sorted(properties), vec![("name", "app"), ("single-active-consumer", "true")]);
    }

    let frame = wire(CreditCommand::new(1, 5));
    assert_eq!(decoded(&frame).command, Command::Credit { subscription_id: 1, credit: 5 });

    let frame = wire(UnSubscribeCommand::new(23, 1));
    assert_eq!(decoded(&frame).command, Command::Unsubscribe { correlation: 23, subscription_id: 1 });

    let frame = wire(StoreOffset::new("app".into(), "orders".into(), 42));
    assert_eq!(
        decoded(&frame).command,
        Command::StoreOffset { reference: "app", stream: "orders", offset: 42 }
    );

    let frame = wire(QueryOffsetRequest::new(24, "app".into(), "orders".into()));
    assert_eq!(
        decoded(&frame).command,
        Command::QueryOffset { correlation: 24, reference: "app", stream: "orders" }
    );

    let frame = wire(ConsumerUpdateRequestCommand::new(25, codes::OK, OffsetSpecification::Offset(9)));
    let decoded = decoded(&frame);
    assert_eq!(decoded.key, keys::CONSUMER_UPDATE_RESPONSE);
    assert_eq!(
        decoded.command,
        Command::ConsumerUpdateResponse {
            correlation: 25,
            code: codes::OK,
            offset: Some(OffsetSpec::Offset(9))
        }
    );
}

#[test]
fn super_stream_commands() {
    let frame = wire(CreateSuperStreamCommand::new(
        26,
        "invoices".into(),
        vec!["invoices-0".into(), "invoices-1".into()],
        vec!["0".into(), "1".into()],
        map(&[("max-age", "PT1H")]),
    ));
    assert_eq!(
        decoded(&frame).command,
        Command::CreateSuperStream {
            correlation: 26,
            name: "invoices",
            partitions: vec!["invoices-0", "invoices-1"],
            binding_keys: vec!["0", "1"],
            arguments: vec![("max-age", "PT1H")],
        }
    );

    let frame = wire(DeleteSuperStreamCommand::new(27, "invoices".into()));
    assert_eq!(decoded(&frame).command, Command::DeleteSuperStream { correlation: 27, name: "invoices" });

    let frame = wire(SuperStreamRouteRequest::new(28, "customer-7".into(), "invoices".into()));
    assert_eq!(
        decoded(&frame).command,
        Command::Route { correlation: 28, routing_key: "customer-7", super_stream: "invoices" }
    );

    let frame = wire(SuperStreamPartitionsRequest::new(29, "invoices".into()));
    assert_eq!(decoded(&frame).command, Command::Partitions { correlation: 29, super_stream: "invoices" });
}

// Frames the crate cannot build, byte by byte.

#[test]
fn stream_stats_request() {
    let frame = Bytes::frame(keys::STREAM_STATS, 1).u32(30).string("orders").done();
    assert_eq!(decoded(&frame).command, Command::StreamStats { correlation: 30, stream: "orders" });
}

#[test]
fn close_and_tune_answers_from_the_client() {
    let frame = Bytes::frame(keys::CLOSE_RESPONSE, 1).u32(31).u16(codes::OK).done();
    assert_eq!(decoded(&frame).command, Command::CloseResponse { correlation: 31, code: codes::OK });
    // The Java client answers our Tune with the response bit set.
    let frame = Bytes::frame(keys::TUNE_RESPONSE, 1).u32(1 << 20).u32(60).done();
    let decoded = decoded(&frame);
    assert_eq!(decoded.key, keys::TUNE_RESPONSE);
    assert_eq!(decoded.command, Command::Tune { frame_max: 1 << 20, heartbeat: 60 });
}

#[test]
fn subscribe_without_properties_as_the_java_client_sends_it() {
    let frame =
        Bytes::frame(keys::SUBSCRIBE, 1).u32(32).u8(2).string("orders").u16(4).u64(100).u16(10).done();
    assert_eq!(
        decoded(&frame).command,
        Command::Subscribe {
            correlation: 32,
            subscription_id: 2,
            stream: "orders",
            offset: OffsetSpec::Offset(100),
            credit: 10,
            properties: vec![],
        }
    );
}

#[test]
fn sasl_authenticate_with_a_null_response() {
    let frame = Bytes::frame(keys::SASL_AUTHENTICATE, 1).u32(33).string("ANONYMOUS").i32(-1).done();
    assert_eq!(
        decoded(&frame).command,
        Command::SaslAuthenticate { correlation: 33, mechanism: "ANONYMOUS", response: b"" }
    );
}

#[test]
fn declare_publisher_with_a_null_reference() {
    let frame = Bytes::frame(keys::DECLARE_PUBLISHER, 1).u32(34).u8(1).i16(-1).string("orders").done();
    assert_eq!(
        decoded(&frame).command,
        Command::DeclarePublisher { correlation: 34, publisher_id: 1, reference: None, stream: "orders" }
    );
}

#[test]
fn consumer_update_response_without_an_offset() {
    // The Java client's OffsetSpecification.none(): type 0, no offset.
    let frame = Bytes::frame(keys::CONSUMER_UPDATE_RESPONSE, 1).u32(35).u16(codes::OK).u16(0).done();
    assert_eq!(
        decoded(&frame).command,
        Command::ConsumerUpdateResponse { correlation: 35, code: codes::OK, offset: None }
    );
}

#[test]
fn consumer_update_response_as_rstream_sends_it() {
    // rstream writes an offset value for every type; after a valueless type it is ignored.
    for (offset_type, offset) in [(0, None), (1, Some(OffsetSpec::First)), (3, Some(OffsetSpec::Next))] {
        let frame = Bytes::frame(keys::CONSUMER_UPDATE_RESPONSE, 1)
            .u32(36)
            .u16(codes::OK)
            .u16(offset_type)
            .u64(0)
            .done();
        let decoded = decode(&frame[4..]).map(|frame| frame.command);
        assert_eq!(decoded, Ok(Command::ConsumerUpdateResponse { correlation: 36, code: codes::OK, offset }));
    }
}

#[test]
fn publish_sub_entries_as_the_java_client_and_rstream_send_them() {
    // Java: 0x80 | compression << 4, u16 records, u32 uncompressed size, u32 data size, data.
    let frame = Bytes::frame(keys::PUBLISH, 1)
        .u8(9)
        .i32(3)
        .u64(1)
        .bytes(b"plain")
        .u64(2)
        .u8(0x80 | 4 << 4)
        .u16(100)
        .u32(5000)
        .bytes(b"zstd-frame")
        .u64(3)
        .u8(0x80)
        .u16(2)
        .u32(12)
        .bytes(&[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 2, b'y', b'o'])
        .done();
    assert_eq!(
        decoded(&frame).command,
        Command::Publish {
            publisher_id: 9,
            entries: vec![
                Entry::Simple { publishing_id: 1, message: b"plain", filter_value: None },
                Entry::SubEntry {
                    publishing_id: 2,
                    compression: 4,
                    records: 100,
                    uncompressed_bytes: 5000,
                    data: b"zstd-frame",
                },
                Entry::SubEntry {
                    publishing_id: 3,
                    compression: 0,
                    records: 2,
                    uncompressed_bytes: 12,
                    data: &[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 2, b'y', b'o'],
                },
            ],
        }
    );
}

#[test]
fn publish_version_2_as_the_java_client_sends_it() {
    // Java: publishing id, filter value (null as -1), message.
    let frame = Bytes::frame(keys::PUBLISH, 2)
        .u8(1)
        .i32(2)
        .u64(10)
        .string("eu")
        .bytes(b"m1")
        .u64(11)
        .i16(-1)
        .bytes(b"m2")
        .done();
    assert_eq!(
        decoded(&frame).command,
        Command::Publish {
            publisher_id: 1,
            entries: vec![
                Entry::Simple { publishing_id: 10, message: b"m1", filter_value: Some("eu") },
                Entry::Simple { publishing_id: 11, message: b"m2", filter_value: None },
            ],
        }
    );
}

#[test]
fn empty_publish_and_empty_messages() {
    let frame = Bytes::frame(keys::PUBLISH, 1).u8(1).i32(0).done();
    assert_eq!(decoded(&frame).command, Command::Publish { publisher_id: 1, entries: vec![] });
    let frame = Bytes::frame(keys::PUBLISH, 1).u8(1).i32(1).u64(5).bytes(b"").done();
    assert_eq!(
        decoded(&frame).command,
        Command::Publish {
            publisher_id: 1,
            entries: vec![Entry::Simple { publishing_id: 5, message: b"", filter_value: None }],
        }
    );
}
