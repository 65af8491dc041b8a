"""The Apache Kafka launcher's configuration, without starting a JVM."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tankwatch.apache_kafka import (
    KAFKA_VERSION,
    ApacheKafka,
    cache_dir,
    new_cluster_id,
    test_props,
)


def test_cluster_id_is_a_kafka_uuid() -> None:
    cid = new_cluster_id()
    assert len(cid) == 22 and "=" not in cid
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    # StorageTool would read "-t -xyz" as a missing value: never a leading dash.
    assert not any(new_cluster_id().startswith("-") for _ in range(2000))


def test_cache_dir_is_outside_the_source_tree_and_overridable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TANKWATCH_KAFKA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tankwatch" / f"kafka-{KAFKA_VERSION}"
    monkeypatch.setenv("TANKWATCH_KAFKA_CACHE", str(tmp_path / "c"))
    assert cache_dir("9.9.9") == tmp_path / "c" / "kafka-9.9.9"


def test_single_node_is_combined_mode_with_replication_one(tmp_path: Path) -> None:
    kafka = ApacheKafka(tmp_path, port=19999, extra_props={"log.roll.ms": "5"})
    props = kafka.properties(kafka.nodes[0])
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == f"0@127.0.0.1:{kafka.nodes[0].controller_port}"
    assert props["listeners"].startswith("PLAINTEXT://127.0.0.1:19999,CONTROLLER://")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["log.dirs"] == str(tmp_path / "node-0" / "data")
    assert props["log.roll.ms"] == "5"  # extra properties override
    assert kafka.bootstrap == "127.0.0.1:19999"


def test_three_nodes_share_a_quorum_with_rf3_and_min_isr2(tmp_path: Path) -> None:
    kafka = ApacheKafka(tmp_path, brokers=3)
    all_props = [kafka.properties(n) for n in kafka.nodes]
    assert len({p["controller.quorum.voters"] for p in all_props}) == 1
    assert len(all_props[0]["controller.quorum.voters"].split(",")) == 3
    assert [p["node.id"] for p in all_props] == ["0", "1", "2"]
    for p in all_props:
        assert p["default.replication.factor"] == "3"
        assert p["min.insync.replicas"] == "2"
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
    assert len(set(kafka.bootstrap.split(","))) == 3


def test_a_restarted_launcher_reuses_ports_and_cluster_id(tmp_path: Path) -> None:
    first = ApacheKafka(tmp_path, brokers=2)
    for node in first.nodes:
        first._write_config(node)
    (tmp_path / "cluster.id").write_text(first.cluster_id + "\n")
    again = ApacheKafka(tmp_path, brokers=2)
    assert again.cluster_id == first.cluster_id
    assert again.bootstrap == first.bootstrap


def test_test_props_compaction_is_aggressive_and_optional() -> None:
    on, off = test_props(), test_props(compaction=False)
    assert float(on["log.cleaner.min.cleanable.ratio"]) <= 0.01
    assert int(on["log.roll.ms"]) <= 1000
    assert "log.roll.ms" not in off
    assert off["group.initial.rebalance.delay.ms"] == "0"
    assert int(off["group.min.session.timeout.ms"]) <= 3000  # the reliability sessions
