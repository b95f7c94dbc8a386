//! Property tests (stable toolchain, proptest) over the decoders that read untrusted bytes: the
//! frame header, the rkyv request bodies, the message batch and its iterators, and the segment
//! index files. The same decoders are fuzzed by `fuzz/` (docs/fuzzing.md); this file is the
//! quick check every `cargo test` runs, and it keeps every input the fuzzers found as a
//! regression test (`regression_*`).
//!
//! Properties: arbitrary bytes never make a decoder panic; encode → decode is the identity for
//! frames, bodies, batches and index files; a truncated or bit-flipped frame header or batch is
//! refused with an error (the CRC catches what the structure checks do not).
//!
//! Invariant of this file: it stays under ~10 s in a debug build (256 cases per property; the
//! per-case work is bounded by the generators' sizes).

use proptest::prelude::*;
use ringbroker::protocol::batch::{
    self, patch_server_fields, validate, BatchBuilder, BatchError, BatchHeader, Message, BATCH_HEADER_BYTES,
};
use ringbroker::protocol::frame::{encode_frame, FrameError, FrameHeader, FRAME_HEADER_BYTES};
use ringbroker::protocol::messages::{self as m, decode, encode};
use ringbroker::storage::index::SegmentIndex;
use rkyv::util::AlignedVec;

/// Byte range of the two server-assigned batch header fields, which the CRC does not cover.
const SERVER_FIELDS: std::ops::Range<usize> = 16..32;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

fn aligned(bytes: &[u8]) -> AlignedVec<16> {
    let mut out = AlignedVec::<16>::with_capacity(bytes.len());
    out.extend_from_slice(bytes);
    out
}

/// An owned message for the generators; [`OwnedMessage::as_message`] borrows it.
#[derive(Debug, Clone)]
struct OwnedMessage {
    key: Option<Vec<u8>>,
    filter_value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    payload: Vec<u8>,
    timestamp_delta_us: u32,
}

fn message_strategy() -> impl Strategy<Value = OwnedMessage> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(any::<u8>(), 0..24)),
            0..4,
        ),
        proptest::collection::vec(any::<u8>(), 0..200),
        prop_oneof![Just(0_u32), 0..1000_u32, any::<u32>()],
    )
        .prop_map(|(key, filter_value, headers, payload, timestamp_delta_us)| OwnedMessage {
            key,
            filter_value,
            headers,
            payload,
            timestamp_delta_us,
        })
}

/// Builds a batch of `messages` (record `i` at `first_us + delta_i`, record 0 at `first_us`).
fn build(producer_id: u64, sequence: u32, first_us: u64, messages: &[OwnedMessage]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(producer_id, u64::from(sequence));
    for (i, owned) in messages.iter().enumerate() {
        let headers: Vec<(&[u8], &[u8])> = owned.headers.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let delta = if i == 0 { 0 } else { u64::from(owned.timestamp_delta_us) };
        let message = Message {
            key: owned.key.as_deref(),
            filter_value: owned.filter_value.as_deref(),
            headers: &headers,
            payload: &owned.payload,
            timestamp_us: Some(first_us + delta),
        };
        builder.push(&message).expect("generated messages are within the limits");
    }
    builder.finish().expect("at least one message")
}

fn batch_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<OwnedMessage>, u64)> {
    (
        any::<u64>(),
        any::<u32>(),
        0..(u64::MAX / 2),
        proptest::collection::vec(message_strategy(), 1..6),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(producer_id, sequence, first_us, messages, base, append_us)| {
            let mut bytes = build(producer_id, sequence, first_us, &messages);
            patch_server_fields(&mut bytes, u64::from(base), append_us);
            (bytes, messages, first_us)
        })
}

fn frame_strategy() -> impl Strategy<Value = (u16, u64, u16, Vec<u8>, Vec<u8>)> {
    (
        any::<u16>(),
        any::<u64>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..100),
        proptest::collection::vec(any::<u8>(), 0..100),
    )
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{0,20}|\\PC{0,8}"
}

fn poll_request() -> impl Strategy<Value = m::PollRequest> {
    let target = prop_oneof![
        (any::<u32>(), name()).prop_map(|(partition, consumer)| m::PollTarget::Partition(
            m::PartitionTarget { partition, consumer }
        )),
        (name(), any::<u64>())
            .prop_map(|(group, member_id)| m::PollTarget::Group(m::GroupTarget { group, member_id })),
    ];
    let strategy = prop_oneof![
        any::<u64>().prop_map(m::PollStrategy::Offset),
        any::<u64>().prop_map(m::PollStrategy::Timestamp),
        Just(m::PollStrategy::First),
        Just(m::PollStrategy::Last),
        Just(m::PollStrategy::Next),
    ];
    let limits = (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>());
    let filter = (proptest::collection::vec(name(), 0..4), any::<bool>());
    (name(), name(), target, strategy, limits, filter).prop_map(
        |(stream, topic, target, strategy, limits, (filter, match_unfiltered))| {
            let (max_messages, max_bytes, max_wait_ms, auto_commit) = limits;
            m::PollRequest {
                stream,
                topic,
                target,
                strategy,
                max_messages,
                max_bytes,
                max_wait_ms,
                auto_commit,
                filter,
                match_unfiltered,
            }
        },
    )
}

fn create_topic() -> impl Strategy<Value = m::CreateTopic> {
    (
        name(),
        name(),
        any::<u32>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
    )
        .prop_map(|(stream, name, partitions, age, bytes, segment, if_missing)| m::CreateTopic {
            stream,
            name,
            config: m::TopicConfig {
                partitions,
                retention_max_age_us: age,
                retention_max_bytes: bytes,
                segment_bytes: segment,
            },
            policy: Default::default(),
            if_missing,
        })
}

fn produce_request() -> impl Strategy<Value = m::ProduceRequest> {
    let partitioning = prop_oneof![
        Just(m::Partitioning::Balanced),
        any::<u32>().prop_map(m::Partitioning::Partition),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(m::Partitioning::Key),
    ];
    (name(), name(), partitioning, any::<u32>()).prop_map(|(stream, topic, partitioning, batch_count)| {
        m::ProduceRequest { stream, topic, partitioning, batch_count }
    })
}

fn create_user() -> impl Strategy<Value = m::CreateUser> {
    let permission = (name(), any::<bool>(), any::<bool>(), any::<bool>())
        .prop_map(|(stream, read, write, manage)| m::StreamPermission { stream, read, write, manage });
    (name(), name(), any::<bool>(), proptest::collection::vec(permission, 0..4))
        .prop_map(|(name, password, admin, permissions)| m::CreateUser { name, password, admin, permissions })
}

/// Decodes `bytes` as every request body type; only the absence of panics is checked.
fn decode_every_request(bytes: &[u8]) {
    let body = aligned(bytes);
    let _ = decode::<m::Empty>(&body);
    let _ = decode::<m::LoginRequest>(&body);
    let _ = decode::<m::CreateUser>(&body);
    let _ = decode::<m::NameRef>(&body);
    let _ = decode::<m::SetPermissions>(&body);
    let _ = decode::<m::CreateStream>(&body);
    let _ = decode::<m::CreateTopic>(&body);
    let _ = decode::<m::TopicRef>(&body);
    let _ = decode::<m::AddPartitions>(&body);
    let _ = decode::<m::ProduceRequest>(&body);
    let _ = decode::<m::PollRequest>(&body);
    let _ = decode::<m::StoreOffset>(&body);
    let _ = decode::<m::GetOffset>(&body);
    let _ = decode::<m::GroupRef>(&body);
    let _ = decode::<m::JoinGroup>(&body);
    let _ = decode::<m::MemberRef>(&body);
    let _ = decode::<m::StatsRequest>(&body);
    let _ = decode::<m::SuperStreamCreate>(&body);
    let _ = decode::<m::SuperStreamRef>(&body);
    let _ = decode::<m::SuperStreamRoute>(&body);
    let _ = decode::<ringbroker::protocol::subscriptions::Subscribe>(&body);
    let _ = decode::<ringbroker::protocol::subscriptions::Credit>(&body);
    let _ = decode::<ringbroker::protocol::subscriptions::Unsubscribe>(&body);
    let _ = decode::<ringbroker::protocol::subscriptions::Deliver>(&body);
    let _ = decode::<ringbroker::protocol::subscriptions::ConsumerUpdate>(&body);
    let _ = decode::<ringbroker::protocol::subscriptions::ConsumerUpdateAnswer>(&body);
    let _ = decode::<m::ProducerDeclare>(&body);
    let _ = decode::<m::ProducerRef>(&body);
    let _ = decode::<m::ProducerHeartbeat>(&body);
}

/// Runs every batch decoder over `bytes`; only the absence of panics is checked, plus that a
/// batch `validate` accepts iterates to its record count.
fn decode_batch_every_way(bytes: &[u8]) {
    let _ = BatchHeader::decode(bytes);
    if let Ok(found) = validate(bytes) {
        assert_eq!(found.records().count(), found.header().record_count as usize);
        for record in found.records() {
            assert_eq!(record.headers().count(), record.header_count());
        }
    }
    for found in batch::batches(bytes).map_while(Result::ok) {
        assert_eq!(found.records().count(), found.header().record_count as usize);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), limit in any::<usize>()) {
        let _ = FrameHeader::decode(&bytes, limit);
        decode_every_request(&bytes);
        decode_batch_every_way(&bytes);
    }

    #[test]
    fn batch_shaped_garbage_never_panics(
        (valid, _, _) in batch_strategy(),
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
        keep in 0..BATCH_HEADER_BYTES,
    ) {
        // A real header (so the record walk is reached) over garbage records, CRC made to fit.
        let mut bytes = valid[..BATCH_HEADER_BYTES].to_vec();
        bytes.extend_from_slice(&garbage);
        let length = bytes.len() as u32;
        bytes[8..12].copy_from_slice(&length.to_le_bytes());
        let crc = batch::crc32_of(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        decode_batch_every_way(&bytes);
        decode_batch_every_way(&bytes[keep..]);
    }

    #[test]
    fn frames_round_trip((kind, correlation, status, body, payload) in frame_strategy()) {
        let frame = encode_frame(kind, correlation, status, &body, &payload);
        let header = FrameHeader::decode(&frame, frame.len()).expect("an encoded frame decodes");
        prop_assert_eq!(header.length as usize, frame.len());
        prop_assert_eq!((header.kind, header.correlation, header.status), (kind, correlation, status));
        prop_assert_eq!(&frame[header.body_range()], &body[..]);
        prop_assert_eq!(&frame[header.payload_range()], &payload[..]);
        let too_large = matches!(FrameHeader::decode(&frame, frame.len() - 1), Err(FrameError::TooLarge { .. }));
        prop_assert!(too_large);
    }

    #[test]
    fn truncated_or_flipped_frame_headers_are_refused(
        (kind, correlation, status, body, payload) in frame_strategy(),
        cut in 0..FRAME_HEADER_BYTES,
        bit in 0..FRAME_HEADER_BYTES * 8,
    ) {
        let frame = encode_frame(kind, correlation, status, &body, &payload);
        prop_assert_eq!(FrameHeader::decode(&frame[..cut], usize::MAX), Err(FrameError::Short(cut)));
        let mut flipped = frame.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(FrameHeader::decode(&flipped, usize::MAX).is_err(), "flip of bit {}", bit);
    }

    #[test]
    fn bodies_round_trip(
        poll in poll_request(),
        topic in create_topic(),
        produce in produce_request(),
        user in create_user(),
    ) {
        prop_assert_eq!(decode::<m::PollRequest>(&encode(&poll).expect("encode")).expect("decode"), poll);
        prop_assert_eq!(decode::<m::CreateTopic>(&encode(&topic).expect("encode")).expect("decode"), topic);
        prop_assert_eq!(decode::<m::ProduceRequest>(&encode(&produce).expect("encode")).expect("decode"), produce);
        prop_assert_eq!(decode::<m::CreateUser>(&encode(&user).expect("encode")).expect("decode"), user);
    }

    #[test]
    fn truncated_bodies_never_panic(poll in poll_request(), cut in 0..256_usize) {
        let bytes = encode(&poll).expect("encode");
        decode_every_request(&bytes[..cut.min(bytes.len())]);
    }

    #[test]
    fn batches_round_trip((bytes, messages, first_us) in batch_strategy()) {
        let found = validate(&bytes).expect("a built batch validates");
        let header = *found.header();
        prop_assert_eq!(header.record_count as usize, messages.len());
        prop_assert_eq!(header.first_timestamp_us, first_us);
        for (i, (record, owned)) in found.records().zip(&messages).enumerate() {
            prop_assert_eq!(record.offset, header.base_offset + i as u64);
            let delta = if i == 0 { 0 } else { u64::from(owned.timestamp_delta_us) };
            prop_assert_eq!(record.timestamp_us, first_us + delta);
            prop_assert_eq!(record.key, owned.key.as_deref());
            prop_assert_eq!(record.filter_value, owned.filter_value.as_deref());
            prop_assert_eq!(record.payload, &owned.payload[..]);
            let headers: Vec<(Vec<u8>, Vec<u8>)> =
                record.headers().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(&headers, &owned.headers);
            if let Some(value) = record.filter_value {
                prop_assert!(header.might_contain_filter(value));
            }
        }
        prop_assert_eq!(BatchHeader::decode(&header.encode()), Ok(header));
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        let walked: Vec<_> = batch::batches(&twice).collect();
        prop_assert_eq!(walked.len(), 2);
        prop_assert!(walked.iter().all(Result::is_ok));
    }

    #[test]
    fn truncated_batches_are_refused((bytes, _, _) in batch_strategy(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(bytes.len());
        prop_assert!(validate(&bytes[..cut]).is_err());
        let walked: Vec<_> = batch::batches(&bytes[..cut]).collect();
        if cut > 0 {
            prop_assert_eq!(walked.len(), 1);
            let truncated = matches!(walked[0], Err(BatchError::Truncated { .. }));
            prop_assert!(truncated, "cut at {}: {:?}", cut, walked[0]);
        }
    }

    #[test]
    fn flipped_batches_are_refused((bytes, _, _) in batch_strategy(), bit in any::<prop::sample::Index>()) {
        let bit = bit.index(bytes.len() * 8);
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        if SERVER_FIELDS.contains(&(bit / 8)) {
            // Not covered by the CRC: the batch stays valid unless its offsets would overflow.
            if let Ok(found) = validate(&flipped) {
                prop_assert_eq!(found.records().count(), found.header().record_count as usize);
            }
        } else {
            prop_assert!(validate(&flipped).is_err(), "flip of bit {} accepted", bit);
        }
    }

    #[test]
    fn index_files_round_trip_and_never_panic(
        steps in proptest::collection::vec((1..50_u64, 1..5000_u64, 0..100_u64), 0..40),
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
        base in prop_oneof![Just(0_u64), any::<u32>().prop_map(u64::from), Just(u64::MAX - 100_000)],
    ) {
        let mut index = SegmentIndex::new(base, 1024);
        let (mut offset, mut position, mut timestamp) = (base, 0_u64, 1_000_u64);
        for (records, bytes, later) in steps {
            index.observe(offset, position, timestamp);
            offset += records;
            position += bytes;
            timestamp += later;
        }
        let mut offsets = index.encode_header(false).to_vec();
        index.encode_offset_entries(0, &mut offsets);
        let mut times = index.encode_header(true).to_vec();
        index.encode_time_entries(0, &mut times);
        let back = SegmentIndex::decode(base, 1024, &offsets, &times, u64::MAX);
        prop_assert_eq!(back.entries(), index.entries());
        let _ = back.lookup_offset(u64::MAX);
        let _ = back.lookup_timestamp(u64::MAX);
        offsets.extend_from_slice(&garbage);
        let mixed = SegmentIndex::decode(base, 1024, &offsets, &garbage, position);
        let _ = mixed.lookup_offset(offset);
        let _ = SegmentIndex::decode(base, 1024, &garbage, &times, position);
    }
}

/// Index files of a segment whose base offset is near `u64::MAX`, with a second entry whose
/// relative offset would carry the absolute offset past `u64::MAX`.
fn overflowing_index_files(base: u64) -> (Vec<u8>, Vec<u8>) {
    let index = SegmentIndex::new(base, 1);
    let mut offsets = index.encode_header(false).to_vec();
    let mut times = index.encode_header(true).to_vec();
    for (relative, position) in [(0_u32, 0_u32), (10, 200)] {
        offsets.extend_from_slice(&relative.to_le_bytes());
        offsets.extend_from_slice(&position.to_le_bytes());
        times.extend_from_slice(&7_u64.to_le_bytes());
        times.extend_from_slice(&relative.to_le_bytes());
        times.extend_from_slice(&0_u32.to_le_bytes());
    }
    (offsets, times)
}

/// Found by reading `SegmentIndex::decode` for the `segment_recovery` target: an index entry past
/// `u64::MAX - base` was kept, and looking it up overflowed (a panic with overflow checks on,
/// which fuzz builds have; a wrong offset without).
#[test]
fn regression_index_entry_past_u64_max_is_dropped() {
    let base = u64::MAX - 5;
    let (offsets, times) = overflowing_index_files(base);
    let index = SegmentIndex::decode(base, 1, &offsets, &times, 1 << 20);
    assert_eq!(index.entries().len(), 1, "the overflowing entry is dropped");
    assert_eq!(index.lookup_offset(u64::MAX), (base, 0));
}
