"""Shared set-up of the rstream suite: where the server is, what it supports, and bounded waits.

The suite drives the `rstream` client (PyPI, pinned in .ci/run) against a RabbitMQ Streams
server: ringbroker's `--rabbitmq-listen` port when `tests/rabbitmq_rstream.rs` runs it, or a
real RabbitMQ when a person points it there. Everything about the server comes from the
environment:

  RMQ_HOST, RMQ_PORT            plain listener (default 127.0.0.1:5552)
  RMQ_USER, RMQ_PASSWORD        SASL PLAIN credentials (default guest/guest)
  RMQ_TLS_HOST, RMQ_TLS_PORT    a TLS listener (TLS tests are skipped without a port)
  RMQ_CA_FILE                   PEM file of the CA that signed the TLS listener's certificate
  RMQ_SKIP                      comma-separated features the server lacks: sac, filter,
                                superstream, tls (RabbitMQ 3.10 lacks the first three)
  RMQ_STRICT=1                  a feature that would be skipped fails instead (the Rust runner
                                sets it: against ringbroker nothing may be skipped)

Every test runs its body under `support.run()`, which bounds it; every wait inside is bounded
too (`support.py` holds the helpers).
"""

from __future__ import annotations

import os
import ssl
import uuid
from dataclasses import dataclass
from typing import Optional

import pytest

FEATURES = ("sac", "filter", "superstream", "tls")


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str
    tls_host: str
    tls_port: Optional[int]
    ca_file: Optional[str]
    skip: frozenset[str]
    strict: bool

    def client_args(self) -> dict:
        """Keyword arguments every rstream Producer/Consumer of the plain listener takes."""
        return {"host": self.host, "port": self.port, "username": self.user, "password": self.password}

    def tls_args(self) -> dict:
        """Keyword arguments for the TLS listener: an SSL context trusting only the test CA."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=self.ca_file)
        return {
            "host": self.tls_host,
            "port": self.tls_port,
            "username": self.user,
            "password": self.password,
            "ssl_context": context,
        }


def _server_from_env() -> Server:
    env = os.environ
    skip = frozenset(f.strip() for f in env.get("RMQ_SKIP", "").split(",") if f.strip())
    unknown = skip - set(FEATURES)
    if unknown:
        raise pytest.UsageError(f"RMQ_SKIP names unknown features {sorted(unknown)}; known: {FEATURES}")
    tls_port = env.get("RMQ_TLS_PORT")
    return Server(
        host=env.get("RMQ_HOST", "127.0.0.1"),
        port=int(env.get("RMQ_PORT", "5552")),
        user=env.get("RMQ_USER", "guest"),
        password=env.get("RMQ_PASSWORD", "guest"),
        tls_host=env.get("RMQ_TLS_HOST", env.get("RMQ_HOST", "127.0.0.1")),
        tls_port=int(tls_port) if tls_port else None,
        ca_file=env.get("RMQ_CA_FILE"),
        skip=skip if tls_port else skip | {"tls"},
        strict=env.get("RMQ_STRICT") == "1",
    )


SERVER = _server_from_env()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "feature(name): needs a server feature that RMQ_SKIP may exclude")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="feature"):
        feature = marker.args[0]
        assert feature in FEATURES, f"unknown feature {feature}"
        if feature in SERVER.skip:
            message = f"the server lacks '{feature}' (RMQ_SKIP or no TLS port)"
            if SERVER.strict:
                pytest.fail(f"RMQ_STRICT: {message}")
            pytest.skip(message)


@pytest.fixture
def server() -> Server:
    return SERVER


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A stream (or super stream) name no other test or run uses."""
    base = request.node.name.replace("test_", "").replace("[", "-").replace("]", "")
    return f"rs-{base}-{uuid.uuid4().hex[:8]}"
