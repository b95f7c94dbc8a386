//! A super stream of invoices, partitioned by region: a super-stream producer routes each invoice
//! by the region in its payload (key routing over binding keys `amer`, `emea`, `apac`), and a
//! consumer reads every partition and shows that each holds one region only. Then the same with
//! hash routing by customer over a 3-partition super stream.
//!
//! Last, two single-active members of one name form a consumer group over the hash-routed super
//! stream: partition `i` goes to member `i % 2`, and together they read every invoice once.
//!
//! The example creates its stream, stops by itself once the consumer has read everything (or
//! after a timeout), and deletes its stream.
//!
//! Run against a local broker (`cargo run --release --bin ringbroker` in another terminal):
//! `cargo run --example super_stream`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::{Consumer, PollStrategy};
use ringbroker::client::producer::key_partition;
use ringbroker::client::{super_stream, Client, ConnectionString, Producer, ProducerMessage, Routing};
use ringbroker::protocol::super_stream::SuperStreamLayout;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const STREAM: &str = "example-super";
const REGIONS: [&str; 3] = ["amer", "emea", "apac"];
const INVOICES: usize = 30;
/// How long the consumer may take to read everything.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The routing key of an invoice `"{region}:{customer}:{amount}"`: its region.
fn region(message: &ProducerMessage) -> String {
    let payload = String::from_utf8_lossy(&message.payload);
    payload.split(':').next().unwrap_or_default().to_string()
}

/// The routing key of an invoice: its customer.
fn customer(message: &ProducerMessage) -> String {
    let payload = String::from_utf8_lossy(&message.payload);
    payload.split(':').nth(1).unwrap_or_default().to_string()
}

fn invoices() -> Vec<ProducerMessage> {
    (0..INVOICES)
        .map(|i| ProducerMessage::new(format!("{}:customer-{}:{}", REGIONS[i % 3], i % 7, 10 * i + 5)))
        .collect()
}

/// Reads `count` messages from every partition of `name`; the payloads by partition.
async fn read_all(client: &Client, name: &str, count: usize) -> Result<BTreeMap<u32, Vec<String>>, BoxError> {
    let builder = super_stream::consumer(client, STREAM, name, "example-reader").await?;
    let mut consumer = builder
        .polling_strategy(PollStrategy::First)
        .polling_interval(Duration::from_millis(50))
        .build()
        .await?;
    let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    for _ in 0..count {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, consumer.next()).await else {
            return Err(format!("{name}: not every message arrived within {READ_TIMEOUT:?}").into());
        };
        let message = message?;
        by_partition
            .entry(message.partition)
            .or_default()
            .push(String::from_utf8_lossy(&message.payload).into());
    }
    consumer.shutdown().await?;
    Ok(by_partition)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url: ConnectionString =
        std::env::var("RINGBROKER_URL").unwrap_or_else(|_| DEFAULT_URL.to_string()).parse()?;
    let client = Client::connect(&url).await?;
    client.create_stream(STREAM, true).await?;
    let outcome = run(&client).await;
    client.delete_stream(STREAM).await?;
    outcome
}

async fn run(client: &Client) -> Result<(), BoxError> {
    // Key routing: one partition per region.
    let keys = REGIONS.iter().map(|r| r.to_string()).collect();
    client.create_super_stream(STREAM, "invoices", SuperStreamLayout::BindingKeys(keys), true).await?;
    for partition in client.super_stream_partitions(STREAM, "invoices").await?.partitions {
        println!("invoices partition {} has binding key {}", partition.id, partition.binding_key);
    }
    let producer =
        Producer::builder(client, STREAM, "invoices").super_stream(Routing::Key, region).build().await?;
    producer.send(invoices()).await?;
    producer.shutdown().await?;
    let by_partition = read_all(client, "invoices", INVOICES).await?;
    for (partition, payloads) in &by_partition {
        let regions: BTreeSet<String> =
            payloads.iter().map(|p| p.split(':').next().unwrap_or_default().into()).collect();
        println!("invoices partition {partition}: {} invoices, regions {regions:?}", payloads.len());
        if regions.len() != 1 {
            return Err(format!("partition {partition} mixes regions {regions:?}").into());
        }
    }

    // Hash routing: three partitions, a customer always on the same one.
    client.create_super_stream(STREAM, "by-customer", SuperStreamLayout::Partitions(3), true).await?;
    let producer = Producer::builder(client, STREAM, "by-customer")
        .super_stream(Routing::Hash, customer)
        .build()
        .await?;
    producer.send(invoices()).await?;
    producer.shutdown().await?;
    let by_partition = read_all(client, "by-customer", INVOICES).await?;
    for (partition, payloads) in &by_partition {
        let customers: BTreeSet<&str> = payloads.iter().filter_map(|p| p.split(':').nth(1)).collect();
        println!("by-customer partition {partition}: {} invoices, customers {customers:?}", payloads.len());
        if customers.iter().any(|c| key_partition(c.as_bytes(), 3) != *partition) {
            return Err(format!("partition {partition} holds a customer hashed elsewhere").into());
        }
    }

    // A consumer group over the super stream: two single-active members under one name split
    // the partitions (partition i to member i % 2) and together read every invoice once.
    let members = [group_member(client, "first").await?, group_member(client, "second").await?];
    let read = read_group(members, INVOICES).await?;
    for (member, partitions) in &read {
        println!("group member {member} read partitions {partitions:?}");
    }
    println!("done: every invoice on its region's and its customer's partition, read once by the group");
    Ok(())
}

/// A single-active member of the super stream `by-customer` under the name `billing`.
async fn group_member(client: &Client, name: &'static str) -> Result<(&'static str, Consumer), BoxError> {
    let consumer = Consumer::builder(client, STREAM, "by-customer")
        .single_active_consumer("billing")
        .polling_strategy(PollStrategy::First)
        .polling_interval(Duration::from_millis(20))
        .on_update(move |context, active| {
            println!(
                "group member {name}: partition {} {}",
                context.partition,
                if active { "upgrade" } else { "downgrade" }
            );
            context.stored_offset.map_or(PollStrategy::First, PollStrategy::Offset)
        })
        .build()
        .await?;
    Ok((name, consumer))
}

/// Reads with every member at once until `count` messages arrived in total; which partitions
/// each member read.
async fn read_group(
    members: [(&'static str, Consumer); 2],
    count: usize,
) -> Result<BTreeMap<&'static str, BTreeSet<u32>>, BoxError> {
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (name, mut consumer) in members {
        let sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(message)) = consumer.next().await {
                if sender.send((name, message.partition, message.offset)).is_err() {
                    break;
                }
            }
            let _ = consumer.shutdown().await;
        }));
    }
    let mut seen = BTreeSet::new();
    let mut read: BTreeMap<&'static str, BTreeSet<u32>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    while seen.len() < count {
        let Ok(Some((name, partition, offset))) = tokio::time::timeout_at(deadline, received.recv()).await
        else {
            return Err(format!("the group read {} of {count} invoices in time", seen.len()).into());
        };
        if !seen.insert((partition, offset)) {
            return Err(format!("partition {partition} offset {offset} was read twice").into());
        }
        read.entry(name).or_default().insert(partition);
    }
    drop(received);
    for task in tasks {
        task.abort();
    }
    Ok(read)
}
