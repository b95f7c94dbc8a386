"""Every publishing method of rstream, each with its confirmation handler checked (every
publishing id confirmed exactly once), then read back from the first offset byte for byte.
Runs on RabbitMQ 3.10 and ringbroker alike."""

from __future__ import annotations

from rstream import CompressionType, ConsumerOffsetSpecification, OffsetType, Producer

from support import Confirmations, consume, create_stream, payloads, run

FIRST = ConsumerOffsetSpecification(OffsetType.FIRST, None)


def test_send(server, name):
    """`send`: buffered by the client and flushed by its timer; one confirmation per message."""
    bodies = payloads("send", 50)

    async def body():
        await create_stream(server, name)
        confirmations = Confirmations()
        # A short batching delay keeps the test quick; users keep the default.
        async with Producer(**server.client_args(), default_batch_publishing_delay=0.1) as producer:
            for message in bodies:
                await producer.send(name, message, on_publish_confirm=confirmations)
            # rstream numbers an unnamed producer's messages from 1.
            await confirmations.expect(range(1, len(bodies) + 1))
        got = await consume(server, name, FIRST, len(bodies))
        assert [b for _, b in got] == bodies
        assert [o for o, _ in got] == list(range(len(bodies)))

    run(body)


def test_send_batch(server, name):
    """`send_batch`: the caller's batch goes out as Publish frames; the ids it returns are the
    ones confirmed."""
    bodies = payloads("batch", 100)

    async def body():
        await create_stream(server, name)
        confirmations = Confirmations()
        async with Producer(**server.client_args()) as producer:
            first = await producer.send_batch(name, bodies[:60], on_publish_confirm=confirmations)
            second = await producer.send_batch(name, bodies[60:], on_publish_confirm=confirmations)
            assert sorted(first + second) == list(range(1, 101))
            await confirmations.expect(first + second)
        got = await consume(server, name, FIRST, len(bodies))
        assert [b for _, b in got] == bodies

    run(body)


def test_send_wait(server, name):
    """`send_wait`: returns only once the message is confirmed (it raises on a publish error or
    when no confirmation comes within its timeout)."""
    bodies = payloads("wait", 20)

    async def body():
        await create_stream(server, name)
        async with Producer(**server.client_args()) as producer:
            ids = [await producer.send_wait(name, message, timeout=5) for message in bodies]
        assert ids == list(range(1, 21))
        got = await consume(server, name, FIRST, len(bodies))
        assert [b for _, b in got] == bodies

    run(body)


def _send_sub_entry(server, name, compression):
    """`send_sub_entry`: each call is one sub-entry batch (compressed or not) under one
    publishing id (the batch's last), so one confirmation per call; the consumer sees every
    message inside, in order."""
    groups = [payloads(f"sub{g}", 10 + g) for g in range(5)]

    async def body():
        await create_stream(server, name)
        confirmations = Confirmations()
        async with Producer(**server.client_args(), default_batch_publishing_delay=0.1) as producer:
            for group in groups:
                await producer.send_sub_entry(
                    name, group, compression_type=compression, on_publish_confirm=confirmations
                )
            # Ids advance by the message count of each batch: the i-th batch is confirmed under
            # the running total of messages up to and including it.
            totals, running = [], 0
            for group in groups:
                running += len(group)
                totals.append(running)
            await confirmations.expect(totals)
        everything = [message for group in groups for message in group]
        got = await consume(server, name, FIRST, len(everything))
        assert [b for _, b in got] == everything

    run(body)


def test_send_sub_entry_gzip(server, name):
    _send_sub_entry(server, name, CompressionType.Gzip)


def test_send_sub_entry_uncompressed(server, name):
    _send_sub_entry(server, name, CompressionType.No)
