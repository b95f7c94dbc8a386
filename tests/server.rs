//! Integration tests against the real `ringbroker` binary on loopback: produce and consume
//! across 2 shards and 8 partitions, restart and crash recovery, zero-copy forwarding, consumer
//! groups, hostile frames and bodies, authentication and permissions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use ringbroker::protocol::frame::{encode_frame, FrameHeader};
use ringbroker::protocol::messages::*;

const STREAM: &str = "orders";
const TOPIC: &str = "created";

/// Produces `per_partition` batches of 5 messages to each of 8 partitions (explicit partition ids,
/// through the shared listener so about half are forwarded) and returns what each holds.
fn fill(conn: &mut Conn, per_partition: u32) -> BTreeMap<u32, Vec<(u64, String)>> {
    let mut expected: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    for round in 0..per_partition {
        for partition in 0..8 {
            let tag = format!("p{partition}-r{round}");
            let response = conn
                .produce(STREAM, TOPIC, Partitioning::Partition(partition), &[batch_of(&tag, 5)])
                .expect("produce");
            assert_eq!(response.partition, partition);
            let ack = response.acks[0];
            assert_eq!(ack.last_offset - ack.base_offset, 4);
            let entries = expected.entry(partition).or_default();
            assert_eq!(ack.base_offset, entries.len() as u64, "offsets are dense per partition");
            entries.extend((0..5).map(|i| (ack.base_offset + i, format!("{tag}-{i}"))));
        }
    }
    expected
}

fn read_all(conn: &mut Conn) -> BTreeMap<u32, Vec<(u64, String)>> {
    (0..8).map(|p| (p, read_partition(conn, STREAM, TOPIC, p))).collect()
}

#[test]
fn produce_and_consume_across_two_shards_survives_restart_and_crash() {
    let mut broker = Broker::start(2, &["--fsync", "always"]);
    let mut conn = broker.root();
    conn.create_stream(STREAM);
    let topic = conn.create_topic(STREAM, TOPIC, 8);
    let shards: BTreeSet<u16> = topic.partitions.iter().map(|p| p.shard).collect();
    assert_eq!(shards.len(), 2, "8 partitions spread over both shards");
    let expected = fill(&mut conn, 6);
    assert_eq!(read_all(&mut conn), expected);
    // max_messages stops at whole batches: 7 asked, two batches of 5 returned.
    let (polled, payload) = conn.poll_partition(STREAM, TOPIC, 0, PollStrategy::First, 7).expect("poll");
    assert_eq!((polled.partitions[0].next_offset, records(&payload, 0).len()), (10, 10));

    // Balanced partitioning spreads over partitions; key partitioning is stable.
    let balanced: BTreeSet<u32> = (0..8)
        .map(|i| {
            conn.produce(STREAM, TOPIC, Partitioning::Balanced, &[batch_of(&format!("b{i}"), 1)])
                .expect("produce")
                .partition
        })
        .collect();
    assert_eq!(balanced.len(), 8);
    let keyed: BTreeSet<u32> = (0..4)
        .map(|i| {
            conn.produce(
                STREAM,
                TOPIC,
                Partitioning::Key(b"customer-42".to_vec()),
                &[batch_of(&format!("k{i}"), 1)],
            )
            .expect("produce")
            .partition
        })
        .collect();
    assert_eq!(keyed.len(), 1);
    let expected = read_all(&mut conn);

    // Forwarded produces moved their buffer: bytes arrived zero-copy, none copied.
    let counters = conn.stats().server;
    assert!(counters.forwarded_requests > 0, "{counters:?}");
    assert!(counters.forwarded_bytes_zero_copy > 0, "{counters:?}");
    assert_eq!(counters.forwarded_bytes_copied, 0, "{counters:?}");

    drop(conn);
    broker.restart();
    let mut conn = broker.root();
    assert_eq!(read_all(&mut conn), expected, "everything is back after a graceful restart");

    // A crash (SIGKILL) after acknowledged produces under --fsync always loses nothing.
    let more = conn
        .produce(STREAM, TOPIC, Partitioning::Partition(3), &[batch_of("after-restart", 3)])
        .expect("produce");
    drop(conn);
    broker.kill();
    broker.start_again();
    let mut conn = broker.root();
    let partition3 = read_partition(&mut conn, STREAM, TOPIC, 3);
    assert_eq!(partition3.last().map(|r| r.0), Some(more.acks[0].last_offset));
    assert_eq!(partition3.last().map(|r| r.1.clone()), Some("after-restart-2".to_string()));
}

#[test]
fn shard_aware_clients_make_no_cross_core_hop() {
    let broker = Broker::start(2, &["--fsync", "never"]);
    let mut conn = broker.root();
    conn.create_stream(STREAM);
    conn.create_topic(STREAM, TOPIC, 4);
    let metadata: MetadataResponse = conn.call(Kind::Metadata, &Empty {}).expect("metadata");
    assert_eq!(metadata.shards.len(), 2);
    let before = conn.stats().server.forwarded_requests;
    for owner in metadata.partitions.iter().filter(|p| p.topic == TOPIC) {
        let address = &metadata.shards[owner.shard as usize].address;
        let mut direct = Conn::connect(address.parse().expect("address")).expect("connect to shard");
        direct.login("ringbroker", "ringbroker").expect("login");
        let pong: PingResponse = direct.call(Kind::Ping, &Empty {}).expect("ping");
        assert_eq!(pong.shard, owner.shard, "the direct address lands on the owning shard");
        direct
            .produce(STREAM, TOPIC, Partitioning::Partition(owner.partition), &[batch_of("direct", 10)])
            .expect("produce");
        // Under --fsync never the produce is acknowledged once buffered; it becomes readable as
        // soon as the write behind it completes.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (response, _) = direct
                .poll_partition(STREAM, TOPIC, owner.partition, PollStrategy::First, 100)
                .expect("poll");
            if response.partitions[0].high_watermark == 10 {
                break;
            }
            assert!(Instant::now() < deadline, "written within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let after = conn.stats().server.forwarded_requests;
    assert_eq!(after - before, 0, "no request was forwarded");
}

#[test]
fn a_group_of_two_splits_partitions_and_the_survivor_takes_over() {
    let mut broker = Broker::start(2, &["--fsync", "always"]);
    let mut admin = broker.root();
    admin.create_stream(STREAM);
    admin.create_topic(STREAM, TOPIC, 8);
    let expected = fill(&mut admin, 3);
    let all: BTreeSet<(u32, u64)> =
        expected.iter().flat_map(|(p, v)| v.iter().map(move |(o, _)| (*p, *o))).collect();

    let join = |conn: &mut Conn| -> Membership {
        let request = JoinGroup {
            stream: STREAM.into(),
            topic: TOPIC.into(),
            group: "billing".into(),
            create_if_missing: true,
            session_timeout_ms: 30_000,
        };
        conn.call(Kind::GroupJoin, &request).expect("join")
    };
    let mut first = broker.root();
    let mut second = broker.root();
    let one = join(&mut first);
    let two = join(&mut second);
    let heartbeat = |conn: &mut Conn, member_id: u64| -> Membership {
        let request =
            MemberRef { stream: STREAM.into(), topic: TOPIC.into(), group: "billing".into(), member_id };
        conn.call(Kind::GroupHeartbeat, &request).expect("heartbeat")
    };
    let one = heartbeat(&mut first, one.member_id);
    let two = heartbeat(&mut second, two.member_id);
    assert_eq!(one.partitions.len(), 4);
    assert_eq!(two.partitions.len(), 4);
    let union: BTreeSet<u32> = one.partitions.iter().chain(&two.partitions).copied().collect();
    assert_eq!(union.len(), 8, "disjoint and complete: {one:?} {two:?}");

    let poll = |conn: &mut Conn, member_id: u64, max_messages: u32| -> Vec<(u32, u64)> {
        let request = PollRequest {
            stream: STREAM.into(),
            topic: TOPIC.into(),
            target: PollTarget::Group(GroupTarget { group: "billing".into(), member_id }),
            strategy: PollStrategy::Next,
            max_messages,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            auto_commit: true,
            filter: Vec::new(),
            match_unfiltered: false,
        };
        let (response, payload): (PollResponse, Vec<u8>) =
            conn.request(Kind::Poll, &request, &[]).expect("poll");
        let mut got = Vec::new();
        let mut at = 0;
        for polled in &response.partitions {
            let bytes = &payload[at..at + polled.payload_bytes as usize];
            at += polled.payload_bytes as usize;
            got.extend(
                records(bytes, polled.start_offset)
                    .into_iter()
                    .filter(|(o, _)| *o < polled.next_offset)
                    .map(|(o, _)| (polled.partition, o)),
            );
        }
        got
    };
    let mut consumed: Vec<(u32, u64)> = Vec::new();
    consumed.extend(poll(&mut first, one.member_id, 7));
    consumed.extend(poll(&mut second, two.member_id, 1000));
    assert!(consumed.iter().all(|(p, _)| one.partitions.contains(p) || two.partitions.contains(p)));

    // The first member leaves; the second takes over from the committed offsets.
    let leave = MemberRef {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        group: "billing".into(),
        member_id: one.member_id,
    };
    let _: Empty = first.call(Kind::GroupLeave, &leave).expect("leave");
    let takeover = heartbeat(&mut second, two.member_id);
    assert_eq!(takeover.partitions.len(), 8);
    assert!(takeover.generation > two.generation);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = poll(&mut second, two.member_id, 1000);
        if got.is_empty() {
            break;
        }
        consumed.extend(got);
        assert!(Instant::now() < deadline);
    }
    let unique: BTreeSet<(u32, u64)> = consumed.iter().copied().collect();
    assert_eq!(unique.len(), consumed.len(), "nothing consumed twice");
    assert_eq!(unique, all, "nothing lost");

    // Group offsets survive a restart and are visible in stats.
    drop((first, second, admin));
    broker.restart();
    let mut admin = broker.root();
    let describe =
        GroupRef { stream: STREAM.into(), topic: TOPIC.into(), group: "billing".into(), if_missing: false };
    let info: GroupInfo = admin.call(Kind::GroupDescribe, &describe).expect("describe");
    assert_eq!(info.offsets.len(), 8);
    for offset in &info.offsets {
        assert_eq!(offset.offset, expected[&offset.partition].len() as u64);
    }
    let stats = admin.stats();
    assert_eq!(stats.streams[0].topics[0].groups[0].name, "billing");
}

#[test]
fn hostile_frames_close_only_their_connection() {
    let broker = Broker::start(2, &["--fsync", "never", "--max-frame-bytes", "1048576"]);
    let mut good = broker.root();
    good.create_stream(STREAM);

    // Random bytes: a BadFrame answer, then the connection is closed.
    let mut random = Conn::connect(broker.addr()).expect("connect");
    random.send_raw(&[0x5A; 64]).expect("send");
    let (header, _) = random.read_frame().expect("error frame");
    assert_eq!(Status::from_u16(header.status), Status::BadFrame);
    let mut rest = Vec::new();
    use std::io::Read;
    assert_eq!(random.stream.read_to_end(&mut rest).map(|_| ()).ok(), Some(()), "closed by the server");

    // An oversized frame: FrameTooLarge.
    let mut huge = Conn::connect(broker.addr()).expect("connect");
    huge.send_raw(&FrameHeader::new(Kind::Produce as u16, 9, 0, 16, 8 << 20).encode()).expect("send");
    let (header, _) = huge.read_frame().expect("error frame");
    assert_eq!((Status::from_u16(header.status), header.correlation), (Status::FrameTooLarge, 9));

    // An unknown kind and a garbage body fail alone; the connection goes on.
    let mut odd = broker.root();
    odd.send_raw(&encode_frame(999, 77, 0, &[0; 16], &[])).expect("send");
    let (header, _) = odd.read_frame().expect("answer");
    assert_eq!((Status::from_u16(header.status), header.correlation), (Status::UnknownKind, 77));
    odd.send_raw(&encode_frame(Kind::TopicCreate as u16, 78, 0, &[0xFF; 48], &[])).expect("send");
    let (header, _) = odd.read_frame().expect("answer");
    assert_eq!((Status::from_u16(header.status), header.correlation), (Status::MalformedBody, 78));
    let _: PingResponse = odd.call(Kind::Ping, &Empty {}).expect("still served");

    // Hostile batches: a bad CRC and a lying batch count are refused, nothing is stored.
    good.create_topic(STREAM, TOPIC, 1);
    let mut bad = batch_of("x", 3);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let failure = good.produce(STREAM, TOPIC, Partitioning::Partition(0), &[bad]).expect_err("refused");
    assert_eq!(failure.status, Status::InvalidBatch);
    let request = ProduceRequest {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        partitioning: Partitioning::Partition(0),
        batch_count: 5,
    };
    let failure =
        good.request::<_, ProduceResponse>(Kind::Produce, &request, &batch_of("y", 2)).expect_err("refused");
    assert_eq!(failure.status, Status::InvalidBatch);
    let (polled, _) = good.poll_partition(STREAM, TOPIC, 0, PollStrategy::First, 10).expect("poll");
    assert_eq!(polled.partitions[0].high_watermark, 0);

    // The well-behaved client was served throughout.
    let _: PingResponse = good.call(Kind::Ping, &Empty {}).expect("ping");
    good.produce(STREAM, TOPIC, Partitioning::Partition(0), &[batch_of("ok", 1)]).expect("produce");
}

#[test]
fn authentication_permissions_and_unknown_names() {
    let broker = Broker::start(1, &["--fsync", "always"]);
    let mut anonymous = Conn::connect(broker.addr()).expect("connect");
    let _: PingResponse = anonymous.call(Kind::Ping, &Empty {}).expect("ping before login");
    let failure = anonymous.call::<_, StreamList>(Kind::StreamList, &Empty {}).expect_err("needs login");
    assert_eq!(failure.status, Status::Unauthenticated);
    let failure = anonymous.login("ringbroker", "wrong").expect_err("wrong password");
    assert_eq!(failure.status, Status::InvalidCredentials);
    let failure = anonymous.login("nobody", "ringbroker").expect_err("unknown user");
    assert_eq!(failure.status, Status::InvalidCredentials);

    let mut root = broker.root();
    root.create_stream(STREAM);
    root.create_topic(STREAM, TOPIC, 2);
    root.create_stream("secret");
    let reader = read_only_user("reader", "pa55word", STREAM);
    let _: Empty = root.call(Kind::UserCreate, &reader).expect("create user");
    root.produce(STREAM, TOPIC, Partitioning::Partition(0), &[batch_of("m", 2)]).expect("produce");

    let mut user = Conn::connect(broker.addr()).expect("connect");
    user.login("reader", "pa55word").expect("login");
    let (polled, _) = user.poll_partition(STREAM, TOPIC, 0, PollStrategy::First, 10).expect("read allowed");
    assert_eq!(polled.partitions[0].high_watermark, 2);
    let failure = user
        .produce(STREAM, TOPIC, Partitioning::Partition(0), &[batch_of("m", 1)])
        .expect_err("no write right");
    assert_eq!(failure.status, Status::PermissionDenied);
    let failure = user
        .call::<_, StreamInfo>(Kind::StreamGet, &NameRef { name: "secret".into() })
        .expect_err("no right on secret");
    assert_eq!(failure.status, Status::PermissionDenied);
    let listed: StreamList = user.call(Kind::StreamList, &Empty {}).expect("list");
    assert_eq!(listed.streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec![STREAM]);
    let failure = user
        .call::<_, StreamInfo>(Kind::StreamCreate, &CreateStream { name: "mine".into(), if_missing: false })
        .expect_err("not admin");
    assert_eq!(failure.status, Status::PermissionDenied);

    // Unknown names and bad names get their own codes.
    let failure =
        root.produce("nope", TOPIC, Partitioning::Balanced, &[batch_of("m", 1)]).expect_err("unknown stream");
    assert_eq!(failure.status, Status::UnknownStream);
    let failure =
        root.produce(STREAM, "nope", Partitioning::Balanced, &[batch_of("m", 1)]).expect_err("unknown topic");
    assert_eq!(failure.status, Status::UnknownTopic);
    let failure = root
        .produce(STREAM, TOPIC, Partitioning::Partition(9), &[batch_of("m", 1)])
        .expect_err("unknown partition");
    assert_eq!(failure.status, Status::UnknownPartition);
    let failure = root
        .call::<_, StreamInfo>(Kind::StreamCreate, &CreateStream { name: STREAM.into(), if_missing: false })
        .expect_err("duplicate");
    assert_eq!(failure.status, Status::AlreadyExists);
    let failure = root
        .call::<_, StreamInfo>(
            Kind::StreamCreate,
            &CreateStream { name: "bad name!".into(), if_missing: false },
        )
        .expect_err("bad name");
    assert_eq!(failure.status, Status::InvalidName);
    let again: StreamInfo = root
        .call(Kind::StreamCreate, &CreateStream { name: STREAM.into(), if_missing: true })
        .expect("create if missing");
    assert_eq!(again.name, STREAM);

    // A deleted user loses access on its open connection.
    let _: Empty = root.call(Kind::UserDelete, &NameRef { name: "reader".into() }).expect("delete user");
    let failure = user.poll_partition(STREAM, TOPIC, 0, PollStrategy::First, 10).expect_err("deleted");
    assert_eq!(failure.status, Status::Unauthenticated);
}

#[test]
fn pipelined_produces_keep_their_order_and_multi_batch_requests_are_contiguous() {
    let broker = Broker::start(2, &["--fsync", "always", "--segment-bytes", "65536"]);
    let mut conn = broker.root();
    conn.create_stream(STREAM);
    conn.create_topic(STREAM, TOPIC, 2);
    // 150 produces per partition sent back to back without waiting; one of the two partitions
    // is owned by the other shard, so its requests are forwarded. Segments roll on the way.
    let requests = 150_u64;
    let mut frames = Vec::new();
    for i in 0..requests * 2 {
        let partition = (i % 2) as u32;
        let batches = [batch_of(&format!("{i}"), 3), batch_of(&format!("{i}b"), 2)];
        let request = ProduceRequest {
            stream: STREAM.into(),
            topic: TOPIC.into(),
            partitioning: Partitioning::Partition(partition),
            batch_count: 2,
        };
        let body = ringbroker::protocol::messages::encode(&request).expect("encode");
        frames.extend(encode_frame(Kind::Produce as u16, i + 1, 0, &body, &batches.concat()));
    }
    conn.send_raw(&frames).expect("send");
    let mut acks: BTreeMap<u64, ProduceResponse> = BTreeMap::new();
    for _ in 0..requests * 2 {
        let (header, frame) = conn.read_frame().expect("response");
        assert_eq!(header.status, 0);
        let response: ProduceResponse =
            ringbroker::protocol::messages::decode(&frame[header.body_range()]).expect("body");
        acks.insert(header.correlation, response);
    }
    for partition in 0..2 {
        let mut expected_base = 0;
        for (correlation, response) in acks.iter().filter(|(_, r)| r.partition == partition) {
            assert_eq!(response.acks[0].base_offset, expected_base, "request {correlation} in send order");
            assert_eq!(
                response.acks[1].base_offset,
                expected_base + 3,
                "the request's two batches are contiguous"
            );
            expected_base += 5;
        }
        assert_eq!(expected_base, requests * 5);
    }
}

/// Polls smaller than a read: the server keeps the rest of each read for the next poll (read
/// ahead), recent batches in the batch cache, and plans reads ahead of a sequential reader.
/// Stepping through in small polls (by messages and by bytes), jumping back, and starting
/// mid-batch must each return every record exactly once, in order: from the cache, from disk
/// with no cache and with and without planned reads, and with a cache too small for much, small
/// index intervals and small planned reads, so that reads are cut into many chunks in flight
/// at once and entries are evicted under the readers.
#[test]
fn small_polls_from_the_cache_read_ahead_and_planned_reads_see_every_record_once() {
    small_polls_see_every_record_once(&["--fsync", "never"]);
    small_polls_see_every_record_once(&["--fsync", "always", "--cache-bytes", "0"]);
    small_polls_see_every_record_once(&["--fsync", "never", "--cache-bytes", "0", "--prefetch-bytes", "0"]);
    small_polls_see_every_record_once(&[
        "--fsync",
        "always",
        "--cache-bytes",
        "40000",
        "--index-interval-bytes",
        "4096",
        "--prefetch-bytes",
        "4096",
        "--prefetch-depth",
        "3",
    ]);
}

fn small_polls_see_every_record_once(flags: &[&str]) {
    let mut broker = Broker::start(1, flags);
    let mut conn = broker.root();
    conn.create_stream("steps");
    conn.create_topic("steps", "t", 1);
    let mut expected = Vec::new();
    for round in 0..40 {
        let tag = format!("r{round}");
        let response =
            conn.produce("steps", "t", Partitioning::Partition(0), &[batch_of(&tag, 5)]).expect("produce");
        let base = response.acks[0].base_offset;
        expected.extend((0..5).map(|i| (base + i, format!("{tag}-{i}"))));
    }
    // Written behind the acknowledgement: wait until everything is visible to readers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (response, _) = conn.poll_partition("steps", "t", 0, PollStrategy::Offset(0), 1).expect("poll");
        if response.partitions[0].high_watermark == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the log never became fully visible");
        std::thread::sleep(Duration::from_millis(10));
    }
    let read_in_steps = |conn: &mut Conn, from: u64, max_messages: u32, max_bytes: u32| {
        let mut out = Vec::new();
        let mut offset = from;
        while offset < 200 {
            let (response, payload) = conn
                .poll_partition_bytes("steps", "t", 0, PollStrategy::Offset(offset), max_messages, max_bytes)
                .expect("poll");
            let polled = &response.partitions[0];
            assert!(!payload.is_empty(), "poll at {offset} returned nothing");
            out.extend(records(&payload, offset));
            assert!(polled.next_offset > offset);
            offset = polled.next_offset;
        }
        out
    };
    const ALL: u32 = 4 << 20;
    for max_messages in [5, 7, 1, 13] {
        assert_eq!(read_in_steps(&mut conn, 0, max_messages, ALL), expected, "max_messages {max_messages}");
    }
    // Mid-batch start and a jump back after the read-ahead was filled further on.
    assert_eq!(read_in_steps(&mut conn, 102, 5, ALL), expected[102..].to_vec());
    assert_eq!(read_in_steps(&mut conn, 3, 6, ALL), expected[3..].to_vec());
    // One batch per poll (each one a disk read without the tail cache, prefetched when
    // sequential), then two readers interleaved, each cancelling the other's prefetch.
    assert_eq!(read_in_steps(&mut conn, 0, 1000, 1), expected);
    assert_eq!(read_in_steps(&mut conn, 17, 1000, 1), expected[17..].to_vec());
    let mut other = broker.root();
    let (mut a, mut b) = (0_u64, 100_u64);
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    while a < 100 || b < 200 {
        for (conn, offset, seen, end) in
            [(&mut conn, &mut a, &mut seen_a, 100), (&mut other, &mut b, &mut seen_b, 200)]
        {
            if *offset < end {
                let (response, payload) = conn
                    .poll_partition_bytes("steps", "t", 0, PollStrategy::Offset(*offset), 1000, 1)
                    .expect("poll");
                seen.extend(records(&payload, *offset));
                *offset = response.partitions[0].next_offset;
            }
        }
    }
    assert_eq!(seen_a, expected[..100].to_vec());
    assert_eq!(seen_b, expected[100..].to_vec());
    broker.stop();
}
