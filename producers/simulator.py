"""A physically plausible tank farm: headspace pressure and temperature per tank.

What is modelled (per tank, one step per tick of ``interval_s`` seconds):

* **Weather** (farm-wide): ambient temperature = mean + slow weather front + a
  diurnal sine (minimum 03:00, maximum 15:00 UTC) whose amplitude varies day to day;
  solar irradiance = clear-sky half-sine 06:00..18:00 dimmed by a slowly drifting
  cloud cover; atmospheric pressure drifts slowly around 101.325 kPa. Slow parts are
  random knots interpolated linearly, so there is no per-tick random walk.
* **Temperature** (what the sensor reports: the vapour space) lags the weather
  through two first-order stages: the shell (tau 20..40 min, driven by ambient +
  solar gain) and the gas (tau 30..60 min, driven by the shell and the liquid, which
  itself follows the daily mean over ~3 days). The result is smooth: its next value
  is predictable from its recent history.
* **Pressure**: ideal gas on the headspace, ``P = q * T / V_head`` with
  ``V_head = 1 - level + roof`` (volumes as fractions of the tank). A fixed-roof
  breather valve caps it to ``[atm - vacuum_set, atm + pressure_set]`` (about 101.3 kPa
  -1 / +3 kPa); flow through the valve is not instantaneous, so an overshoot decays by
  a factor ``VALVE_RELAX`` per tick. Venting / drawing air changes ``q`` (moles).
* **Level** (not reported, but it drives pressure): pumping schedules draw product
  (ramps down) and transfer it in (ramps up); below ``refill_threshold`` a delivery
  arrives (a level jump to 85..95 % with ``event: refill``, product at its own
  temperature mixes into the liquid).
* **Maintenance**: 2..8 h with no readings, the vent open (pressure = atmospheric),
  then the first reading carries ``event: maintenance``.
* **Sensors**: white noise, a small fixed offset, single dropouts, short outages and
  a few long ones (longer than any sensible ``max_gap``).
* **Labelled anomalies**: ``leak`` (pressure drifts down, 0.15..0.4 kPa/h),
  ``stuck_sensor`` (one channel frozen at its value), ``heater_fault`` (the vapour
  space is driven up by 1.5..4 degC/h, capped at +25 degC; pressure follows through
  the gas law and the vent, and the heat leaves with tau 2 h afterwards). A leak is
  repaired (``event: maintenance``) and a stuck sensor replaced
  (``event: sensor_replaced``) after 30..90 min without readings.

Everything random comes from one ``numpy.random.Generator`` seeded by the config,
drawn in a fixed order, so the same config gives the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from producers.sim_config import SimConfig

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

KELVIN = 273.15
ATM_KPA = 101.325
#: Headspace volume left when the tank is "full" (roof cone), fraction of the tank.
ROOF_VOLUME = 0.03
LEVEL_RANGE = (0.03, 0.97)
#: Fraction of a valve overshoot left after one tick (the valve's flow is finite).
VALVE_RELAX = 0.3
#: Largest overshoot beyond a valve set point after one tick, kPa.
VALVE_MAX_OVERSHOOT_KPA = 0.4

EVENT_NONE, EVENT_REFILL, EVENT_MAINTENANCE, EVENT_SENSOR_REPLACED = 0, 1, 2, 3
EVENT_NAMES: dict[int, str] = {
    EVENT_REFILL: "refill",
    EVENT_MAINTENANCE: "maintenance",
    EVENT_SENSOR_REPLACED: "sensor_replaced",
}
ANOMALY_KINDS = ("leak", "stuck_sensor", "heater_fault")


def ideal_gas_pressure(q: FloatArray, temperature_c: FloatArray, level: FloatArray) -> FloatArray:
    """Headspace pressure in kPa from the gas amount ``q`` (kPa per K, i.e. n*R scaled
    by the tank volume), the gas temperature (degC) and the fill fraction (0..1).

    Pressure rises with temperature at a fixed level and with level at fixed gas:

    >>> q = np.array([101.325 * 0.5 / 288.15])
    >>> round(float(ideal_gas_pressure(q, np.array([15.0]), np.array([0.53]))[0]), 3)
    101.325
    """
    v_head = 1.0 - level + ROOF_VOLUME
    result: FloatArray = q * (temperature_c + KELVIN) / v_head
    return result


def gas_amount(
    pressure_kpa: FloatArray, temperature_c: FloatArray, level: FloatArray
) -> FloatArray:
    """Inverse of :func:`ideal_gas_pressure`: the ``q`` that gives this pressure."""
    v_head = 1.0 - level + ROOF_VOLUME
    result: FloatArray = pressure_kpa * v_head / (temperature_c + KELVIN)
    return result


def breather_valve(
    pressure_kpa: FloatArray, low_kpa: FloatArray, high_kpa: FloatArray
) -> FloatArray:
    """Pressure after the pressure/vacuum valve acted for one tick.

    Inside ``[low, high]`` nothing happens; outside, the overshoot shrinks to
    ``VALVE_RELAX`` of itself (at most ``VALVE_MAX_OVERSHOOT_KPA``).

    >>> breather_valve(np.array([100.0, 105.0, 98.0]), np.array([99.0] * 3), np.array([104.0] * 3))
    array([100. , 104.3,  98.7])
    """
    over = pressure_kpa - high_kpa
    under = low_kpa - pressure_kpa
    out = np.where(
        over > 0, high_kpa + np.minimum(over * VALVE_RELAX, VALVE_MAX_OVERSHOOT_KPA), pressure_kpa
    )
    out = np.where(
        under > 0, low_kpa - np.minimum(under * VALVE_RELAX, VALVE_MAX_OVERSHOOT_KPA), out
    )
    result: FloatArray = out
    return result


def lag_step(
    state: FloatArray, target: FloatArray | float, alpha: FloatArray | float
) -> FloatArray:
    """One step of a first-order lag; ``alpha = 1 - exp(-dt / tau)``."""
    result: FloatArray = state + (target - state) * alpha
    return result


class SmoothNoise:
    """A stationary Ornstein-Uhlenbeck process sampled at knots every ``knot_s`` seconds
    and interpolated linearly in between: slow, smooth variation with no per-tick jitter.
    Knots are drawn lazily, so consecutive :meth:`at` calls continue the same path."""

    def __init__(
        self, rng: np.random.Generator, tau_s: float, sigma: float, knot_s: float, t0: float
    ) -> None:
        self.rng = rng
        self.a = math.exp(-knot_s / tau_s)
        self.sigma = sigma
        self.knot_s = knot_s
        self.t0 = t0
        self.values: list[float] = [float(rng.normal(0.0, sigma))]

    def at(self, t: FloatArray) -> FloatArray:
        """Values at times ``t`` (epoch s, >= t0)."""
        need = int(np.ceil((float(t.max()) - self.t0) / self.knot_s)) + 2
        scale = self.sigma * math.sqrt(1.0 - self.a * self.a)
        while len(self.values) < need:
            self.values.append(self.values[-1] * self.a + float(self.rng.normal(0.0, scale)))
        knots_t = self.t0 + self.knot_s * np.arange(len(self.values))
        result: FloatArray = np.interp(t, knots_t, np.asarray(self.values))
        return result


@dataclass
class SimChunk:
    """Simulated readings for ticks ``[k0, k0 + n)``; arrays are (n_ticks, n_tanks).

    ``present[k, i]`` False = no reading (dropout, outage, maintenance). ``event``
    holds EVENT_* codes. ``labels`` are (tank_id, start_ts, end_ts, kind).
    """

    ts: FloatArray
    pressure_kpa: FloatArray
    temperature_c: FloatArray
    present: BoolArray
    event: NDArray[np.int8]
    labels: list[tuple[str, float, float, str]] = field(default_factory=list)


def _windows(
    rng: np.random.Generator,
    n_tanks: int,
    n_ticks: int,
    rate_per_tank: float,
    min_len: int,
    max_len: int,
) -> list[tuple[int, int, int]]:
    """Random (tank, start, end) windows: Poisson count per tank, uniform starts."""
    out: list[tuple[int, int, int]] = []
    counts = rng.poisson(rate_per_tank, size=n_tanks)
    for i in range(n_tanks):
        for _ in range(int(counts[i])):
            start = int(rng.integers(0, max(1, n_ticks - min_len)))
            length = int(rng.integers(min_len, max_len + 1))
            out.append((i, start, min(n_ticks, start + length)))
    return out


class TankFarm:
    """The simulated farm. :meth:`run` advances ``n`` ticks and keeps the physical
    state, so a live producer can call it repeatedly; one call over the whole span is
    what the bundled history is made of."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.ids = config.tank_ids
        self.rng = np.random.default_rng(config.seed)
        n = config.tanks
        dt = config.interval_s
        rng = self.rng
        t0 = config.start_ts
        self.t0 = t0
        self.k = 0  # next tick index
        # Per-tank constants.
        self.solar_gain = rng.uniform(6.0, 16.0, n)  # degC at full sun (paint, exposure)
        self.a_shell = 1.0 - np.exp(-dt / (60.0 * rng.uniform(20.0, 40.0, n)))
        self.a_gas = 1.0 - np.exp(-dt / (60.0 * rng.uniform(30.0, 60.0, n)))
        self.a_liquid = 1.0 - math.exp(-dt / (3 * 86400.0))
        self.shell_weight = rng.uniform(0.6, 0.8, n)
        self.site_offset = rng.normal(0.0, 0.5, n)  # microclimate, degC
        self.pressure_set = rng.uniform(2.0, 3.5, n)  # vent opens at atm + this, kPa
        self.vacuum_set = rng.uniform(0.6, 1.5, n)  # air drawn in below atm - this, kPa
        self.noise_p = config.noise_pressure_kpa * rng.uniform(0.7, 1.3, n)
        self.noise_t = config.noise_temperature_c * rng.uniform(0.7, 1.3, n)
        self.offset_p = rng.normal(0.0, 0.05, n)
        self.offset_t = rng.normal(0.0, 0.1, n)
        # Weather processes (farm-wide).
        self.front = SmoothNoise(rng, 2 * 86400.0, 3.0, 3600.0, t0)
        self.day_amp = SmoothNoise(rng, 3 * 86400.0, 0.2, 86400.0, t0)
        self.cloud = SmoothNoise(rng, 2 * 3600.0, 0.35, 900.0, t0)
        self.atm = SmoothNoise(rng, 1.5 * 86400.0, 0.7, 3600.0, t0)
        # Physical state.
        amb0 = config.ambient_mean_c + self.site_offset
        self.shell = amb0.copy()
        self.gas = amb0.copy()
        self.liquid = amb0 + rng.normal(0.0, 1.0, n)
        self.level = rng.uniform(0.3, 0.9, n)
        self.q = gas_amount(np.full(n, ATM_KPA), self.gas, self.level)

    def _weather(self, ts: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """(ambient degC, daily-mean ambient degC, irradiance 0..1, atm kPa) at ``ts``."""
        cfg = self.config
        hour = (ts % 86400.0) / 3600.0
        amp = 0.5 * cfg.ambient_daily_range_c * np.clip(1.0 + self.day_amp.at(ts), 0.4, 1.6)
        mean = cfg.ambient_mean_c + self.front.at(ts)
        ambient = mean + amp * np.sin(2 * np.pi * (hour - 9.0) / 24.0)
        clear = np.clip(np.sin(np.pi * (hour - 6.0) / 12.0), 0.0, None) ** 1.5
        cover = np.clip(0.4 + self.cloud.at(ts), 0.0, 1.0)
        irradiance = clear * (1.0 - 0.75 * cover)
        atm = ATM_KPA + self.atm.at(ts) + 0.08 * np.sin(4 * np.pi * hour / 24.0)
        return ambient, mean, irradiance, atm

    def _pumping(self, n_ticks: int) -> FloatArray:
        """Level change per tick (n_ticks, n_tanks): draw sessions < 0, transfers in > 0.

        Pumps ramp up and down over ~an hour (a moving average of the on/off
        schedule), so the pressure ramps they cause start and stop smoothly.
        """
        cfg = self.config
        rng = self.rng
        days = n_ticks * cfg.interval_s / 86400.0
        per_h = 3600.0 / cfg.interval_s
        rate = np.zeros((n_ticks, cfg.tanks))
        for sign, per_day, lo, hi in (
            (-1.0, cfg.draws_per_day, 0.01, 0.025),
            (1.0, cfg.transfers_in_per_day, 0.015, 0.03),
        ):
            for i, s, e in _windows(
                rng, cfg.tanks, n_ticks, per_day * days, int(4 * per_h), int(12 * per_h)
            ):
                rate[s:e, i] += sign * rng.uniform(lo, hi) / per_h
        width = max(1, round(3600.0 / cfg.interval_s))
        csum = np.cumsum(np.vstack([np.zeros((width, cfg.tanks)), rate]), axis=0)
        smooth: FloatArray = (csum[width:] - csum[:-width]) / width
        return smooth

    def run(self, n_ticks: int) -> SimChunk:
        """Advance ``n_ticks`` ticks; returns the readings and the anomaly labels."""
        cfg = self.config
        rng = self.rng
        n = cfg.tanks
        dt = cfg.interval_s
        per_h = 3600.0 / dt
        weeks = n_ticks * dt / (7 * 86400.0)
        ts = self.t0 + dt * (self.k + np.arange(n_ticks, dtype=np.float64))
        ambient, daily_mean, irradiance, atm = self._weather(ts)
        rate = self._pumping(n_ticks)

        # Maintenance windows: no pumping, vent open, no readings; event on the tick after.
        maint = np.zeros((n_ticks, n), dtype=bool)
        for i, s, e in _windows(
            rng, n, n_ticks, cfg.maintenance_rate_per_week * weeks, int(2 * per_h), int(8 * per_h)
        ):
            maint[s:e, i] = True
        rate[maint] = 0.0

        # Anomalies: a fixed number so every kind shows up, non-overlapping per tank.
        n_anom = max(3, round(cfg.anomaly_rate_per_week * weeks * n)) if n_ticks > 8 * per_h else 0
        leak = np.zeros((n_ticks, n))
        heater = np.zeros((n_ticks, n))
        stuck: list[tuple[int, int, int, int]] = []  # tank, start, end, channel (0 p, 1 t)
        # A leak or a stuck sensor ends with a repair: 30..90 min without readings, then
        # a boundary event (the reading jumps back, which no model should have to learn).
        repair_gap = np.zeros((n_ticks, n), dtype=bool)
        repairs: list[tuple[int, int, int]] = []  # tank, tick of the event, event code
        labels: list[tuple[str, float, float, str]] = []
        taken: list[tuple[int, int, int]] = []
        for j in range(n_anom):
            kind = ANOMALY_KINDS[j % len(ANOMALY_KINDS)]
            length = int(rng.integers(int(4 * per_h), int(12 * per_h) + 1))
            for _attempt in range(20):
                i = int(rng.integers(0, n))
                s = int(rng.integers(int(2 * per_h), max(int(2 * per_h) + 1, n_ticks - length)))
                e = min(n_ticks, s + length)
                clash = any(ti == i and s < te + per_h and ts_ < e + per_h for ti, ts_, te in taken)
                if not clash and not maint[s:e, i].any():
                    break
            else:
                continue
            taken.append((i, s, e))
            ramp = np.arange(e - s) / per_h  # hours since start
            if kind == "leak":
                leak[s:e, i] = -rng.uniform(0.15, 0.4) * ramp
            elif kind == "heater_fault":
                heater[s:e, i] = np.minimum(rng.uniform(1.5, 4.0) * ramp, 25.0)
                # Once the heater is off the extra heat leaves slowly (tau 2 h), no step.
                after = np.arange(1, n_ticks - e + 1) / per_h
                heater[e:, i] = heater[e - 1, i] * np.exp(-after / 2.0)
            else:
                stuck.append((i, s, e, int(rng.integers(0, 2))))
            if kind != "heater_fault":
                back = e + int(rng.integers(int(0.5 * per_h), int(1.5 * per_h) + 1))
                repair_gap[e:back, i] = True
                code = EVENT_MAINTENANCE if kind == "leak" else EVENT_SENSOR_REPLACED
                repairs.append((i, back, code))
            labels.append((self.ids[i], float(ts[s]), float(ts[e - 1]), kind))

        # Refill chance per tick once below the threshold: a delivery within ~6 h.
        refill_u = rng.random((n_ticks, n))
        refill_to = rng.uniform(0.85, 0.95, (n_ticks, n))
        refill_temp = rng.uniform(-3.0, 8.0, (n_ticks, n))
        hazard = 1.0 / (6 * per_h)

        pressure = np.empty((n_ticks, n))
        temperature = np.empty((n_ticks, n))
        event = np.zeros((n_ticks, n), dtype=np.int8)
        was_maint = np.zeros(n, dtype=bool)
        for k in range(n_ticks):
            amb = ambient[k] + self.site_offset
            self.shell = lag_step(self.shell, amb + self.solar_gain * irradiance[k], self.a_shell)
            self.liquid = lag_step(self.liquid, daily_mean[k] + self.site_offset, self.a_liquid)
            target = (
                self.shell_weight * self.shell + (1 - self.shell_weight) * self.liquid + heater[k]
            )
            self.gas = lag_step(self.gas, target, self.a_gas)
            self.level = np.clip(self.level + rate[k], *LEVEL_RANGE)
            refill = (self.level < cfg.refill_threshold) & (refill_u[k] < hazard) & ~maint[k]
            if refill.any():
                new = refill_to[k]
                product_t = daily_mean[k] + refill_temp[k]
                mixed = (self.level * self.liquid + (new - self.level) * product_t) / new
                self.gas = np.where(refill, self.gas + 0.3 * (mixed - self.liquid), self.gas)
                self.liquid = np.where(refill, mixed, self.liquid)
                self.level = np.where(refill, new, self.level)
                event[k, refill] = EVENT_REFILL
            p = ideal_gas_pressure(self.q, self.gas, self.level)
            p = breather_valve(p, atm[k] - self.vacuum_set, atm[k] + self.pressure_set)
            p = np.where(maint[k], atm[k], p)  # vent open during maintenance
            self.q = gas_amount(p, self.gas, self.level)
            ended = was_maint & ~maint[k]
            event[k, ended] = EVENT_MAINTENANCE
            was_maint = maint[k]
            pressure[k] = p
            temperature[k] = self.gas
        self.k += n_ticks
        for i, k, code in repairs:
            if k < n_ticks and event[k, i] == EVENT_NONE:
                event[k, i] = code

        # Sensors: offset + white noise + leak drift; stuck channels frozen.
        p_meas = pressure + self.offset_p + leak + rng.normal(0.0, 1.0, (n_ticks, n)) * self.noise_p
        t_meas = temperature + self.offset_t + rng.normal(0.0, 1.0, (n_ticks, n)) * self.noise_t
        for i, s, e, channel in stuck:
            arr = p_meas if channel == 0 else t_meas
            arr[s:e, i] = arr[s, i]

        # Missing readings: single dropouts, short and long outages, maintenance.
        present = rng.random((n_ticks, n)) >= cfg.dropout_rate
        days = n_ticks * dt / 86400.0
        for i, s, e in _windows(rng, n, n_ticks, cfg.outage_rate_per_day * days, 2, 30):
            present[s:e, i] = False
        for i, s, e in _windows(rng, n, n_ticks, cfg.long_gap_rate_per_week * weeks, 60, 360):
            present[s:e, i] = False
        present &= ~(maint | repair_gap)
        present |= event != EVENT_NONE  # a boundary event is never lost
        labels.sort(key=lambda r: (r[1], r[0]))
        return SimChunk(ts, p_meas, t_meas, present, event, labels)


def simulate(config: SimConfig) -> SimChunk:
    """The whole history of ``config`` in one chunk (deterministic by ``config.seed``)."""
    return TankFarm(config).run(config.n_ticks)
