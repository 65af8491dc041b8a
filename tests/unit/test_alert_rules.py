"""The Prometheus config and alert rules pass promtool, and every alert is unit-tested.

``promtool test rules`` runs the cases in ``deploy/prometheus/alerts_test.yml``; the
last test here makes sure no alert is left without a firing *and* a not-firing case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PROM_DIR = REPO / "deploy" / "prometheus"

pytestmark = pytest.mark.prometheus

# Under CI a missing promtool is a failure (make sysdeps installs it), not a skip.
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"),
    reason="promtool not installed (make sysdeps)",
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=60
    )


@needs_promtool
def test_prometheus_config_is_valid() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_rules_are_valid() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def _alert_names(path: Path) -> set[str]:
    doc = yaml.safe_load(path.read_text())
    return {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    alerts = _alert_names(PROM_DIR / "alerts.yml")
    required = {"TankAnomalyFlagged", "TankStale", "ConsumerLagGrowing", "DeadLetterRateHigh"}
    assert required <= alerts
    cases = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in cases["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - firing == set(), "alerts without a firing test case"
    assert alerts - quiet == set(), "alerts without a not-firing test case"


def test_prometheus_loads_the_rules_file_it_ships_with() -> None:
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    tested = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())["rule_files"]
    assert tested == ["alerts.yml"]
