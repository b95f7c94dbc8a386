//! Single active consumer against the real broker binary: on one partition the first member is
//! active and the others wait; when the active member's connection dies the next one takes over
//! from the stored offset (nothing lost, nothing before the stored offset delivered again); on a
//! whole topic (a super stream) partition `i` goes to member `i % members`, rebalanced as members
//! join, with the old member deactivated (and answering) before the new one is activated. Every
//! wait is bounded.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::{AutoCommit, Consumer, PollStrategy};
use ringbroker::client::{Client, ConsumerUpdateRequest, Subscription, SubscriptionEvent};
use ringbroker::protocol::messages::{ConsumerRef, Partitioning, TopicConfig};
use ringbroker::protocol::subscriptions::Subscribe;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(15);

async fn connect(broker: &common::Broker) -> Client {
    Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect")
}

async fn setup(broker: &common::Broker, partitions: u32) -> Client {
    let client = connect(broker).await;
    client.create_stream("s", false).await.expect("stream");
    let config = TopicConfig { partitions, ..TopicConfig::default() };
    client.create_topic("s", "t", config, false).await.expect("topic");
    client
}

async fn produce(client: &Client, partition: u32, from: u64, count: u64) {
    let mut builder = ringbroker::protocol::batch::BatchBuilder::new(0, 0);
    for i in from..from + count {
        builder.push_payload(format!("m{i}").as_bytes()).expect("push");
    }
    let batch = builder.finish().expect("batch");
    client.produce("s", "t", Partitioning::Partition(partition), &[&batch]).await.expect("produce");
}

async fn member(client: &Client, id: u32, partition: Option<u32>) -> Subscription {
    let request = Subscribe {
        subscription_id: id,
        stream: "s".into(),
        topic: "t".into(),
        partition,
        offset: PollStrategy::First,
        credit: 100,
        consumer: "group".into(),
        single_active: true,
        filter: Vec::new(),
        match_unfiltered: false,
    };
    client.subscribe(&request).await.expect("subscribe")
}

async fn event(subscription: &mut Subscription) -> SubscriptionEvent {
    timeout(WAIT, subscription.next()).await.expect("an event in time").expect("an event")
}

/// The next consumer update; deliveries of partitions activated earlier are passed over.
async fn update(subscription: &mut Subscription) -> ConsumerUpdateRequest {
    loop {
        if let SubscriptionEvent::Update(update) = event(subscription).await {
            return update;
        }
    }
}

/// Hand-overs as the hooks saw them: (member, active, stored offset).
type Events = Arc<Mutex<Vec<(&'static str, bool, Option<u64>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_member_takes_over_from_the_stored_offset_when_the_active_one_dies() {
    let broker = common::Broker::start(2, &[]);
    let writer = setup(&broker, 1).await;
    produce(&writer, 0, 0, 300).await;

    // A registers first: it is activated and reads 0..100, stores 100, then its connection dies.
    let a_client = connect(&broker).await;
    let mut a = member(&a_client, 1, Some(0)).await;
    let activation = update(&mut a).await;
    assert!(activation.active && activation.partition == 0);
    a.answer_update(&activation, PollStrategy::First).await.expect("answer");

    // B and C wait behind it, each recording its hand-overs.
    let events: Events = Arc::default();
    let build = |name: &'static str| {
        let events = events.clone();
        Consumer::builder(&writer, "s", "t")
            .single_active_consumer("group")
            .partition(0)
            .auto_commit(AutoCommit::Disabled)
            .polling_interval(Duration::from_millis(20))
            .on_update(move |context, active| {
                events.lock().expect("lock").push((name, active, context.stored_offset));
                context.stored_offset.map_or(PollStrategy::First, PollStrategy::Offset)
            })
            .build()
    };
    let mut b = build("b").await.expect("b");
    let mut c = build("c").await.expect("c");

    let mut read = 0_u64;
    while read < 100 {
        if let SubscriptionEvent::Delivery(delivery) = event(&mut a).await {
            for record in delivery.polled.records() {
                let record = record.expect("valid");
                assert_eq!(record.record.offset, read);
                read += 1;
                if read == 100 {
                    break;
                }
            }
        }
    }
    a_client.store_offset("s", "t", 0, ConsumerRef::Named("group".into()), 100).await.expect("store");
    // The waiting members got nothing meanwhile.
    assert!(timeout(Duration::from_millis(300), b.next()).await.is_err(), "b waits");
    assert!(timeout(Duration::from_millis(100), c.next()).await.is_err(), "c waits");
    assert!(events.lock().expect("lock").is_empty());

    drop(a);
    drop(a_client); // The connection closes without an Unsubscribe: A is gone.

    // B takes over at the stored offset: 100..300, once each, in order.
    let deadline = Instant::now() + WAIT;
    for expected in 100..300_u64 {
        let message = timeout(deadline - Instant::now(), b.next()).await.expect("b in time");
        let message = message.expect("never ends").expect("message");
        assert_eq!((message.partition, message.offset), (0, expected));
        assert_eq!(message.payload, format!("m{expected}").as_bytes());
    }
    assert_eq!(*events.lock().expect("lock"), [("b", true, Some(100))]);
    assert!(timeout(Duration::from_millis(200), c.next()).await.is_err(), "c still waits");

    // B leaves after storing 250: C takes over there.
    writer.store_offset("s", "t", 0, ConsumerRef::Named("group".into()), 250).await.expect("store");
    b.shutdown().await.expect("b leaves");
    let message = timeout(WAIT, c.next()).await.expect("c in time").expect("never ends").expect("message");
    assert_eq!(message.offset, 250);
    assert_eq!(events.lock().expect("lock").last(), Some(&("c", true, Some(250))));
    c.shutdown().await.expect("c leaves");
}

type Log = Arc<Mutex<Vec<(char, u32, bool)>>>;

/// Takes one consumer update, records it, answers it; returns (partition, active).
async fn answer(name: char, subscription: &mut Subscription, log: &Log) -> (u32, bool) {
    let got = update(subscription).await;
    log.lock().expect("lock").push((name, got.partition, got.active));
    subscription.answer_update(&got, PollStrategy::Next).await.expect("answer");
    (got.partition, got.active)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_stream_partitions_spread_over_members_in_registration_order() {
    let broker = common::Broker::start(2, &[]);
    let writer = setup(&broker, 3).await;
    // The order of events across members, as each observes and answers them.
    let log: Log = Arc::default();
    let x_client = connect(&broker).await;
    let mut x = member(&x_client, 1, None).await;
    let mut x_active = Vec::new();
    for _ in 0..3 {
        x_active.push(answer('x', &mut x, &log).await);
    }
    x_active.sort_unstable();
    assert_eq!(x_active, [(0, true), (1, true), (2, true)], "one member holds every partition");

    // Y joins: partition 1 moves to it (1 % 2), X is told first.
    let y_client = connect(&broker).await;
    let mut y = member(&y_client, 2, None).await;
    let step_down = answer('x', &mut x, &log).await;
    let step_up = answer('y', &mut y, &log).await;
    assert_eq!((step_down, step_up), ((1, false), (1, true)));
    {
        let log = log.lock().expect("lock");
        let n = log.len();
        assert_eq!(&log[n - 2..], [('x', 1, false), ('y', 1, true)], "deactivation is answered first");
    }

    // Z joins: partition 2 moves to it (2 % 3); 0 stays with X and 1 with Y.
    let z_client = connect(&broker).await;
    let mut z = member(&z_client, 3, None).await;
    assert_eq!(answer('x', &mut x, &log).await, (2, false));
    assert_eq!(answer('z', &mut z, &log).await, (2, true));
    assert!(timeout(Duration::from_millis(300), y.next()).await.is_err(), "y keeps partition 1 untouched");

    // Each member now receives its own partition only.
    for partition in 0..3 {
        produce(&writer, partition, 0, 5).await;
    }
    for (name, subscription, partition) in [('x', &mut x, 0), ('y', &mut y, 1), ('z', &mut z, 2)] {
        match event(subscription).await {
            SubscriptionEvent::Delivery(delivery) => {
                assert_eq!(delivery.polled.response.partitions[0].partition, partition, "member {name}");
            }
            other => panic!("member {name}: {other:?}"),
        }
    }

    // Y's connection dies: with two members left, partition 1 goes to Z (1 % 2) and 2 to X.
    drop(y);
    drop(y_client);
    let mut moves = Vec::new();
    let deadline = Instant::now() + WAIT;
    while moves.len() < 3 && Instant::now() < deadline {
        tokio::select! {
            got = answer('x', &mut x, &log) => moves.push(('x', got)),
            got = answer('z', &mut z, &log) => moves.push(('z', got)),
        }
    }
    moves.sort_unstable();
    assert_eq!(moves, [('x', (2, true)), ('z', (1, true)), ('z', (2, false))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_super_stream_group_reads_every_partition_once() {
    let broker = common::Broker::start(2, &[]);
    let writer = setup(&broker, 3).await;
    for partition in 0..3 {
        produce(&writer, partition, 0, 50).await;
    }
    let build = || {
        Consumer::builder(&writer, "s", "t")
            .single_active_consumer("group")
            .polling_strategy(PollStrategy::First)
            .auto_commit(AutoCommit::Disabled)
            .polling_interval(Duration::from_millis(20))
            .build()
    };
    let mut one = build().await.expect("one");
    let mut seen = std::collections::BTreeMap::<u32, Vec<u64>>::new();
    let deadline = Instant::now() + WAIT;
    while seen.values().map(Vec::len).sum::<usize>() < 150 {
        let message = timeout(deadline - Instant::now(), one.next()).await.expect("in time");
        let message = message.expect("never ends").expect("message");
        seen.entry(message.partition).or_default().push(message.offset);
    }
    for partition in 0..3 {
        assert_eq!(seen[&partition], (0..50).collect::<Vec<u64>>(), "partition {partition}");
    }
    one.shutdown().await.expect("shutdown");
}
