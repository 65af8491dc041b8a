"""Settings of ``tankwatch run``: one frozen object, built once.

Every field has a default, an environment variable and a command-line flag
(:data:`FIELDS` is the single table of all three). :meth:`Settings.from_env` reads the
environment and applies keyword overrides (the CLI passes the flags it was given);
unknown keys and bad values raise :class:`~tankwatch.errors.ConfigError` with a
one-line message.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tankwatch.errors import ConfigError
from tankwatch.kafka_security import OPTIONS as SECURITY_OPTIONS
from tankwatch.kafka_security import KafkaSecurity
from tankwatch.topics import Topics

__all__ = [
    "CLI_FIELDS",
    "FIELDS",
    "FieldSpec",
    "Range",
    "Settings",
    "default_model_dir",
    "option_from_env",
    "option_value",
    "parse_float",
]


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
    return None if text.strip().lower() in ("", "none", "auto") else parse_float(text)


def _parse_reference(text: str) -> str | None:
    low = text.strip().lower()
    if low in ("", "none", "auto"):
        return None
    if low not in ("absolute", "gauge"):
        raise ValueError("expected absolute or gauge")
    return low


EXACTLY_ONCE_MODES = ("auto", "on", "off")


def _parse_auto_on_off(text: str) -> str:
    low = text.strip().lower()
    low = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}.get(
        low, low
    )
    if low not in EXACTLY_ONCE_MODES:
        raise ValueError("expected auto, on or off")
    return low


def parse_float(text: str) -> float:
    """A finite number: ``nan``/``inf`` mean nothing for a time, a rate or a limit (a
    nan checkpoint interval would never checkpoint, a nan timeout never time out)."""
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {text!r}")
    return x


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric setting: ``lo <= x <= hi`` (``lo < x`` if
    ``lo_open``); None means unbounded on that side. Values must be finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def check(self, value: Any) -> str | None:
        """A problem description, or None if ``value`` is allowed."""
        if value is None:
            return None
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                return f"expected a number, got {v!r}"
            if not math.isfinite(v):
                return f"expected a finite number, got {v!r}"
            if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
                return f"must be {'>' if self.lo_open else '>='} {self.lo:g}, got {v!r}"
            if self.hi is not None and v > self.hi:
                return f"must be <= {self.hi:g}, got {v!r}"
        return None


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
    #: Forecast records: each tank's horizon is computed every this many ticks (on its
    #: own phase, so every tick computes 1/stride of the fleet), ``horizon + stride - 1``
    #: ticks ahead, and records in between carry it with ``horizon_age_ticks``. 1 = a
    #: fresh horizon in every record. The next-step forecast is always fresh.
    horizon_stride: int = 1
    #: Compute each tick's horizon in a child process while the loop reads on
    #: (pipeline.horizon_worker): "auto" (with the NumPy engine, the forecasts
    #: topic on, stride 1 and at least 2 usable CPUs), "on" or "off". Same bits.
    horizon_worker: str = "auto"
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
    anomaly_threshold: float = 6.0
    anomaly_consecutive: int = 5
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
    #: A reading more than this far ahead of its partition's event time (set by the
    #: other tanks' accepted readings) is dead-lettered as ``clock_skew``; 0 = off.
    max_clock_skew_s: float = 3600.0
    #: Tanks tracked at once; readings of further new tanks are dead-lettered
    #: (``too_many_tanks``) until idle ones are retired.
    max_tanks: int = 20000
    #: A tank without a reading for this long (event time of its partition) is
    #: checkpointed and its row freed; its state comes back from the checkpoint when
    #: it reports again. 0 = never.
    tank_idle_s: float = 86400.0
    #: Dead letters larger than this keep only their first bytes (headers say so).
    dlq_max_bytes: int = 512 * 1024
    #: Transactions per checkpoint: "on", "off", or "auto" (on when the broker has
    #: them). See docs/pipeline.md "Delivery guarantees".
    exactly_once: str = "auto"
    #: Transactional id of this instance; "" = ``tankwatch-<group>-<id kept in state_dir>``.
    transactional_id: str = ""
    #: Connection security of every client of this instance (its flags and variables
    #: are tankwatch.kafka_security.OPTIONS; it validates itself, secrets are Secret).
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def __post_init__(self) -> None:
        problems = []
        for spec in FIELDS:  # the ranges of the table, for programmatic values too
            problem = spec.range.check(getattr(self, spec.name)) if spec.range else None
            if problem:
                problems.append(f"{spec.where}: {spec.name} {problem}")
        if self.exactly_once not in EXACTLY_ONCE_MODES:
            problems.append(f"exactly_once must be auto, on or off, got {self.exactly_once!r}")
        if self.horizon_worker not in EXACTLY_ONCE_MODES:
            problems.append(
                f"{_where('horizon_worker')}: horizon_worker must be auto, on or off, "
                f"got {self.horizon_worker!r}"
            )
        if self.engine not in ("numpy", "keras"):
            problems.append(
                f"{_where('engine')}: engine must be 'numpy' or 'keras', got {self.engine!r}"
            )
        if not 0 <= self.http_port <= 65535:
            problems.append(
                f"{_where('http_port')}: http_port must be 0..65535, got {self.http_port}"
            )
        if not self.horizons_reported or any(
            h < 1 or h > self.horizon for h in self.horizons_reported
        ):
            problems.append(
                f"{_where('horizons_reported')}: horizons_reported must be within "
                f"1..{self.horizon}, got {self.horizons_reported}"
            )
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            problems.append(
                f"{_where('heartbeat_interval_ms')}: heartbeat_interval_ms must be below "
                f"session_timeout_ms ({self.session_timeout_ms}), got {self.heartbeat_interval_ms}"
            )
        if self.max_poll_interval_ms < self.session_timeout_ms:
            problems.append(
                f"{_where('max_poll_interval_ms')}: max_poll_interval_ms must be >= "
                f"session_timeout_ms ({self.session_timeout_ms}), got {self.max_poll_interval_ms}"
            )
        if self.pressure_reference not in (None, "absolute", "gauge"):
            problems.append(
                f"{_where('pressure_reference')}: pressure_reference must be absolute or "
                f"gauge, got {self.pressure_reference!r}"
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
                problems.append(f"{_where('pressure_min_kpa')}: {exc}")
        if not self.group:
            problems.append(f"{_where('group')}: group must not be empty")
        if not self.bootstrap.strip():
            problems.append(f"{_where('bootstrap')}: bootstrap must not be empty")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults <- environment <- ``overrides`` (None values are ignored)."""
        env = os.environ if environ is None else environ
        names = {f.name for f in dataclasses.fields(cls)} | _SECURITY_NAMES
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for spec in FIELDS:
            if spec.env and spec.env in env and env[spec.env] != "":
                values[spec.name] = _convert(spec, env[spec.env], spec.where)
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
                value = _convert(spec_by_name[key], value, spec_by_name[key].where)
            values[key] = value
        # The security table's values (environment, flags, overrides) make one
        # KafkaSecurity, on top of an explicit ``security=`` override if there is one.
        given = {k: values.pop(k) for k in _SECURITY_NAMES & set(values)}
        base = values.get("security") or KafkaSecurity()
        values["security"] = dataclasses.replace(base, **given) if given else base
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
    #: Allowed values (numbers); checked for flags, environment and code alike.
    range: Range | None = None

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")

    @property
    def where(self) -> str:
        """How a user sets it: ``--flag / ENV_VAR`` (every error names both)."""
        return f"{self.flag} / {self.env}"


def _where(name: str) -> str:
    for spec in FIELDS:
        if spec.name == name:
            return spec.where
    return name


def _convert(spec: FieldSpec, text: str, where: str) -> Any:
    try:
        value = spec.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: bad value {text!r} ({exc})") from None
    problem = spec.range.check(value) if spec.range else None
    if problem:
        raise ConfigError(f"{where}: bad value {text!r} ({spec.name} {problem})")
    return value


#: Every setting except ``topics`` (which uses ``TANKWATCH_TOPIC_*``): name, env var,
#: parser, help, flag, allowed range. The CLI builds its flags from this table, and
#: every value -- flag, environment or code -- is parsed and range-checked by it.
_POS = Range(0, lo_open=True)
_DAY = 86400.0
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("bootstrap", "KAFKA_BOOTSTRAP", str, "Kafka bootstrap servers"),
    FieldSpec("model_dir", "TANKWATCH_MODEL", Path, "model artifact directory", "--model"),
    FieldSpec("http_host", "TANKWATCH_HTTP_HOST", str, "address the HTTP server binds"),
    FieldSpec(
        "http_port",
        "TANKWATCH_HTTP_PORT",
        int,
        "port of /metrics, /healthz, / (0 = any)",
        range=Range(0, 65535),
    ),
    FieldSpec("state_dir", "TANKWATCH_STATE_DIR", Path, "local checkpoint directory"),
    FieldSpec("group", "TANKWATCH_GROUP", str, "Kafka consumer group"),
    FieldSpec("engine", "TANKWATCH_ENGINE", str, "inference engine: numpy or keras"),
    FieldSpec("horizon", "TANKWATCH_HORIZON", int, "ticks forecast ahead", range=Range(1, 10000)),
    FieldSpec(
        "horizons_reported",
        "TANKWATCH_HORIZONS",
        _parse_ints,
        "horizons exported, e.g. 1,5,15,30",
        range=Range(1, 10000),
    ),
    FieldSpec(
        "horizon_stride",
        "TANKWATCH_HORIZON_STRIDE",
        int,
        "compute each tank's horizon every N ticks (records carry its age)",
        range=Range(1, 1000),
    ),
    FieldSpec(
        "horizon_worker",
        "TANKWATCH_HORIZON_WORKER",
        _parse_auto_on_off,
        "per-tick horizons in a child process: auto (2+ CPUs, numpy, stride 1), on, off",
    ),
    FieldSpec(
        "horizon_interval_s",
        "TANKWATCH_HORIZON_INTERVAL_S",
        parse_float,
        "refresh page/metrics horizons at most this often, s",
        range=Range(0, 3600),
    ),
    FieldSpec(
        "allowed_lateness_s",
        "TANKWATCH_ALLOWED_LATENESS_S",
        parse_float,
        "allowed lateness, seconds",
        range=Range(0, 365 * _DAY),
    ),
    FieldSpec(
        "max_gap_ticks",
        "TANKWATCH_MAX_GAP_TICKS",
        _parse_opt_int,
        "reset after a gap (ticks)",
        range=Range(1, 10**9),
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
        "checkpoint_interval_s",
        "TANKWATCH_CHECKPOINT_INTERVAL_S",
        parse_float,
        "checkpoint period, s",
        range=Range(0, _DAY, lo_open=True),
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
    FieldSpec(
        "anomaly_threshold",
        "TANKWATCH_ANOMALY_THRESHOLD",
        parse_float,
        "anomaly score limit",
        range=Range(0, 1e6, lo_open=True),
    ),
    FieldSpec(
        "anomaly_consecutive",
        "TANKWATCH_ANOMALY_CONSECUTIVE",
        int,
        "exceedances before a flag",
        range=Range(1, 10**6),
    ),
    FieldSpec(
        "anomaly_alpha",
        "TANKWATCH_ANOMALY_ALPHA",
        parse_float,
        "anomaly EWMA weight",
        range=Range(0, 1, lo_open=True),
    ),
    FieldSpec(
        "anomaly_warmup",
        "TANKWATCH_ANOMALY_WARMUP",
        int,
        "updates before scoring",
        range=Range(0, 10**6),
    ),
    FieldSpec(
        "history_len",
        "TANKWATCH_HISTORY_LEN",
        int,
        "points per tank for the page",
        range=Range(1, 10**6),
    ),
    FieldSpec(
        "poll_timeout_ms",
        "TANKWATCH_POLL_TIMEOUT_MS",
        int,
        "poll timeout, ms",
        range=Range(0, 60000),
    ),
    FieldSpec(
        "max_poll_records",
        "TANKWATCH_MAX_POLL_RECORDS",
        int,
        "records per poll",
        range=Range(1, 10**6),
    ),
    FieldSpec(
        "connect_timeout_s",
        "TANKWATCH_CONNECT_TIMEOUT_S",
        parse_float,
        "broker wait at start",
        range=Range(0, 3600, lo_open=True),
    ),
    FieldSpec(
        "session_timeout_ms",
        "TANKWATCH_SESSION_TIMEOUT_MS",
        int,
        "group session timeout",
        range=Range(1000, 3_600_000),
    ),
    FieldSpec(
        "heartbeat_interval_ms",
        "TANKWATCH_HEARTBEAT_MS",
        int,
        "group heartbeat, ms",
        range=Range(1, 3_600_000),
    ),
    FieldSpec(
        "max_poll_interval_ms",
        "TANKWATCH_MAX_POLL_INTERVAL_MS",
        int,
        "max time between polls",
        range=Range(1000, 86_400_000),
    ),
    FieldSpec(
        "max_clock_skew_s",
        "TANKWATCH_MAX_CLOCK_SKEW_S",
        parse_float,
        "dead-letter readings this far ahead of their partition's event time, s (0 = off)",
        range=Range(0, 1e10),
    ),
    FieldSpec(
        "max_tanks",
        "TANKWATCH_MAX_TANKS",
        int,
        "tanks tracked at once (more: DLQ)",
        range=Range(1, 10**7),
    ),
    FieldSpec(
        "tank_idle_s",
        "TANKWATCH_TANK_IDLE_S",
        parse_float,
        "retire a tank silent this long (event time), s (0 = never)",
        range=Range(0, 1e10),
    ),
    FieldSpec(
        "dlq_max_bytes",
        "TANKWATCH_DLQ_MAX_BYTES",
        int,
        "dead letters keep at most this many bytes of the original value",
        range=Range(1024, 1_000_000),
    ),
    FieldSpec(
        "exactly_once",
        "TANKWATCH_EXACTLY_ONCE",
        _parse_auto_on_off,
        "one transaction per checkpoint: auto (when the broker has transactions), on, off",
    ),
    FieldSpec(
        "transactional_id",
        "TANKWATCH_TRANSACTIONAL_ID",
        str,
        "transactional id of this instance (default: derived from group and state dir)",
    ),
    *(FieldSpec(o.name, o.env, o.parse, o.help) for o in SECURITY_OPTIONS),
)

#: The FIELDS that are not Settings fields but make its ``security``.
_SECURITY_NAMES = frozenset(o.name for o in SECURITY_OPTIONS)


def _parse_log_level(text: str) -> str:
    low = text.strip().lower()
    if low not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return low


LOG_LEVELS = ("debug", "info", "warning", "error")

#: Options of the ``tankwatch`` command itself and of ``topics create`` (not Settings of
#: ``run``), parsed and range-checked by the same rules: :func:`option_from_env`.
CLI_FIELDS: dict[str, FieldSpec] = {
    "log_level": FieldSpec("log_level", "TANKWATCH_LOG_LEVEL", _parse_log_level, "log level"),
    "partitions": FieldSpec(
        "partitions", "TANKWATCH_PARTITIONS", int, "partitions per topic", range=Range(1, 100000)
    ),
    # ``tankwatch train``: read while the parser of every subcommand is built.
    "seed": FieldSpec("seed", "TANKWATCH_SEED", int, "random seed", range=Range(0, 2**32 - 1)),
    "tick_interval": FieldSpec(
        "tick_interval",
        "TANKWATCH_TICK_INTERVAL",
        parse_float,
        "tick interval, s",
        "--interval",
        range=Range(0, 86400, lo_open=True),
    ),
}


def option_value(spec: FieldSpec, text: str) -> Any:
    """Parse and range-check one option's text (ConfigError naming flag and variable)."""
    return _convert(spec, text, spec.where)


def option_from_env(name: str, default: Any, environ: Mapping[str, str] | None = None) -> Any:
    """The value of :data:`CLI_FIELDS` ``name`` from its environment variable (checked),
    or ``default`` when the variable is unset or empty."""
    spec = CLI_FIELDS[name]
    env = os.environ if environ is None else environ
    text = env.get(spec.env, "")
    return default if text == "" else option_value(spec, text)
