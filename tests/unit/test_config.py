"""Settings: defaults, environment, overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import FIELDS, Settings, default_model_dir
from tankwatch.errors import ConfigError
from tankwatch.kafka_security import KafkaSecurity


def test_defaults_point_at_the_committed_artifact() -> None:
    s = Settings.from_env(environ={})
    assert s.model_dir == default_model_dir() and (s.model_dir / "metadata.json").exists()
    assert (s.http_port, s.group, s.engine, s.horizons_reported) == (
        8000,
        "tankwatch",
        "numpy",
        (1, 5, 15, 30),
    )
    assert s.topics.readings == "tank.readings" and s.topics.state == "tank.state"


def test_environment_then_overrides() -> None:
    env = {
        "KAFKA_BOOTSTRAP": "k:1",
        "TANKWATCH_HTTP_PORT": "9100",
        "TANKWATCH_STATE_DIR": "/tmp/x",
        "TANKWATCH_GROUP": "g",
        "TANKWATCH_MODEL": "/m",
        "TANKWATCH_TOPIC_READINGS": "r",
        "TANKWATCH_HORIZONS": "1,2",
        "TANKWATCH_FORECASTS_TOPIC": "false",
        "TANKWATCH_MAX_GAP_TICKS": "auto",
    }
    s = Settings.from_env(environ=env, http_port="0", group=None)
    assert (s.bootstrap, s.http_port, s.group) == ("k:1", 0, "g")
    assert s.state_dir == Path("/tmp/x") and s.model_dir == Path("/m")
    assert s.topics.readings == "r" and s.topics.dlq == "tank.readings.dlq"
    assert s.horizons_reported == (1, 2) and s.forecasts_topic_enabled is False
    assert s.max_gap_ticks is None


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        ({"TANKWATCH_HTTP_PORT": "eighty"}, {}, "TANKWATCH_HTTP_PORT: bad value 'eighty'"),
        ({}, {"engine": "torch"}, "engine must be 'numpy' or 'keras'"),
        ({}, {"horizons_reported": (1, 50)}, "horizons_reported must be within 1..30"),
        ({}, {"colour": "red"}, "unknown setting(s): colour"),
        ({"TANKWATCH_METRICS": "maybe"}, {}, "expected true/false"),
        ({}, {"http_port": 70000}, "http_port must be 0..65535"),
    ],
)
def test_bad_values_are_one_line_config_errors(env: dict, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(environ=env, **overrides)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_every_field_has_a_flag_and_an_env_var() -> None:
    import dataclasses

    names = {f.name for f in dataclasses.fields(Settings)} - {"topics", "security"}
    security = {f.name for f in dataclasses.fields(KafkaSecurity)}  # they make .security
    assert {f.name for f in FIELDS} == names | security
    assert len({f.env for f in FIELDS}) == len(FIELDS) and len({f.flag for f in FIELDS}) == len(
        FIELDS
    )
    assert {
        "KAFKA_BOOTSTRAP",
        "TANKWATCH_MODEL",
        "TANKWATCH_HTTP_PORT",
        "TANKWATCH_STATE_DIR",
        "TANKWATCH_GROUP",
    } <= {f.env for f in FIELDS}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bootstrap", "127.0.0.1:1", "--connect-timeout-s", "1"], "cannot reach Kafka"),
        (["--model", "/nonexistent/artifact"], "/nonexistent/artifact"),
        (["--engine", "torch"], "engine must be 'numpy' or 'keras'"),
        (["--http-port", "eighty"], "--http-port / TANKWATCH_HTTP_PORT: bad value 'eighty'"),
        # The shipped model is absolute: a gauge fleet is refused before any I/O.
        (
            ["--pressure-reference", "gauge", "--bootstrap", "127.0.0.1:1"],
            "trained on absolute pressure but the fleet (TANKWATCH_PRESSURE_REFERENCE) is "
            "declared gauge",
        ),
        (["--pressure-reference", "relative"], "expected absolute or gauge"),
        (["--pressure-min-kpa", "10", "--pressure-max-kpa", "5"], "low < high"),
    ],
)
def test_run_fails_fast_with_one_line(args: list[str], message: str) -> None:
    """`tankwatch run` with a bad flag, model or broker: exit 2, one line, no hang."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "tankwatch.cli", "run", "--http-port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tankwatch: error: ") and message in lines[0]


# --- issue 10 item 10: every option parsed and range-checked in one place -------------


@pytest.mark.parametrize(
    ("env", "flag", "var"),
    [
        (
            {"TANKWATCH_SESSION_TIMEOUT_MS": "0"},
            "--session-timeout-ms",
            "TANKWATCH_SESSION_TIMEOUT_MS",
        ),
        (
            {"TANKWATCH_CONNECT_TIMEOUT_S": "nan"},
            "--connect-timeout-s",
            "TANKWATCH_CONNECT_TIMEOUT_S",
        ),
        (
            {"TANKWATCH_CONNECT_TIMEOUT_S": "inf"},
            "--connect-timeout-s",
            "TANKWATCH_CONNECT_TIMEOUT_S",
        ),
        (
            {"TANKWATCH_CHECKPOINT_INTERVAL_S": "nan"},
            "--checkpoint-interval-s",
            "TANKWATCH_CHECKPOINT_INTERVAL_S",
        ),
        (
            {"TANKWATCH_CHECKPOINT_INTERVAL_S": "inf"},
            "--checkpoint-interval-s",
            "TANKWATCH_CHECKPOINT_INTERVAL_S",
        ),
        (
            {"TANKWATCH_ANOMALY_THRESHOLD": "nan"},
            "--anomaly-threshold",
            "TANKWATCH_ANOMALY_THRESHOLD",
        ),
        (
            {"TANKWATCH_ANOMALY_THRESHOLD": "inf"},
            "--anomaly-threshold",
            "TANKWATCH_ANOMALY_THRESHOLD",
        ),
        (
            {"TANKWATCH_ALLOWED_LATENESS_S": "nan"},
            "--allowed-lateness-s",
            "TANKWATCH_ALLOWED_LATENESS_S",
        ),
        ({"TANKWATCH_ANOMALY_ALPHA": "nan"}, "--anomaly-alpha", "TANKWATCH_ANOMALY_ALPHA"),
        (
            {"TANKWATCH_HORIZON_INTERVAL_S": "inf"},
            "--horizon-interval-s",
            "TANKWATCH_HORIZON_INTERVAL_S",
        ),
        ({"TANKWATCH_HEARTBEAT_MS": "0"}, "--heartbeat-interval-ms", "TANKWATCH_HEARTBEAT_MS"),
        ({"TANKWATCH_MAX_POLL_RECORDS": "0"}, "--max-poll-records", "TANKWATCH_MAX_POLL_RECORDS"),
        ({"TANKWATCH_MAX_CLOCK_SKEW_S": "-1"}, "--max-clock-skew-s", "TANKWATCH_MAX_CLOCK_SKEW_S"),
        ({"TANKWATCH_MAX_TANKS": "0"}, "--max-tanks", "TANKWATCH_MAX_TANKS"),
        ({"TANKWATCH_TANK_IDLE_S": "nan"}, "--tank-idle-s", "TANKWATCH_TANK_IDLE_S"),
        ({"TANKWATCH_DLQ_MAX_BYTES": "10"}, "--dlq-max-bytes", "TANKWATCH_DLQ_MAX_BYTES"),
        ({"TANKWATCH_HTTP_PORT": "65536"}, "--http-port", "TANKWATCH_HTTP_PORT"),
    ],
)
def test_bad_values_name_flag_and_variable(env: dict, flag: str, var: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(environ=env)
    text = str(exc.value)
    assert flag in text and var in text and "\n" not in text


def test_flag_values_are_range_checked_too() -> None:
    with pytest.raises(ConfigError, match="--session-timeout-ms / TANKWATCH_SESSION_TIMEOUT_MS"):
        Settings.from_env(environ={}, session_timeout_ms="0")
    with pytest.raises(ConfigError, match="--checkpoint-interval-s"):
        Settings(checkpoint_interval_s=float("nan"))  # programmatic values as well


@pytest.mark.parametrize(
    ("env", "argv", "culprit"),
    [
        (
            {"TANKWATCH_PARTITIONS": "abc"},
            ["topics", "create"],
            "--partitions / TANKWATCH_PARTITIONS",
        ),
        (
            {"TANKWATCH_PARTITIONS": "0"},
            ["topics", "create"],
            "--partitions / TANKWATCH_PARTITIONS",
        ),
        (
            {"TANKWATCH_LOG_LEVEL": "verbose"},
            ["topics", "create"],
            "--log-level / TANKWATCH_LOG_LEVEL",
        ),
        ({"TANKWATCH_LOG_LEVEL": "verbose"}, ["run"], "--log-level / TANKWATCH_LOG_LEVEL"),
        (
            {"TANKWATCH_LOG_LEVEL": "verbose"},
            ["replay", "x.csv"],
            "--log-level / TANKWATCH_LOG_LEVEL",
        ),
        ({}, ["--log-level", "loud", "run"], "--log-level / TANKWATCH_LOG_LEVEL"),
        ({"TANKWATCH_SEED": "abc"}, ["run"], "--seed / TANKWATCH_SEED"),
        ({"TANKWATCH_TICK_INTERVAL": "nan"}, ["run"], "--interval / TANKWATCH_TICK_INTERVAL"),
    ],
)
def test_cli_options_of_every_subcommand_are_one_line_exit_2(
    env: dict,
    argv: list[str],
    culprit: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tankwatch.cli import main

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main([*argv, "--bootstrap", "127.0.0.1:1"] if argv[0] == "topics" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tankwatch: error: ") and culprit in err[0]
