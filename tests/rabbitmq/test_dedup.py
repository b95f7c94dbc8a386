"""Named-producer deduplication across producer restarts (DeclarePublisher with a reference,
QueryPublisherSequence): a restarted producer of the same name that resends ids already
confirmed gets them confirmed again but stored once, and an unnumbered send resumes after the
last stored id. Runs on RabbitMQ 3.10 and ringbroker alike."""

from __future__ import annotations

from rstream import ConsumerOffsetSpecification, OffsetType, Producer, RawMessage

from support import Confirmations, consume, create_stream, payloads, run

PRODUCER = "dedup-producer"


def numbered(bodies: list[bytes], first_id: int) -> list[RawMessage]:
    return [RawMessage(body, publishing_id=first_id + i) for i, body in enumerate(bodies)]


def test_named_producer_dedup_across_restart(server, name):
    bodies = payloads("dedup", 18)

    async def body():
        await create_stream(server, name)
        # First run: ids 1-10, all confirmed.
        async with Producer(**server.client_args()) as producer:
            confirmations = Confirmations()
            ids = await producer.send_batch(
                name, numbered(bodies[:10], 1), publisher_name=PRODUCER, on_publish_confirm=confirmations
            )
            await confirmations.expect(ids)
        # Restart: resend 6-10 (already stored) with the new 11-15. Every id is confirmed once;
        # the duplicates are not stored again.
        async with Producer(**server.client_args()) as producer:
            confirmations = Confirmations()
            ids = await producer.send_batch(
                name, numbered(bodies[5:15], 6), publisher_name=PRODUCER, on_publish_confirm=confirmations
            )
            assert sorted(ids) == list(range(6, 16))
            await confirmations.expect(ids)
        # Restart without explicit ids: rstream asks the server for the last id it stored for
        # this name (QueryPublisherSequence: 15) and numbers on from 16.
        async with Producer(**server.client_args()) as producer:
            confirmations = Confirmations()
            ids = await producer.send_batch(
                name, bodies[15:], publisher_name=PRODUCER, on_publish_confirm=confirmations
            )
            assert sorted(ids) == [16, 17, 18]
            await confirmations.expect(ids)
        got = await consume(server, name, ConsumerOffsetSpecification(OffsetType.FIRST, None), len(bodies))
        assert [b for _, b in got] == bodies

    run(body)


def test_duplicates_within_one_connection(server, name):
    """Ids at or below the last stored one are dropped even from the producer that sent them,
    and ids need not be contiguous: 1, 2, 5 stored; 2, 3, 4, 5 dropped; 6 stored."""

    async def body():
        await create_stream(server, name)
        async with Producer(**server.client_args()) as producer:
            confirmations = Confirmations()
            sent = [(1, b"one"), (2, b"two"), (5, b"five")]
            ids = await producer.send_batch(
                name,
                [RawMessage(b, publishing_id=i) for i, b in sent],
                publisher_name=PRODUCER,
                on_publish_confirm=confirmations,
            )
            await confirmations.expect(ids)
            again = [(2, b"two again"), (3, b"three late"), (4, b"four late"), (5, b"five again"), (6, b"six")]
            confirmations = Confirmations()
            ids = await producer.send_batch(
                name,
                [RawMessage(b, publishing_id=i) for i, b in again],
                publisher_name=PRODUCER,
                on_publish_confirm=confirmations,
            )
            await confirmations.expect(ids)
        got = await consume(server, name, ConsumerOffsetSpecification(OffsetType.FIRST, None), 4)
        assert [b for _, b in got] == [b"one", b"two", b"five", b"six"]

    run(body)
