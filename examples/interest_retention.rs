//! Interest retention, step by step: a topic that keeps a message only while some durable
//! consumer whose filter matches it still has to process it.
//!
//! The walk follows the NATS JetStream "interest-based stream" example, on one partition: three
//! events with no consumer at all (gone at once), one consumer (kept until it acknowledges), a
//! second consumer (kept until both have), and a third one with a narrower filter (it keeps only
//! what it asked for). After each step it prints the topic's state (messages, bytes, first and
//! last offset, consumers) and checks the figures; any surprise ends it with a non-zero status.
//! Offsets start at 0 where JetStream's sequences start at 1, so every figure is one lower than
//! in the NATS output; an empty topic shows `first == last + 1` there as here.
//!
//! Run against a local broker: `cargo run --example interest_retention`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use std::time::Duration;

use ringbroker::client::{Client, DurableConfigExt, DurableConsumer};
use ringbroker::protocol::batch::{BatchBuilder, Message};
use ringbroker::protocol::durable::{DurableConfig, PartitionState, Retention, TopicPolicy};
use ringbroker::protocol::messages::{Partitioning, Status, TopicConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const STREAM: &str = "example-interest";
const TOPIC: &str = "events";
/// How long a fetch may wait for what the step expects.
const FETCH_WAIT: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("RINGBROKER_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let client = Client::connect(&url.parse()?).await?;
    // Start clean, in case an earlier run was interrupted.
    delete_if_exists(&client, STREAM).await?;

    let outcome = walk(&client).await;

    println!("deleting stream {STREAM}");
    delete_if_exists(&client, STREAM).await?;
    outcome?;
    println!("ok: every figure matched the walk-through");
    Ok(())
}

async fn walk(client: &Client) -> Result<(), BoxError> {
    client.create_stream(STREAM, false).await?;
    let policy = TopicPolicy { retention: Retention::Interest, ..TopicPolicy::default() };
    let config = TopicConfig { partitions: 1, ..TopicConfig::default() };
    client.create_topic_with_policy(STREAM, TOPIC, config, policy, false).await?;
    println!("created topic {STREAM}/{TOPIC} with interest retention");

    // 1. Nobody is interested yet: each event is removed as soon as it is written.
    for subject in ["events.page_loaded", "events.mouse_clicked", "events.input_focused"] {
        let offset = publish(client, subject).await?;
        println!("published {subject} at offset {offset}");
    }
    expect(client, "three events, no consumer", (0, 3, 2, 0)).await?;

    // 2. A consumer registers interest; it need not be fetching for the topic to keep events.
    let first = consumer(client, "processor-1", "events.>").await?;
    publish(client, "events.mouse_clicked").await?;
    publish(client, "events.input_focused").await?;
    expect(client, "one consumer, two new events", (2, 3, 4, 1)).await?;

    // 3. It processes both and double-acks: answered once durable, so the state is settled.
    for message in fetch(&first, 2).await? {
        message.double_ack().await?;
    }
    expect(client, "one consumer, both events acknowledged", (0, 5, 4, 1)).await?;

    // 4. A second consumer. It never sees the events removed before it existed.
    let second = consumer(client, "processor-2", "events.>").await?;
    publish(client, "events.input_focused").await?;
    publish(client, "events.mouse_clicked").await?;
    let taken = fetch(&second, 2).await?;
    let offsets: Vec<u64> = taken.iter().map(|m| m.offset).collect();
    println!("processor-2 received offsets {offsets:?}");
    check("processor-2's offsets", offsets, vec![5, 6])?;
    taken[0].ack().await?;
    taken[1].double_ack().await?;
    expect(client, "two consumers, only processor-2 done", (2, 5, 6, 2)).await?;

    // 5. processor-1 catches up: nobody needs them any more.
    for message in fetch(&first, 2).await? {
        message.double_ack().await?;
    }
    expect(client, "two consumers, both done", (0, 7, 6, 2)).await?;

    // 6. A third consumer that wants only mouse clicks. processor-1 terminates the new click
    //    (also "done" as far as retention goes), processor-2 acknowledges it; processor-3 has
    //    not, so it stays.
    consumer(client, "processor-3", "events.mouse_clicked").await?;
    publish(client, "events.mouse_clicked").await?;
    let click = fetch(&first, 1).await?;
    click[0].term_with("processor-1 does not handle clicks").await?;
    let click = fetch(&second, 1).await?;
    click[0].double_ack().await?;
    expect(client, "three consumers, the click wanted by processor-3 only", (1, 7, 7, 3)).await?;
    Ok(())
}

/// Publishes an empty event with `subject` as its filter value; returns its offset.
async fn publish(client: &Client, subject: &str) -> Result<u64, BoxError> {
    let mut builder = BatchBuilder::new(0, 0);
    builder.push(&Message { filter_value: Some(subject.as_bytes()), ..Message::payload(b"") })?;
    let batch = builder.finish()?;
    let answer = client.produce(STREAM, TOPIC, Partitioning::Partition(0), &[&batch]).await?;
    Ok(answer.acks.first().ok_or("no produce acknowledgement")?.base_offset)
}

async fn consumer(client: &Client, name: &str, filter: &str) -> Result<DurableConsumer, BoxError> {
    let durable = client.create_durable(STREAM, TOPIC, DurableConfig::new(name).filter(filter)).await?;
    println!("created consumer {name} (filter {filter})");
    Ok(durable)
}

/// Fetches exactly `count` messages, or fails.
async fn fetch(
    consumer: &DurableConsumer,
    count: u32,
) -> Result<Vec<ringbroker::client::DurableMessage>, BoxError> {
    let messages: Vec<_> =
        consumer.fetch().max_messages(count).expires(FETCH_WAIT).messages().await?.collect();
    if messages.len() != count as usize {
        return Err(
            format!("{} fetched {} messages, expected {count}", consumer.name(), messages.len()).into()
        );
    }
    Ok(messages)
}

/// Prints the topic's state and checks (messages, first offset, last offset, consumers); bytes
/// must be zero exactly when there are no messages.
async fn expect(client: &Client, step: &str, wanted: (u64, u64, i64, u32)) -> Result<(), BoxError> {
    let state = client.topic_state(STREAM, TOPIC).await?;
    let partition: &PartitionState = state.partitions.first().ok_or("no partition state")?;
    println!(
        "# {step}\n  messages {}, bytes {}, first_offset {}, last_offset {}, consumer_count {}",
        partition.messages,
        partition.bytes,
        partition.first_offset,
        partition.last_offset,
        partition.consumer_count
    );
    let found = (partition.messages, partition.first_offset, partition.last_offset, partition.consumer_count);
    check(step, found, wanted)?;
    if (partition.bytes == 0) != (partition.messages == 0) {
        return Err(format!("{step}: {} bytes for {} messages", partition.bytes, partition.messages).into());
    }
    Ok(())
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, found: T, wanted: T) -> Result<(), BoxError> {
    if found != wanted {
        return Err(format!("{what}: found {found:?}, the walk-through shows {wanted:?}").into());
    }
    Ok(())
}

async fn delete_if_exists(client: &Client, stream: &str) -> Result<(), BoxError> {
    match client.delete_stream(stream).await {
        Err(error) if error.status() != Some(Status::UnknownStream) => Err(error.into()),
        _ => Ok(()),
    }
}
