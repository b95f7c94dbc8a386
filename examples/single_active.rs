//! Single active consumer, as RabbitMQ Streams users know it: three consumers subscribe under
//! one name to one partition; only the first receives. Each reads a share, stores its offset and
//! leaves, and the next is upgraded at the stored offset, so the three together read every
//! message once. Then the same name on a 3-partition super stream: one member holds every
//! partition until a second joins, when partition 1 is downgraded on the first and upgraded on
//! the second (`i % members`).
//!
//! The example creates its stream, ends by itself (or fails after a timeout) and deletes it.
//!
//! Run against a local broker (`cargo run --release --bin ringbroker` in another terminal):
//! `cargo run --example single_active`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::{AutoCommit, Consumer, PollStrategy, UpdateContext};
use ringbroker::client::{Client, ConnectionString, Partitioning, Producer, ProducerMessage};
use ringbroker::protocol::messages::TopicConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const STREAM: &str = "example-sac";
const MESSAGES: u64 = 30;
/// The longest any step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The hook every member installs: says what happened and starts an upgraded member at the
/// name's stored offset.
fn hook(member: &'static str) -> impl Fn(&UpdateContext, bool) -> PollStrategy + Send + Sync + 'static {
    move |context, active| {
        let what = if active { "upgrade" } else { "downgrade" };
        println!(
            "  {member}: {what} on partition {} (stored offset {:?})",
            context.partition, context.stored_offset
        );
        context.stored_offset.map_or(PollStrategy::First, PollStrategy::Offset)
    }
}

async fn member(
    client: &Client,
    topic: &str,
    name: &'static str,
    partition: Option<u32>,
) -> Result<Consumer, BoxError> {
    let mut builder = Consumer::builder(client, STREAM, topic)
        .single_active_consumer("billing")
        .auto_commit(AutoCommit::Disabled)
        .polling_interval(Duration::from_millis(20))
        .on_update(hook(name));
    if let Some(partition) = partition {
        builder = builder.partition(partition);
    }
    Ok(builder.build().await?)
}

#[tokio::main(flavor = "current_thread")]
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
    client
        .create_topic(STREAM, "orders", TopicConfig { partitions: 1, ..TopicConfig::default() }, true)
        .await?;
    let producer =
        Producer::builder(client, STREAM, "orders").partitioning(Partitioning::Partition(0)).build().await?;
    producer.send((0..MESSAGES).map(|i| ProducerMessage::from(format!("order-{i}"))).collect()).await?;
    producer.shutdown().await?;

    println!("one partition, three members registered in order a, b, c:");
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        members.push((name, member(client, "orders", name, Some(0)).await?));
    }
    let share = MESSAGES / 3;
    for (turn, (name, mut consumer)) in (0_u64..).zip(members) {
        // Each reads its third, stores where it got to and leaves; the next is upgraded there.
        for due in turn * share..(turn + 1) * share {
            let message = tokio::time::timeout(STEP_TIMEOUT, consumer.next()).await?.ok_or("ended")??;
            if message.offset != due {
                return Err(format!("{name} read offset {} where {due} was due", message.offset).into());
            }
            println!("  {name} read {}", String::from_utf8_lossy(&message.payload));
        }
        consumer.commit().await?;
        consumer.shutdown().await?;
    }
    println!("all {MESSAGES} messages read once by the three members");

    println!("super stream of 3 partitions, member x alone, then y joins:");
    client
        .create_topic(STREAM, "invoices", TopicConfig { partitions: 3, ..TopicConfig::default() }, true)
        .await?;
    let x = member(client, "invoices", "x", None).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let y = member(client, "invoices", "y", None).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut x, mut y) = (x, y);
    // Drive both consumers for a moment so their hand-overs are answered.
    let _ =
        tokio::time::timeout(Duration::from_millis(500), async { tokio::join!(x.next(), y.next()) }).await;
    x.shutdown().await?;
    y.shutdown().await?;
    Ok(())
}
