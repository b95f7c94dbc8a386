"""KafkaAdminClient: create_topics with partitions, list_topics and describe_topics show the topic,
creating it again is refused, delete_topics removes it, and it is gone."""

from __future__ import annotations

import time

import pytest
from kafka.errors import TopicAlreadyExistsError

from conftest import REQUEST_TIMEOUT_MS, create_topic


def test_create_list_describe_delete(admin, topic_name):
    create_topic(admin, topic_name, 3)
    assert topic_name in admin.list_topics()
    (described,) = admin.describe_topics([topic_name])
    assert described["error_code"] == 0, described
    assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2], described
    assert all(p["leader_id"] >= 0 for p in described["partitions"]), described

    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics({topic_name: {"num_partitions": 3, "replication_factor": 1}})

    result = admin.delete_topics([topic_name], timeout_ms=REQUEST_TIMEOUT_MS)
    assert [t["error_code"] for t in result["topics"]] == [0], result
    deadline = time.monotonic() + 10
    while topic_name in admin.list_topics():
        assert time.monotonic() < deadline, f"{topic_name} is still listed 10 s after its deletion"
        time.sleep(0.1)


def test_create_several_and_default_partitions(admin, topic_name):
    names = [f"{topic_name}-{i}" for i in range(3)]
    admin.create_topics({name: {"num_partitions": i + 1, "replication_factor": 1} for i, name in enumerate(names)})
    admin.wait_for_topics(names, timeout_ms=REQUEST_TIMEOUT_MS)
    described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    assert described == {name: i + 1 for i, name in enumerate(names)}, described
    admin.delete_topics(names, timeout_ms=REQUEST_TIMEOUT_MS)
    deadline = time.monotonic() + 10
    while set(names) & set(admin.list_topics()):
        assert time.monotonic() < deadline, "topics still listed 10 s after their deletion"
        time.sleep(0.1)
