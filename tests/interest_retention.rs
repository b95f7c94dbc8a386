//! Interest retention against the real broker, figure by figure as the NATS JetStream
//! interest-stream walk-through prints them (offsets are 0-based where JetStream's sequences
//! start at 1): no consumers, one consumer, acknowledged, a second consumer, mixed
//! acknowledgements, a third consumer with a narrower filter, and a termination.

mod common;

use ringbroker::client::Client;
use ringbroker::protocol::batch::{BatchBuilder, Message};
use ringbroker::protocol::durable::{
    AckKind, DurableConfig, FetchRequest, PartitionState, Retention, TopicPolicy,
};
use ringbroker::protocol::messages::{Partitioning, TopicConfig};

async fn publish(client: &Client, subject: &str) -> u64 {
    let mut builder = BatchBuilder::new(0, 0);
    builder.push(&Message { filter_value: Some(subject.as_bytes()), ..Message::payload(b"") }).expect("push");
    let batch = builder.finish().expect("batch");
    let answer = client.produce("s", "events", Partitioning::Partition(0), &[&batch]).await.expect("produce");
    answer.acks[0].base_offset
}

async fn state(client: &Client) -> PartitionState {
    client.topic_state("s", "events").await.expect("state").partitions[0].clone()
}

fn figures(state: &PartitionState) -> (u64, u64, i64, u32) {
    (state.messages, state.first_offset, state.last_offset, state.consumer_count)
}

async fn consumer(client: &Client, name: &str, filter: &str) {
    let config = DurableConfig { filter: vec![filter.to_string()], ..DurableConfig::new(name) };
    client.create_consumer("s", "events", config, false).await.expect("consumer");
}

async fn fetch(client: &Client, name: &str, count: u32) -> Vec<u64> {
    let request = FetchRequest {
        stream: "s".into(),
        topic: "events".into(),
        partition: 0,
        consumer: name.into(),
        max_messages: count,
        max_bytes: 1 << 20,
        expires_us: 2_000_000,
        no_wait: false,
    };
    let fetched = client.fetch(&request).await.expect("fetch");
    fetched.messages.iter().map(|m| m.offset).collect()
}

async fn ack(client: &Client, name: &str, kind: AckKind, offsets: Vec<u64>, sync: bool) {
    client.ack("s", "events", 0, name, kind, offsets, sync).await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interest_stream_walk_through() {
    let broker = common::Broker::start(2, &[]);
    let client =
        Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect");
    client.create_stream("s", false).await.expect("stream");
    let policy = TopicPolicy { retention: Retention::Interest, ..TopicPolicy::default() };
    let info = client
        .create_topic_with_policy(
            "s",
            "events",
            TopicConfig { partitions: 1, ..TopicConfig::default() },
            policy,
            false,
        )
        .await
        .expect("topic");
    assert_eq!(info.policy.retention, Retention::Interest);

    // Three messages without consumers: removed at once; empty means first == last + 1.
    publish(&client, "events.page_loaded").await;
    publish(&client, "events.mouse_clicke").await;
    assert_eq!(publish(&client, "events.input_focused").await, 2, "last message offset");
    let empty = state(&client).await;
    assert_eq!(figures(&empty), (0, 3, 2, 0));
    assert_eq!(empty.bytes, 0);

    // One consumer: two new messages are kept.
    consumer(&client, "processor-1", "events.>").await;
    publish(&client, "events.mouse_clicked").await;
    publish(&client, "events.input_focused").await;
    let one = state(&client).await;
    assert_eq!(figures(&one), (2, 3, 4, 1));
    assert!(one.bytes > 0);

    // Fetched and double-acked: gone.
    let offsets = fetch(&client, "processor-1", 2).await;
    assert_eq!(offsets, vec![3, 4]);
    for offset in offsets {
        ack(&client, "processor-1", AckKind::Ack, vec![offset], true).await;
    }
    assert_eq!(figures(&state(&client).await), (0, 5, 4, 1));

    // A second consumer; only one of them acknowledges: kept.
    consumer(&client, "processor-2", "events.>").await;
    publish(&client, "events.input_focused").await;
    publish(&client, "events.mouse_clicked").await;
    let offsets = fetch(&client, "processor-2", 2).await;
    assert_eq!(offsets, vec![5, 6], "a late consumer sees only new messages");
    ack(&client, "processor-2", AckKind::Ack, vec![5], false).await;
    ack(&client, "processor-2", AckKind::Ack, vec![6], true).await;
    assert_eq!(figures(&state(&client).await), (2, 5, 6, 2));

    // Both acknowledged: gone.
    let offsets = fetch(&client, "processor-1", 2).await;
    assert_eq!(offsets, vec![5, 6]);
    ack(&client, "processor-1", AckKind::Ack, offsets, true).await;
    assert_eq!(figures(&state(&client).await), (0, 7, 6, 2));

    // A third consumer with a narrower filter keeps what it wants after the others are done.
    consumer(&client, "processor-3", "events.mouse_clicked").await;
    publish(&client, "events.mouse_clicked").await;
    let offsets = fetch(&client, "processor-1", 1).await;
    assert_eq!(offsets, vec![7]);
    ack(&client, "processor-1", AckKind::Term, offsets, true).await;
    let offsets = fetch(&client, "processor-2", 1).await;
    ack(&client, "processor-2", AckKind::Ack, offsets, true).await;
    assert_eq!(figures(&state(&client).await), (1, 7, 7, 3));

    // An input_focused message: processor-3 does not want it, the other two do.
    publish(&client, "events.input_focused").await;
    assert_eq!(figures(&state(&client).await), (2, 7, 8, 3));
    for name in ["processor-1", "processor-2"] {
        let offsets = fetch(&client, name, 1).await;
        assert_eq!(offsets, vec![8]);
        ack(&client, name, AckKind::Ack, offsets, true).await;
    }
    assert_eq!(figures(&state(&client).await), (1, 7, 8, 3));
    // processor-3 takes its message: empty again.
    let offsets = fetch(&client, "processor-3", 5).await;
    assert_eq!(offsets, vec![7]);
    ack(&client, "processor-3", AckKind::Ack, offsets, true).await;
    assert_eq!(figures(&state(&client).await), (0, 9, 8, 3));
}
