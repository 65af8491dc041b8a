"""Configuration of the tank-farm simulator (``tankwatch simulate --config FILE``).

A frozen dataclass built once: defaults here, a JSON file may override any field, CLI
flags override the file. Unknown keys are rejected so a typo never silently falls back
to a default (that would change the bundled data without anyone noticing).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from tankwatch.codec import parse_ts
from tankwatch.errors import ConfigError, DecodeError


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines the simulated history. Same config -> same bytes.

    Rates are expected counts per tank (per day or week); durations in hours.
    """

    tanks: int = 24
    start: str = "2024-03-01T00:00:00Z"
    days: float = 14.0
    interval_s: float = 60.0
    seed: int = 20240301
    #: Farm weather: mean ambient temperature and the typical day-night swing (peak to peak).
    ambient_mean_c: float = 12.0
    ambient_daily_range_c: float = 10.0
    #: White sensor noise (standard deviation; each tank scales it by 0.7..1.3).
    noise_pressure_kpa: float = 0.005
    noise_temperature_c: float = 0.01
    #: Single missing readings, per reading.
    dropout_rate: float = 0.002
    #: Short outages (2..30 ticks) per tank per day.
    outage_rate_per_day: float = 0.3
    #: Long outages (longer than any sane max_gap: 60..360 ticks) per tank per week.
    long_gap_rate_per_week: float = 0.25
    #: Maintenance stops (2..8 h without readings, then ``event: maintenance``) per tank per week.
    maintenance_rate_per_week: float = 0.3
    #: Labelled anomalies (leak, stuck_sensor, heater_fault) per tank per week; at least 3.
    anomaly_rate_per_week: float = 0.15
    #: Pumping: draw sessions per tank per day and transfers in (pumped fills).
    draws_per_day: float = 0.5
    transfers_in_per_day: float = 0.1
    #: A delivery (``event: refill``) becomes likely once the fill fraction drops below this.
    refill_threshold: float = 0.25

    def __post_init__(self) -> None:
        if self.tanks < 1 or self.tanks > 9999:
            raise ConfigError(f"tanks must be in 1..9999, got {self.tanks}")
        if not (self.days > 0 and math.isfinite(self.days)):
            raise ConfigError(f"days must be > 0, got {self.days}")
        if not (self.interval_s > 0 and math.isfinite(self.interval_s)):
            raise ConfigError(f"interval_s must be > 0, got {self.interval_s}")
        try:
            parse_ts(self.start)
        except DecodeError:
            raise ConfigError(f"start is not an RFC 3339 time: {self.start!r}") from None
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                f.name.endswith(("_rate", "_per_day", "_per_week", "_kpa", "_c"))
                and not (isinstance(value, int | float) and value >= 0 and math.isfinite(value))
                and f.name != "ambient_mean_c"
            ):
                raise ConfigError(f"{f.name} must be a finite number >= 0, got {value!r}")
        if not 0.0 < self.refill_threshold < 0.8:
            raise ConfigError(f"refill_threshold must be in (0, 0.8), got {self.refill_threshold}")

    @property
    def start_ts(self) -> float:
        """Start time, epoch seconds (UTC)."""
        return parse_ts(self.start)

    @property
    def n_ticks(self) -> int:
        return round(self.days * 86400.0 / self.interval_s)

    @property
    def tank_ids(self) -> list[str]:
        """``T01``, ``T02``, ... zero-padded so lexical order == numeric order."""
        width = max(2, len(str(self.tanks)))
        return [f"T{i:0{width}d}" for i in range(1, self.tanks + 1)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> SimConfig:
        """A copy with the non-None overrides applied (CLI flags over the file)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **clean)


def load_sim_config(path: str | Path) -> SimConfig:
    """Read a JSON config; unknown keys or wrong types raise ConfigError (one line)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a JSON object")
    known = {f.name: f for f in fields(SimConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown config keys: {', '.join(unknown)}")
    defaults = SimConfig()
    for key, value in data.items():
        expected = type(getattr(defaults, key))
        ok = isinstance(value, expected) and not isinstance(value, bool)
        if expected is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ConfigError(f"{path}: {key} must be {expected.__name__}, got {value!r}")
    values: dict[str, Any] = {
        k: (float(v) if known[k].type in ("float", float) else v) for k, v in data.items()
    }
    return SimConfig(**values)
