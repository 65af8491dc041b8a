"""Apply one closed tick to the model: resets, residuals, step, horizon, anomaly.

Holds the fleet's per-row display state (last actual, forecasts, residual, anomaly,
last reading time, reset counts) as NumPy arrays indexed by row, grown when the
registry grows. Everything is vectorised over the tick's rows; only the rows present
in a tick are stepped and forecast (rows are independent, so a catch-up tick with one
row costs one row's work and yields exactly that row's values of a full batch).
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.anomaly import AnomalyScorer, AnomalyState
from models.baselines import HoltBaseline
from models.engines.base import Forecaster, RowState
from models.serving import SOURCES, ServingPlan, horizon_codes, serve
from pipeline.assembler import NO_TICK, RESET_REASONS, ClosedTick
from pipeline.horizon_worker import HorizonWorker, Serving, WorkerGone
from pipeline.step_output import StepOutput

__all__ = ["FleetState", "ForecastStep", "StateColumns", "StepOutput", "TankState"]

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


#: Ticks whose horizon may be in the worker at once: the loop runs up to this many
#: ticks ahead of it (a poll often closes several ticks; with one, the loop would wait
#: for each tick's horizon before stepping the next).
MAX_IN_FLIGHT = 2
#: The worker formats a tick's records only if it is idle when the tick is queued;
#: behind, it leaves them to the loop (the sink formats them when it sends them).
ENCODE_WHEN_IDLE = True


@dataclass(frozen=True, slots=True)
class _PendingHorizon:
    """A tick whose horizon the worker computes (and serves): its output (rows, next
    step, readings; ``horizons`` to fill in) and the state it was started from."""

    out: StepOutput
    state: RowState


@dataclass(frozen=True, slots=True)
class StateColumns:
    """The checkpoint records of n tanks as columns: ``h``/``c`` (layers, n, units)
    float32, ``held``/``actual`` (n, F) float32, ``anomaly``/``extra`` arrays with a
    row per tank; plain-Python lists for the scalars."""

    tank_ids: list[str]
    partitions: list[int]
    last_ticks: list[int]
    last_ts: list[float]
    h: F32
    c: F32
    held: F32
    actual: F32
    anomaly: dict[str, NDArray[Any]]
    extra: dict[str, NDArray[Any]]

    @staticmethod
    def empty() -> StateColumns:
        z = np.zeros((0, 0), np.float32)
        return StateColumns([], [], [], [], z[None], z[None], z, z, {}, {})

    @staticmethod
    def of(states: list[TankState]) -> StateColumns:
        """The columns of these states (of one layout: the first one's array names and
        shapes)."""
        if not states:
            return StateColumns.empty()
        anomaly = list(states[0].anomaly)
        extra = list(states[0].extra or {})
        return StateColumns(
            tank_ids=[s.tank_id for s in states],
            partitions=[s.partition for s in states],
            last_ticks=[s.last_tick for s in states],
            last_ts=[s.last_ts for s in states],
            h=np.stack([s.h for s in states], axis=1),
            c=np.stack([s.c for s in states], axis=1),
            held=np.stack([s.held for s in states]),
            actual=np.stack([s.actual for s in states]),
            anomaly={k: np.stack([np.asarray(s.anomaly[k]) for s in states]) for k in anomaly},
            extra={k: np.stack([np.asarray((s.extra or {})[k]) for s in states]) for k in extra},
        )

    def __len__(self) -> int:
        return len(self.tank_ids)

    def states(self) -> list[TankState]:
        """One :class:`TankState` per tank (copies: independent of these columns)."""
        return [
            TankState(
                tank_id=tank_id,
                partition=self.partitions[i],
                last_tick=self.last_ticks[i],
                last_ts=self.last_ts[i],
                h=np.ascontiguousarray(self.h[:, i]),
                c=np.ascontiguousarray(self.c[:, i]),
                held=self.held[i].copy(),
                actual=self.actual[i].copy(),
                anomaly={k: np.asarray(v[i]) for k, v in self.anomaly.items()},
                extra={k: np.asarray(v[i]) for k, v in self.extra.items()},
            )
            for i, tank_id in enumerate(self.tank_ids)
        ]


@dataclass(frozen=True, slots=True)
class TankState:
    """Everything needed to continue one tank exactly (one checkpoint record).

    ``h``, ``c``: (layers, units) float32; ``held`` (F,) float32 next-step forecast
    (NaN if none); ``anomaly``: the scorer's per-row arrays (one row);
    ``last_tick``: last applied tick; ``last_ts``: its event time (s);
    ``actual`` (F,) last reading; ``extra``: the engine's per-row level/scale and the
    baselines' state (float64 arrays, one row; empty in older checkpoints).
    """

    tank_id: str
    partition: int
    last_tick: int
    last_ts: float
    h: F32
    c: F32
    held: F32
    actual: F32
    anomaly: dict[str, F64]
    extra: dict[str, F64] | None = None


class FleetState:
    """Per-row arrays the sinks read (capacity rows; free rows hold NaN).

    ``horizons``: (rows, H, F) the whole horizon of the last step (tick+1..tick+H).
    """

    def __init__(self, n_features: int, n_horizons: int) -> None:
        self.nf, self.nh = n_features, n_horizons
        self.actual: F32 = np.full((0, n_features), np.nan, np.float32)
        self.held: F32 = np.full((0, n_features), np.nan, np.float32)
        self.horizons: F32 = np.full((0, n_horizons, n_features), np.nan, np.float32)
        self.residual: F32 = np.full((0, n_features), np.nan, np.float32)
        self.score: F64 = np.zeros(0)
        self.flag: NDArray[np.bool_] = np.zeros(0, bool)
        self.last_ts: F64 = np.full(0, np.nan)
        #: (rows, len(RESET_REASONS)) resets per reason (column 0 unused).
        self.resets: NDArray[np.int64] = np.zeros((0, len(RESET_REASONS)), np.int64)
        #: (rows,) forecasts clipped to the bounds; readings outside the trained range.
        self.clips: NDArray[np.int64] = np.zeros(0, np.int64)
        self.out_of_range: NDArray[np.int64] = np.zeros(0, np.int64)
        #: (rows,) False while the last reading was outside the trained range.
        self.calibrated: NDArray[np.bool_] = np.zeros(0, bool)

    @property
    def capacity(self) -> int:
        return int(self.score.shape[0])

    def grow(self, n: int) -> None:
        """Append n empty rows."""
        nf, nh = self.nf, self.nh
        self.actual = np.concatenate([self.actual, np.full((n, nf), np.nan, np.float32)])
        self.held = np.concatenate([self.held, np.full((n, nf), np.nan, np.float32)])
        self.horizons = np.concatenate([self.horizons, np.full((n, nh, nf), np.nan, np.float32)])
        self.residual = np.concatenate([self.residual, np.full((n, nf), np.nan, np.float32)])
        self.score = np.concatenate([self.score, np.zeros(n)])
        self.flag = np.concatenate([self.flag, np.zeros(n, bool)])
        self.last_ts = np.concatenate([self.last_ts, np.full(n, np.nan)])
        self.resets = np.concatenate([self.resets, np.zeros((n, len(RESET_REASONS)), np.int64)])
        self.clips = np.concatenate([self.clips, np.zeros(n, np.int64)])
        self.out_of_range = np.concatenate([self.out_of_range, np.zeros(n, np.int64)])
        self.calibrated = np.concatenate([self.calibrated, np.ones(n, bool)])

    def clear(self, rows: NDArray[np.intp]) -> None:
        """Forget rows (a revoked tank's row becomes free)."""
        self.actual[rows] = np.nan
        self.held[rows] = np.nan
        self.horizons[rows] = np.nan
        self.residual[rows] = np.nan
        self.score[rows] = 0.0
        self.flag[rows] = False
        self.last_ts[rows] = np.nan
        self.resets[rows] = 0
        self.clips[rows] = 0
        self.out_of_range[rows] = 0
        self.calibrated[rows] = True


class ForecastStep:
    """Owns the engine and the anomaly scorer; applies closed ticks to them.

    ``horizon``: ticks forecast on a state copy; ``horizons_reported``: which of them
    (1-based) are kept; ``scale``: (F,) scaler std (residuals are scored in scaled
    units so pressure and temperature weigh alike).

    ``horizon_stride`` k > 1 trades freshness for arithmetic: a row's horizon is
    computed every k ticks, ``horizon + k - 1`` ticks ahead, so that for the k - 1
    ticks after it every reported horizon still has a value for its own target tick
    (``origin[age + h - 1]``). Each tank has a fixed phase (a hash of its id, see
    :meth:`assign_phases`) and is due when ``(tick + phase) % k == 0``, so every tick
    computes ~1/k of the fleet instead of all of it every k-th tick (an even cost,
    no latency spike). A row is also due when it has no horizon yet (new, restored),
    after a reset, and when its horizon is k or more ticks old (holes in its ticks).
    The next-step forecast is always the fresh one, and the state, residuals and
    anomaly scores do not depend on k.
    """

    def __init__(
        self,
        engine: Forecaster,
        scorer: AnomalyScorer,
        horizon: int,
        horizons_reported: tuple[int, ...],
        scale: NDArray[np.floating],
        plan: ServingPlan | None = None,
        horizon_stride: int = 1,
    ) -> None:
        if int(horizon_stride) < 1:
            raise ValueError(f"horizon_stride must be >= 1, got {horizon_stride}")
        self.engine = engine
        self.scorer = scorer
        self.plan = plan or ServingPlan()
        self.holt = HoltBaseline(0, engine.n_features)
        self.horizon = int(horizon)
        self.reported = np.asarray(horizons_reported, np.intp) - 1
        self.scale = np.asarray(scale, np.float32)
        self.fleet = FleetState(engine.n_features, self.horizon)
        #: (capacity,) rows stepped since their horizon was last computed.
        self.stale: NDArray[np.bool_] = np.zeros(0, bool)
        self.steps = 0
        self.stride = int(horizon_stride)
        #: With a stride: (capacity, horizon + stride - 1, F) each row's served horizon
        #: as computed at ``origin_tick`` (leads 1..), its tick (NO_TICK: none), and the
        #: row's phase (-1: not assigned yet; the row number is used then).
        span = self.horizon + self.stride - 1
        self.origin: F32 = np.full((0, span, engine.n_features), np.nan, np.float32)
        self.origin_tick: NDArray[np.int64] = np.zeros(0, np.int64)
        self.phase: NDArray[np.int64] = np.zeros(0, np.int64)
        #: A child process that computes per-tick horizons while the loop goes on
        #: (pipeline.horizon_worker; None: computed here). Stride 1 only.
        self.worker: HorizonWorker | None = None
        self._pending: deque[_PendingHorizon] = deque()
        #: Per-tick horizons finished so far, by where they were computed ("loop"
        #: includes every tick recomputed here after the worker stopped).
        self.horizons_by_where: dict[str, int] = {"worker": 0, "loop": 0}

    @property
    def capacity(self) -> int:
        return self.fleet.capacity

    def ensure_capacity(self, n: int) -> None:
        """Grow engine, scorer and fleet arrays to at least n rows (never shrinks)."""
        extra = n - self.fleet.capacity
        if extra <= 0:
            return
        # Queued horizons would land in the grown arrays correctly (rows are only added);
        # finishing them first keeps growth free of them, and it is rare.
        self.collect()
        extra = max(extra, min(256, max(16, self.fleet.capacity)))  # amortised growth
        self.engine.add_rows(extra)
        self.scorer.add_rows(extra)
        self.holt.add_rows(extra)
        self.fleet.grow(extra)
        self.stale = np.concatenate([self.stale, np.zeros(extra, bool)])
        if self.stride > 1:
            self.origin = np.concatenate(
                [self.origin, np.full((extra, *self.origin.shape[1:]), np.nan, np.float32)]
            )
            self.origin_tick = np.concatenate([self.origin_tick, np.full(extra, NO_TICK)])
            self.phase = np.concatenate([self.phase, np.full(extra, -1, np.int64)])

    def assign_phases(self, rows: NDArray[np.intp], tank_ids: Sequence[str | None]) -> None:
        """Give these rows the horizon phase of their tank (``tank_ids`` by row): a hash
        of the id, so a tank keeps its schedule across restarts and rebalances whatever
        row it gets. Cheap when every row has one (the usual case)."""
        if self.stride == 1:
            return
        new = rows[self.phase[rows] < 0]
        for r in new.tolist():
            tank = tank_ids[r]
            if tank is not None:
                self.phase[r] = zlib.crc32(tank.encode()) % self.stride

    def free(self, rows: NDArray[np.intp]) -> None:
        """Reset released rows so a reused row starts clean."""
        self.collect()
        if rows.size:
            self.engine.reset_rows(rows)
            self.scorer.reset_rows(rows)
            self.holt.reset_rows(rows)
            self.fleet.clear(rows)
            self.stale[rows] = False
            if self.stride > 1:
                self.origin_tick[rows] = NO_TICK
                self.phase[rows] = -1

    def apply(
        self,
        ct: ClosedTick,
        with_horizon: bool = True,
        tank_ids: Sequence[str | None] | None = None,
    ) -> StepOutput:
        """Apply one closed tick (its rows must be < capacity).

        ``with_horizon``: also run the H-step forecast for these rows now (the costly
        part: H cell evaluations). Without it ``horizons`` is NaN and the rows are
        left for :meth:`refresh_horizons`; the state and next-step forecast are the same.

        With a :attr:`worker` (stride 1) the horizon is started there and this returns
        with ``horizons`` still NaN: :meth:`collect` fills them in (and the fleet's),
        as every later call of this class does first (apply only once
        :data:`MAX_IN_FLIGHT` ticks are pending). Given ``tank_ids`` (by row) the
        worker also formats the tick's records into ``encoded``.
        """
        offload = with_horizon and self.stride == 1 and self._worker_ready()
        # Horizons are finished in tick order (the fleet's keep the newest): all of
        # them before a tick computed here, the oldest when the queue is full.
        while self._pending and (not offload or len(self._pending) >= MAX_IN_FLIGHT):
            self._collect_one()
        fleet, rows = self.fleet, ct.rows
        n_all = fleet.capacity
        reset = ct.reset_rows
        if reset.size:
            self.engine.reset_rows(reset)
            self.scorer.reset_rows(reset)
            self.holt.reset_rows(reset)
            fleet.held[reset] = np.nan
            np.add.at(fleet.resets, (reset, ct.reset_reason[ct.reset_reason > 0]), 1)
        held = fleet.held[rows]
        # A residual needs the forecast made at the previous tick (not across a hole).
        has_res = (
            (ct.prev_tick == ct.tick - 1) & (ct.reset_reason == 0) & np.isfinite(held).all(axis=1)
        )
        residual = np.where(has_res[:, None], ct.x - held, np.nan).astype(np.float32)
        mask = np.zeros(n_all, bool)
        mask[rows] = True
        x_all = np.zeros((n_all, fleet.nf), np.float32)
        x_all[rows] = ct.x
        y = self.engine.step(x_all, mask)
        self.holt.update(x_all, mask)
        forecast = self._serve(y[rows][None], ct.x, rows)[0]
        age: NDArray[np.int64] | None = None
        full: F32 | None = None
        if offload:  # started at the end, finished by collect()
            horizons = np.full((rows.size, self.reported.size, fleet.nf), np.nan, np.float32)
            self.stale[rows] = False
        elif with_horizon:
            self.horizons_by_where["loop"] += 1
            if self.stride > 1:
                full, age = self._strided_horizons(ct, forecast)
            else:
                full = self._served_horizon(self.horizon, rows, forecast, ct.x).transpose(1, 0, 2)
            horizons = np.ascontiguousarray(full[:, self.reported])  # full: (n, H, F)
            self.stale[rows] = False
        else:
            horizons = np.full((rows.size, self.reported.size, fleet.nf), np.nan, np.float32)
            self.stale[rows] = True
        res_all = np.zeros((n_all, fleet.nf), np.float32)
        res_mask = np.zeros(n_all, bool)
        res_rows = rows[has_res]
        res_all[res_rows] = residual[has_res] / self.scale
        res_mask[res_rows] = True
        # Readings of this tick in the same per-row units as the residual (the stuck
        # detector compares consecutive readings; NaN = no reading in this tick).
        act_all = np.full((n_all, fleet.nf), np.nan, np.float32)
        act_all[rows] = ct.x / self.scale
        score_all, flag_all = self.scorer.update(res_all, res_mask, actual=act_all)
        score, flag = score_all[rows], flag_all[rows]
        calibrated: NDArray[np.bool_] = np.ones(rows.size, bool)
        if self.plan.input_range is not None:
            lo, hi = self.plan.input_range
            # Outside what the model was trained on: its residuals mean little, so the
            # tank's score is marked uncalibrated instead of flagging.
            calibrated = np.asarray(((ct.x >= lo) & (ct.x <= hi)).all(axis=1), bool)
            fleet.out_of_range[rows] += ~calibrated
            flag = flag & calibrated
        fleet.calibrated[rows] = calibrated
        fleet.actual[rows] = ct.x
        fleet.held[rows] = forecast
        if full is not None:
            fleet.horizons[rows] = full
        fleet.residual[rows] = residual
        fleet.score[rows] = score
        fleet.flag[rows] = flag
        fleet.last_ts[rows] = ct.ts
        self.steps += 1
        out = StepOutput(ct, forecast, horizons, held, residual, score, flag, calibrated, age)
        if offload and not self._launch(out, tank_ids):  # the worker is gone: here, now
            self.collect()
            self.horizons_by_where["loop"] += 1
            full = self._served_horizon(self.horizon, rows, forecast, ct.x).transpose(1, 0, 2)
            horizons[:] = full[:, self.reported]
            fleet.horizons[rows] = full
        return out

    def _strided_horizons(self, ct: ClosedTick, forecast: F32) -> tuple[F32, NDArray[np.int64]]:
        """(n, H, F) horizons of this tick's rows with a stride, and their ages (ticks):
        due rows (see the class) get a new ``horizon + stride - 1`` tick horizon, the
        others read theirs at their age; the next step is this tick's ``forecast``."""
        rows, t, k = ct.rows, int(ct.tick), self.stride
        phase = self.phase[rows]
        phase = np.where(phase >= 0, phase, rows % k)
        # NO_TICK (no horizon yet) is far below t - k, so it is due by the first test.
        due = (self.origin_tick[rows] <= t - k) | (ct.reset_reason > 0) | ((t + phase) % k == 0)
        fresh = rows[due]
        if fresh.size:
            new = self._served_horizon(self.horizon + k - 1, fresh, forecast[due], ct.x[due])
            self.origin[fresh] = new.transpose(1, 0, 2)
            self.origin_tick[fresh] = t
        age = t - self.origin_tick[rows]
        full = np.empty((rows.size, self.horizon, self.origin.shape[2]), np.float32)
        for a in range(k):  # one slice per age: ~3x faster than a (n, H) fancy index
            sel = np.flatnonzero(age == a)
            if sel.size:
                full[sel] = self.origin[rows[sel], a : a + self.horizon]
        full[:, 0] = forecast
        return full, age

    @property
    def pending(self) -> bool:
        """A horizon is being computed by the worker (see :meth:`collect`)."""
        return bool(self._pending)

    def is_pending(self, out: StepOutput) -> bool:
        """This tick's horizon is still in the worker."""
        return any(p.out is out for p in self._pending)

    def _worker_ready(self) -> bool:
        """Per-tick horizons can go to the worker: it runs, and the gate serves the
        LSTM at every lead beyond the first (Holt's horizon needs Holt's state, which
        is here and moves with every tick)."""
        w = self.worker
        if w is None or not w.alive or not w.ready():
            return False
        codes = self.plan.codes
        return codes is None or not horizon_codes(codes, 2, self.horizon - 1).any()

    def _launch(self, out: StepOutput, tank_ids: Sequence[str | None] | None) -> bool:
        """Queue this tick's horizon in the worker, served there, and its records
        formatted there when the worker encodes and ``tank_ids`` are given. False:
        the worker is gone."""
        w, ct = self.worker, out.tick
        assert w is not None
        rows = ct.rows
        job_out = ids = None
        if w.encodes and tank_ids is not None and (w.in_flight == 0 or not ENCODE_WHEN_IDLE):
            # Rows renumbered 0..n-1 with their ids in that order: the child needs this
            # tick's ids only.
            job_out = replace(out, tick=replace(ct, rows=np.arange(rows.size)))
            ids = [tank_ids[r] for r in rows.tolist()]
        state = self.engine.snapshot(rows)
        serving = Serving(out.forecast, ct.x, self.plan.bounds, self.reported, job_out, ids)
        try:
            w.submit(self.horizon, state, serving)
        except WorkerGone:
            return False
        self._pending.append(_PendingHorizon(out, state))
        return True

    def collect(self) -> None:
        """Finish every horizon started in the worker (no-op if none), oldest first."""
        while self._pending:
            self._collect_one()

    def collect_oldest(self) -> None:
        """Finish the oldest horizon started in the worker (no-op if none)."""
        if self._pending:
            self._collect_one()

    def _collect_one(self) -> None:
        """Finish the oldest pending horizon: the worker's answer into the tick's
        ``horizons``, the fleet's and the clip counts, its records into ``encoded``.
        If the worker died, the same is computed here from the state the job was
        started from (the rows' live state may have moved on since)."""
        p = self._pending.popleft()
        out = p.out
        rows = out.tick.rows
        answer = None
        if self.worker is not None and self.worker.alive:
            try:
                answer = self.worker.result()
            except WorkerGone:
                answer = None
        self.horizons_by_where["worker" if answer is not None else "loop"] += 1
        if answer is not None:
            full = answer.horizon
            if answer.clipped is not None:
                self.fleet.clips[rows] += answer.clipped
            if answer.records is not None:
                out.encoded.extend(answer.records)
        else:
            now = self.engine.snapshot(rows)
            self.engine.restore(rows, p.state)
            try:
                full = self._served_horizon(self.horizon, rows, out.forecast, out.tick.x)
            finally:
                self.engine.restore(rows, now)
        full = full.transpose(1, 0, 2)
        out.horizons[:] = full[:, self.reported]
        self.fleet.horizons[rows] = full

    def _served_horizon(
        self, steps: int, rows: NDArray[np.intp], next_step: F32, reading: F32
    ) -> F32:
        """(steps, n, F) served horizon of these rows: the served ``next_step`` first,
        then the engine's forecasts fed back, served from horizon 2 on."""
        full = self.engine.forecast(steps, rows)
        full[0] = next_step
        full[1:] = self._serve(full[1:], reading, rows, first_h=2)
        return full

    def _serve(self, lstm: F32, reading: F32, rows: NDArray[np.intp], first_h: int = 1) -> F32:
        """Served and bounded forecasts (H', n, F) for horizons first_h.. from the
        engine's ``lstm`` ones; clips are counted per row."""
        plan = self.plan
        out = lstm
        # All-LSTM gates (the shipped artifact's) skip Holt's horizon and the select:
        # ~4 % of a tick at 1,000 tanks (bench/profile_pipeline.py, py-spy).
        h = lstm.shape[0]
        if plan.codes is not None and horizon_codes(plan.codes, first_h, h).any():
            # Where the gate says Holt but this tank's own one-step errors say Holt
            # does not fit it, persistence is served (models.baselines).
            holt = self.holt.or_persistence(
                self.holt.forecast(first_h - 1 + h, rows)[first_h - 1 :], reading, rows
            )
            pers = np.broadcast_to(reading[None], lstm.shape)
            out = serve(plan.codes, lstm, pers, holt, first_h)
        if plan.bounds is not None:
            out, clipped = plan.bounds.clip(out, reading, first_h)
            self.fleet.clips[rows] += clipped
        return np.asarray(out, np.float32)

    def holt_withheld(self, n: int) -> NDArray[np.bool_]:
        """(n,) True for the first n rows where the gate serves Holt for some feature
        but the row's own one-step errors withhold it (persistence is served there)."""
        out = np.zeros(n, bool)
        codes, m = self.plan.codes, min(n, self.capacity)
        if codes is not None and m:
            uses = (codes == SOURCES.index("holt")).any(axis=0)  # (F,) Holt served somewhere
            out[:m] = (~self.holt.trusted(np.arange(m)) & uses).any(axis=1)
        return out

    def refresh_horizons(self) -> int:
        """Compute the horizon of every stale row (one batched forecast); returns how
        many rows were refreshed. Rows are independent, so this equals what
        ``apply(..., with_horizon=True)`` would have stored for them."""
        self.collect()
        rows = np.flatnonzero(self.stale)
        if rows.size:
            # The next step was served when the row was stepped.
            full = self._served_horizon(
                self.horizon, rows, self.fleet.held[rows], self.fleet.actual[rows]
            )
            self.fleet.horizons[rows] = full.transpose(1, 0, 2)
            self.stale[rows] = False
        return int(rows.size)

    # ---------------------------------------------------------- checkpoints
    def snapshot(
        self,
        tanks: list[tuple[str, int]],
        last_tick: NDArray[np.int64],
        partition: NDArray[np.int32],
    ) -> list[TankState]:
        """Checkpoint records of these (tank_id, row) pairs; rows never applied are skipped."""
        return self.snapshot_columns(tanks, last_tick, partition).states()

    def snapshot_columns(
        self,
        tanks: list[tuple[str, int]],
        last_tick: NDArray[np.int64],
        partition: NDArray[np.int32],
    ) -> StateColumns:
        """:meth:`snapshot` as fleet columns (one array per field, a row per tank): what
        ``pipeline.checkpoint.encode_columns`` encodes without a per-tank array."""
        pairs = [(t, r) for t, r in tanks if int(last_tick[r]) != NO_TICK]
        rows = np.asarray([r for _, r in pairs], np.intp)
        if not pairs:
            return StateColumns.empty()
        st = self.engine.snapshot(rows)
        an = self.scorer.snapshot(rows).to_dict()
        extra = self.holt.snapshot(rows)
        if st.level is not None and st.scale is not None:
            extra["level"] = st.level.astype(np.float64)
            extra["scale"] = st.scale.astype(np.float64)
        return StateColumns(
            tank_ids=[t for t, _ in pairs],
            partitions=partition[rows].astype(np.int64).tolist(),
            last_ticks=last_tick[rows].astype(np.int64).tolist(),
            last_ts=self.fleet.last_ts[rows].astype(np.float64).tolist(),
            h=st.h,
            c=st.c,
            held=self.fleet.held[rows],
            actual=self.fleet.actual[rows],
            anomaly={k: np.asarray(v) for k, v in an.items()},
            extra={k: np.asarray(v) for k, v in extra.items()},
        )

    def restore(self, row: int, state: TankState) -> None:
        """Load one tank's checkpoint into its row (row < capacity)."""
        self.collect()
        idx = np.asarray([row], np.intp)
        extra = state.extra or {}
        level = extra.get("level")
        scale = extra.get("scale")
        self.engine.restore(
            idx,
            RowState(
                h=state.h[:, None, :].astype(np.float32),
                c=state.c[:, None, :].astype(np.float32),
                last_forecast=state.held[None, :].astype(np.float32),
                level=None if level is None else np.asarray(level, np.float32)[None],
                scale=None if scale is None else np.asarray(scale, np.float32)[None],
            ),
        )
        self.holt.restore(idx, {k: np.asarray(v)[None] for k, v in extra.items()})
        self.scorer.restore(
            idx, AnomalyState.from_dict({k: np.asarray(v)[None] for k, v in state.anomaly.items()})
        )
        fleet = self.fleet
        fleet.clear(idx)
        self.stale[row] = True  # its horizon is computed with the next refresh
        if self.stride > 1:
            self.origin_tick[row] = NO_TICK  # and computed afresh at its next tick
        fleet.held[row] = state.held
        fleet.actual[row] = state.actual
        fleet.last_ts[row] = state.last_ts
        fleet.score[row] = float(np.asarray(state.anomaly.get("score", 0.0)))
        fleet.flag[row] = bool(np.asarray(state.anomaly.get("run", 0.0)) >= self.scorer.consecutive)
