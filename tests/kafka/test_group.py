"""A consumer group of two kafka-python members on a 4-partition topic (classic protocol,
client-side assignor): they split the partitions 2 and 2, consume and commit after processing;
more is produced; one member closes (LeaveGroup) after committing part of what it read and
reading a little more without committing; the other takes over all 4 partitions and resumes
each taken-over partition at its committed offset.

Delivery is at least once: the union of everything consumed covers every produced message with
nothing lost, and a message may be consumed twice only if it lies in the leaver's uncommitted
tail (read after its last commit) or was read just before a rebalance made its commit fail."""

from __future__ import annotations

import time
import uuid

from kafka.errors import CommitFailedError

from conftest import create_topic

PARTITIONS = 4
#: Messages per production round (spread evenly over the partitions).
ROUND = 400


def produce(broker, topic: str, start: int, count: int) -> None:
    producer = broker.producer(acks="all", linger_ms=5)
    for i in range(start, start + count):
        producer.send(topic, partition=i % PARTITIONS, key=b"k%d" % i, value=b"m%d" % i)
    producer.flush(timeout=30)
    producer.close(timeout=10)


class Member:
    """A group member that records what it consumed, as (partition, offset) -> value."""

    def __init__(self, broker, topic: str, group: str, name: str):
        self.name = name
        self.consumer = broker.consumer(
            topic,
            group_id=group,
            enable_auto_commit=False,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=500,
            max_poll_records=50,
        )
        self.consumed: list[tuple[int, int, bytes]] = []
        self.committed: dict[int, int] = {}
        #: What it consumed without a successful commit after (duplicates are allowed there).
        self.uncommitted: set[tuple[int, int]] = set()

    def poll(self, commit: bool = True, max_records: int | None = None) -> int:
        """One poll; processes (records) what came and commits it when `commit`."""
        batches = self.consumer.poll(timeout_ms=200, max_records=max_records)
        places = []
        for tp, records in batches.items():
            for record in records:
                self.consumed.append((tp.partition, record.offset, record.value))
                places.append((tp.partition, record.offset))
        if places and commit:
            try:
                self.consumer.commit()
            except CommitFailedError:
                # A rebalance came between the poll and the commit: these stay uncommitted
                # and the partitions' next owner reads them again.
                self.uncommitted.update(places)
                return len(places)
            for tp in self.consumer.assignment():
                self.committed[tp.partition] = self.consumer.position(tp)
        elif places:
            self.uncommitted.update(places)
        return len(places)

    def partitions(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}


def wait_until(condition, what: str, members, seconds: float = 60) -> None:
    """Polls every member (committing) until `condition()` holds, bounded."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: " + ", ".join(
            f"{m.name} has {sorted(m.partitions())}" for m in members
        )
        for member in members:
            member.poll()


def test_two_members_split_then_one_takes_over(broker, admin, topic_name):
    create_topic(admin, topic_name, PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce(broker, topic_name, 0, ROUND)
    first = Member(broker, topic_name, group, "first")
    second = Member(broker, topic_name, group, "second")
    members = [first, second]
    try:
        wait_until(
            lambda: len(first.partitions()) == 2 and len(second.partitions()) == 2,
            "a 2 + 2 split",
            members,
        )
        assert first.partitions() | second.partitions() == set(range(PARTITIONS))
        assert not first.partitions() & second.partitions()

        consumed = lambda: {(p, o) for m in members for p, o, _ in m.consumed}
        wait_until(lambda: len(consumed()) >= ROUND, "the first round consumed", members)

        produce(broker, topic_name, ROUND, ROUND)
        # The leaver reads some of the second round and commits, then reads a little more
        # without committing (its uncommitted tail), then leaves.
        deadline = time.monotonic() + 30
        while first.poll(max_records=20) == 0:
            assert time.monotonic() < deadline, "the first member got nothing of the second round"
        committed = dict(first.committed)
        first.poll(commit=False, max_records=10)
        left_partitions = first.partitions()
        first.consumer.close()
        members = [second]
        takeover_index = len(second.consumed)

        wait_until(lambda: second.partitions() == set(range(PARTITIONS)), "the take-over", members)
        wait_until(lambda: len(consumed_by(first, second)) >= 2 * ROUND, "everything consumed", members)
        # Resumed at the commits: the first offset the survivor read after the take-over on
        # each partition it took over is the leaver's committed offset there.
        takeover_start = first_offsets(second.consumed[takeover_index:], left_partitions)
        for partition in left_partitions:
            assert takeover_start.get(partition) == committed.get(partition), (
                f"partition {partition}: resumed at {takeover_start.get(partition)}, "
                f"committed {committed.get(partition)}"
            )
    finally:
        second.consumer.close()

    everything = first.consumed + second.consumed
    values = {}
    for partition, offset, value in everything:
        assert values.setdefault((partition, offset), value) == value, (partition, offset)
    produced = {b"m%d" % i for i in range(2 * ROUND)}
    assert set(values.values()) == produced, f"lost: {sorted(produced - set(values.values()))[:10]}"
    places = [(p, o) for p, o, _ in everything]
    twice = {place for place in places if places.count(place) > 1}
    tail = first.uncommitted | second.uncommitted
    assert twice <= tail, f"consumed twice though committed: {sorted(twice - tail)[:10]}"


def consumed_by(*members) -> set[tuple[int, int]]:
    return {(p, o) for m in members for p, o, _ in m.consumed}


def first_offsets(consumed, partitions: set[int]) -> dict[int, int]:
    """The first offset in `consumed` of each of `partitions`."""
    first = {}
    for partition, offset, _ in consumed:
        if partition in partitions:
            first.setdefault(partition, offset)
    return first
