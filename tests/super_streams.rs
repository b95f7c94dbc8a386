//! Super streams against the real broker binary: creation with a partition count and with
//! binding keys (shown by `TopicGet`), hash routing that matches the client's computation and
//! spreads over every partition, key routing to one, several or no partition, the partition
//! list, deletion, metadata that survives a SIGKILL, hostile input answered with statuses on a
//! connection that stays usable, and the SDK's super-stream producer (hash and key routing) read
//! back per partition and with the all-partition consumer, and `ringctl superstream …` with
//! `produce --routing-key`. Every wait is bounded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Conn, Failure};
use futures::StreamExt;
use ringbroker::client::producer::key_partition;
use ringbroker::client::{Client, ConnectionString, Producer, ProducerMessage, Routing};
use ringbroker::protocol::frame::encode_frame;
use ringbroker::protocol::messages::{
    AddPartitions, Empty, Kind, PartitionTarget, PollRequest, PollStrategy, PollTarget, Status, TopicConfig,
    TopicInfo, TopicRef,
};
use ringbroker::protocol::super_stream::{
    SuperStreamCreate, SuperStreamInfo, SuperStreamLayout, SuperStreamPartitions, SuperStreamRef,
    SuperStreamRoute, SuperStreamRouted, SuperStreamRouting,
};

const STREAM: &str = "super";

fn create(name: &str, layout: SuperStreamLayout, shared_keys: bool) -> SuperStreamCreate {
    SuperStreamCreate {
        stream: STREAM.into(),
        name: name.into(),
        layout,
        shared_keys,
        config: TopicConfig::default(),
        if_missing: false,
    }
}

fn keys(keys: &[&str]) -> SuperStreamLayout {
    SuperStreamLayout::BindingKeys(keys.iter().map(|k| k.to_string()).collect())
}

fn route(
    conn: &mut Conn,
    name: &str,
    key: &str,
    routing: Option<SuperStreamRouting>,
) -> Result<Vec<u32>, Failure> {
    let request =
        SuperStreamRoute { stream: STREAM.into(), name: name.into(), routing_key: key.into(), routing };
    conn.call::<_, SuperStreamRouted>(Kind::SuperStreamRoute, &request).map(|routed| routed.partitions)
}

fn partitions(conn: &mut Conn, name: &str) -> Result<SuperStreamPartitions, Failure> {
    conn.call(Kind::SuperStreamPartitions, &SuperStreamRef { stream: STREAM.into(), name: name.into() })
}

fn status<T: std::fmt::Debug>(result: Result<T, Failure>) -> Status {
    match result {
        Ok(answer) => panic!("accepted: {answer:?}"),
        Err(failure) => failure.status,
    }
}

/// Creates `events` (3 partitions, hash), `invoices` (amer, emea, apac) and `regions` (amer,
/// emea, amer with shared keys).
fn create_three(conn: &mut Conn) {
    conn.create_stream(STREAM);
    let events: TopicInfo = conn
        .call(Kind::SuperStreamCreate, &create("events", SuperStreamLayout::Partitions(3), false))
        .expect("events");
    let expected = SuperStreamInfo {
        routing: SuperStreamRouting::Hash,
        binding_keys: vec!["0".into(), "1".into(), "2".into()],
    };
    assert_eq!((events.partitions.len(), events.super_stream), (3, Some(expected)));
    let invoices: TopicInfo = conn
        .call(Kind::SuperStreamCreate, &create("invoices", keys(&["amer", "emea", "apac"]), false))
        .expect("invoices");
    assert_eq!(invoices.super_stream.map(|s| s.routing), Some(SuperStreamRouting::Key));
    let regions: TopicInfo = conn
        .call(Kind::SuperStreamCreate, &create("regions", keys(&["amer", "emea", "amer"]), true))
        .expect("regions");
    assert_eq!(regions.partitions.len(), 3);
}

/// The answers `create_three`'s super streams must give, before and after a restart.
fn check_three(conn: &mut Conn) {
    let topic: TopicInfo = conn
        .call(Kind::TopicGet, &TopicRef { stream: STREAM.into(), topic: "invoices".into() })
        .expect("get");
    let info = topic.super_stream.expect("TopicGet shows the super stream");
    assert_eq!(
        (info.routing, info.binding_keys),
        (SuperStreamRouting::Key, vec!["amer".into(), "emea".into(), "apac".into()])
    );
    assert_eq!(route(conn, "invoices", "emea", None), Ok(vec![1]), "key routing, one partition");
    assert_eq!(route(conn, "regions", "amer", None), Ok(vec![0, 2]), "key routing, several partitions");
    assert_eq!(status(route(conn, "invoices", "nowhere", None)), Status::NoRoute, "key routing, none");
    let listed = partitions(conn, "regions").expect("partitions");
    assert_eq!(listed.routing, SuperStreamRouting::Key);
    let table: Vec<(u32, &str)> = listed.partitions.iter().map(|p| (p.id, p.binding_key.as_str())).collect();
    assert_eq!(table, [(0, "amer"), (1, "emea"), (2, "amer")]);
    assert!(listed.partitions.iter().all(|p| p.shard < 2), "owners are real shards");
}

#[test]
fn super_streams_are_created_routed_listed_deleted_and_survive_a_crash() {
    let mut broker = common::Broker::start(2, &["--fsync", "always"]);
    let mut conn = broker.root();
    create_three(&mut conn);
    check_three(&mut conn);
    let rabbitmq_keys = route(&mut conn, "events", "2", Some(SuperStreamRouting::Key));
    assert_eq!(rabbitmq_keys, Ok(vec![2]), "RabbitMQ's binding keys 0..N-1");

    // Hash routing is the client's FNV-1a 64 computation and spreads over every partition.
    let mut hit = BTreeSet::new();
    for i in 0..300 {
        let key = format!("customer-{i}");
        let routed = route(&mut conn, "events", &key, None).expect("hash route");
        assert_eq!(routed, vec![key_partition(key.as_bytes(), 3)], "key {key}");
        hit.insert(routed[0]);
        let forced = route(&mut conn, "invoices", &key, Some(SuperStreamRouting::Hash)).expect("hash route");
        assert_eq!(forced, vec![key_partition(key.as_bytes(), 3)]);
    }
    assert_eq!(hit.len(), 3, "300 keys reach all 3 partitions");

    // A super stream's partitions are fixed; a plain topic is not a super stream.
    let add = AddPartitions { stream: STREAM.into(), topic: "events".into(), count: 1 };
    assert_eq!(status(conn.call::<_, TopicInfo>(Kind::PartitionsAdd, &add)), Status::InvalidArgument);
    conn.create_topic(STREAM, "plain", 2);
    assert_eq!(status(partitions(&mut conn, "plain")), Status::NotASuperStream);
    assert_eq!(status(route(&mut conn, "plain", "k", None)), Status::NotASuperStream);
    let plain = SuperStreamRef { stream: STREAM.into(), name: "plain".into() };
    assert_eq!(status(conn.call::<_, Empty>(Kind::SuperStreamDelete, &plain)), Status::NotASuperStream);
    let topic: TopicInfo =
        conn.call(Kind::TopicGet, &TopicRef { stream: STREAM.into(), topic: "plain".into() }).expect("get");
    assert_eq!(topic.super_stream, None);

    // if_missing answers the existing one; without it the name is taken.
    let again =
        SuperStreamCreate { if_missing: true, ..create("events", SuperStreamLayout::Partitions(5), false) };
    let existing: TopicInfo = conn.call(Kind::SuperStreamCreate, &again).expect("if_missing");
    assert_eq!(existing.partitions.len(), 3);
    let taken = create("events", SuperStreamLayout::Partitions(3), false);
    assert_eq!(status(conn.call::<_, TopicInfo>(Kind::SuperStreamCreate, &taken)), Status::AlreadyExists);

    // Delete, then crash and restart: the catalog is the metadata log's replay.
    let events = SuperStreamRef { stream: STREAM.into(), name: "events".into() };
    conn.call::<_, Empty>(Kind::SuperStreamDelete, &events).expect("delete");
    assert_eq!(status(route(&mut conn, "events", "k", None)), Status::UnknownTopic);
    assert_eq!(status(partitions(&mut conn, "events")), Status::UnknownTopic);
    drop(conn);
    broker.kill();
    broker.start_again();
    let mut conn = broker.root();
    check_three(&mut conn);
    assert_eq!(status(partitions(&mut conn, "events")), Status::UnknownTopic, "the deletion survives too");
}

#[test]
fn hostile_super_stream_requests_get_statuses_and_the_connection_survives() {
    let broker = common::Broker::start(2, &[]);
    let mut conn = broker.root();
    conn.create_stream(STREAM);
    let many: Vec<String> = (0..1025).map(|i| format!("k{i}")).collect();
    let long_key = "k".repeat(256);
    let cases: Vec<(SuperStreamCreate, Status)> = vec![
        (create("zero", SuperStreamLayout::Partitions(0), false), Status::InvalidArgument),
        (create("huge", SuperStreamLayout::Partitions(1025), false), Status::InvalidArgument),
        (create("dup", keys(&["a", "b", "a"]), false), Status::InvalidArgument),
        (create("none", keys(&[]), false), Status::InvalidArgument),
        (create("many", SuperStreamLayout::BindingKeys(many), false), Status::InvalidArgument),
        (create("spaced", keys(&["a b"]), false), Status::InvalidName),
        (create("empty-key", keys(&["a", ""]), false), Status::InvalidName),
        (create("long-key", keys(&[&long_key]), false), Status::InvalidName),
        (create("bad/name", SuperStreamLayout::Partitions(2), false), Status::InvalidName),
        (create("", SuperStreamLayout::Partitions(2), false), Status::InvalidName),
        (
            SuperStreamCreate {
                stream: "missing".into(),
                ..create("s", SuperStreamLayout::Partitions(2), false)
            },
            Status::UnknownStream,
        ),
        (
            SuperStreamCreate {
                config: TopicConfig { partitions: 4, ..TopicConfig::default() },
                ..create("mismatch", SuperStreamLayout::Partitions(2), false)
            },
            Status::InvalidArgument,
        ),
        (
            SuperStreamCreate {
                config: TopicConfig { retention_max_bytes: Some(0), ..TopicConfig::default() },
                ..create("retention", SuperStreamLayout::Partitions(2), false)
            },
            Status::InvalidArgument,
        ),
    ];
    for (request, expected) in cases {
        let answer = conn.call::<_, TopicInfo>(Kind::SuperStreamCreate, &request);
        assert_eq!(status(answer), expected, "{}", request.name);
        conn.ping().expect("the connection survives");
    }
    conn.call::<_, TopicInfo>(Kind::SuperStreamCreate, &create("ok", keys(&["a"]), false)).expect("create");
    assert_eq!(status(route(&mut conn, "unknown", "a", None)), Status::UnknownTopic);
    assert_eq!(status(route(&mut conn, "ok", &"x".repeat(5000), None)), Status::InvalidArgument);
    assert_eq!(status(route(&mut conn, "ok", "b", None)), Status::NoRoute);
    let missing_stream = SuperStreamRef { stream: "missing".into(), name: "ok".into() };
    assert_eq!(
        status(conn.call::<_, Empty>(Kind::SuperStreamDelete, &missing_stream)),
        Status::UnknownStream
    );
    for (correlation, kind) in [
        Kind::SuperStreamCreate,
        Kind::SuperStreamDelete,
        Kind::SuperStreamRoute,
        Kind::SuperStreamPartitions,
    ]
    .into_iter()
    .enumerate()
    {
        // A body shorter than any archived request: validation refuses it.
        let frame = encode_frame(kind as u16, 1_000 + correlation as u64, 0, &[0xff; 5], &[]);
        conn.send_raw(&frame).expect("send");
        let (header, _) = conn.read_frame().expect("an answer");
        assert_eq!(Status::from_u16(header.status), Status::MalformedBody, "{kind:?}");
        conn.ping().expect("the connection survives");
    }

    // Rights: reading routes needs read, creating needs manage; nothing before login.
    conn.call::<_, Empty>(Kind::UserCreate, &common::read_only_user("reader", "secret-1", STREAM))
        .expect("user");
    let mut reader = Conn::connect(broker.addr()).expect("connect");
    assert_eq!(status(partitions(&mut reader, "ok")), Status::Unauthenticated);
    reader.login("reader", "secret-1").expect("login");
    assert_eq!(route(&mut reader, "ok", "a", None), Ok(vec![0]));
    let denied = reader.call::<_, TopicInfo>(Kind::SuperStreamCreate, &create("mine", keys(&["a"]), false));
    assert_eq!(status(denied), Status::PermissionDenied);
    let ok = SuperStreamRef { stream: STREAM.into(), name: "ok".into() };
    assert_eq!(status(reader.call::<_, Empty>(Kind::SuperStreamDelete, &ok)), Status::PermissionDenied);
    reader.ping().expect("the connection survives");
}

async fn connect(addr: std::net::SocketAddr) -> Client {
    let url: ConnectionString =
        format!("ringbroker://ringbroker:ringbroker@{addr}?timeout_ms=5000").parse().expect("url");
    Client::connect(&url).await.expect("connect")
}

/// Every (routing key, number) payload `"{key}:{n}"` of one partition, in offset order.
async fn read_partition(client: &Client, name: &str, partition: u32) -> Vec<(String, u32)> {
    let (mut out, mut offset) = (Vec::new(), 0);
    for _ in 0..1_000 {
        let request = PollRequest {
            stream: STREAM.into(),
            topic: name.into(),
            target: PollTarget::Partition(PartitionTarget { partition, consumer: "check".into() }),
            strategy: PollStrategy::Offset(offset),
            max_messages: 5_000,
            max_bytes: 4 << 20,
            max_wait_ms: 0,
            auto_commit: false,
            filter: Vec::new(),
            match_unfiltered: false,
        };
        let polled = client.poll(&request).await.expect("poll");
        for record in polled.records() {
            let payload = String::from_utf8_lossy(record.expect("record").record.payload).into_owned();
            let (key, number) = payload.split_once(':').expect("key:number");
            out.push((key.to_string(), number.parse().expect("number")));
        }
        let marks = &polled.response.partitions[0];
        if polled.is_empty() || marks.next_offset >= marks.high_watermark {
            return out;
        }
        offset = marks.next_offset;
    }
    panic!("partition {partition} did not end within 1,000 polls");
}

fn routing_key(message: &ProducerMessage) -> String {
    let payload = String::from_utf8_lossy(&message.payload);
    payload.split_once(':').map_or_else(String::new, |(key, _)| key.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_super_stream_producer_routes_by_hash_and_by_key() {
    let broker = common::Broker::start(2, &[]);
    let client = connect(broker.addr()).await;
    client.create_stream(STREAM, false).await.expect("stream");
    client
        .create_super_stream(STREAM, "orders", SuperStreamLayout::Partitions(3), false)
        .await
        .expect("orders");

    // Hash: 1000 messages over 100 customers, each on its customer's partition, in order.
    let producer = Producer::builder(&client, STREAM, "orders")
        .super_stream(Routing::Hash, routing_key)
        .build()
        .await
        .expect("super-stream producer");
    assert_eq!(producer.partitions(), 3);
    let messages: Vec<ProducerMessage> =
        (0..1000).map(|n| ProducerMessage::new(format!("customer-{}:{n}", n % 100))).collect();
    producer.send(messages).await.expect("send");
    producer.shutdown().await.expect("shutdown");
    let mut seen = 0;
    for partition in 0..3 {
        let records = read_partition(&client, "orders", partition).await;
        assert!(!records.is_empty(), "partition {partition} got messages");
        let mut last: BTreeMap<String, u32> = BTreeMap::new();
        for (key, number) in records {
            assert_eq!(key_partition(key.as_bytes(), 3), partition, "{key} on its hash partition");
            assert!(last.insert(key.clone(), number).is_none_or(|before| before < number), "{key} in order");
            seen += 1;
        }
    }
    assert_eq!(seen, 1000, "every message once");

    // The plain all-partition consumer reads the same 1000.
    let builder = ringbroker::client::super_stream::consumer(&client, STREAM, "orders", "reader")
        .await
        .expect("builder");
    let mut consumer = builder.polling_strategy(PollStrategy::First).build().await.expect("consumer");
    let mut read = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while read < 1000 {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await.expect("1000 messages in time");
        next.expect("a message").expect("readable");
        read += 1;
    }
    let plain = ringbroker::client::super_stream::consumer(&client, STREAM, "missing", "reader").await;
    assert_eq!(plain.err().and_then(|e| e.status()), Some(Status::UnknownTopic));

    // Key: shared keys go to each of their partitions; a key without a route accepts nothing.
    let layout = SuperStreamLayout::BindingKeys(vec!["amer".into(), "emea".into(), "amer".into()]);
    let request = SuperStreamCreate { shared_keys: true, ..create("regions", layout, false) };
    client.create_super_stream_with(&request).await.expect("regions");
    let producer = Producer::builder(&client, STREAM, "regions")
        .background(false)
        .super_stream(Routing::Key, routing_key)
        .build()
        .await
        .expect("key producer");
    let messages =
        (0..30).map(|n| ProducerMessage::new(format!("{}:{n}", ["amer", "emea"][n % 2]))).collect();
    producer.send(messages).await.expect("send by key");
    let refused = producer.send(vec![ProducerMessage::new("apac:0"), ProducerMessage::new("emea:99")]).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("NoRoute")), "apac has no partition");
    producer.shutdown().await.expect("shutdown");
    let per_partition = [
        read_partition(&client, "regions", 0).await,
        read_partition(&client, "regions", 1).await,
        read_partition(&client, "regions", 2).await,
    ];
    let numbers = |records: &[(String, u32)], key: &str| -> Vec<u32> {
        assert!(records.iter().all(|(k, _)| k == key), "only {key} here");
        records.iter().map(|(_, n)| *n).collect()
    };
    let amer: Vec<u32> = (0..30).filter(|n| n % 2 == 0).collect();
    let emea: Vec<u32> = (0..30).filter(|n| n % 2 == 1).collect();
    assert_eq!(numbers(&per_partition[0], "amer"), amer, "amer on partition 0");
    assert_eq!(numbers(&per_partition[1], "emea"), emea, "emea on 1, and emea:99 was not accepted");
    assert_eq!(numbers(&per_partition[2], "amer"), amer, "amer on partition 2 too");

    // A plain topic is refused at build.
    client
        .create_topic(STREAM, "plain", TopicConfig { partitions: 1, ..TopicConfig::default() }, false)
        .await
        .expect("plain");
    let built =
        Producer::builder(&client, STREAM, "plain").super_stream(Routing::Hash, routing_key).build().await;
    assert!(built.is_err_and(|e| e.to_string().contains("NotASuperStream")));
}

#[test]
fn ringctl_creates_routes_lists_produces_and_deletes_super_streams() {
    let broker = common::Broker::start(2, &[]);
    let ok = |args: &[&str], stdin: &str| {
        let (success, stdout, stderr) = common::ringctl(&broker, args, stdin);
        assert!(success, "ringctl {args:?}: {stderr}");
        stdout
    };
    ok(&["stream", "create", STREAM], "");
    ok(&["superstream", "create", STREAM, "regions", "--keys", "amer,emea,amer", "--shared-keys"], "");
    ok(&["superstream", "create", STREAM, "events", "--partitions", "3"], "");
    assert_eq!(ok(&["superstream", "route", STREAM, "regions", "amer"], ""), "0 2\n");
    let hashed = ok(&["superstream", "route", STREAM, "events", "customer-7"], "");
    assert_eq!(hashed, format!("{}\n", key_partition(b"customer-7", 3)));
    let listed = ok(&["superstream", "partitions", STREAM, "regions"], "");
    assert!(listed.contains("BINDING-KEY") && listed.contains("emea"), "{listed}");
    let shown = ok(&["topic", "get", STREAM, "regions"], "");
    assert!(shown.contains("super stream: routing by Key"), "{shown}");

    // produce --routing-key writes every line to each partition of the key.
    ok(&["produce", STREAM, "regions", "--routing-key", "amer"], "first\nsecond\n");
    let mut conn = broker.root();
    for (partition, expected) in [(0, 2), (1, 0), (2, 2)] {
        let records = common::read_partition(&mut conn, STREAM, "regions", partition);
        assert_eq!(records.len(), expected, "partition {partition}: {records:?}");
    }

    // Refusals are one line naming the status, and consume no input.
    let (success, _, stderr) =
        common::ringctl(&broker, &["produce", STREAM, "regions", "--routing-key", "apac"], "x\n");
    assert!(!success && stderr.contains("NoRoute(91)"), "{stderr}");
    let (success, _, stderr) =
        common::ringctl(&broker, &["superstream", "create", STREAM, "dup", "--keys", "a,a"], "");
    assert!(!success && stderr.contains("InvalidArgument(32)"), "{stderr}");
    let (success, _, stderr) = common::ringctl(&broker, &["superstream", "create", STREAM, "none"], "");
    assert!(!success && stderr.contains("--partitions"), "a layout is required: {stderr}");
    ok(&["superstream", "delete", STREAM, "events"], "");
    let (success, _, stderr) = common::ringctl(&broker, &["superstream", "partitions", STREAM, "events"], "");
    assert!(!success && stderr.contains("UnknownTopic(21)"), "{stderr}");
}
