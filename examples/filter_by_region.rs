//! Filtering by region: a producer tags every order with its region as the filter value, and a
//! consumer that wants one region receives only that region's orders.
//!
//! The producer hands the SDK one region's orders per `send_batch` call, so every batch holds a
//! single filter value (homogeneous batches): the broker can then skip whole batches of the other
//! regions by their Bloom filter, without sending them. A few orders carry no region at all; a
//! second consumer asks for "eu" with `match_unfiltered(true)` and gets those too. At the end the
//! broker's `stats` show how many batches and bytes the filters kept off the network. The stream
//! is deleted at the end.
//!
//! Run against a local broker: `cargo run --example filter_by_region`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::PollStrategy;
use ringbroker::client::{AutoCommit, Client, Consumer, Producer, ProducerMessage};
use ringbroker::protocol::messages::Status;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const STREAM: &str = "example-regions";
const TOPIC: &str = "orders";
const REGIONS: [&str; 4] = ["eu", "us", "latam", "apac"];
/// Rounds of orders: each round sends one batch per region, then one untagged order.
const ROUNDS: usize = 5;
const ORDERS_PER_BATCH: usize = 20;
/// How long a consumer may take to receive what it expects.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("RINGBROKER_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let client = Client::connect(&url.parse()?).await?;
    // Start clean, in case an earlier run was interrupted.
    delete_if_exists(&client, STREAM).await?;

    let outcome = demo(&client).await;

    println!("deleting stream {STREAM}");
    delete_if_exists(&client, STREAM).await?;
    outcome?;
    println!("ok: each consumer received exactly the orders it asked for");
    Ok(())
}

async fn demo(client: &Client) -> Result<(), BoxError> {
    let producer = Producer::builder(client, STREAM, TOPIC).create_if_missing(1).build().await?;
    for round in 0..ROUNDS {
        for region in REGIONS {
            // One region per call: one batch with one filter value.
            let orders = (0..ORDERS_PER_BATCH)
                .map(|i| {
                    ProducerMessage::new(format!("order {round}-{i} from {region}")).with_filter_value(region)
                })
                .collect();
            producer.send_batch(orders).await?;
        }
        producer.send_batch(vec![ProducerMessage::new(format!("order {round} without a region"))]).await?;
    }
    producer.shutdown().await?;
    let eu_orders = ROUNDS * ORDERS_PER_BATCH;
    println!("produced {} orders in {} batches", ROUNDS * (REGIONS.len() * ORDERS_PER_BATCH + 1), ROUNDS * 5);

    let eu = read("eu-only", client, false, eu_orders).await?;
    check(&eu, eu_orders, |value| value == Some("eu"))?;
    println!("consumer eu-only: {} orders, all from eu", eu.len());
    let with_untagged = read("eu-and-untagged", client, true, eu_orders + ROUNDS).await?;
    check(&with_untagged, eu_orders + ROUNDS, |value| matches!(value, Some("eu") | None))?;
    println!("consumer eu-and-untagged: {} orders, from eu or without a region", with_untagged.len());

    let stats = client.stats(Some(STREAM)).await?;
    let topic =
        stats.streams.first().and_then(|stream| stream.topics.first()).ok_or("no stats for the topic")?;
    println!(
        "the broker skipped {} batches ({} bytes) for the filtered consumers",
        topic.filtered_batches, topic.filtered_bytes
    );
    if topic.filtered_batches == 0 {
        return Err("the broker skipped no batch".into());
    }
    Ok(())
}

/// Reads `expected` orders as consumer `name` with filter "eu", returning each order's region.
async fn read(
    name: &str,
    client: &Client,
    match_unfiltered: bool,
    expected: usize,
) -> Result<Vec<Option<String>>, BoxError> {
    let mut consumer = Consumer::builder(client, STREAM, TOPIC)
        .consumer_name(name)
        .polling_strategy(PollStrategy::First)
        .auto_commit(AutoCommit::Disabled)
        .polling_interval(Duration::from_millis(20))
        .filter(["eu"])
        .match_unfiltered(match_unfiltered)
        .build()
        .await?;
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let mut regions = Vec::with_capacity(expected);
    while regions.len() < expected {
        let Ok(next) = tokio::time::timeout_at(deadline, consumer.next()).await else {
            return Err(format!("{name}: only {} of {expected} orders arrived", regions.len()).into());
        };
        let message = next.ok_or("the consumer ended")??;
        regions.push(message.filter_value.map(|value| String::from_utf8_lossy(&value).into_owned()));
    }
    // Anything more would be an order the filter should have kept out.
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await {
        return Err(format!("{name}: an unexpected order arrived: {extra:?}").into());
    }
    consumer.shutdown().await?;
    Ok(regions)
}

fn check(
    regions: &[Option<String>],
    expected: usize,
    wanted: impl Fn(Option<&str>) -> bool,
) -> Result<(), BoxError> {
    if regions.len() != expected {
        return Err(format!("expected {expected} orders, got {}", regions.len()).into());
    }
    match regions.iter().find(|region| !wanted(region.as_deref())) {
        Some(stray) => Err(format!("an order from {stray:?} got through").into()),
        None => Ok(()),
    }
}

async fn delete_if_exists(client: &Client, stream: &str) -> Result<(), BoxError> {
    match client.delete_stream(stream).await {
        Err(error) if error.status() != Some(Status::UnknownStream) => Err(error.into()),
        _ => Ok(()),
    }
}
