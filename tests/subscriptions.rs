//! Push subscriptions against the real broker binary: credit-based flow control (no credit, no
//! delivery; one credit, one batch), live pushes as data arrives, deliveries that follow each
//! other without gaps across partitions, hostile requests that get clear statuses on a
//! connection that survives them, and a consumer that stops reading its socket without
//! stalling its shard or growing the broker's memory. Every wait is bounded.

mod common;

use std::io::Write;
use std::time::Duration;

use ringbroker::client::{Client, Delivery, Subscription, SubscriptionEvent};
use ringbroker::protocol::messages::{Kind, Partitioning, PollStrategy, Status, TopicConfig};
use ringbroker::protocol::subscriptions::{Credit, Subscribe, Unsubscribe, SUBSCRIPTION_CREDIT_MAX};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(400);

fn subscribe_request(id: u32, topic: &str, partition: Option<u32>, credit: u32) -> Subscribe {
    Subscribe {
        subscription_id: id,
        stream: "s".into(),
        topic: topic.into(),
        partition,
        offset: PollStrategy::First,
        credit,
        consumer: "reader".into(),
        single_active: false,
        filter: Vec::new(),
        match_unfiltered: false,
    }
}

async fn setup(broker: &common::Broker, topic: &str, partitions: u32) -> Client {
    let client =
        Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect");
    if client.create_stream("s", true).await.is_err() {
        panic!("stream");
    }
    let config = TopicConfig { partitions, ..TopicConfig::default() };
    client.create_topic("s", topic, config, false).await.expect("topic");
    client
}

async fn produce(client: &Client, topic: &str, partition: u32, tag: &str, count: u32) {
    let batch = common::batch_of(tag, count);
    client.produce("s", topic, Partitioning::Partition(partition), &[&batch]).await.expect("produce");
}

async fn next(subscription: &mut Subscription) -> Delivery {
    match timeout(WAIT, subscription.next()).await.expect("a delivery in time").expect("a delivery") {
        SubscriptionEvent::Delivery(delivery) => delivery,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

async fn nothing_arrives(subscription: &mut Subscription) {
    if let Ok(delivery) = timeout(QUIET, subscription.next()).await {
        panic!("nothing should arrive without credit: {delivery:?}");
    }
}

fn payloads(delivery: &Delivery) -> Vec<(u64, String)> {
    delivery
        .polled
        .records()
        .map(|record| {
            let record = record.expect("valid");
            (record.record.offset, String::from_utf8_lossy(record.record.payload).into_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_paces_deliveries_one_batch_per_credit() {
    let broker = common::Broker::start(2, &[]);
    let client = setup(&broker, "t", 1).await;
    for batch in 0..5 {
        produce(&client, "t", 0, &format!("b{batch}"), 3).await;
    }
    let mut subscription = client.subscribe(&subscribe_request(7, "t", Some(0), 0)).await.expect("subscribe");
    nothing_arrives(&mut subscription).await;

    subscription.credit(1).await.expect("credit");
    let first = next(&mut subscription).await;
    assert_eq!(first.batches, 1);
    assert_eq!(payloads(&first), [(0, "b0-0".into()), (1, "b0-1".into()), (2, "b0-2".into())]);
    nothing_arrives(&mut subscription).await;

    subscription.credit(3).await.expect("credit");
    let mut seen = Vec::new();
    let mut batches = 0;
    while batches < 3 {
        let delivery = next(&mut subscription).await;
        assert_eq!(delivery.polled.response.partitions[0].start_offset, 3 + seen.len() as u64, "no gap");
        batches += delivery.batches;
        seen.extend(payloads(&delivery));
    }
    assert_eq!(batches, 3, "three credits, three batches");
    assert_eq!(seen.first(), Some(&(3, "b1-0".to_string())));
    assert_eq!(seen.last(), Some(&(11, "b3-2".to_string())));
    nothing_arrives(&mut subscription).await;

    // New data is pushed as it becomes visible, to the credit left.
    subscription.credit(10).await.expect("credit");
    let rest = next(&mut subscription).await;
    assert_eq!(payloads(&rest)[0], (12, "b4-0".into()));
    produce(&client, "t", 0, "live", 2).await;
    let live = next(&mut subscription).await;
    assert_eq!(payloads(&live), [(15, "live-0".into()), (16, "live-1".into())]);
    subscription.unsubscribe().await.expect("unsubscribe");
    let stats = client.stats(None).await.expect("stats");
    assert!(stats.server.deliveries >= 4, "{:?}", stats.server);
    assert_eq!(stats.server.subscriptions, 0, "unsubscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_subscription_covers_every_partition_in_order() {
    let broker = common::Broker::start(2, &[]);
    let client = setup(&broker, "multi", 3).await;
    for round in 0..4 {
        for partition in 0..3 {
            produce(&client, "multi", partition, &format!("p{partition}r{round}"), 5).await;
        }
    }
    let mut subscription =
        client.subscribe(&subscribe_request(1, "multi", None, 100)).await.expect("subscribe");
    let mut next_offsets = [0_u64; 3];
    while next_offsets.iter().sum::<u64>() < 60 {
        let delivery = next(&mut subscription).await;
        let marks = &delivery.polled.response.partitions[0];
        let partition = marks.partition as usize;
        assert_eq!(marks.start_offset, next_offsets[partition], "partition {partition} follows on");
        for (offset, payload) in payloads(&delivery) {
            assert_eq!(offset, next_offsets[partition]);
            let round = offset / 5;
            assert_eq!(payload, format!("p{partition}r{round}-{}", offset % 5));
            next_offsets[partition] += 1;
        }
    }
    assert_eq!(next_offsets, [20, 20, 20]);
}

#[test]
fn hostile_subscription_requests_get_clear_statuses() {
    let broker = common::Broker::start(2, &["--max-subscriptions", "2"]);
    let mut conn = broker.root();
    conn.create_stream("s");
    conn.create_topic("s", "t", 1);
    let request = |id: u32, topic: &str| Subscribe {
        subscription_id: id,
        stream: "s".into(),
        topic: topic.into(),
        partition: Some(0),
        offset: PollStrategy::First,
        credit: 0,
        consumer: "c".into(),
        single_active: false,
        filter: Vec::new(),
        match_unfiltered: false,
    };
    let status = |result: Result<ringbroker::protocol::messages::Empty, common::Failure>| {
        result.expect_err("refused").status
    };
    assert_eq!(status(conn.call(Kind::Subscribe, &request(1, "missing"))), Status::UnknownTopic);
    let mut bad_partition = request(1, "t");
    bad_partition.partition = Some(9);
    assert_eq!(status(conn.call(Kind::Subscribe, &bad_partition)), Status::UnknownPartition);
    let mut bad_name = request(1, "t");
    bad_name.consumer = "no spaces".into();
    assert_eq!(status(conn.call(Kind::Subscribe, &bad_name)), Status::InvalidName);
    let mut too_many_values = request(1, "t");
    too_many_values.filter = (0..33).map(|i| format!("v{i}")).collect();
    assert_eq!(status(conn.call(Kind::Subscribe, &too_many_values)), Status::InvalidFilter);
    let mut too_long = request(1, "t");
    too_long.filter = vec!["x".repeat(256)];
    assert_eq!(status(conn.call(Kind::Subscribe, &too_long)), Status::InvalidFilter);
    let mut too_much = request(1, "t");
    too_much.credit = SUBSCRIPTION_CREDIT_MAX + 1;
    assert_eq!(status(conn.call(Kind::Subscribe, &too_much)), Status::CreditOverflow);

    let _: ringbroker::protocol::messages::Empty =
        conn.call(Kind::Subscribe, &request(1, "t")).expect("subscribe");
    assert_eq!(status(conn.call(Kind::Subscribe, &request(1, "t"))), Status::SubscriptionExists);
    let _: ringbroker::protocol::messages::Empty =
        conn.call(Kind::Subscribe, &request(2, "t")).expect("second");
    assert_eq!(status(conn.call(Kind::Subscribe, &request(3, "t"))), Status::TooManySubscriptions);
    assert_eq!(
        status(conn.call(Kind::Credit, &Credit { subscription_id: 99, credit: 1 })),
        Status::UnknownSubscription
    );
    assert_eq!(
        status(conn.call(Kind::Credit, &Credit { subscription_id: 1, credit: SUBSCRIPTION_CREDIT_MAX + 1 })),
        Status::CreditOverflow
    );
    assert_eq!(
        status(conn.call(Kind::Unsubscribe, &Unsubscribe { subscription_id: 42 })),
        Status::UnknownSubscription
    );
    let _: ringbroker::protocol::messages::Empty =
        conn.call(Kind::Unsubscribe, &Unsubscribe { subscription_id: 2 }).expect("unsubscribe");
    // A client may not send what only the server sends.
    let deliver = ringbroker::protocol::subscriptions::Unsubscribe { subscription_id: 1 };
    assert_eq!(status(conn.call(Kind::Deliver, &deliver)), Status::InvalidArgument);
    // Credit within bounds gets no answer; the connection goes on (the ping is answered next).
    let credit = common::request_frame(Kind::Credit, 1000, &Credit { subscription_id: 1, credit: 0 }, &[]);
    conn.send_raw(&credit).expect("send credit");
    conn.ping().expect("the connection survives every refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_stalls_nothing_and_memory_stays_bounded() {
    let queue_bytes: usize = 4 * 1024 * 1024;
    let queue = queue_bytes.to_string();
    let broker =
        common::Broker::start(1, &["--subscription-queue-bytes", &queue, "--delivery-bytes", "1048576"]);
    let client = setup(&broker, "t", 1).await;
    // ~128 MB in 1 MB batches.
    let payload = vec![b'x'; 1000];
    let mut builder = ringbroker::protocol::batch::BatchBuilder::new(0, 0);
    for _ in 0..1000 {
        builder.push_payload(&payload).expect("push");
    }
    let batch = builder.finish().expect("batch");
    for _ in 0..128 {
        client.produce("s", "t", Partitioning::Partition(0), &[&batch]).await.expect("produce");
    }
    let rss_before = broker.rss_kib().expect("rss");

    // A raw connection subscribes with plenty of credit, then never reads its socket.
    let addr = broker.addr();
    let stalled = tokio::task::spawn_blocking(move || {
        let mut conn = common::Conn::connect(addr).expect("connect");
        conn.login("ringbroker", "ringbroker").expect("login");
        let mut request = subscribe_request(1, "t", Some(0), 100_000);
        request.consumer = "stalled".into();
        let frame = common::request_frame(Kind::Subscribe, 5, &request, &[]);
        conn.stream.write_all(&frame).expect("subscribe");
        conn
    })
    .await
    .expect("stalled consumer");

    // Meanwhile the same (only) shard keeps serving others: produce, poll and subscribe.
    let started = std::time::Instant::now();
    for round in 0..20 {
        produce(&client, "t", 0, &format!("other{round}"), 10).await;
    }
    let mut reader = client.subscribe(&subscribe_request(2, "t", Some(0), 2)).await.expect("subscribe");
    let delivery = next(&mut reader).await;
    assert_eq!(delivery.polled.response.partitions[0].start_offset, 0);
    let served_in = started.elapsed();
    assert!(served_in < WAIT, "others were served while a consumer stalled ({served_in:?})");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = broker.rss_kib().expect("rss");
    let grown_kib = rss_after.saturating_sub(rss_before);
    // The stalled connection holds at most its queue plus one delivery (and the socket's
    // buffers); 128 MB would be queued without the bound.
    let bound_kib = (queue_bytes + 2 * 1024 * 1024) as u64 / 1024 + 32 * 1024;
    assert!(grown_kib < bound_kib, "RSS grew {grown_kib} KiB (bound {bound_kib} KiB)");
    eprintln!(
        "RSS {rss_before} KiB -> {rss_after} KiB with a stalled subscriber (queue {queue_bytes} bytes)"
    );
    let stats = client.stats(None).await.expect("stats");
    assert!(stats.server.delivered_bytes < 64 * 1024 * 1024, "deliveries stopped: {:?}", stats.server);
    drop(stalled);
}

#[test]
fn ringctl_consumes_by_subscription_and_as_a_single_active_member() {
    let broker = common::Broker::start(2, &[]);
    let mut conn = broker.root();
    conn.create_stream("s");
    conn.create_topic("s", "t", 2);
    for partition in 0..2 {
        let batch = common::batch_of(&format!("p{partition}"), 15);
        conn.produce("s", "t", Partitioning::Partition(partition), &[batch]).expect("produce");
    }
    let (ok, stdout, stderr) = common::ringctl(
        &broker,
        &[
            "consume",
            "s",
            "t",
            "--partition",
            "1",
            "--subscribe",
            "--credits",
            "1",
            "--from",
            "first",
            "--count",
            "15",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let expected: Vec<String> = (0..15).map(|i| format!("p1-{i}")).collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);

    // Alone in its group, a single-active member of the whole topic is active on both
    // partitions; it commits what it prints, so a second run starts after it.
    let args = ["consume", "s", "t", "--single-active", "g", "--from", "first", "--count", "30", "--commit"];
    let (ok, stdout, stderr) = common::ringctl(&broker, &args, "");
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 30);
    assert!(stderr.contains("active on partition 0") && stderr.contains("active on partition 1"), "{stderr}");
    let stored: ringbroker::protocol::messages::OffsetInfo = conn
        .call(
            Kind::OffsetGet,
            &ringbroker::protocol::messages::GetOffset {
                stream: "s".into(),
                topic: "t".into(),
                partition: 0,
                consumer: ringbroker::protocol::messages::ConsumerRef::Named("g".into()),
            },
        )
        .expect("offset");
    assert_eq!(stored.stored, Some(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_subscription_gets_only_matching_batches_and_covers_the_rest() {
    let broker = common::Broker::start(2, &[]);
    let client = setup(&broker, "f", 1).await;
    // Homogeneous batches: region a, b, a, none, b, a (5 messages each).
    for (batch, region) in ["a", "b", "a", "", "b", "a"].iter().enumerate() {
        let mut builder = ringbroker::protocol::batch::BatchBuilder::new(0, 0);
        for i in 0..5 {
            let payload = format!("{region}{batch}-{i}");
            let message = ringbroker::protocol::batch::Message {
                filter_value: (!region.is_empty()).then_some(region.as_bytes()),
                ..ringbroker::protocol::batch::Message::payload(payload.as_bytes())
            };
            builder.push(&message).expect("push");
        }
        let bytes = builder.finish().expect("batch");
        client.produce("s", "f", Partitioning::Partition(0), &[&bytes]).await.expect("produce");
    }
    let mut request = subscribe_request(3, "f", Some(0), 10);
    request.filter = vec!["a".into()];
    let mut subscription = client.subscribe(&request).await.expect("subscribe");
    let mut covered = 0;
    let mut seen = Vec::new();
    while covered < 30 {
        let delivery = next(&mut subscription).await;
        let marks = &delivery.polled.response.partitions[0];
        assert_eq!(marks.start_offset, covered, "deliveries cover skipped batches without gaps");
        covered = marks.next_offset;
        seen.extend(payloads(&delivery).into_iter().map(|(_, payload)| payload));
    }
    let expected: Vec<String> =
        [0, 2, 5].iter().flat_map(|batch| (0..5).map(move |i| format!("a{batch}-{i}"))).collect();
    assert_eq!(seen, expected, "only the region-a batches were sent");
    let stats = client.stats(None).await.expect("stats");
    assert!(stats.server.filtered_batches >= 3, "{:?}", stats.server);
}
