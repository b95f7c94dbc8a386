//! The stream builder against the real broker: one call returns a client, producer and consumer
//! for a stream and topic that did not exist; what is produced is consumed, in order per key.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ringbroker::client::{ProducerMessage, RingStream, StreamConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_builder_returns_a_working_client_producer_and_consumer() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let url = format!("ringbroker://ringbroker:ringbroker@{}", broker.addr());
    let config = StreamConfig::new("builder", "events").partitions(4).consumer_name("printer");
    let (client, producer, mut consumer) =
        RingStream::with_client_from_url(&url, &config).await.expect("stream builder");
    let topic = client.get_topic("builder", "events").await.expect("topic created");
    assert_eq!(topic.partitions.len(), 4);

    for i in 0..200_u32 {
        let key = format!("key-{}", i % 5);
        producer.send_one(ProducerMessage::keyed(key, format!("{i}"))).await.expect("send");
    }
    producer.flush().await.expect("flush");

    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while per_key.values().map(Vec::len).sum::<usize>() < 200 {
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a message within 10 s");
        let message = next.expect("stream open").expect("message");
        let key = String::from_utf8_lossy(message.key.as_deref().expect("keyed")).into_owned();
        let value: u32 = String::from_utf8_lossy(&message.payload).parse().expect("number");
        per_key.entry(key).or_default().push(value);
        assert!(Instant::now() < deadline);
    }
    for (key, values) in &per_key {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{key} in send order: {values:?}");
        assert_eq!(values.len(), 40);
    }
    producer.shutdown().await.expect("shutdown producer");
    consumer.shutdown().await.expect("shutdown consumer");
}
