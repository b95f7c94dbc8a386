"""Single-active-consumer fail-over and filter values.

ringbroker only: RabbitMQ 3.10 has neither single active consumer (3.11) nor stream filtering
(3.13), so RMQ_SKIP=sac,filter skips these there; the Rust runner sets RMQ_STRICT, which makes a
skip a failure."""

from __future__ import annotations

import pytest
from rstream import (
    Consumer,
    ConsumerOffsetSpecification,
    EventContext,
    FilterConfiguration,
    OffsetNotFound,
    OffsetSpecification,
    OffsetType,
    Producer,
)

from support import Confirmations, Deliveries, create_stream, payloads, publish_confirmed, run
from support import until_stored, wait_until

GROUP = "sac-group"
FIRST = ConsumerOffsetSpecification(OffsetType.FIRST, None)


def resume_listener(label: str, events: list[tuple[str, bool]]):
    """A consumer update listener as rstream's SAC example writes it: on becoming active, resume
    after the offset stored under the group's name (or from the first message without one)."""

    async def on_update(is_active: bool, context: EventContext) -> OffsetSpecification:
        events.append((label, is_active))
        try:
            stored = await context.consumer.query_offset(context.stream, context.reference)
        except OffsetNotFound:
            return OffsetSpecification(OffsetType.FIRST, 0)
        return OffsetSpecification(OffsetType.OFFSET, stored + 1)

    return on_update


@pytest.mark.feature("sac")
def test_single_active_consumer_fail_over(server, name):
    """Two consumers in one group: only the first is fed; it stores offset 9 and closes; the
    other is told it is active (ConsumerUpdate), resumes at 10 through its listener, and gets
    the rest and what follows, each message once."""
    before, after = payloads("before", 20), payloads("after", 5)
    properties = {"single-active-consumer": "true", "name": GROUP}

    async def body():
        await create_stream(server, name)
        await publish_confirmed(server, name, before)
        events: list[tuple[str, bool]] = []
        one, two = Deliveries(), Deliveries()

        async def on_one(message, context):
            await one(message, context)
            if context.offset == 9:
                await context.consumer.store_offset(context.stream, GROUP, context.offset)

        first = Consumer(**server.client_args())
        second = Consumer(**server.client_args())
        closed: list[Consumer] = []
        try:
            await first.subscribe(
                name,
                on_one,
                offset_specification=FIRST,
                properties=dict(properties),
                subscriber_name=GROUP,
                consumer_update_listener=resume_listener("one", events),
            )
            await second.subscribe(
                name,
                two,
                offset_specification=FIRST,
                properties=dict(properties),
                subscriber_name=GROUP,
                consumer_update_listener=resume_listener("two", events),
            )
            await one.expect_count(len(before), "deliveries to the active consumer")
            assert events == [("one", True)], f"consumer updates: {events}"
            await until_stored(first, name, GROUP, 9)
            assert two.items == [], "the inactive consumer was fed"

            await first.close()
            closed.append(first)
            await wait_until(lambda: ("two", True) in events, f"consumer two to be activated: {events}")
            await publish_confirmed(server, name, after)
            await two.expect_count(10 + len(after), "deliveries after fail-over")
            assert two.bodies() == before[10:] + after
            assert len(one.items) == len(before), "the closed consumer was fed"
        finally:
            for consumer in (first, second):
                if consumer not in closed:
                    await consumer.close()

    run(body)


async def region_of(message) -> str:
    """The filter value extractor: the region before the colon (`eu:3` -> `eu`)."""
    return bytes(message).split(b":")[0].decode()


async def publish_filtered(server, stream: str, bodies: list[bytes]) -> None:
    """Publishes with a filter value extractor (Publish v2, one filter value per message)."""
    confirmations = Confirmations()
    async with Producer(**server.client_args(), filter_value_extractor=region_of) as producer:
        ids = await producer.send_batch(stream, bodies, on_publish_confirm=confirmations)
        await confirmations.expect(ids)


@pytest.mark.feature("filter")
@pytest.mark.parametrize("match_unfiltered", [False, True])
def test_filter_values(server, name, match_unfiltered):
    """Batches of `eu` messages, `us` messages and messages without a filter value (published
    by a producer with no extractor, Publish v1), each its own batch. A consumer filtering on
    `eu` (no client-side predicate, so what it gets is what the server sent) receives the `eu`
    messages, plus the unfiltered ones with `match_unfiltered`, and never a `us` message."""
    eu_one = [f"eu:{i}".encode() for i in range(5)]
    us = [f"us:{i}".encode() for i in range(5)]
    plain = payloads("plain", 5)
    eu_two = [f"eu:{i}".encode() for i in range(5, 10)]

    async def body():
        await create_stream(server, name)
        await publish_filtered(server, name, eu_one)
        await publish_filtered(server, name, us)
        await publish_confirmed(server, name, plain)
        await publish_filtered(server, name, eu_two)
        expected = eu_one + (plain if match_unfiltered else []) + eu_two

        deliveries = Deliveries()
        filters = FilterConfiguration(values_to_filter=["eu"], match_unfiltered=match_unfiltered)
        async with Consumer(**server.client_args()) as consumer:
            await consumer.subscribe(name, deliveries, offset_specification=FIRST, filter_input=filters)
            await deliveries.expect_count(len(expected), "filtered deliveries")
        assert deliveries.bodies() == expected

    run(body)
