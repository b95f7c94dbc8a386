//! The seed corpus: a handful of small, real inputs per target (encoded frames of the common
//! request kinds, batches built by `BatchBuilder`, a metadata log of real ops, a partition log
//! with its index files), in each harness's input layout.
//!
//! Deterministic: the same build gives the same bytes (explicit timestamps, a fixed password
//! hash). `fuzz/corpus/<target>/seed-*` are these seeds, written by
//! `RINGBROKER_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml --lib`; without the
//! variable that test checks the checked-in files still equal them.

use ringbroker::metadata::catalog::{
    CreateStreamOp, CreateTopicOp, CreateUserOp, GroupOp, MetadataOp, PartitionsOp, SetPermissionsOp,
};
use ringbroker::protocol::batch::{patch_server_fields, BatchBuilder, Message};
use ringbroker::protocol::frame::encode_frame;
use ringbroker::protocol::messages::{self as m, Kind};
use ringbroker::storage::index::SegmentIndex;

/// Fuzz target names, in the order `scripts/fuzz.sh` runs them.
pub const TARGETS: [&str; 4] = ["frame_decode", "batch_validate", "metadata_replay", "segment_recovery"];

/// A well-formed argon2id PHC string (cost within the limits replay enforces); no password hashes
/// to it, which replay does not need.
const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Every seed as (target, file name, bytes).
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in frames() {
        out.push(("frame_decode", format!("seed-{name}"), bytes));
    }
    for (name, bytes) in batches() {
        out.push(("batch_validate", format!("seed-{name}"), bytes));
    }
    for (name, bytes) in metadata() {
        out.push(("metadata_replay", format!("seed-{name}"), bytes));
    }
    for (name, bytes) in segments() {
        out.push(("segment_recovery", format!("seed-{name}"), bytes));
    }
    out
}

fn body<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    m::encode(value).expect("encode a seed body").to_vec()
}

/// `[selector][flags][frame]` for a request of `kind`.
fn frame(selector: u8, flags: u8, kind: Kind, status: u16, body: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![selector, flags];
    out.extend_from_slice(&encode_frame(kind as u16, 42, status, body, payload));
    out
}

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let topic_config = m::TopicConfig {
        partitions: 4,
        retention_max_age_us: Some(7 * 24 * 3600 * 1_000_000),
        retention_max_bytes: None,
        segment_bytes: Some(64 * 1024 * 1024),
    };
    let produce = m::ProduceRequest {
        stream: "orders".into(),
        topic: "created".into(),
        partitioning: m::Partitioning::Key(b"customer-42".to_vec()),
        batch_count: 1,
    };
    let poll = m::PollRequest {
        stream: "orders".into(),
        topic: "created".into(),
        target: m::PollTarget::Group(m::GroupTarget { group: "billing".into(), member_id: 7 }),
        strategy: m::PollStrategy::Next,
        max_messages: 100,
        max_bytes: 1 << 20,
        max_wait_ms: 500,
        auto_commit: true,
        filter: vec!["eu".into()],
        match_unfiltered: true,
    };
    let poll_response = m::PollResponse {
        partitions: vec![m::PolledPartition {
            partition: 3,
            start_offset: 5,
            next_offset: 7,
            high_watermark: 9,
            payload_bytes: 0,
            removed: vec![[5, 6]],
        }],
    };
    let permissions =
        vec![m::StreamPermission { stream: "orders".into(), read: true, write: false, manage: false }];
    vec![
        ("ping", frame(0, 0, Kind::Ping, 0, &body(&m::Empty {}), &[])),
        (
            "login",
            frame(
                1,
                0,
                Kind::Login,
                0,
                &body(&m::LoginRequest { user: "root".into(), password: "pw".into() }),
                &[],
            ),
        ),
        (
            "user-create",
            frame(
                2,
                0,
                Kind::UserCreate,
                0,
                &body(&m::CreateUser {
                    name: "alice".into(),
                    password: "s3cret".into(),
                    admin: false,
                    permissions,
                }),
                &[],
            ),
        ),
        (
            "topic-create",
            frame(
                6,
                1,
                Kind::TopicCreate,
                0,
                &body(&m::CreateTopic {
                    stream: "orders".into(),
                    name: "created".into(),
                    config: topic_config,
                    policy: Default::default(),
                    if_missing: true,
                }),
                &[],
            ),
        ),
        ("produce", frame(9, 0, Kind::Produce, 0, &body(&produce), &sample_batch())),
        ("poll", frame(10, 0, Kind::Poll, 0, &body(&poll), &[])),
        (
            "offset-store",
            frame(
                11,
                0,
                Kind::OffsetStore,
                0,
                &body(&m::StoreOffset {
                    stream: "orders".into(),
                    topic: "created".into(),
                    partition: 1,
                    consumer: m::ConsumerRef::Named("audit".into()),
                    offset: 99,
                }),
                &[],
            ),
        ),
        (
            "group-join",
            frame(
                14,
                0,
                Kind::GroupJoin,
                0,
                &body(&m::JoinGroup {
                    stream: "orders".into(),
                    topic: "created".into(),
                    group: "billing".into(),
                    create_if_missing: true,
                    session_timeout_ms: 10_000,
                }),
                &[],
            ),
        ),
        (
            "stats",
            frame(16, 0, Kind::Stats, 0, &body(&m::StatsRequest { stream: Some("orders".into()) }), &[]),
        ),
        ("poll-response", frame(27, 0, Kind::Poll, 0, &body(&poll_response), &[])),
    ]
}

/// A batch with every record part: key, filter value, headers, payloads, two timestamps.
pub fn sample_batch() -> Vec<u8> {
    let headers: [(&[u8], &[u8]); 2] = [(b"h", b"v"), (b"trace", b"0af7651916cd43dd")];
    let messages = [
        Message {
            key: Some(b"k"),
            filter_value: Some(b"f"),
            headers: &headers[..1],
            payload: b"hi",
            timestamp_us: Some(1_000_000),
        },
        Message { timestamp_us: Some(1_000_002), ..Message::payload(b"") },
        Message {
            key: Some(b""),
            filter_value: Some(b"eu-west"),
            headers: &headers,
            payload: b"a longer payload with some text in it",
            timestamp_us: Some(1_000_500),
        },
    ];
    build(0x0102_0304_0506_0708, 9, &messages)
}

fn build(producer_id: u64, sequence: u64, messages: &[Message<'_>]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(producer_id, sequence);
    for message in messages {
        builder.push(message).expect("push a seed message");
    }
    builder.finish().expect("finish a seed batch")
}

fn payload_batch(count: u32, size: usize, first_timestamp_us: u64) -> Vec<u8> {
    let payload = vec![b'x'; size];
    let messages: Vec<Message<'_>> = (0..count)
        .map(|i| Message {
            timestamp_us: Some(first_timestamp_us + u64::from(i)),
            ..Message::payload(&payload)
        })
        .collect();
    build(0, 0, &messages)
}

fn batches() -> Vec<(&'static str, Vec<u8>)> {
    let with_flags = |flags: u8, bytes: &[u8]| {
        let mut out = vec![flags];
        out.extend_from_slice(bytes);
        out
    };
    let mut patched = sample_batch();
    patch_server_fields(&mut patched, 5, 6);
    let mut two = payload_batch(3, 10, 50);
    two.extend_from_slice(&patched);
    let torn = &patched[..patched.len() - 7];
    vec![
        ("every-part", with_flags(0, &sample_batch())),
        ("every-part-fix-crc", with_flags(1, &sample_batch())),
        ("patched", with_flags(0, &patched)),
        ("payload-only", with_flags(0, &payload_batch(4, 16, 1_700_000_000_000_000))),
        ("two-batches", with_flags(1, &two)),
        ("torn", with_flags(0, torn)),
    ]
}

fn metadata_ops() -> Vec<MetadataOp> {
    vec![
        MetadataOp::CreateUser(CreateUserOp {
            name: "ringbroker".into(),
            password_hash: PASSWORD_HASH.into(),
            admin: true,
            permissions: Vec::new(),
        }),
        MetadataOp::CreateStream(CreateStreamOp { name: "orders".into(), created_us: 1_000 }),
        MetadataOp::CreateTopic(CreateTopicOp {
            stream: "orders".into(),
            name: "created".into(),
            config: m::TopicConfig { partitions: 2, ..m::TopicConfig::default() },
            created_us: 2_000,
        }),
        MetadataOp::AddPartitions(PartitionsOp {
            stream: "orders".into(),
            topic: "created".into(),
            count: 1,
        }),
        MetadataOp::CreateGroup(GroupOp {
            stream: "orders".into(),
            topic: "created".into(),
            group: "billing".into(),
        }),
        MetadataOp::SetPermissions(SetPermissionsOp {
            user: "ringbroker".into(),
            permissions: vec![m::StreamPermission {
                stream: "*".into(),
                read: true,
                write: true,
                manage: true,
            }],
        }),
    ]
}

/// The op list in `metadata_replay` mode 1 layout (without the mode byte).
fn op_sections(ops: &[MetadataOp]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(op).expect("archive a seed op");
        out.extend_from_slice(&u16::try_from(bytes.len()).expect("small op").to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// The metadata log file holding `ops`, as the broker writes it.
fn metadata_log(ops: &[MetadataOp]) -> Vec<u8> {
    let mut log = Vec::new();
    for (offset, op) in (0_u64..).zip(ops) {
        let payload = rkyv::to_bytes::<rkyv::rancor::Error>(op).expect("archive a seed op");
        let message = Message { timestamp_us: Some(1_000_000 + offset), ..Message::payload(&payload) };
        let mut bytes = build(ringbroker::metadata::log::METADATA_OP_FORMAT_VERSION, 0, &[message]);
        patch_server_fields(&mut bytes, offset, 2_000_000 + offset);
        log.extend_from_slice(&bytes);
    }
    log
}

fn metadata() -> Vec<(&'static str, Vec<u8>)> {
    let ops = metadata_ops();
    let with_mode = |mode: u8, bytes: Vec<u8>| {
        let mut out = vec![mode];
        out.extend_from_slice(&bytes);
        out
    };
    let mut torn = metadata_log(&ops);
    torn.truncate(torn.len() - 10);
    vec![
        ("ops", with_mode(1, op_sections(&ops))),
        ("ops-two", with_mode(1, op_sections(&ops[..2]))),
        ("raw-log", with_mode(0, metadata_log(&ops))),
        ("raw-log-torn", with_mode(0, torn)),
    ]
}

/// `segment_recovery` layout for a first segment with `log` and its index files, and a second
/// segment log.
fn segment_input(flags: u8, base: u8, log: &[u8], index: (&[u8], &[u8]), second: &[u8]) -> Vec<u8> {
    let mut out = vec![flags, base];
    for section in [log, index.0, index.1] {
        out.extend_from_slice(&u16::try_from(section.len()).expect("small section").to_le_bytes());
        out.extend_from_slice(section);
    }
    out.extend_from_slice(second);
    out
}

/// A log of `count` small batches from `base` on, and its index files for `interval` bytes.
fn segment_files(base: u64, count: u64, interval: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>, u64) {
    let mut log = Vec::new();
    let mut index = SegmentIndex::new(base, interval);
    let mut offset = base;
    for i in 0..count {
        let mut bytes = payload_batch(1 + (i % 3) as u32, 24, 1_000_000 + i * 10);
        let append_us = 5_000_000 + i;
        patch_server_fields(&mut bytes, offset, append_us);
        index.observe(offset, log.len() as u64, append_us);
        offset += 1 + i % 3;
        log.extend_from_slice(&bytes);
    }
    let mut offset_file = index.encode_header(false).to_vec();
    index.encode_offset_entries(0, &mut offset_file);
    let mut time_file = index.encode_header(true).to_vec();
    index.encode_time_entries(0, &mut time_file);
    (log, offset_file, time_file, offset)
}

fn segments() -> Vec<(&'static str, Vec<u8>)> {
    // Flag bit 3: 64-byte index interval, as the index files below were written with.
    let (log, offsets, times, next) = segment_files(0, 6, 64);
    let (second, ..) = segment_files(next, 2, 64);
    let mut torn = log.clone();
    torn.truncate(log.len() - 30);
    torn.resize(log.len() + 200, 0);
    let base_5000 = (5 << 2) | 1;
    let (log_5000, offsets_5000, times_5000, _) = segment_files(5000, 3, 4096);
    vec![
        ("clean", segment_input(8, 0, &log, (&offsets, &times), &[])),
        ("two-segments", segment_input(8, 0, &log, (&offsets, &times), &second)),
        ("torn-zero-tail", segment_input(8, 0, &torn, (&offsets, &times), &[])),
        ("no-index", segment_input(0, 0, &log, (&[], &[]), &[])),
        ("base-5000", segment_input(0, base_5000, &log_5000, (&offsets_5000, &times_5000), &[])),
    ]
}
