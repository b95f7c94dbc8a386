//! Hostile bytes against the Kafka listener, written frame by frame over std sockets: garbage,
//! a truncated frame then a close, a huge length prefix, a partial frame held open, a frame sent
//! one byte at a time, an unknown API key, a Metadata request whose topic array claims 2^31-1
//! entries (classic and flexible encodings), ApiVersions at version 99, Produce with broken
//! record batches, and data requests before SASL on a listener that requires it. Each attack
//! gets an answer or a close of its own connection only; afterwards the broker still runs, a
//! connection opened before the attack still answers ApiVersions and Metadata, and so do fresh
//! connections to the bootstrap port and to a shard's own port. Well-formed requests are built
//! with the `kafka-protocol` crate's encoders; hostile ones are those bytes, cut or patched.

mod common;
#[path = "common/kafka.rs"]
mod kafka;

use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka::{decode_response, request_frame, round_trip, round_trip_on, Ending, RawClient, Server};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// Shards of every broker here.
const SHARDS: u16 = 2;
/// Kafka's UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;
/// Frame read timeout the brokers here run with (a partial frame held open is closed after it).
const FRAME_READ_TIMEOUT: &str = "3s";

fn broker() -> Server {
    kafka::server(SHARDS, &["--frame-read-timeout", FRAME_READ_TIMEOUT])
}

/// A well-behaved connection, used before the attack and again after it.
fn bystander(server: &Server) -> RawClient {
    let mut client = RawClient::connect(server.addr()).expect("connect the bystander");
    round_trip_on(&mut client, SHARDS);
    client
}

/// After an attack: the broker runs, the bystander still works, fresh connections too.
fn still_serves(server: &mut Server, bystander: &mut RawClient, what: &str) {
    server.assert_running();
    round_trip_on(bystander, SHARDS);
    round_trip(server.addr(), SHARDS);
    round_trip(server.node_addr(SHARDS - 1), SHARDS);
    server.assert_running();
    eprintln!("{what}: the broker still serves");
}

/// Sends `bytes` on a fresh connection, half-closes it when `then_close`, and returns how the
/// connection ended, within the read timeout.
fn attack(server: &Server, bytes: &[u8], then_close: bool) -> Ending {
    let mut client = RawClient::connect(server.addr()).expect("connect the attacker");
    client.send(bytes).expect("send the attack");
    if then_close {
        client.stream.shutdown(Shutdown::Write).expect("half-close");
    }
    client.ending()
}

fn assert_closed(ending: Ending, what: &str) {
    eprintln!("{what}: {ending:?}");
    assert!(matches!(ending, Ending::Closed), "{what}: the server answered {ending:?}");
}

/// A valid ApiVersions v3 frame.
fn api_versions_frame(correlation_id: i32) -> Vec<u8> {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("hostile"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    request_frame(3, correlation_id, &request)
}

#[test]
fn bad_framing_closes_only_its_connection() {
    let mut server = broker();
    let mut other = bystander(&server);

    // Garbage: a seeded byte sequence whose first word is a small size, then a close.
    let mut state = 0x2545_f491_u32;
    let mut garbage: Vec<u8> = (0..512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    garbage[..4].copy_from_slice(&200_u32.to_be_bytes());
    assert_closed(attack(&server, &garbage, true), "garbage with a small size");
    still_serves(&mut server, &mut other, "garbage");

    // Random bytes with no size discipline at all (a huge or odd first word).
    let mut noise = garbage.clone();
    noise[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert_closed(attack(&server, &noise, false), "noise with a huge first word");
    still_serves(&mut server, &mut other, "noise");

    // A valid frame cut short, then a close.
    let whole = api_versions_frame(1);
    for cut in [1, 3, 4, 7, 11, whole.len() - 1] {
        assert_closed(attack(&server, &whole[..cut], true), &format!("frame cut at {cut}"));
    }
    still_serves(&mut server, &mut other, "truncated");

    // A huge length prefix: refused on sight, without waiting for (or reserving) the body.
    let started = Instant::now();
    assert_closed(attack(&server, &0x7fff_ffff_u32.to_be_bytes(), false), "length 0x7fffffff");
    assert_closed(attack(&server, &u32::MAX.to_be_bytes(), false), "length 0xffffffff");
    assert!(started.elapsed() < Duration::from_secs(5), "huge lengths took {:?}", started.elapsed());
    still_serves(&mut server, &mut other, "huge length");

    // A size below a request header's fixed part, whole.
    let mut tiny = 3_u32.to_be_bytes().to_vec();
    tiny.extend_from_slice(&[0, 18, 0]);
    assert_closed(attack(&server, &tiny, false), "3-byte frame");
    let empty = 0_u32.to_be_bytes();
    assert_closed(attack(&server, &empty, false), "0-byte frame");
    still_serves(&mut server, &mut other, "tiny frames");
}

#[test]
fn slow_and_stalled_senders() {
    let mut server = broker();
    let mut other = bystander(&server);

    // One byte at a time, 15 ms apart: the answer still comes, and the connection goes on.
    let mut slow = RawClient::connect(server.addr()).expect("connect");
    let correlation_id = slow.next_correlation_id();
    for byte in api_versions_frame(correlation_id) {
        slow.send(&[byte]).expect("send a byte");
        std::thread::sleep(Duration::from_millis(15));
    }
    let (answered, response) = decode_response::<ApiVersionsRequest>(3, slow.read_frame().expect("answer"));
    assert_eq!((answered, response.error_code), (correlation_id, 0), "the slow frame's answer");
    round_trip_on(&mut slow, SHARDS);
    still_serves(&mut server, &mut other, "byte by byte");

    // A frame's size and part of its body, then nothing: closed after the frame read timeout.
    let mut stalled = RawClient::connect(server.addr()).expect("connect");
    let whole = api_versions_frame(1);
    stalled.send(&whole[..whole.len() / 2]).expect("send half a frame");
    let started = Instant::now();
    assert_closed(stalled.ending(), "half a frame held open");
    eprintln!("the stalled connection was closed after {:?}", started.elapsed());
    still_serves(&mut server, &mut other, "stalled");
}

/// A request frame with its API key rewritten to `key`.
fn with_key(mut frame: Vec<u8>, key: i16) -> Vec<u8> {
    frame[4..6].copy_from_slice(&key.to_be_bytes());
    frame
}

#[test]
fn requests_the_listener_does_not_serve() {
    let mut server = broker();
    let mut other = bystander(&server);

    // Unknown API keys: no response body exists for them; the connection closes (as Kafka's
    // does). An answer carrying the correlation id would be acceptable too: print which.
    for key in [9999_i16, -1, 67, i16::MAX] {
        let ending = attack(&server, &with_key(api_versions_frame(77), key), false);
        eprintln!("API key {key}: {ending:?}");
        if let Ending::Answered(frame) = ending {
            assert_eq!(frame.get(..4), Some(&77_i32.to_be_bytes()[..]), "key {key}'s answer");
        }
    }
    still_serves(&mut server, &mut other, "unknown keys");

    // ApiVersions at version 99 (KIP-511): answered at v0 with error 35 and the served ranges,
    // and the connection goes on at a served version.
    let mut client = RawClient::connect(server.addr()).expect("connect");
    let mut frame = api_versions_frame(5);
    frame[6..8].copy_from_slice(&99_i16.to_be_bytes());
    client.send(&frame).expect("send ApiVersions v99");
    let (answered, response) = decode_response::<ApiVersionsRequest>(0, client.read_frame().expect("answer"));
    assert_eq!((answered, response.error_code), (5, UNSUPPORTED_VERSION), "ApiVersions v99's answer");
    let served = response.api_keys.iter().find(|api| api.api_key == ApiKey::ApiVersions as i16);
    let served = served.expect("the answer lists ApiVersions");
    assert!((served.min_version, served.max_version) == (0, 3), "ApiVersions range {served:?}");
    for key in [ApiKey::Produce, ApiKey::Fetch, ApiKey::Metadata, ApiKey::SaslAuthenticate] {
        assert!(response.api_keys.iter().any(|api| api.api_key == key as i16), "{key:?} is not listed");
    }
    round_trip_on(&mut client, SHARDS);

    // A served key at an unserved version (Metadata v99): an error answer or a close, alone.
    let mut metadata = request_frame(9, 6, &MetadataRequest::default());
    metadata[6..8].copy_from_slice(&99_i16.to_be_bytes());
    let ending = attack(&server, &metadata, false);
    eprintln!("Metadata v99: {ending:?}");
    still_serves(&mut server, &mut other, "unserved versions");
}

#[test]
fn huge_array_counts_are_not_allocations() {
    let mut server = broker();
    let mut other = bystander(&server);
    let rss_before = server.broker.rss_kib();

    // Metadata v1 (classic encoding): the topics array claims i32::MAX entries, then ends.
    let mut classic = BytesMut::new();
    classic.put_i16(ApiKey::Metadata as i16);
    classic.put_i16(1);
    classic.put_i32(11);
    classic.put_i16(-1); // null client id
    classic.put_i32(i32::MAX);
    let mut frame = (classic.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&classic);
    let ending = attack(&server, &frame, false);
    eprintln!("Metadata v1 with 2^31-1 topics: {ending:?}");
    still_serves(&mut server, &mut other, "classic array count");

    // Metadata v9 (flexible): header v2 with an empty tag buffer, then a compact array whose
    // unsigned varint count is 2^31 - 1 + 1.
    let mut flexible = BytesMut::new();
    flexible.put_i16(ApiKey::Metadata as i16);
    flexible.put_i16(9);
    flexible.put_i32(12);
    flexible.put_i16(-1); // null client id (header v2 keeps a classic string)
    flexible.put_u8(0); // no tagged fields
    flexible.put_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]); // varint 2^31
    let mut frame = (flexible.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&flexible);
    let ending = attack(&server, &frame, false);
    eprintln!("Metadata v9 with 2^31-1 topics: {ending:?}");
    still_serves(&mut server, &mut other, "compact array count");

    if let (Some(before), Some(after)) = (rss_before, server.broker.rss_kib()) {
        eprintln!("broker RSS {before} KiB before, {after} KiB after");
        assert!(after < before + 256 * 1024, "RSS grew from {before} KiB to {after} KiB");
    }
}

/// One keyed record with a header, for a batch to corrupt.
fn record(offset: i64) -> Record {
    let mut record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp: 1_700_000_000_000 + offset,
        key: Some(Bytes::from(format!("key-{offset}"))),
        value: Some(Bytes::from(format!("value-{offset}"))),
        headers: Default::default(),
    };
    record.headers.insert(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"v")));
    record
}

/// A RecordBatch v2 of three records.
fn batch() -> Vec<u8> {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut out, &[record(0), record(1), record(2)], &options).expect("encode");
    out.to_vec()
}

/// Produce v7 of `records` to partition 0 of `topic`; the partition's error code.
fn produce(client: &mut RawClient, topic: &str, records: Vec<u8>) -> i16 {
    let partition = PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(records)));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![partition]);
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![topic]);
    let response: ProduceResponse = client.request(7, &request).expect("a Produce answer");
    let partition = response.responses.first().and_then(|topic| topic.partition_responses.first());
    partition.expect("the answer names the partition").error_code
}

#[test]
fn broken_record_batches_are_refused_with_an_error_code() {
    let mut server = broker();
    let mut other = bystander(&server);
    let mut client = RawClient::connect(server.addr()).expect("connect");
    // Metadata v1 auto-creates the topic (one partition by default).
    let metadata = client.metadata(1, Some(&["hostile-records"])).expect("Metadata");
    assert_eq!(metadata.topics.first().map(|t| t.error_code), Some(0), "auto-created: {metadata:?}");

    let good = batch();
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff; // a value byte: the CRC-32C no longer matches
    let mut huge_count = good.clone();
    huge_count[57..61].copy_from_slice(&i32::MAX.to_be_bytes()); // records count
    let mut bad_length = good.clone();
    bad_length[8..12].copy_from_slice(&0x7fff_fff0_i32.to_be_bytes()); // batch length
    let mut bad_magic = good.clone();
    bad_magic[16] = 7;
    let cases: [(&str, Vec<u8>); 6] = [
        ("bad CRC", bad_crc),
        ("2^31-1 records claimed", huge_count),
        ("batch length past the end", bad_length),
        ("magic 7", bad_magic),
        ("cut batch", good[..good.len() / 2].to_vec()),
        ("garbage", vec![0x5a; 100]),
    ];
    for (what, records) in cases {
        let code = produce(&mut client, "hostile-records", records);
        eprintln!("Produce of a {what}: error code {code}");
        assert_ne!(code, 0, "a {what} was accepted");
    }
    round_trip_on(&mut client, SHARDS);
    still_serves(&mut server, &mut other, "broken record batches");
}

#[test]
fn nothing_but_sasl_before_authentication() {
    let mut server = kafka::server(SHARDS, &["--root-password", "s3cret-root"]);
    // With a root password, loopback connections must authenticate: ApiVersions is answered,
    // Metadata before SASL closes the connection.
    let mut client = RawClient::connect(server.addr()).expect("connect");
    let versions = client.api_versions(3).expect("ApiVersions before SASL");
    assert_eq!(versions.error_code, 0);
    client.send(&request_frame(9, 2, &MetadataRequest::default())).expect("send Metadata");
    assert_closed(client.ending(), "Metadata before SASL");
    server.assert_running();
}
