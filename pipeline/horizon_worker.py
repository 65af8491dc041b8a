"""A tick's output side in a child process (its horizon, served, and its forecast
records), so that it overlaps the loop.

Why a process: the multi-step horizon is the largest share of a tick's arithmetic
(~25 % of the loop thread at 1,000 tanks, bench/profile_pipeline.py under py-spy), and
it is NumPy, but a thread cannot overlap it with the loop's Python work: each of its
~15 NumPy calls per step needs the GIL back, and a thread that waits for the GIL while
the other runs Python waits a whole switch interval (5 ms). A process has its own GIL,
so on a second core the horizon of tick t runs while the loop reads the next poll.

The child holds its own :class:`NumpyEngine` built from the same artifact. A job is
the rows' state (``NumpyEngine.snapshot``: h, c, held forecast, frame); the child
restores it into rows ``0..m-1`` and computes ``forecast(steps)``. A row's horizon is
the same bits whatever rows it runs with and wherever it sits (rows are padded, see
``numpy_engine.PAD_ROWS``), so it equals the in-process one bit for bit. With a
:class:`Serving` part the child also serves it (the loop's bounds; the loop sends one
only when the gate serves the LSTM at every lead, as the shipped artifact does: Holt's
state lives in the loop) and, once :meth:`HorizonWorker.configure` gave it the forecast
sink's settings, formats the tick's records with the very function the sink uses
(``encode_records``, ~20 % of the loop at 1,000 tanks): the same bytes
(tests/unit/test_horizon_worker.py). Jobs queue: the loop may be a tick or two ahead.

The child exits when its socket closes (the parent exited, even by SIGKILL). If it dies
or stops answering, :meth:`HorizonWorker.result` raises :class:`WorkerGone` and the
caller computes the horizon itself: a slower tick, nothing lost.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.engines.base import FloatArray, RowState

__all__ = ["Answer", "HorizonWorker", "Serving", "WorkerGone", "usable_cpus"]

log = logging.getLogger(__name__)

#: The directory holding the ``models`` package (the child imports from it).
_ROOT = Path(__file__).resolve().parents[1]
#: Seconds a job may take before the child is taken for stuck (10,000 rows: ~50 ms).
RESULT_TIMEOUT_S = 30.0


_GONE = object()  # the reader thread's last word: the socket closed


class WorkerGone(RuntimeError):
    """The child process died, hung or answered nonsense; compute in-process instead."""


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota
    (a container limited to ``cpus: 1`` sees all the host's CPUs in its mask)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


@dataclass(frozen=True, slots=True)
class Serving:
    """The part of a job that serves the horizon and formats the tick's records.

    ``forecast`` (m, F) the tick's served next step (lead 1), ``reading`` (m, F) its
    readings (the bounds follow them); ``bounds`` the loop's own
    (:class:`models.bounds.Bounds`, None: none); ``reported`` the 0-based leads a
    record carries; ``output`` the tick's :class:`~pipeline.forecast_step.StepOutput`
    with its rows renumbered 0..m-1 and ``tank_ids`` in that order (None: no records
    wanted)."""

    forecast: FloatArray
    reading: FloatArray
    bounds: Any
    reported: NDArray[np.intp]
    output: Any = None
    tank_ids: list[str | None] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A job's result: ``horizon`` (steps, m, F), served when the job had a Serving
    part (then ``clipped`` (m,) counts the bounded forecasts per row); ``records``
    the tick's (key, value) forecast records, if they were asked for and formatted."""

    horizon: FloatArray
    clipped: NDArray[np.int64] | None = None
    records: list[tuple[bytes, bytes]] | None = None


def _child(fd: int, model_dir: str) -> int:
    """The child's loop: load the engine, then answer jobs until the socket closes."""
    # Ctrl-C reaches the whole process group: the parent stops (and closes our socket);
    # a KeyboardInterrupt traceback here would only add noise to its one-line exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")  # one core: the loop has the other
    except ImportError:
        pass
    from models.artifact import load_forecaster
    from pipeline.sinks.forecasts import encode_records

    try:
        engine: Any = load_forecaster(model_dir, "numpy", 0)
    except Exception as exc:  # reported to the parent, which then runs without us
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return 1
    conn.send(("ready", None))
    encode_args: tuple[Any, ...] | None = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone (or closed us)
            return 0
        if msg[0] == "configure":
            encode_args = msg[1]
            continue
        _, steps, state, serving = msg
        m = int(state.last_forecast.shape[0])
        if engine.n_rows < m:
            engine.add_rows(m - engine.n_rows)
        rows = np.arange(m)
        engine.restore(rows, state)
        full = engine.forecast(int(steps), rows)
        answer = Answer(full)
        if serving is not None:
            # What ForecastStep._served_horizon does when the gate is all LSTM.
            full[0] = serving.forecast
            clipped = None
            if serving.bounds is not None:
                tail, clipped = serving.bounds.clip(full[1:], serving.reading, 2)
                full[1:] = np.asarray(tail, np.float32)
            records = None
            if serving.output is not None and encode_args is not None:
                serving.output.horizons[:] = full.transpose(1, 0, 2)[:, serving.reported]
                records = encode_records(serving.output, serving.tank_ids or [], *encode_args)
            answer = Answer(full, clipped, records)
        try:
            conn.send(answer)
        except OSError:
            return 0


class HorizonWorker:
    """One child process computing horizons for an engine loaded from ``model_dir``.

    Jobs are answered in order: :meth:`submit` any number, then :meth:`result` once
    per job, oldest first. A writer thread puts jobs on the socket and a reader thread
    takes answers off it: a job (~0.4 MB at 1,000 tanks) is larger than a socket
    buffer, and the loop must not wait while the child finishes the job before it
    (measured: 9.5 ms per submit when the loop wrote itself), nor may both sides
    ever block writing to each other. The caller serialises submit/result (the
    service's work lock does).
    """

    def __init__(self, model_dir: str | os.PathLike[str]) -> None:
        # A plain child process (no fork: the parent has client threads running; no
        # multiprocessing spawn: it would re-import the parent's __main__).
        ours, theirs = socket.socketpair()
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        with ours, theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(model_dir)],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
            # Only the child holds its end now: it sees EOF when ours closes, also
            # when this process is killed.
            self._conn: Connection | None = Connection(ours.detach())
        self._answers: queue.Queue[Any] = queue.Queue()
        self._started = threading.Event()
        self._start_problem: str | None = None
        self._running = False  # the child said it is ready
        self._in_flight = 0
        self.jobs = 0
        #: configure() was called: jobs with an output get their records formatted.
        self.encodes = False
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        for target, name in ((self._read, "reader"), (self._write, "writer")):
            threading.Thread(
                target=target, args=(self._conn,), name=f"horizon-worker-{name}", daemon=True
            ).start()

    def _write(self, conn: Connection) -> None:
        """The writer thread: queued messages onto the socket (None: stop)."""
        while (payload := self._outbox.get()) is not None:
            try:
                conn.send_bytes(payload)
            except OSError as exc:  # the child is gone: the reader says so to result()
                log.debug("horizon worker: send failed", extra={"error": str(exc)})
                return

    def _post(self, message: tuple[Any, ...]) -> None:
        # Pickled here (the caller's thread), written by the writer thread.
        self._outbox.put(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def _read(self, conn: Connection) -> None:
        """The reader thread: the child's hello, then its answers, into the queue."""
        try:
            kind, detail = conn.recv()
            if kind != "ready":
                self._start_problem = str(detail)
                return
            self._running = True
            self._started.set()
            while True:
                self._answers.put(conn.recv())
        except (EOFError, OSError) as exc:
            self._start_problem = self._start_problem or f"{type(exc).__name__}: {exc}"
        finally:
            self._answers.put(_GONE)
            self._started.set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def ready(self, wait_s: float = 0.0) -> bool:
        """True once the child has loaded its engine (waits up to ``wait_s``)."""
        if self._conn is None:
            return False
        if not self._started.wait(wait_s):
            return False
        if not self._running:
            self._gone(f"did not start: {self._start_problem}")
            return False
        return self._conn is not None

    @property
    def alive(self) -> bool:
        return self._conn is not None

    def configure(self, encode_args: tuple[Any, ...]) -> None:
        """The forecast sink's settings after the StepOutput and tank ids of
        ``encode_records``: with them the child formats the records of jobs that ask."""
        if self._conn is None:
            return
        self._post(("configure", encode_args))
        self.encodes = True

    def submit(self, steps: int, state: RowState, serving: Serving | None = None) -> None:
        """Queue the horizon (``steps`` x rows x F) of the rows whose state is given
        (and serve it, and format the records, as ``serving`` says)."""
        if self._conn is None or not self.ready():
            raise WorkerGone("no job can be started")
        self._post(("job", steps, state, serving))
        self._in_flight += 1

    def result(self, timeout_s: float = RESULT_TIMEOUT_S) -> Answer:
        """The oldest unanswered job's answer; raises :class:`WorkerGone`."""
        if self._conn is None or self._in_flight == 0:
            raise WorkerGone("no job is running")
        self._in_flight -= 1
        try:
            out = self._answers.get(timeout=timeout_s)
        except queue.Empty:
            self._gone(f"no answer in {timeout_s:.0f} s")
            raise WorkerGone("timeout") from None
        if not isinstance(out, Answer):
            self._gone(f"died ({self._start_problem})" if out is _GONE else "bad answer")
            raise WorkerGone("no answer")
        self.jobs += 1
        return out

    def _gone(self, why: str) -> None:
        log.warning(
            "horizon worker stopped; horizons are computed in the loop until a new one runs",
            extra={"reason": why, "pid": self._proc.pid},
        )
        self.close()

    def close(self) -> None:
        """Stop the child (its socket closes, it exits; killed if it lingers)."""
        conn, self._conn = self._conn, None
        self._in_flight = 0
        self._outbox.put(None)
        if conn is not None:
            # shutdown() first: it wakes the reader thread blocked in recv (close()
            # alone would not), which then ends.
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as s:
                s.shutdown(socket.SHUT_RDWR)
            conn.close()
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=2)


if __name__ == "__main__":
    # Through the package's module, not __main__: pickled answers must name classes
    # the parent can import (pipeline.horizon_worker.Answer).
    from pipeline.horizon_worker import _child as child

    sys.exit(child(int(sys.argv[1]), sys.argv[2]))
