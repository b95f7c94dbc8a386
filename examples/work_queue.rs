//! A work queue: a topic that keeps each job until one worker acknowledges it, shared by two
//! workers whose filters split the jobs between them (`jobs.eu.*` and `jobs.us.*`).
//!
//! On a work-queue topic every message belongs to at most one consumer, so the broker refuses a
//! consumer whose filter overlaps an existing one (`FilterOverlap`): a third worker asking for
//! `jobs.>` is turned away. Jobs go to both partitions; each worker fetches across them, checks
//! that it only ever sees its own region, and acknowledges its jobs in one batch per partition
//! ([`AckBatcher`]). Each acknowledgement removes the job, so the topic ends empty. The stream
//! is deleted at the end.
//!
//! Run against a local broker: `cargo run --example work_queue`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).
//!
//! [`AckBatcher`]: ringbroker::client::AckBatcher

use std::time::Duration;

use ringbroker::client::{Client, DurableConfigExt, DurableConsumer};
use ringbroker::protocol::batch::{BatchBuilder, Message};
use ringbroker::protocol::durable::{DurableConfig, Retention, TopicPolicy};
use ringbroker::protocol::messages::{Partitioning, Status, TopicConfig};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const STREAM: &str = "example-work-queue";
const TOPIC: &str = "jobs";
const PARTITIONS: u32 = 2;
/// Jobs per region and kind.
const JOBS_PER_KIND: u32 = 5;
const KINDS: [&str; 2] = ["resize", "transcode"];
/// How long a worker may take to receive its jobs.
const WORK_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("RINGBROKER_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let client = Client::connect(&url.parse()?).await?;
    delete_if_exists(&client, STREAM).await?;

    let outcome = demo(&client).await;

    println!("deleting stream {STREAM}");
    delete_if_exists(&client, STREAM).await?;
    outcome?;
    println!("ok: every job was processed once, by the worker of its region");
    Ok(())
}

async fn demo(client: &Client) -> Result<(), BoxError> {
    client.create_stream(STREAM, false).await?;
    let policy = TopicPolicy { retention: Retention::WorkQueue, ..TopicPolicy::default() };
    let config = TopicConfig { partitions: PARTITIONS, ..TopicConfig::default() };
    client.create_topic_with_policy(STREAM, TOPIC, config, policy, false).await?;
    println!("created work-queue topic {STREAM}/{TOPIC} with {PARTITIONS} partitions");

    let eu =
        client.create_durable(STREAM, TOPIC, DurableConfig::new("worker-eu").filter("jobs.eu.*")).await?;
    let us =
        client.create_durable(STREAM, TOPIC, DurableConfig::new("worker-us").filter("jobs.us.*")).await?;
    println!("created workers worker-eu (jobs.eu.*) and worker-us (jobs.us.*)");
    match client.create_durable(STREAM, TOPIC, DurableConfig::new("everything").filter("jobs.>")).await {
        Err(error) if error.status() == Some(Status::FilterOverlap) => {
            println!("a third worker on jobs.> was refused: {error}");
        }
        Err(error) => return Err(error.into()),
        Ok(_) => return Err("a consumer overlapping both workers was accepted".into()),
    }

    let mut sent = 0;
    for region in ["eu", "us"] {
        for kind in KINDS {
            for i in 0..JOBS_PER_KIND {
                publish(client, &format!("jobs.{region}.{kind}"), &format!("{kind} #{i} for {region}"), sent)
                    .await?;
                sent += 1;
            }
        }
    }
    println!("queued {sent} jobs over {PARTITIONS} partitions");
    report(client, "queued").await?;

    let per_worker = JOBS_PER_KIND as usize * KINDS.len();
    work(&eu, "jobs.eu.", per_worker).await?;
    work(&us, "jobs.us.", per_worker).await?;

    let left = report(client, "after both workers").await?;
    if left != 0 {
        return Err(format!("{left} jobs are still queued").into());
    }
    Ok(())
}

/// Publishes one job to partition `index % PARTITIONS`.
async fn publish(client: &Client, subject: &str, body: &str, index: u32) -> Result<(), BoxError> {
    let mut builder = BatchBuilder::new(0, 0);
    builder.push(&Message { filter_value: Some(subject.as_bytes()), ..Message::payload(body.as_bytes()) })?;
    let batch = builder.finish()?;
    client.produce(STREAM, TOPIC, Partitioning::Partition(index % PARTITIONS), &[&batch]).await?;
    Ok(())
}

/// Takes `expected` jobs, checks each is from `prefix`, and acknowledges them in batches.
async fn work(worker: &DurableConsumer, prefix: &str, expected: usize) -> Result<(), BoxError> {
    let deadline = Instant::now() + WORK_TIMEOUT;
    let mut acks = worker.ack_batcher().double_ack(true);
    let mut done = 0;
    while done < expected {
        if Instant::now() >= deadline {
            return Err(format!("{}: only {done} of {expected} jobs arrived", worker.name()).into());
        }
        let messages = worker.fetch().max_messages(4).expires(Duration::from_secs(1)).messages().await?;
        for job in messages {
            let subject =
                String::from_utf8_lossy(job.filter_value.as_deref().unwrap_or_default()).into_owned();
            if !subject.starts_with(prefix) {
                return Err(format!("{} received {subject}", worker.name()).into());
            }
            println!(
                "{} runs \"{}\" ({subject}, partition {} offset {})",
                worker.name(),
                String::from_utf8_lossy(&job.payload),
                job.partition,
                job.offset
            );
            acks.add(&job)?;
            done += 1;
        }
        let answer = acks.flush().await?;
        println!("{} acknowledged {} jobs", worker.name(), answer.applied);
    }
    if done != expected {
        return Err(format!("{}: {done} jobs, expected {expected}", worker.name()).into());
    }
    Ok(())
}

/// Prints the queue's state per partition; returns the jobs left.
async fn report(client: &Client, when: &str) -> Result<u64, BoxError> {
    let state = client.topic_state(STREAM, TOPIC).await?;
    let parts: Vec<String> =
        state.partitions.iter().map(|p| format!("partition {}: {}", p.partition, p.messages)).collect();
    println!("# {when}: {} jobs queued ({})", state.total.messages, parts.join(", "));
    Ok(state.total.messages)
}

async fn delete_if_exists(client: &Client, stream: &str) -> Result<(), BoxError> {
    match client.delete_stream(stream).await {
        Err(error) if error.status() != Some(Status::UnknownStream) => Err(error.into()),
        _ => Ok(()),
    }
}
