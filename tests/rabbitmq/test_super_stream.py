"""Super streams: `SuperStreamProducer` (creating the super stream, hash and key routing) and
`SuperStreamConsumer`, every message received once from the partition its key routes to.

ringbroker only: RabbitMQ 3.10 has no CreateSuperStream command (3.13) and answers Partitions
in a form rstream cannot decode, so RMQ_SKIP=superstream skips these there; the Rust runner
sets RMQ_STRICT, which makes a skip a failure."""

from __future__ import annotations

from collections import Counter

import mmh3
import pytest
from rstream import (
    ConsumerOffsetSpecification,
    OffsetType,
    Producer,
    RouteType,
    SuperStreamConsumer,
    SuperStreamCreationOption,
    SuperStreamProducer,
)

from support import Confirmations, Deliveries, run, wait_until

PARTITIONS = 3
FIRST = ConsumerOffsetSpecification(OffsetType.FIRST, None)


async def key_of(message) -> str:
    """The routing extractor: the message body is its own key."""
    return bytes(message).decode()


def hashed_partition(super_stream: str, key: str) -> str:
    """The partition rstream's hash routing picks for `key` (murmur3 of the key as UTF-16, seed
    104729, modulo the partition count), given partitions listed `X-0`, `X-1`, ... in order."""
    digest = mmh3.hash_bytes(bytes(key, "UTF-16"), 104729)
    return f"{super_stream}-{int.from_bytes(digest, 'little', signed=False) % PARTITIONS}"


async def consume_super_stream(server, super_stream: str, count: int) -> Deliveries:
    deliveries = Deliveries()
    consumer = SuperStreamConsumer(**server.client_args(), super_stream=super_stream)
    try:
        await consumer.subscribe(deliveries, offset_specification=FIRST)
        await deliveries.expect_count(count, "super stream deliveries")
    finally:
        await consumer.close()
    return deliveries


@pytest.mark.feature("superstream")
def test_super_stream_hash_routing(server, name):
    """CreateSuperStream through the producer's creation option, Partitions, `send` with hash
    routing and confirmations, then the super stream consumer over every partition; finally
    DeleteSuperStream removes the partitions."""
    keys = [f"key-{i}" for i in range(60)]

    async def body():
        confirmations = Confirmations()
        producer = SuperStreamProducer(
            **server.client_args(),
            super_stream=name,
            super_stream_creation_option=SuperStreamCreationOption(n_partitions=PARTITIONS),
            routing_extractor=key_of,
            routing=RouteType.Hash,
        )
        try:
            await producer.start()
            for key in keys:
                await producer.send(key.encode(), on_publish_confirm=confirmations)
            # Each partition's publisher numbers its messages from 1, so ids repeat across
            # partitions: the expected multiset is known once the partition sizes are.
            await wait_until(
                lambda: sum(confirmations.confirmed.values()) >= len(keys) or bool(confirmations.failed),
                "confirmation of every super stream message",
            )
            assert not confirmations.failed, f"publish errors: {confirmations.failed}"

            deliveries = await consume_super_stream(server, name, len(keys))
            received = [body.decode() for body in deliveries.bodies()]
            assert sorted(received) == sorted(keys), "each message once"
            for key, partition in zip(received, deliveries.streams):
                assert partition == hashed_partition(name, key), f"{key} delivered from {partition}"
            sizes = Counter(deliveries.streams)
            assert len(sizes) == PARTITIONS, f"messages per partition: {sizes}"
            expected_ids: Counter[int] = Counter()
            for size in sizes.values():
                expected_ids.update(range(1, size + 1))
            assert confirmations.confirmed == expected_ids, "every publishing id confirmed once"
        finally:
            await producer.close()
        # A fresh instance deletes it: rstream closes a started producer's locator connection
        # once it has read the partitions.
        remover = SuperStreamProducer(**server.client_args(), super_stream=name, routing_extractor=key_of)
        try:
            await remover.delete_super_stream(name)
        finally:
            await remover.close()
        async with Producer(**server.client_args()) as plain:
            for partition in range(PARTITIONS):
                assert not await plain.stream_exists(f"{name}-{partition}")

    run(body)


@pytest.mark.feature("superstream")
def test_super_stream_key_routing(server, name):
    """Key routing asks the server (Route) which partition a routing key binds to: key `2` is
    partition `X-2`, and the consumer finds every message there."""
    bodies = [f"keyed-{i}".encode() for i in range(10)]

    async def route_key(message) -> str:
        return "2"

    async def body():
        confirmations = Confirmations()
        producer = SuperStreamProducer(
            **server.client_args(),
            super_stream=name,
            super_stream_creation_option=SuperStreamCreationOption(n_partitions=PARTITIONS),
            routing_extractor=route_key,
            routing=RouteType.Key,
        )
        try:
            await producer.start()
            for message in bodies:
                await producer.send(message, on_publish_confirm=confirmations)
            await confirmations.expect(range(1, len(bodies) + 1))
        finally:
            await producer.close()
        deliveries = await consume_super_stream(server, name, len(bodies))
        assert deliveries.bodies() == bodies
        assert set(deliveries.streams) == {f"{name}-2"}

    run(body)
