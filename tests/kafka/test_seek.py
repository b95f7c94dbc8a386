"""Manual assignment and positioning: seek_to_beginning reads from the first offset, seek(tp, n)
reads from offset n exactly, seek_to_end waits for new records only; beginning/end offsets and
offsets_for_times (ListOffsets by time) agree with what was produced."""

from __future__ import annotations

import time

from kafka import TopicPartition

from conftest import create_topic

#: Messages produced to the one partition.
COUNT = 100


def read(consumer, partition: TopicPartition, count: int) -> list:
    """Polls until `count` records of `partition` arrived (bounded); returns them."""
    records = []
    deadline = time.monotonic() + 30
    while len(records) < count and time.monotonic() < deadline:
        records.extend(consumer.poll(timeout_ms=500).get(partition, []))
    assert len(records) >= count, f"{len(records)} of {count} records arrived"
    return records


def test_seek_by_offset_and_time(broker, admin, topic_name):
    create_topic(admin, topic_name, 1)
    base_ms = int(time.time() * 1000) - 600_000
    producer = broker.producer(acks="all", linger_ms=2)
    for i in range(COUNT):
        producer.send(topic_name, partition=0, key=b"k%d" % i, value=b"v%d" % i, timestamp_ms=base_ms + 10 * i)
    producer.flush(timeout=30)
    producer.close(timeout=10)

    partition = TopicPartition(topic_name, 0)
    consumer = broker.consumer()
    try:
        consumer.assign([partition])
        assert consumer.beginning_offsets([partition]) == {partition: 0}
        assert consumer.end_offsets([partition]) == {partition: COUNT}

        consumer.seek_to_beginning(partition)
        assert consumer.position(partition) == 0
        records = read(consumer, partition, COUNT)
        assert [r.offset for r in records] == list(range(COUNT))
        assert [r.value for r in records] == [b"v%d" % i for i in range(COUNT)]

        for target in (37, 0, COUNT - 1, 5):
            consumer.seek(partition, target)
            records = read(consumer, partition, COUNT - target)
            assert [r.offset for r in records] == list(range(target, COUNT)), f"after seek({target})"
            assert records[0].key == b"k%d" % target

        found = consumer.offsets_for_times({partition: base_ms + 10 * 42})
        assert found[partition].offset == 42, found
        found = consumer.offsets_for_times({partition: base_ms + 10 * 42 - 5})
        assert found[partition].offset == 42, found
        found = consumer.offsets_for_times({partition: base_ms + 10 * COUNT})
        assert found[partition] is None, found

        consumer.seek_to_end(partition)
        assert consumer.position(partition) == COUNT
        assert consumer.poll(timeout_ms=300).get(partition, []) == []
    finally:
        consumer.close()
