//! The `frame_decode` harness: frame headers (`FrameHeader::decode`) and the rkyv bodies of
//! every request kind (`messages::decode::<T>`), as the server reads them off a connection.
//!
//! Input layout: `[body type selector][flags][bytes...]`.
//! * `bytes` is read as a frame: its header is decoded with the limit the flags pick, and when
//!   the header is accepted and the frame is whole, the body is decoded as the type of the frame's
//!   kind (what the server does), and a produce payload is split into batches.
//! * `bytes` is also decoded directly as the body type the selector picks (one of
//!   [`BODY_TYPES`]), so libFuzzer can explore rkyv bodies without building frames.
//! * Flag bit 0 rewrites the header CRC before decoding, so mutations get past the CRC and reach
//!   the length and version checks.
//!
//! Properties checked (a failure panics, which libFuzzer reports as a crash): no decoder panics;
//! an accepted header re-encodes to the same 32 bytes and its lengths add up within the limit;
//! an accepted body re-encodes and decodes to an equal value.

use ringbroker::protocol::batch;
use ringbroker::protocol::durable as d;
use ringbroker::protocol::frame::{pad16, FrameHeader, FRAME_HEADER_BYTES};
use ringbroker::protocol::messages::{self as m, Kind};
use ringbroker::protocol::subscriptions as s;

/// Number of body types the selector byte chooses from.
pub const BODY_TYPES: u8 = 33;

/// Flag bit: rewrite the frame header CRC before decoding.
pub const FLAG_FIX_CRC: u8 = 1;

/// The frame limits flag bits 1-2 choose from.
const MAX_FRAME_BYTES: [usize; 4] = [usize::MAX, 1 << 20, 64, 0];

/// Runs one input. See the module documentation.
pub fn run(data: &[u8]) {
    let [selector, flags, rest @ ..] = data else { return };
    let mut frame = rest.to_vec();
    if flags & FLAG_FIX_CRC != 0 && frame.len() >= FRAME_HEADER_BYTES {
        let crc = crc32_of_header(&frame);
        frame[28..32].copy_from_slice(&crc.to_le_bytes());
    }
    let max_frame_bytes = MAX_FRAME_BYTES[usize::from((flags >> 1) & 3)];
    if let Ok(header) = FrameHeader::decode(&frame, max_frame_bytes) {
        check_frame(&header, &frame, max_frame_bytes);
    }
    decode_as(*selector % BODY_TYPES, rest);
}

/// CRC32 of the first 28 bytes of a frame header (what its `header_crc` field holds).
pub fn crc32_of_header(frame: &[u8]) -> u32 {
    crc32fast::hash(&frame[..28])
}

fn check_frame(header: &FrameHeader, frame: &[u8], max_frame_bytes: usize) {
    let length = header.length as usize;
    assert!(length <= max_frame_bytes, "accepted a frame over the limit");
    let parts = FRAME_HEADER_BYTES as u64
        + pad16(header.body_bytes as usize) as u64
        + u64::from(header.payload_bytes);
    assert_eq!(parts, u64::from(header.length), "accepted lengths that do not add up");
    let again = FrameHeader::new(
        header.kind,
        header.correlation,
        header.status,
        header.body_bytes as usize,
        header.payload_bytes as usize,
    );
    assert_eq!(&again.encode()[..], &frame[..FRAME_HEADER_BYTES], "header does not re-encode to itself");
    assert_eq!(FrameHeader::decode(&again.encode(), max_frame_bytes).as_ref(), Ok(header));
    // The connection reads exactly `length` bytes; only a whole frame goes on.
    let Some(frame) = frame.get(..length) else { return };
    let (body_range, payload_range) = (header.body_range(), header.payload_range());
    assert!(body_range.end <= payload_range.start && payload_range.end == length);
    let body = &frame[body_range];
    let payload = &frame[payload_range];
    let Some(kind) = Kind::from_u16(header.kind) else { return };
    decode_request(kind, body);
    if kind == Kind::Produce {
        for found in batch::batches(payload) {
            if found.is_err() {
                break;
            }
        }
    }
}

/// Decodes `body` as the request type of `kind`, as the server's handlers do.
pub fn decode_request(kind: Kind, body: &[u8]) {
    match kind {
        Kind::Ping | Kind::Metadata | Kind::UserList | Kind::StreamList => check::<m::Empty>(body),
        Kind::Login => check::<m::LoginRequest>(body),
        Kind::UserCreate => check::<m::CreateUser>(body),
        Kind::UserDelete | Kind::StreamDelete | Kind::StreamGet | Kind::TopicList => {
            check::<m::NameRef>(body)
        }
        Kind::UserSetPermissions => check::<m::SetPermissions>(body),
        Kind::StreamCreate => check::<m::CreateStream>(body),
        Kind::TopicCreate => check::<m::CreateTopic>(body),
        Kind::TopicDelete | Kind::TopicGet | Kind::GroupList => check::<m::TopicRef>(body),
        Kind::PartitionsAdd => check::<m::AddPartitions>(body),
        Kind::Produce => check::<m::ProduceRequest>(body),
        Kind::Poll => check::<m::PollRequest>(body),
        Kind::OffsetStore => check::<m::StoreOffset>(body),
        Kind::OffsetGet => check::<m::GetOffset>(body),
        Kind::GroupCreate | Kind::GroupDelete | Kind::GroupDescribe => check::<m::GroupRef>(body),
        Kind::GroupJoin => check::<m::JoinGroup>(body),
        Kind::GroupLeave | Kind::GroupHeartbeat => check::<m::MemberRef>(body),
        Kind::Stats => check::<m::StatsRequest>(body),
        Kind::ProducerDeclare => check::<m::ProducerDeclare>(body),
        Kind::ProducerSequence | Kind::ProducerDelete => check::<m::ProducerRef>(body),
        Kind::ProducerHeartbeat | Kind::ProducerClose => check::<m::ProducerHeartbeat>(body),
        Kind::ProducerList => check::<m::ProducerListRequest>(body),
        Kind::Subscribe => check::<s::Subscribe>(body),
        Kind::Credit => check::<s::Credit>(body),
        Kind::Unsubscribe => check::<s::Unsubscribe>(body),
        Kind::Deliver => check::<s::Deliver>(body),
        Kind::ConsumerUpdate => check::<s::ConsumerUpdateAnswer>(body),
        Kind::SubscribeDurable => check::<s::SubscribeDurable>(body),
        Kind::SuperStreamCreate => check::<m::SuperStreamCreate>(body),
        Kind::SuperStreamDelete | Kind::SuperStreamPartitions => check::<m::SuperStreamRef>(body),
        Kind::SuperStreamRoute => check::<m::SuperStreamRoute>(body),
        Kind::TopicState | Kind::ConsumerList => check::<m::TopicRef>(body),
        Kind::ConsumerCreate => check::<d::DurableCreate>(body),
        Kind::ConsumerDelete | Kind::ConsumerInfo => check::<d::DurableRef>(body),
        Kind::Fetch => check::<d::FetchRequest>(body),
        Kind::Ack => check::<d::AckRequest>(body),
    }
}

/// Decodes `body` as body type number `selector` (requests first, then responses).
pub fn decode_as(selector: u8, body: &[u8]) {
    match selector {
        0 => check::<m::Empty>(body),
        1 => check::<m::LoginRequest>(body),
        2 => check::<m::CreateUser>(body),
        3 => check::<m::NameRef>(body),
        4 => check::<m::SetPermissions>(body),
        5 => check::<m::CreateStream>(body),
        6 => check::<m::CreateTopic>(body),
        7 => check::<m::TopicRef>(body),
        8 => check::<m::AddPartitions>(body),
        9 => check::<m::ProduceRequest>(body),
        10 => check::<m::PollRequest>(body),
        11 => check::<m::StoreOffset>(body),
        12 => check::<m::GetOffset>(body),
        13 => check::<m::GroupRef>(body),
        14 => check::<m::JoinGroup>(body),
        15 => check::<m::MemberRef>(body),
        16 => check::<m::StatsRequest>(body),
        17 => check::<m::ErrorBody>(body),
        18 => check::<m::PingResponse>(body),
        19 => check::<m::LoginResponse>(body),
        20 => check::<m::MetadataResponse>(body),
        21 => check::<m::UserList>(body),
        22 => check::<m::StreamInfo>(body),
        23 => check::<m::StreamList>(body),
        24 => check::<m::TopicInfo>(body),
        25 => check::<m::TopicList>(body),
        26 => check::<m::ProduceResponse>(body),
        27 => check::<m::PollResponse>(body),
        28 => check::<m::OffsetInfo>(body),
        29 => check::<m::Membership>(body),
        30 => check::<m::GroupInfo>(body),
        31 => check::<m::GroupList>(body),
        _ => check::<m::StatsResponse>(body),
    }
}

/// Decodes `body` (copied to 16-byte aligned memory, as frame bodies are) as a `T`; when that
/// succeeds, checks that it re-encodes and decodes to an equal value.
fn check<T>(body: &[u8])
where
    T: rkyv::Archive
        + PartialEq
        + std::fmt::Debug
        + for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let Ok(value) = m::decode::<T>(&aligned) else { return };
    let encoded = m::encode(&value).expect("a decoded body encodes");
    let again = m::decode::<T>(&encoded).expect("an encoded body decodes");
    assert_eq!(again, value, "body does not round-trip");
}
