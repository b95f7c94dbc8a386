"""Consumers from every `ConsumerOffsetSpecification`: FIRST, LAST, NEXT, OFFSET and TIMESTAMP,
each receiving exactly the messages its specification names, with their offsets.
Runs on RabbitMQ 3.10 and ringbroker alike.

Each stream holds two batches, A (offsets 0-9) then B (offsets 10-19), each published with
one `send_batch` and confirmed before the next, so no chunk spans both."""

from __future__ import annotations

import asyncio
import time

from rstream import ConsumerOffsetSpecification, OffsetType

from support import consume, create_stream, payloads, publish_confirmed, run

A = payloads("a", 10)
B = payloads("b", 10)


async def two_batches(server, name, pause_s: float = 0.0) -> int:
    """Creates the stream with batches A and B; returns a time in ms (taken `pause_s` after A
    was confirmed, and `pause_s` before B is published) between the two."""
    await create_stream(server, name)
    await publish_confirmed(server, name, A)
    await asyncio.sleep(pause_s)
    between_ms = int(time.time() * 1000)
    await asyncio.sleep(pause_s)
    await publish_confirmed(server, name, B)
    return between_ms


def test_first(server, name):
    async def body():
        await two_batches(server, name)
        got = await consume(server, name, ConsumerOffsetSpecification(OffsetType.FIRST, None), 20)
        assert got == list(enumerate(A + B))

    run(body)


def test_offset(server, name):
    """OFFSET 13: exactly offsets 13-19, even though 13 is inside B's chunk."""

    async def body():
        await two_batches(server, name)
        got = await consume(server, name, ConsumerOffsetSpecification(OffsetType.OFFSET, 13), 7)
        assert got == list(enumerate(A + B))[13:]

    run(body)


def test_offset_past_the_end_waits_for_new_messages(server, name):
    """OFFSET 20 (the next offset to be written): nothing old, then the new message."""

    async def body():
        await two_batches(server, name)
        spec = ConsumerOffsetSpecification(OffsetType.OFFSET, 20)
        got = await consume(server, name, spec, 1, publish_after_subscribe=[b"late"])
        assert got == [(20, b"late")]

    run(body)


def test_last(server, name):
    """LAST starts at the last chunk: the tail of B (B is one chunk on RabbitMQ and one batch on
    ringbroker, so all of it), none of A, then what is published after."""

    async def body():
        await two_batches(server, name)
        spec = ConsumerOffsetSpecification(OffsetType.LAST, None)
        got = await consume(server, name, spec, len(B) + 1, publish_after_subscribe=[b"after"])
        assert got == list(enumerate(A + B))[10:] + [(20, b"after")]

    run(body)


def test_next(server, name):
    """NEXT: nothing already stored, only what is published after subscribing."""

    async def body():
        await two_batches(server, name)
        spec = ConsumerOffsetSpecification(OffsetType.NEXT, None)
        later = payloads("c", 5)
        got = await consume(server, name, spec, 5, publish_after_subscribe=later)
        assert got == list(enumerate(later, start=20))

    run(body)


def test_timestamp(server, name):
    """TIMESTAMP between A and B (a second apart): all of B and none of A."""

    async def body():
        between_ms = await two_batches(server, name, pause_s=1.0)
        spec = ConsumerOffsetSpecification(OffsetType.TIMESTAMP, between_ms)
        got = await consume(server, name, spec, 10)
        assert got == list(enumerate(A + B))[10:]

    run(body)


def test_timestamp_before_everything(server, name):
    """TIMESTAMP 0 (before the first message): everything, like FIRST."""

    async def body():
        await two_batches(server, name)
        got = await consume(server, name, ConsumerOffsetSpecification(OffsetType.TIMESTAMP, 0), 20)
        assert got == list(enumerate(A + B))

    run(body)
