"""SASL PLAIN (SASL_PLAINTEXT): the right password produces and reads back; a wrong password
fails with an authentication error, and the broker keeps serving the clients that log in right."""

from __future__ import annotations

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError

from conftest import create_topic


def sasl(user: str, password: str) -> dict:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }


def chain(error: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or during."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def test_right_password_works(broker, topic_name):
    if not broker.sasl:
        broker.skip("KAFKA_SASL=0: the broker has no SASL PLAIN")
    good = sasl(broker.user, broker.password)
    admin = broker.admin(**good)
    try:
        create_topic(admin, topic_name, 1)
        assert topic_name in admin.list_topics()
    finally:
        admin.close()
    producer = broker.producer(**good)
    metadata = producer.send(topic_name, key=b"k", value=b"over SASL").get(timeout=15)
    producer.close(timeout=10)
    consumer = broker.consumer(**good)
    try:
        partition = TopicPartition(topic_name, metadata.partition)
        consumer.assign([partition])
        consumer.seek(partition, metadata.offset)
        records = consumer.poll(timeout_ms=10_000, max_records=1).get(partition, [])
        assert [(r.key, r.value) for r in records] == [(b"k", b"over SASL")], records
    finally:
        consumer.close()


def test_wrong_password_fails_and_others_are_served(broker, caplog):
    if not broker.sasl:
        broker.skip("KAFKA_SASL=0: the broker has no SASL PLAIN")
    # kafka-python retries a failed bootstrap until bootstrap_timeout_ms and then raises a
    # timeout; the authentication error itself is what its connection logs.
    with pytest.raises(KafkaError) as failed:
        admin = broker.admin(bootstrap_timeout_ms=5_000, **sasl(broker.user, broker.password + "-wrong"))
        try:
            admin.list_topics()
        finally:
            admin.close()
    logged = [record.getMessage() for record in caplog.records]
    raised = [type(e).__name__ + ": " + str(e) for e in chain(failed.value)]
    authentication = [line for line in logged + raised if "SaslAuthenticationFailed" in line]
    assert authentication, f"no authentication error: raised {raised}, logged {logged[-5:]}"

    admin = broker.admin(**sasl(broker.user, broker.password))
    try:
        admin.list_topics()
    finally:
        admin.close()
