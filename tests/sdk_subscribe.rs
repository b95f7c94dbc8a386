//! The SDK consumer reading by push subscription (`ConsumerBuilder::subscribe`) against the real
//! broker binary: every partition in order, data produced before and while it reads, the
//! stream and `consume_messages` APIs as with polling, `AfterPoll` positions stored so the next
//! consumer continues, and a restart of the broker survived by subscribing again. Every wait is
//! bounded by a deadline.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::{
    AutoCommit, Consumer, HandlerError, MessageConsumer, PollStrategy, ReceivedMessage,
    INITIAL_CREDIT_DEFAULT,
};
use ringbroker::client::{Client, ConnectionString};
use ringbroker::protocol::messages::{ConsumerRef, Partitioning, TopicConfig};
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(15);

async fn start(broker: &common::Broker, partitions: u32) -> Client {
    let client =
        Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect");
    client.create_stream("s", true).await.expect("stream");
    let config = TopicConfig { partitions, ..TopicConfig::default() };
    client.create_topic("s", "t", config, true).await.expect("topic");
    client
}

async fn produce(client: &Client, partition: u32, from: u32, count: u32) {
    let mut builder = ringbroker::protocol::batch::BatchBuilder::new(0, 0);
    for i in from..from + count {
        builder.push_payload(format!("p{partition}-{i}").as_bytes()).expect("push");
    }
    let batch = builder.finish().expect("batch");
    client.produce("s", "t", Partitioning::Partition(partition), &[&batch]).await.expect("produce");
}

fn check(message: &ReceivedMessage, next: &mut [u64]) {
    let partition = message.partition as usize;
    assert_eq!(
        message.offset, next[partition],
        "partition {partition} in order, nothing skipped or repeated"
    );
    assert_eq!(message.payload, format!("p{partition}-{}", message.offset).as_bytes());
    next[partition] += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribing_consumer_reads_every_partition_in_order_as_data_arrives() {
    let broker = common::Broker::start(2, &[]);
    let client = start(&broker, 3).await;
    for partition in 0..3 {
        for batch in 0..20 {
            produce(&client, partition, batch * 10, 10).await;
        }
    }
    let mut consumer = Consumer::builder(&client, "s", "t")
        .consumer_name("pushed")
        .subscribe(INITIAL_CREDIT_DEFAULT)
        .polling_strategy(PollStrategy::First)
        .auto_commit(AutoCommit::AfterPoll)
        .build()
        .await
        .expect("consumer");
    let mut next = [0_u64; 3];
    let deadline = Instant::now() + WAIT;
    // Live data while it reads: another 100 per partition.
    let producer = client.clone();
    let live = tokio::spawn(async move {
        for batch in 20..30 {
            for partition in 0..3 {
                produce(&producer, partition, batch * 10, 10).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    while next.iter().sum::<u64>() < 900 {
        let message = timeout(deadline - Instant::now(), consumer.next()).await;
        let message = message.unwrap_or_else(|_| panic!("only {next:?} arrived"));
        check(&message.expect("never ends").expect("message"), &mut next);
    }
    live.await.expect("producer");
    assert!(timeout(Duration::from_millis(300), consumer.next()).await.is_err(), "nothing more");
    consumer.shutdown().await.expect("shutdown");

    // AfterPoll stored each delivery's end: the same name continues from there.
    let deadline = Instant::now() + WAIT;
    loop {
        let info = client.get_offset("s", "t", 1, ConsumerRef::Named("pushed".into())).await.expect("offset");
        if info.stored == Some(300) {
            break;
        }
        assert!(Instant::now() < deadline, "stored {:?}", info.stored);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = client.stats(None).await.expect("stats");
    assert_eq!(stats.server.subscriptions, 0, "the consumer unsubscribed when it shut down");
}

/// Records offsets; signals when it has `want`.
struct Counter {
    seen: Mutex<Vec<u64>>,
    want: usize,
    done: tokio::sync::Notify,
}

impl MessageConsumer for Counter {
    async fn consume(&self, message: ReceivedMessage) -> Result<(), HandlerError> {
        let mut seen = self.seen.lock().expect("lock");
        seen.push(message.offset);
        if seen.len() == self.want {
            self.done.notify_one();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_messages_over_a_subscription_survives_a_broker_restart() {
    let mut broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = start(&broker, 1).await;
    for batch in 0..10 {
        produce(&client, 0, batch * 5, 5).await;
    }
    let target: ConnectionString = format!(
        "ringbroker://ringbroker:ringbroker@{}?reconnect_interval_ms=50&reconnect_retries=100",
        broker.addr()
    )
    .parse()
    .expect("connection string");
    let reader = Client::connect(&target).await.expect("connect");
    let mut consumer = Consumer::builder(&reader, "s", "t")
        .consumer_name("handler")
        .partition(0)
        .subscribe(2)
        .polling_strategy(PollStrategy::First)
        .auto_commit(AutoCommit::AfterHandler)
        .polling_interval(Duration::from_millis(20))
        .build()
        .await
        .expect("consumer");
    let counter = Counter { seen: Mutex::default(), want: 50, done: Default::default() };
    tokio::select! {
        outcome = consumer.consume_messages(&counter, counter.done.notified()) => outcome.expect("consumed"),
        () = tokio::time::sleep(WAIT) => panic!("only {} of 50 handled", counter.seen.lock().expect("lock").len()),
    }
    assert_eq!(*counter.seen.lock().expect("lock"), (0..50).collect::<Vec<u64>>());

    // The broker restarts: the subscription is gone with its connection; the consumer
    // subscribes again from its position and reads what comes next, once.
    broker.restart();
    let writer = start(&broker, 1).await;
    for batch in 10..14 {
        produce(&writer, 0, batch * 5, 5).await;
    }
    let more = Counter { seen: Mutex::default(), want: 20, done: Default::default() };
    tokio::select! {
        outcome = consumer.consume_messages(&more, more.done.notified()) => outcome.expect("consumed"),
        () = tokio::time::sleep(WAIT) => panic!("after the restart only {:?}", more.seen.lock().expect("lock")),
    }
    assert_eq!(*more.seen.lock().expect("lock"), (50..70).collect::<Vec<u64>>());
    consumer.shutdown().await.expect("shutdown");
}
