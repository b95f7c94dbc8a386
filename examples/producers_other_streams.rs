//! Several producers, each on its own stream and topic, each spreading its messages over the
//! partitions in a different way:
//!
//! * `example-produce-clicks/raw` (4 partitions): `Partitioning::Balanced` with unkeyed
//!   messages, so they take the partitions in turn;
//! * `example-produce-orders/created` (3 partitions): `Partitioning::Balanced` with keyed
//!   messages, so each key always lands on the same partition (the broker's key hash);
//! * `example-produce-metrics/cpu` (2 partitions): `Partitioning::Key`, one key for the whole
//!   producer, so everything lands on one partition; this one sends in direct mode (each `send`
//!   returns once acknowledged) instead of through the background batching task.
//!
//! The producers run at the same time on one shared `ShardRouter`. Afterwards `client.stats`
//! shows how many messages each partition holds, which must match what the partitioning
//! predicts. The streams are deleted at the end.
//!
//! Run against a local broker: `cargo run --example producers_other_streams`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use bytes::Bytes;
use ringbroker::client::producer::key_partition;
use ringbroker::client::{Client, Partitioning, Producer, ProducerMessage, ShardRouter};
use ringbroker::protocol::messages::Status;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const CLICKS: (&str, &str, u32) = ("example-produce-clicks", "raw", 4);
const ORDERS: (&str, &str, u32) = ("example-produce-orders", "created", 3);
const METRICS: (&str, &str, u32) = ("example-produce-metrics", "cpu", 2);
const CUSTOMERS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];
const HOST: &str = "host-a";

/// One producer's plan: where it writes, how, what, and how many messages each partition
/// should hold afterwards.
struct Plan {
    stream: &'static str,
    topic: &'static str,
    partitions: u32,
    partitioning: Partitioning,
    background: bool,
    messages: Vec<ProducerMessage>,
    expected: Vec<u64>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("RINGBROKER_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let client = Client::connect(&url.parse()?).await?;
    let streams = [CLICKS.0, ORDERS.0, METRICS.0];
    // Start clean, in case an earlier run was interrupted.
    for stream in streams {
        delete_if_exists(&client, stream).await?;
    }

    let outcome = demo(&client).await;

    for stream in streams {
        println!("deleting stream {stream}");
        delete_if_exists(&client, stream).await?;
    }
    outcome?;
    println!("ok: every partition holds what its producer's partitioning predicts");
    Ok(())
}

async fn demo(client: &Client) -> Result<(), BoxError> {
    let plans = plans();
    let router = ShardRouter::new(client.clone()).await?;

    // Every producer on its own task, all at once.
    let mut running = Vec::new();
    for plan in &plans {
        let producer = Producer::builder(&router, plan.stream, plan.topic)
            .create_if_missing(plan.partitions)
            .partitioning(plan.partitioning.clone())
            .background(plan.background)
            .build()
            .await?;
        println!(
            "producer on {}/{}: {:?}, {} mode, {} messages",
            plan.stream,
            plan.topic,
            plan.partitioning,
            if producer.is_background() { "background" } else { "direct" },
            plan.messages.len()
        );
        let messages = plan.messages.clone();
        running.push(tokio::spawn(async move {
            for message in messages {
                producer.send_one(message).await?;
            }
            // Flushes what is still batched and stops the background task.
            producer.shutdown().await?;
            Ok::<(), BoxError>(())
        }));
    }
    for producer in running {
        producer.await??;
    }

    // What landed where, according to the broker.
    let mut mismatches = Vec::new();
    for plan in &plans {
        let stats = client.stats(Some(plan.stream)).await?;
        let mut stored = vec![0; plan.partitions as usize];
        let partitions = stats
            .streams
            .iter()
            .filter(|stream| stream.name == plan.stream)
            .flat_map(|stream| &stream.topics)
            .filter(|topic| topic.name == plan.topic)
            .flat_map(|topic| &topic.partitions);
        for partition in partitions {
            if let Some(count) = stored.get_mut(partition.id as usize) {
                *count = partition.messages;
            }
        }
        println!(
            "{}/{}: messages per partition {stored:?} (expected {:?})",
            plan.stream, plan.topic, plan.expected
        );
        if stored != plan.expected {
            mismatches.push(format!("{}/{}", plan.stream, plan.topic));
        }
    }
    if !mismatches.is_empty() {
        return Err(format!("unexpected partition counts in {}", mismatches.join(", ")).into());
    }
    Ok(())
}

fn plans() -> Vec<Plan> {
    // Unkeyed, balanced: round robin, so 40 messages over 4 partitions is 10 each.
    let clicks = Plan {
        stream: CLICKS.0,
        topic: CLICKS.1,
        partitions: CLICKS.2,
        partitioning: Partitioning::Balanced,
        background: true,
        messages: (0..40).map(|i| ProducerMessage::from(format!("click {i}"))).collect(),
        expected: vec![10; CLICKS.2 as usize],
    };

    // Keyed, balanced: a key's messages all go to `key_partition(key, partitions)`.
    let mut orders_expected = vec![0; ORDERS.2 as usize];
    let orders_messages = (0..30)
        .map(|i| {
            let customer = CUSTOMERS[i % CUSTOMERS.len()];
            orders_expected[key_partition(customer.as_bytes(), ORDERS.2) as usize] += 1;
            ProducerMessage::keyed(customer, format!("order {i} of {customer}"))
        })
        .collect();
    let orders = Plan {
        stream: ORDERS.0,
        topic: ORDERS.1,
        partitions: ORDERS.2,
        partitioning: Partitioning::Balanced,
        background: true,
        messages: orders_messages,
        expected: orders_expected,
    };

    // One key for the whole producer: everything on that key's partition.
    let mut metrics_expected = vec![0; METRICS.2 as usize];
    metrics_expected[key_partition(HOST.as_bytes(), METRICS.2) as usize] = 20;
    let metrics = Plan {
        stream: METRICS.0,
        topic: METRICS.1,
        partitions: METRICS.2,
        partitioning: Partitioning::Key(Bytes::from_static(HOST.as_bytes())),
        background: false,
        messages: (0..20).map(|i| ProducerMessage::from(format!("cpu {}%", 10 + i))).collect(),
        expected: metrics_expected,
    };
    vec![clicks, orders, metrics]
}

/// Deletes a stream; a stream that is not there is fine.
async fn delete_if_exists(client: &Client, stream: &str) -> Result<(), BoxError> {
    match client.delete_stream(stream).await {
        Err(error) if error.status() != Some(Status::UnknownStream) => Err(error.into()),
        _ => Ok(()),
    }
}
