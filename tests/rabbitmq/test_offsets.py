"""Server-side offset tracking (`store_offset`, `query_offset`) and stream management, the way
rstream's offset-tracking example uses them: a consumer stores the offset it reached under its
name, and a later consumer of the same name resumes after it. Runs on RabbitMQ 3.10 and
ringbroker alike."""

from __future__ import annotations

import pytest
from rstream import (
    Consumer,
    ConsumerOffsetSpecification,
    OffsetNotFound,
    OffsetType,
    Producer,
    StreamDoesNotExist,
)

from support import Deliveries, consume, create_stream, payloads, publish_confirmed, run, until_stored

REFERENCE = "tracker"


def test_store_and_query_offset(server, name):
    """Nothing stored yet is OffsetNotFound (code 19); a stored offset reads back; a later
    store replaces it."""
    bodies = payloads("track", 30)

    async def body():
        await create_stream(server, name)
        await publish_confirmed(server, name, bodies)
        async with Consumer(**server.client_args()) as consumer:
            with pytest.raises(OffsetNotFound):
                await consumer.query_offset(name, REFERENCE)
            await consumer.store_offset(name, REFERENCE, 11)
            await until_stored(consumer, name, REFERENCE, 11)
            await consumer.store_offset(name, REFERENCE, 17)
            await until_stored(consumer, name, REFERENCE, 17)

    run(body)


def test_consumer_resumes_after_stored_offset(server, name):
    """A named consumer stores the offset of the last message it processed from its callback;
    a new consumer queries it and subscribes at the next offset: no message twice, none lost."""
    first_half, second_half = payloads("one", 10), payloads("two", 10)

    async def body():
        await create_stream(server, name)
        await publish_confirmed(server, name, first_half)
        deliveries = Deliveries()

        async def on_message(message, context):
            await deliveries(message, context)
            if context.offset == 9:
                await context.consumer.store_offset(context.stream, REFERENCE, context.offset)

        async with Consumer(**server.client_args()) as consumer:
            spec = ConsumerOffsetSpecification(OffsetType.FIRST, None)
            await consumer.subscribe(name, on_message, offset_specification=spec, subscriber_name=REFERENCE)
            await deliveries.expect_count(10)
        await publish_confirmed(server, name, second_half)

        async with Consumer(**server.client_args()) as consumer:
            await until_stored(consumer, name, REFERENCE, 9)
            resume_from = await consumer.query_offset(name, REFERENCE) + 1
        assert resume_from == 10
        spec = ConsumerOffsetSpecification(OffsetType.OFFSET, resume_from)
        got = await consume(server, name, spec, 10)
        assert [body for _, body in got] == second_half
        # RabbitMQ writes stored offsets into the stream as tracking chunks, which take offsets
        # of their own (never delivered): later messages need not follow on contiguously.
        offsets = [offset for offset, _ in got]
        assert offsets == sorted(set(offsets)) and offsets[0] >= resume_from, offsets

    run(body)


def test_create_exists_delete(server, name):
    """Create, then Create again (StreamAlreadyExists unless exists_ok), Metadata says it
    exists, Delete, and then it does not; deleting it again is StreamDoesNotExist (code 2)."""

    async def body():
        async with Producer(**server.client_args()) as producer:
            assert not await producer.stream_exists(name)
            await producer.create_stream(name)
            await producer.create_stream(name, exists_ok=True)
            assert await producer.stream_exists(name)
            await producer.delete_stream(name)
            assert not await producer.stream_exists(name)
            with pytest.raises(StreamDoesNotExist):
                await producer.delete_stream(name)

    run(body)
