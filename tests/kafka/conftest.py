"""Shared set-up of the kafka-python suite: where the broker is, how clients are made, bounds.

The suite drives kafka-python (PyPI, pinned in .ci/run) against a Kafka-protocol broker:
ringbroker's `--kafka-listen` port when `tests/kafka_python.rs` runs it, or another broker a
person points it at. Everything about the broker comes from the environment:

  KAFKA_BOOTSTRAP               bootstrap address host:port (default 127.0.0.1:9092)
  KAFKA_USER, KAFKA_PASSWORD    SASL PLAIN credentials that work (default ringbroker/ringbroker)
  KAFKA_SASL=0                  the broker has no SASL PLAIN: the SASL tests are skipped
  KAFKA_STRICT=1                a test that would be skipped fails instead (the Rust runner
                                sets it: against ringbroker nothing may be skipped)

Every test is bounded by TEST_TIMEOUT_S (SIGALRM), and every polling loop inside by a deadline;
client calls carry their own timeouts.
"""

from __future__ import annotations

import os
import signal
import uuid
from dataclasses import dataclass

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

#: Whole-test bound (seconds): a test normally takes a few seconds.
TEST_TIMEOUT_S = 120
#: Bound of one client request (milliseconds).
REQUEST_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    user: str
    password: str
    sasl: bool
    strict: bool

    def skip(self, reason: str) -> None:
        """Skips the calling test, or fails it under KAFKA_STRICT=1."""
        if self.strict:
            pytest.fail(f"would skip under KAFKA_STRICT=1: {reason}")
        pytest.skip(reason)

    def common(self) -> dict:
        """Settings every client here takes: where, and bounded waits."""
        return {
            "bootstrap_servers": self.bootstrap,
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
            "client_id": "ringbroker-pytest",
        }

    def producer(self, **configs) -> KafkaProducer:
        settings = self.common() | {"max_block_ms": REQUEST_TIMEOUT_MS}
        return KafkaProducer(**(settings | configs))

    def consumer(self, *topics: str, **configs) -> KafkaConsumer:
        settings = self.common() | {
            "auto_offset_reset": "earliest",
            "enable_auto_commit": False,
            "fetch_max_wait_ms": 100,
        }
        return KafkaConsumer(*topics, **(settings | configs))

    def admin(self, **configs) -> KafkaAdminClient:
        return KafkaAdminClient(**(self.common() | configs))


@pytest.fixture(scope="session")
def broker() -> Broker:
    env = os.environ
    return Broker(
        bootstrap=env.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        user=env.get("KAFKA_USER", "ringbroker"),
        password=env.get("KAFKA_PASSWORD", "ringbroker"),
        sasl=env.get("KAFKA_SASL", "1") != "0",
        strict=env.get("KAFKA_STRICT") == "1",
    )


@pytest.fixture
def topic_name(request) -> str:
    """A fresh topic name per test (the broker starts empty, but a foreign one may not)."""
    return f"py-{request.node.name[:40].replace('_', '-')}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin(broker: Broker):
    client = broker.admin()
    yield client
    client.close()


def create_topic(admin: KafkaAdminClient, name: str, partitions: int) -> None:
    """Creates `name` with `partitions` partitions and waits until every partition has a leader."""
    admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})
    admin.wait_for_topics([name], timeout_ms=REQUEST_TIMEOUT_MS)


class TestTimedOut(Exception):
    """A test ran past TEST_TIMEOUT_S."""


@pytest.fixture(autouse=True)
def bounded():
    """Fails a test that runs longer than TEST_TIMEOUT_S."""

    def expire(signum, frame):
        raise TestTimedOut(f"the test ran longer than {TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
