//! `ringctl superstream …` (create, delete, route, partitions) and the routing of
//! `ringctl produce --routing-key K`: super streams from the command line.
//!
//! Runs on `ringctl`'s current-thread runtime. A super stream is a topic of a stream, so every
//! command names the stream first (`superstream create STREAM NAME --partitions 3`). Invariant:
//! `produce --routing-key` resolves the key's partitions once, before it reads any input, so a
//! key without a route (`NoRoute`) consumes no input.

use clap::{Subcommand, ValueEnum};
use ringbroker::client::Client;
use ringbroker::protocol::messages::{Partitioning, TopicConfig};
use ringbroker::protocol::super_stream::{SuperStreamCreate, SuperStreamLayout, SuperStreamRouting};

use super::{emit, parse_bytes, parse_duration_us, print_json, quiet_or, table, topic_text, CliResult};

/// `ringctl superstream …`.
#[derive(Subcommand, Debug)]
pub(super) enum SuperStreamCommand {
    /// Create a super stream: a topic whose partitions are chosen by routing key.
    Create {
        /// Stream name.
        stream: String,
        /// Super stream (topic) name.
        name: String,
        /// This many partitions, routed by hash (binding keys 0..N-1, as RabbitMQ names them).
        #[arg(
            long,
            value_parser = clap::value_parser!(u32).range(1..),
            conflicts_with = "keys",
            required_unless_present = "keys"
        )]
        partitions: Option<u32>,
        /// One partition per binding key, in order, routed by key (`amer,emea,apac`).
        #[arg(long, value_delimiter = ',')]
        keys: Option<Vec<String>>,
        /// Allow a binding key on several partitions (a message with that key goes to each).
        #[arg(long, requires = "keys")]
        shared_keys: bool,
        /// Delete sealed segments older than this (`7d`, `12h`, `30m`, `45s`).
        #[arg(long, value_parser = parse_duration_us)]
        max_age: Option<u64>,
        /// Delete the oldest sealed segments while a partition is larger (`512M`, `10G`).
        #[arg(long, value_parser = parse_bytes)]
        max_bytes: Option<u64>,
        /// Segment size (`64M`); default: the server's.
        #[arg(long, value_parser = parse_bytes)]
        segment_bytes: Option<u64>,
        /// Succeed when it exists already.
        #[arg(long)]
        if_missing: bool,
    },
    /// Delete a super stream and its partitions' data.
    Delete {
        /// Stream name.
        stream: String,
        /// Super stream name.
        name: String,
    },
    /// Print the partitions a routing key goes to.
    Route {
        /// Stream name.
        stream: String,
        /// Super stream name.
        name: String,
        /// The routing key.
        key: String,
        /// Route by hash or by binding key (default: as the super stream was created).
        #[arg(long)]
        by: Option<RouteBy>,
    },
    /// List the partitions with their binding keys and shards.
    Partitions {
        /// Stream name.
        stream: String,
        /// Super stream name.
        name: String,
    },
}

/// `--by` of `superstream route`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub(super) enum RouteBy {
    /// FNV-1a 64 of the key modulo the partition count.
    Hash,
    /// The partitions whose binding key equals the key.
    Key,
}

impl From<RouteBy> for SuperStreamRouting {
    fn from(by: RouteBy) -> Self {
        match by {
            RouteBy::Hash => SuperStreamRouting::Hash,
            RouteBy::Key => SuperStreamRouting::Key,
        }
    }
}

pub(super) async fn super_stream(client: &Client, command: SuperStreamCommand, json: bool) -> CliResult {
    match command {
        SuperStreamCommand::Create {
            stream,
            name,
            partitions,
            keys,
            shared_keys,
            max_age,
            max_bytes,
            segment_bytes,
            if_missing,
        } => {
            let layout = match (partitions, keys) {
                (Some(count), _) => SuperStreamLayout::Partitions(count),
                (None, keys) => SuperStreamLayout::BindingKeys(keys.unwrap_or_default()),
            };
            let config = TopicConfig {
                partitions: 0,
                retention_max_age_us: max_age,
                retention_max_bytes: max_bytes,
                segment_bytes,
            };
            let request =
                SuperStreamCreate { stream: stream.clone(), name, layout, shared_keys, config, if_missing };
            let info = client.create_super_stream_with(&request).await?;
            if json {
                return print_json(&info);
            }
            emit(&topic_text(&stream, &info))
        }
        SuperStreamCommand::Delete { stream, name } => {
            client.delete_super_stream(&stream, &name).await?;
            quiet_or(json, format!("deleted super stream {stream}/{name}\n"))
        }
        SuperStreamCommand::Route { stream, name, key, by } => {
            let routed = client.route_super_stream(&stream, &name, &key, by.map(Into::into)).await?;
            if json {
                return print_json(&routed);
            }
            let partitions: Vec<String> = routed.partitions.iter().map(u32::to_string).collect();
            emit(&format!("{}\n", partitions.join(" ")))
        }
        SuperStreamCommand::Partitions { stream, name } => {
            let answer = client.super_stream_partitions(&stream, &name).await?;
            if json {
                return print_json(&answer);
            }
            let rows = answer
                .partitions
                .iter()
                .map(|p| vec![p.id.to_string(), p.binding_key.clone(), p.shard.to_string()])
                .collect();
            let mut text = format!("super stream {stream}/{} (routing {:?})\n", answer.name, answer.routing);
            text.push_str(&table(&["PARTITION", "BINDING-KEY", "SHARD"], rows));
            emit(&text)
        }
    }
}

/// The partitionings `produce --routing-key` sends every batch with: one per partition the key
/// routes to (by the super stream's own routing).
pub(super) async fn routed_partitionings(
    client: &Client,
    stream: &str,
    name: &str,
    routing_key: &str,
) -> CliResult<Vec<Partitioning>> {
    let routed = client.route_super_stream(stream, name, routing_key, None).await?;
    Ok(routed.partitions.into_iter().map(Partitioning::Partition).collect())
}
