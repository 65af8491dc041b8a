"""``tankwatch topics create`` against a real broker: four topics, state compacted,
idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _create(bootstrap: str, suffix: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TANKWATCH_"))}
    args = [
        sys.executable,
        "-m",
        "tankwatch.cli",
        "topics",
        "create",
        "--bootstrap",
        bootstrap,
        "--partitions",
        "3",
    ]
    for name in ("readings", "dlq", "forecasts", "state"):
        args += [f"--topic-{name}", f"t.{name}.{suffix}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)


def _state_cleanup_policy(admin: KafkaAdminClient, topic: str) -> str | None:
    """The topic's cleanup.policy, or None if this broker does not report it
    (the embedded Tansu answers DescribeConfigs with an empty list)."""
    try:
        result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    except Exception:  # an optional admin API: some brokers do not implement it
        return None
    # kafka-python 3: {"topic": {name: {config: value-or-details}}}
    configs = result.get("topic", {}).get(topic, {}) if isinstance(result, dict) else {}
    value = configs.get("cleanup.policy")
    if isinstance(value, dict):
        value = value.get("value")
    return None if value is None else str(value)


def test_topics_create_is_idempotent_and_state_is_compacted(kafka_bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    names = {f"t.{n}.{suffix}" for n in ("readings", "dlq", "forecasts", "state")}

    first = _create(kafka_bootstrap, suffix)
    assert first.returncode == 0, first.stderr
    assert all(n in first.stdout for n in names)

    second = _create(kafka_bootstrap, suffix)
    assert second.returncode == 0, second.stderr
    assert "already existed" in second.stdout

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert names <= set(admin.list_topics())
        described = admin.describe_topics(sorted(names))
        assert {len(t["partitions"]) for t in described} == {3}
        policy = _state_cleanup_policy(admin, f"t.state.{suffix}")
        if policy is not None:  # the broker reports configs: then it must say compact
            assert "compact" in policy
    finally:
        admin.close()
