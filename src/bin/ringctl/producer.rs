//! `ringctl producer …` (sequence, list, delete) and `ringctl produce --name`: named producers
//! from the command line.
//!
//! Runs on `ringctl`'s current-thread runtime; `produce --name` reads stdin on one extra thread,
//! as the plain `produce` does, and hands chunks of lines to the runtime over a bounded channel.
//!
//! `produce --name` uses the SDK's named producer (direct mode): it declares the name (raising
//! its epoch, continuing its sequences) before it reads any input, holds the lease until stdin
//! ends, sends each chunk of lines as one confirmed batch per partition, and releases the lease
//! (`ProducerClose`) at the end. Invariant: nothing is read from stdin before the declaration
//! succeeded, so a refused declaration (`ProducerBusy`) consumes no input.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

use bytes::Bytes;
use clap::Subcommand;
use ringbroker::client::{BatchReceipt, Client, Partitioning, Producer, ProducerMessage};
use ringbroker::protocol::messages::{AccessMode, PartitionSequence, ProducerInfo};

use super::{
    bytes_text, emit, print_json, quiet_or, table, trim_line_end, CliResult, Failure, ProduceArgs,
    PRODUCE_QUEUE_BATCHES, STDIN_BUFFER_BYTES,
};

/// `ringctl producer …`.
#[derive(Subcommand, Debug)]
pub(super) enum ProducerCommand {
    /// Print the last sequence a named producer stored on a partition ("none" if nothing).
    Sequence {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Partition id.
        partition: u32,
        /// Producer name.
        name: String,
    },
    /// List named producers: ids, epochs, access, leases and last sequences per partition.
    List {
        /// Only this stream.
        stream: Option<String>,
    },
    /// Forget a named producer on every partition of a topic (its next declaration starts over
    /// at sequence 0).
    Delete {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Producer name.
        name: String,
    },
}

pub(super) async fn producer(client: &Client, command: ProducerCommand, json: bool) -> CliResult {
    match command {
        ProducerCommand::Sequence { stream, topic, partition, name } => {
            let info = client.producer_sequence(&stream, &topic, partition, &name).await?;
            if json {
                return print_json(&info);
            }
            emit(&format!("{}\n", sequence_text(info.last_sequence)))
        }
        ProducerCommand::List { stream } => {
            let list = client.list_producers(stream.as_deref()).await?;
            if json {
                return print_json(&list);
            }
            emit(&producers_table(&list.producers))
        }
        ProducerCommand::Delete { stream, topic, name } => {
            client.delete_producer(&stream, &topic, &name).await?;
            quiet_or(json, format!("deleted producer {name} of {stream}/{topic}\n"))
        }
    }
}

fn sequence_text(last_sequence: Option<u64>) -> String {
    last_sequence.map_or_else(|| "none".to_string(), |sequence| sequence.to_string())
}

fn access_text(access: AccessMode) -> &'static str {
    match access {
        AccessMode::Shared => "shared",
        AccessMode::Exclusive => "exclusive",
    }
}

/// `p0=41,p1=none`.
fn sequences_text(partitions: &[PartitionSequence]) -> String {
    if partitions.is_empty() {
        return "-".to_string();
    }
    let parts: Vec<String> = partitions
        .iter()
        .map(|partition| format!("p{}={}", partition.partition, sequence_text(partition.last_sequence)))
        .collect();
    parts.join(",")
}

fn producers_table(producers: &[ProducerInfo]) -> String {
    let rows = producers
        .iter()
        .map(|producer| {
            vec![
                producer.stream.clone(),
                producer.topic.clone(),
                producer.name.clone(),
                producer.producer_id.to_string(),
                producer.epoch.to_string(),
                access_text(producer.access).to_string(),
                if producer.leased { "yes" } else { "no" }.to_string(),
                producer.holder.clone().unwrap_or_else(|| "-".to_string()),
                sequences_text(&producer.partitions),
            ]
        })
        .collect();
    table(&["STREAM", "TOPIC", "NAME", "ID", "EPOCH", "ACCESS", "LEASED", "HOLDER", "LAST SEQUENCES"], rows)
}

/// A chunk of stdin lines as messages, and their payload bytes; or why stdin failed.
type ChunkResult = Result<(Vec<ProducerMessage>, usize), Failure>;

/// `produce --name`: see the module docs.
pub(super) async fn produce_named(client: &Client, args: ProduceArgs, name: String) -> CliResult {
    let partitioning = match (args.partition, &args.key) {
        (Some(partition), _) => Partitioning::Partition(partition),
        (None, Some(key)) => Partitioning::Key(Bytes::from(key.clone())),
        (None, None) => Partitioning::Balanced,
    };
    let mut builder = Producer::builder(client, args.stream.as_str(), args.topic.as_str())
        .name(name.as_str())
        .background(false)
        .compression(args.compression)
        .partitioning(partitioning);
    if args.exclusive {
        builder = builder.exclusive();
    }
    let producer = builder.build().await?;
    let (sender, mut chunks) = tokio::sync::mpsc::channel(PRODUCE_QUEUE_BATCHES);
    let key = args.key.clone().map(Bytes::from);
    let filter_value = args.filter_value.clone().map(Bytes::from);
    let headers: Vec<(Bytes, Bytes)> = args
        .ttl_ms()?
        .map(|ms| (Bytes::from_static(ringbroker::protocol::durable::TTL_HEADER.as_bytes()), Bytes::from(ms)))
        .into_iter()
        .collect();
    let batch_lines = args.batch;
    std::thread::Builder::new()
        .name("ringctl-stdin".to_string())
        .spawn(move || read_chunks(batch_lines, (key, filter_value, headers), &sender))?;
    let mut summary = NamedSummary::default();
    let outcome: CliResult = async {
        while let Some(chunk) = chunks.recv().await {
            let (messages, bytes) = chunk?;
            let receipts = producer.send_batch(messages).await?;
            summary.add(&receipts, bytes);
        }
        Ok(())
    }
    .await;
    let epoch = producer.epoch().unwrap_or_default();
    let closed = producer.shutdown().await;
    outcome?;
    closed?;
    eprintln!("{}", summary.line(&args.stream, &args.topic, &name, epoch));
    Ok(())
}

/// Runs on the stdin thread: one message per line (the line end removed), a chunk sent after
/// `batch_lines` lines or whenever no more input is buffered.
/// Every message gets `key`, `filter_value` and `headers`, when given.
fn read_chunks(
    batch_lines: u32,
    (key, filter_value, headers): (Option<Bytes>, Option<Bytes>, Vec<(Bytes, Bytes)>),
    sender: &tokio::sync::mpsc::Sender<ChunkResult>,
) {
    let mut input = BufReader::with_capacity(STDIN_BUFFER_BYTES, std::io::stdin());
    let mut chunk = Vec::new();
    let mut bytes = 0_usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                let _ = sender.blocking_send(Err(format!("reading stdin: {error}").into()));
                return;
            }
        }
        let payload = Bytes::copy_from_slice(trim_line_end(&line));
        bytes += payload.len();
        let filter_value = filter_value.clone();
        let headers = headers.clone();
        chunk.push(ProducerMessage {
            key: key.clone(),
            filter_value,
            headers,
            ..ProducerMessage::new(payload)
        });
        if chunk.len() >= batch_lines as usize || input.buffer().is_empty() {
            if sender.blocking_send(Ok((std::mem::take(&mut chunk), bytes))).is_err() {
                return; // The sender is gone: it failed and reports why.
            }
            bytes = 0;
        }
    }
    if !chunk.is_empty() {
        let _ = sender.blocking_send(Ok((chunk, bytes)));
    }
}

/// What a `produce --name` run wrote.
#[derive(Default)]
struct NamedSummary {
    messages: u64,
    batches: u64,
    duplicates: u64,
    bytes: u64,
    /// Partition → (first offset, last offset) of the batches stored now.
    partitions: BTreeMap<u32, (u64, u64)>,
}

impl NamedSummary {
    fn add(&mut self, receipts: &[BatchReceipt], bytes: usize) {
        self.bytes += bytes as u64;
        for receipt in receipts {
            self.messages += u64::from(receipt.messages);
            self.batches += 1;
            if receipt.ack.duplicate {
                self.duplicates += 1;
            }
            if !receipt.ack.has_offsets() {
                continue;
            }
            let (first, last) = (receipt.ack.base_offset, receipt.ack.last_offset);
            let range = self.partitions.entry(receipt.partition).or_insert((first, last));
            range.0 = range.0.min(first);
            range.1 = range.1.max(last);
        }
    }

    fn line(&self, stream: &str, topic: &str, name: &str, epoch: u32) -> String {
        let mut line = format!(
            "produced {} message{} in {} batch{} ({}) to {stream}/{topic} as {name} (epoch {epoch})",
            self.messages,
            if self.messages == 1 { "" } else { "s" },
            self.batches,
            if self.batches == 1 { "" } else { "es" },
            bytes_text(self.bytes)
        );
        if self.duplicates > 0 {
            line.push_str(&format!(", {} duplicate batches not stored again", self.duplicates));
        }
        let parts: Vec<String> = self
            .partitions
            .iter()
            .map(|(partition, (first, last))| format!("partition {partition} offsets {first}..={last}"))
            .collect();
        if !parts.is_empty() {
            line.push_str(": ");
            line.push_str(&parts.join(", "));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbroker::protocol::messages::BatchAck;

    #[test]
    fn producer_tables_and_summaries_read_well() {
        let info = ProducerInfo {
            stream: "s".into(),
            topic: "t".into(),
            name: "svc".into(),
            producer_id: 7,
            epoch: 3,
            access: AccessMode::Exclusive,
            leased: true,
            holder: Some("127.0.0.1:5000".into()),
            partitions: vec![
                PartitionSequence { partition: 0, last_sequence: Some(41) },
                PartitionSequence { partition: 1, last_sequence: None },
            ],
        };
        let text = producers_table(&[info]);
        assert!(text.lines().nth(1).is_some_and(|row| row.ends_with("p0=41,p1=none")), "{text}");
        assert!(text.contains("exclusive") && text.contains("127.0.0.1:5000"), "{text}");
        assert_eq!(sequence_text(None), "none");

        let mut summary = NamedSummary::default();
        let stored = BatchAck { base_offset: 5, last_offset: 9, append_timestamp_us: 1, duplicate: false };
        let forgotten = BatchAck {
            base_offset: u64::MAX,
            last_offset: u64::MAX,
            append_timestamp_us: u64::MAX,
            duplicate: true,
        };
        summary.add(&[BatchReceipt { partition: 0, messages: 5, ack: stored }], 50);
        summary.add(&[BatchReceipt { partition: 0, messages: 2, ack: forgotten }], 20);
        let line = summary.line("s", "t", "svc", 3);
        assert!(
            line.starts_with("produced 7 messages in 2 batches (70 B) to s/t as svc (epoch 3)"),
            "{line}"
        );
        assert!(
            line.contains("1 duplicate batches") && line.ends_with("partition 0 offsets 5..=9"),
            "{line}"
        );
    }
}
