//! Producer leases against the real broker: ten concurrent exclusive declarations of different
//! names on one topic, exactly one wins; its lease is released when its connection closes and
//! when it stops heartbeating (`--producer-session-timeout`); a name re-declared elsewhere fences
//! the old instance; a deleted name is unknown.

mod common;

use std::time::Duration;

use common::Broker;
use ringbroker::client::{Client, ClientError, ConnectionString};
use ringbroker::protocol::batch::BatchBuilder;
use ringbroker::protocol::messages::{AccessMode, Partitioning, ProducerDeclare, ProducerDeclared, Status};

const STREAM: &str = "leases";
const TOPIC: &str = "orders";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn broker() -> Broker {
    let broker = Broker::start(2, &["--producer-session-timeout", "300ms"]);
    let mut conn = broker.root();
    conn.create_stream(STREAM);
    conn.create_topic(STREAM, TOPIC, 2);
    drop(conn);
    broker
}

async fn connect(addr: std::net::SocketAddr) -> Client {
    let url: ConnectionString =
        format!("ringbroker://ringbroker:ringbroker@{addr}?timeout_ms=5000").parse().expect("url");
    Client::connect(&url).await.expect("connect")
}

async fn declare(client: &Client, name: &str, access: AccessMode) -> Result<ProducerDeclared, ClientError> {
    let request = ProducerDeclare { stream: STREAM.into(), topic: TOPIC.into(), name: name.into(), access };
    client.declare_producer(&request).await
}

fn status(error: &ClientError) -> Option<Status> {
    match error {
        ClientError::Server { status, .. } => Some(*status),
        _ => None,
    }
}

#[test]
fn one_of_ten_exclusive_declarations_wins_and_the_lease_ends_with_its_holder() {
    let broker = broker();
    runtime().block_on(async {
        let mut clients = Vec::new();
        for _ in 0..10 {
            clients.push(connect(broker.addr()).await);
        }
        let attempts = clients.iter().enumerate().map(|(i, client)| async move {
            declare(client, &format!("owner-{i}"), AccessMode::Exclusive).await
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<usize> =
            results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
        assert_eq!(winners.len(), 1, "exactly one exclusive declaration wins: {results:?}");
        for result in results.iter().filter(|r| r.is_err()) {
            let error = result.as_ref().unwrap_err();
            assert_eq!(status(error), Some(Status::ProducerBusy), "{error}");
        }
        let winner = winners[0];
        let other = (winner + 1) % 10;
        let shared = declare(&clients[other], "shared-1", AccessMode::Shared).await.unwrap_err();
        assert_eq!(status(&shared), Some(Status::ProducerBusy), "shared producers wait too: {shared}");

        // Released on disconnect.
        clients.remove(winner);
        let taken = async {
            for _ in 0..50 {
                if declare(&clients[0], "next-owner", AccessMode::Exclusive).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        };
        assert!(taken.await, "the lease ends when its connection closes");

        // Released after the session timeout without heartbeats (the connection stays open).
        let busy = declare(&clients[1], "late", AccessMode::Exclusive).await.unwrap_err();
        assert_eq!(status(&busy), Some(Status::ProducerBusy));
        clients[0].producer_heartbeat(STREAM, TOPIC, "next-owner").await.expect("heartbeat");
        tokio::time::sleep(Duration::from_millis(500)).await;
        declare(&clients[1], "late", AccessMode::Exclusive).await.expect("the lease timed out");
        let lapsed = clients[0].producer_heartbeat(STREAM, TOPIC, "next-owner").await.unwrap_err();
        assert_eq!(status(&lapsed), Some(Status::UnknownProducer), "{lapsed}");
    });
}

#[test]
fn a_zombie_is_fenced_and_a_deleted_name_is_unknown() {
    let broker = broker();
    runtime().block_on(async {
        let (old, new) = (connect(broker.addr()).await, connect(broker.addr()).await);
        let zombie = declare(&old, "fenced", AccessMode::Shared).await.expect("declare");
        let batch = |declared: &ProducerDeclared, sequence: u64| {
            let mut builder = BatchBuilder::new(declared.producer_id, sequence);
            builder.set_producer(declared.producer_id, declared.epoch);
            builder.push_payload(b"x").expect("push");
            builder.finish().expect("finish")
        };
        old.produce(STREAM, TOPIC, Partitioning::Partition(0), &[&batch(&zombie, 0)]).await.expect("first");
        let current = declare(&new, "fenced", AccessMode::Shared).await.expect("re-declare");
        assert!(current.epoch > zombie.epoch);
        assert_eq!(current.partitions[0].last_sequence, Some(0), "the new instance continues");
        let fenced =
            old.produce(STREAM, TOPIC, Partitioning::Partition(0), &[&batch(&zombie, 1)]).await.unwrap_err();
        assert_eq!(status(&fenced), Some(Status::ProducerFenced), "{fenced}");
        new.produce(STREAM, TOPIC, Partitioning::Partition(0), &[&batch(&current, 1)])
            .await
            .expect("new epoch");
        let straddle = new
            .produce(
                STREAM,
                TOPIC,
                Partitioning::Partition(0),
                &[&{
                    let mut builder = BatchBuilder::new(current.producer_id, 1);
                    builder.set_producer(current.producer_id, current.epoch);
                    builder.push_payload(b"a").expect("push");
                    builder.push_payload(b"b").expect("push");
                    builder.finish().expect("finish")
                }],
            )
            .await
            .unwrap_err();
        assert_eq!(status(&straddle), Some(Status::SequenceStraddle), "{straddle}");

        let listed = new.list_producers(Some(STREAM)).await.expect("list");
        let entry = listed.producers.iter().find(|p| p.name == "fenced").expect("listed");
        assert_eq!(
            (entry.epoch, entry.leased, entry.partitions[0].last_sequence),
            (current.epoch, true, Some(1))
        );

        new.close_producer(STREAM, TOPIC, "fenced").await.expect("close");
        new.delete_producer(STREAM, TOPIC, "fenced").await.expect("delete");
        let unknown = new.producer_sequence(STREAM, TOPIC, 0, "fenced").await.unwrap_err();
        assert_eq!(status(&unknown), Some(Status::UnknownProducer), "{unknown}");
        let refused =
            new.produce(STREAM, TOPIC, Partitioning::Partition(0), &[&batch(&current, 2)]).await.unwrap_err();
        assert_eq!(status(&refused), Some(Status::UnknownProducer), "{refused}");
    });
}
