"""TLS: rstream with an `ssl.SSLContext` that trusts only the test CA publishes (confirmed)
and consumes over the TLS listener, including the connection rstream opens to the address
Metadata advertises. Skipped without RMQ_TLS_PORT (a failure under RMQ_STRICT)."""

from __future__ import annotations

import pytest
from rstream import Consumer, ConsumerOffsetSpecification, OffsetType, Producer

from support import Deliveries, payloads, run

FIRST = ConsumerOffsetSpecification(OffsetType.FIRST, None)


@pytest.mark.feature("tls")
def test_publish_and_consume_over_tls(server, name):
    bodies = payloads("tls", 10)

    async def body():
        async with Producer(**server.tls_args()) as producer:
            await producer.create_stream(name)
            ids = [await producer.send_wait(name, message, timeout=5) for message in bodies]
        assert ids == list(range(1, len(bodies) + 1))
        deliveries = Deliveries()
        async with Consumer(**server.tls_args()) as consumer:
            await consumer.subscribe(name, deliveries, offset_specification=FIRST)
            await deliveries.expect_count(len(bodies))
        assert deliveries.items == list(enumerate(bodies))

    run(body)
