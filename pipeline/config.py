"""Settings of ``tankwatch run``: one frozen object, built once.

Every field has a default, an environment variable and a command-line flag
(:data:`FIELDS` is the single table of all three). :meth:`Settings.from_env` reads the
environment and applies keyword overrides (the CLI passes the flags it was given);
unknown keys and bad values raise :class:`~tankwatch.errors.ConfigError` with a
one-line message.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tankwatch.errors import ConfigError
from tankwatch.topics import Topics

__all__ = ["FIELDS", "Settings", "default_model_dir"]


def default_model_dir() -> Path:
    """The committed default artifact, found next to the installed ``models`` package
    (:func:`models.artifact.default_model_dir`: one rule for every command)."""
    from models.artifact import default_model_dir as shipped

    return shipped()


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.replace(" ", "").split(",") if p)


def _parse_opt_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none", "auto") else int(text)


def _parse_opt_float(text: str) -> float | None:
    return None if text.strip().lower() in ("", "none", "auto") else float(text)


def _parse_reference(text: str) -> str | None:
    low = text.strip().lower()
    if low in ("", "none", "auto"):
        return None
    if low not in ("absolute", "gauge"):
        raise ValueError("expected absolute or gauge")
    return low


@dataclass(frozen=True)
class Settings:
    """Configuration of one pipeline instance. Times in seconds, sizes in records."""

    bootstrap: str = "localhost:9092"
    model_dir: Path = field(default_factory=default_model_dir)
    http_host: str = "127.0.0.1"
    #: 0 = pick a free port (see ``Service.http_url``).
    http_port: int = 8000
    state_dir: Path = Path(".tankwatch-state")
    group: str = "tankwatch"
    topics: Topics = field(default_factory=Topics)
    engine: str = "numpy"
    #: Ticks forecast ahead on a copy of the state (>= max of ``horizons_reported``).
    horizon: int = 30
    horizons_reported: tuple[int, ...] = (1, 5, 15, 30)
    #: How far event time may run behind a partition's max before a reading is late.
    allowed_lateness_s: float = 120.0
    #: Horizons for the page and metrics are refreshed at most this often (seconds);
    #: forecast records always carry the horizon of their own tick.
    horizon_interval_s: float = 1.0
    #: Gap (ticks) after which a tank's state is reset; None = the artifact's value.
    max_gap_ticks: int | None = None
    #: The fleet's pressure reference, ``absolute`` or ``gauge``; None = the model's.
    #: A model trained on the other reference is refused at start.
    pressure_reference: str | None = None
    #: Plausibility limits of pressure_kpa (kPa); None = the reference's default
    #: (absolute 0..5000, gauge -105..5000). Readings outside go to the DLQ.
    pressure_min_kpa: float | None = None
    pressure_max_kpa: float | None = None
    checkpoint_interval_s: float = 10.0
    forecasts_topic_enabled: bool = True
    metrics_enabled: bool = True
    anomaly_threshold: float = 5.0
    anomaly_consecutive: int = 3
    anomaly_alpha: float = 0.02
    anomaly_warmup: int = 30
    #: Points per tank kept for the dashboard page (ring buffer).
    history_len: int = 240
    poll_timeout_ms: int = 200
    max_poll_records: int = 5000
    #: Bounded wait for the broker at start-up: a bad address fails, never hangs.
    connect_timeout_s: float = 15.0
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 60000

    def __post_init__(self) -> None:
        problems = []
        if self.engine not in ("numpy", "keras"):
            problems.append(f"engine must be 'numpy' or 'keras', got {self.engine!r}")
        if not 0 <= self.http_port <= 65535:
            problems.append(f"http_port must be 0..65535, got {self.http_port}")
        if self.horizon < 1:
            problems.append(f"horizon must be >= 1, got {self.horizon}")
        if not self.horizons_reported or any(
            h < 1 or h > self.horizon for h in self.horizons_reported
        ):
            problems.append(
                f"horizons_reported must be within 1..{self.horizon}, got {self.horizons_reported}"
            )
        if self.horizon_interval_s < 0:
            problems.append("horizon_interval_s must be >= 0")
        if self.allowed_lateness_s < 0:
            problems.append("allowed_lateness_s must be >= 0")
        if self.max_gap_ticks is not None and self.max_gap_ticks < 1:
            problems.append("max_gap_ticks must be >= 1")
        if self.pressure_reference not in (None, "absolute", "gauge"):
            problems.append(
                f"pressure_reference must be absolute or gauge, got {self.pressure_reference!r}"
            )
        else:
            from tankwatch.codec import pressure_limits

            try:
                pressure_limits(
                    self.pressure_reference or "absolute",
                    self.pressure_min_kpa,
                    self.pressure_max_kpa,
                )
            except ValueError as exc:
                problems.append(str(exc))
        if self.checkpoint_interval_s <= 0:
            problems.append("checkpoint_interval_s must be > 0")
        if self.history_len < 1 or self.max_poll_records < 1 or self.poll_timeout_ms < 0:
            problems.append("history_len and max_poll_records must be >= 1, poll_timeout_ms >= 0")
        if self.anomaly_threshold <= 0 or self.anomaly_consecutive < 1:
            problems.append("anomaly_threshold must be > 0 and anomaly_consecutive >= 1")
        if not 0 < self.anomaly_alpha <= 1 or self.anomaly_warmup < 0:
            problems.append("anomaly_alpha must be in (0, 1] and anomaly_warmup >= 0")
        if self.connect_timeout_s <= 0:
            problems.append("connect_timeout_s must be > 0")
        if not self.group:
            problems.append("group must not be empty")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults <- environment <- ``overrides`` (None values are ignored)."""
        env = os.environ if environ is None else environ
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for spec in FIELDS:
            if spec.env and spec.env in env and env[spec.env] != "":
                values[spec.name] = _convert(spec, env[spec.env], spec.env)
        d = Topics()
        topics = Topics(
            readings=env.get("TANKWATCH_TOPIC_READINGS") or d.readings,
            dlq=env.get("TANKWATCH_TOPIC_DLQ") or d.dlq,
            forecasts=env.get("TANKWATCH_TOPIC_FORECASTS") or d.forecasts,
            state=env.get("TANKWATCH_TOPIC_STATE") or d.state,
        )
        values["topics"] = topics
        for key, value in overrides.items():
            if value is None:
                continue
            spec_by_name = {s.name: s for s in FIELDS}
            if isinstance(value, str) and key in spec_by_name:
                value = _convert(spec_by_name[key], value, key)
            values[key] = value
        if "model_dir" in values:
            values["model_dir"] = Path(values["model_dir"])
        if "state_dir" in values:
            values["state_dir"] = Path(values["state_dir"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"bad settings: {exc}") from None


@dataclass(frozen=True)
class FieldSpec:
    """One setting: its name, environment variable, parser and help text."""

    name: str
    env: str
    parse: Callable[[str], Any]
    help: str
    #: Command-line flag when it is not ``--`` + the name with dashes.
    flag_name: str = ""

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")


def _convert(spec: FieldSpec, text: str, where: str) -> Any:
    try:
        return spec.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: bad value {text!r} ({exc})") from None


#: Every setting except ``topics`` (which uses ``TANKWATCH_TOPIC_*``): name, env var,
#: parser, help. The CLI builds its flags from this table.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("bootstrap", "KAFKA_BOOTSTRAP", str, "Kafka bootstrap servers"),
    FieldSpec("model_dir", "TANKWATCH_MODEL", Path, "model artifact directory", "--model"),
    FieldSpec("http_host", "TANKWATCH_HTTP_HOST", str, "address the HTTP server binds"),
    FieldSpec("http_port", "TANKWATCH_HTTP_PORT", int, "port of /metrics, /healthz, / (0 = any)"),
    FieldSpec("state_dir", "TANKWATCH_STATE_DIR", Path, "local checkpoint directory"),
    FieldSpec("group", "TANKWATCH_GROUP", str, "Kafka consumer group"),
    FieldSpec("engine", "TANKWATCH_ENGINE", str, "inference engine: numpy or keras"),
    FieldSpec("horizon", "TANKWATCH_HORIZON", int, "ticks forecast ahead"),
    FieldSpec(
        "horizons_reported", "TANKWATCH_HORIZONS", _parse_ints, "horizons exported, e.g. 1,5,15,30"
    ),
    FieldSpec(
        "horizon_interval_s",
        "TANKWATCH_HORIZON_INTERVAL_S",
        float,
        "refresh page/metrics horizons at most this often, s",
    ),
    FieldSpec(
        "allowed_lateness_s", "TANKWATCH_ALLOWED_LATENESS_S", float, "allowed lateness, seconds"
    ),
    FieldSpec(
        "max_gap_ticks", "TANKWATCH_MAX_GAP_TICKS", _parse_opt_int, "reset after a gap (ticks)"
    ),
    FieldSpec(
        "pressure_reference",
        "TANKWATCH_PRESSURE_REFERENCE",
        _parse_reference,
        "the fleet's pressure: absolute or gauge (default: the model's)",
    ),
    FieldSpec(
        "pressure_min_kpa",
        "TANKWATCH_PRESSURE_MIN_KPA",
        _parse_opt_float,
        "lowest plausible pressure, kPa (default 0 absolute, -105 gauge)",
    ),
    FieldSpec(
        "pressure_max_kpa",
        "TANKWATCH_PRESSURE_MAX_KPA",
        _parse_opt_float,
        "highest plausible pressure, kPa (default 5000)",
    ),
    FieldSpec(
        "checkpoint_interval_s", "TANKWATCH_CHECKPOINT_INTERVAL_S", float, "checkpoint period, s"
    ),
    FieldSpec(
        "forecasts_topic_enabled",
        "TANKWATCH_FORECASTS_TOPIC",
        _parse_bool,
        "produce tank.forecasts (true/false)",
        "--forecasts-topic",
    ),
    FieldSpec(
        "metrics_enabled",
        "TANKWATCH_METRICS",
        _parse_bool,
        "export per-tank metrics (true/false)",
        "--per-tank-metrics",
    ),
    FieldSpec("anomaly_threshold", "TANKWATCH_ANOMALY_THRESHOLD", float, "anomaly score limit"),
    FieldSpec(
        "anomaly_consecutive", "TANKWATCH_ANOMALY_CONSECUTIVE", int, "exceedances before a flag"
    ),
    FieldSpec("anomaly_alpha", "TANKWATCH_ANOMALY_ALPHA", float, "anomaly EWMA weight"),
    FieldSpec("anomaly_warmup", "TANKWATCH_ANOMALY_WARMUP", int, "updates before scoring"),
    FieldSpec("history_len", "TANKWATCH_HISTORY_LEN", int, "points per tank for the page"),
    FieldSpec("poll_timeout_ms", "TANKWATCH_POLL_TIMEOUT_MS", int, "poll timeout, ms"),
    FieldSpec("max_poll_records", "TANKWATCH_MAX_POLL_RECORDS", int, "records per poll"),
    FieldSpec("connect_timeout_s", "TANKWATCH_CONNECT_TIMEOUT_S", float, "broker wait at start"),
    FieldSpec("session_timeout_ms", "TANKWATCH_SESSION_TIMEOUT_MS", int, "group session timeout"),
    FieldSpec("heartbeat_interval_ms", "TANKWATCH_HEARTBEAT_MS", int, "group heartbeat, ms"),
    FieldSpec(
        "max_poll_interval_ms", "TANKWATCH_MAX_POLL_INTERVAL_MS", int, "max time between polls"
    ),
)
