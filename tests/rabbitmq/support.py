"""Helpers of the rstream suite: bounded runs and waits, confirmation and delivery recorders.

Every wait here is bounded; a wait that runs out fails the test with what it was waiting for.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Awaitable, Callable, Iterable, Optional

import pytest
from rstream import (
    ConfirmationStatus,
    Consumer,
    ConsumerOffsetSpecification,
    MessageContext,
    OffsetNotFound,
    Producer,
)

from conftest import Server

#: Whole-test bound (seconds): generous, a test normally takes a second or two.
TEST_TIMEOUT_S = 60.0
#: Bound of one wait for confirmations or deliveries (seconds).
WAIT_S = 10.0
#: How long a test watches for confirmations or deliveries that must not come (seconds).
QUIET_S = 0.5


def run(body: Callable[[], Awaitable[None]], timeout: float = TEST_TIMEOUT_S) -> None:
    """Runs a test body on a fresh event loop, bounded by `timeout` seconds."""

    async def bounded() -> None:
        await asyncio.wait_for(body(), timeout)

    asyncio.run(bounded())


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Polls `predicate` every 10 ms; fails the test with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def payloads(tag: str, count: int, start: int = 0) -> list[bytes]:
    """`count` distinct message bodies `tag-i` (ringbroker stores them byte for byte)."""
    return [f"{tag}-{i}".encode() for i in range(start, start + count)]


class Confirmations:
    """A confirmation handler (`on_publish_confirm`) that records every status it is given."""

    def __init__(self) -> None:
        self.confirmed: Counter[int] = Counter()
        self.failed: list[tuple[int, int]] = []

    def __call__(self, status: ConfirmationStatus) -> None:
        if status.is_confirmed:
            self.confirmed[status.message_id] += 1
        else:
            self.failed.append((status.message_id, status.response_code))

    async def expect(self, ids: Iterable[int]) -> None:
        """Waits until every id in `ids` is confirmed, then checks that each was confirmed
        exactly once, that no other id was, and that nothing failed."""
        wanted = set(ids)
        await wait_until(
            lambda: wanted <= set(self.confirmed) or bool(self.failed),
            f"confirmation of publishing ids {sorted(wanted - set(self.confirmed))}",
        )
        assert not self.failed, f"publish errors (publishing id, code): {self.failed}"
        await asyncio.sleep(QUIET_S)
        assert set(self.confirmed) == wanted, f"confirmed ids {sorted(self.confirmed)}, expected {sorted(wanted)}"
        twice = {i: n for i, n in self.confirmed.items() if n != 1}
        assert not twice, f"ids confirmed more than once: {twice}"


class Deliveries:
    """A consumer callback that records (offset, body) of every message delivered to it."""

    def __init__(self) -> None:
        self.items: list[tuple[int, bytes]] = []
        self.streams: list[str] = []

    async def __call__(self, message: Any, context: MessageContext) -> None:
        self.items.append((context.offset, bytes(message)))
        self.streams.append(context.stream)

    def bodies(self) -> list[bytes]:
        return [body for _, body in self.items]

    def offsets(self) -> list[int]:
        return [offset for offset, _ in self.items]

    async def expect_count(self, count: int, what: str = "deliveries") -> None:
        """Waits for `count` deliveries, then for a moment more, and checks none came extra."""
        await wait_until(lambda: len(self.items) >= count, f"{count} {what} (have {len(self.items)})")
        await asyncio.sleep(QUIET_S)
        assert len(self.items) == count, f"{len(self.items)} {what}, expected {count}: {self.bodies()}"


async def create_stream(server: Server, stream: str) -> None:
    async with Producer(**server.client_args()) as producer:
        await producer.create_stream(stream)


async def publish_confirmed(server: Server, stream: str, bodies: list[bytes], **producer_args: Any) -> list[int]:
    """Publishes `bodies` in one `send_batch` and waits for each confirmation; the ids."""
    confirmations = Confirmations()
    async with Producer(**server.client_args(), **producer_args) as producer:
        ids = await producer.send_batch(stream, bodies, on_publish_confirm=confirmations)
        await confirmations.expect(ids)
    return ids


async def consume(
    server: Server,
    stream: str,
    spec: ConsumerOffsetSpecification,
    count: int,
    publish_after_subscribe: Optional[list[bytes]] = None,
) -> list[tuple[int, bytes]]:
    """Subscribes from `spec`, optionally publishes more once subscribed, and returns exactly
    `count` deliveries (fails on fewer within the wait, or more within a moment after)."""
    deliveries = Deliveries()
    async with Consumer(**server.client_args()) as consumer:
        await consumer.subscribe(stream, deliveries, offset_specification=spec)
        if publish_after_subscribe:
            await publish_confirmed(server, stream, publish_after_subscribe)
        await deliveries.expect_count(count)
    return deliveries.items


async def until_stored(consumer: Consumer, stream: str, reference: str, expected: int) -> None:
    """Polls QueryOffset until it answers `expected` for `reference` (StoreOffset has no
    response, so a store need not be visible at once), bounded by [`WAIT_S`]."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        try:
            seen: Optional[int] = await consumer.query_offset(stream, reference)
        except OffsetNotFound:
            seen = None
        if seen == expected:
            return
        if loop.time() >= deadline:
            pytest.fail(f"stored offset of {reference} is {seen} after {WAIT_S} s, expected {expected}")
        await asyncio.sleep(0.02)
