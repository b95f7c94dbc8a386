"""An idempotent producer (enable_idempotence, acks='all', retries) sends N keyed messages with
headers and explicit timestamps; every send is acknowledged with an offset, and a consumer reads
each message back exactly once with its key, value, headers and timestamp intact, at the offset
its acknowledgement gave."""

from __future__ import annotations

import time

from kafka import TopicPartition

from conftest import create_topic

#: Messages sent.
COUNT = 2_000
#: Partitions of the topic.
PARTITIONS = 3


def headers_of(i: int) -> list[tuple[str, bytes]]:
    return [("index", str(i).encode()), ("kind", b"idempotent"), ("empty", b"")]


def test_idempotent_producer_round_trip(broker, admin, topic_name):
    create_topic(admin, topic_name, PARTITIONS)
    producer = broker.producer(enable_idempotence=True, acks="all", retries=5, linger_ms=5)
    # Timestamps in the past, one millisecond apart: the broker must keep the producer's.
    base_ms = int(time.time() * 1000) - 3_600_000
    futures = [
        producer.send(
            topic_name,
            key=f"key-{i}".encode(),
            value=f"value-{i}".encode() * (1 + i % 7),
            headers=headers_of(i),
            timestamp_ms=base_ms + i,
        )
        for i in range(COUNT)
    ]
    producer.flush(timeout=60)
    acknowledged = {}
    for i, future in enumerate(futures):
        metadata = future.get(timeout=30)
        assert metadata.offset >= 0, (i, metadata)
        assert metadata.timestamp == base_ms + i, (i, metadata)
        place = (metadata.partition, metadata.offset)
        assert place not in acknowledged, f"messages {acknowledged.get(place)} and {i} both at {place}"
        acknowledged[place] = i
    producer.close(timeout=10)
    for partition in range(PARTITIONS):
        offsets = sorted(o for p, o in acknowledged if p == partition)
        assert offsets == list(range(len(offsets))), f"partition {partition}'s offsets are not dense"

    consumer = broker.consumer()
    try:
        partitions = [TopicPartition(topic_name, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        seen = {}
        deadline = time.monotonic() + 60
        while len(seen) < COUNT and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    place = (record.partition, record.offset)
                    assert place not in seen, f"{place} was delivered twice"
                    seen[place] = record
        assert len(seen) == COUNT, f"{len(seen)} of {COUNT} messages read back"
        for place, record in seen.items():
            i = acknowledged.get(place)
            assert i is not None, f"{place} was read but never acknowledged"
            assert record.key == f"key-{i}".encode(), (place, record)
            assert record.value == f"value-{i}".encode() * (1 + i % 7), (place, record)
            assert list(record.headers) == headers_of(i), (place, record.headers)
            assert record.timestamp == base_ms + i, (place, record.timestamp, base_ms + i)
            assert record.timestamp_type == 0, f"{place}: not CreateTime"
        # Nothing beyond: every partition ends where its acknowledgements end.
        ends = consumer.end_offsets(partitions)
        for tp in partitions:
            assert ends[tp] == sum(1 for p, _ in acknowledged if p == tp.partition), (tp, ends)
    finally:
        consumer.close()
