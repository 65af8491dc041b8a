"""Bad operator input: every mistake gives one clear line on stderr, a non-zero exit,
and never a hang or a traceback.

All cases run as real ``tankwatch`` processes, started together (most of them wait on
the network or on nothing, so running them side by side keeps the suite short) and
each bounded by a 40 s timeout: a hang is a failure, not a stuck suite.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tankwatch.topics import Topics
from tests.reliability.support import tankwatch_command

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

#: Longest any bad invocation may take before it counts as a hang.
TIMEOUT_S = 40.0
DEAD = "127.0.0.1:1"  # nothing listens on port 1


@dataclass(frozen=True)
class Case:
    """One bad invocation: ``args`` for ``tankwatch``, extra ``env``, and a word the
    error line must contain (so the message names what is wrong)."""

    name: str
    args: tuple[str, ...]
    hint: str
    env: tuple[tuple[str, str], ...] = ()


def _artifact(src: Path, dst: Path, edit: Callable[[Path], object]) -> Path:
    shutil.copytree(src, dst)
    edit(dst)
    return dst


def _edit_metadata(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        meta = json.loads((path / "metadata.json").read_text())
        fn(meta)
        (path / "metadata.json").write_text(json.dumps(meta))

    return edit


def _reverse_features(meta: dict) -> None:
    meta["features"] = list(reversed(meta["features"]))


def _drop_scaler(meta: dict) -> None:
    del meta["scaler"]


def _bad_interval(meta: dict) -> None:
    meta["tick_interval_s"] = -60


def _cases(tmp: Path, bootstrap: str, topics: Topics, model: Path) -> list[Case]:
    """The table of mistakes (files they need are created under ``tmp``)."""
    corrupt_json = _artifact(
        model, tmp / "corrupt-json", lambda p: (p / "metadata.json").write_text("{not json")
    )
    reversed_features = _artifact(model, tmp / "reversed", _edit_metadata(_reverse_features))
    no_scaler = _artifact(model, tmp / "no-scaler", _edit_metadata(_drop_scaler))
    bad_interval = _artifact(model, tmp / "bad-interval", _edit_metadata(_bad_interval))
    no_weights = _artifact(model, tmp / "no-weights", lambda p: (p / "weights.npz").unlink())
    (tmp / "garbage.csv.gz").write_bytes(b"\x00\x01 this is not gzip \xff" * 50)
    (tmp / "binary.csv").write_bytes(os.urandom(2048))
    (tmp / "columns.csv").write_text("time,tank,p\n2024-01-01T00:00:00Z,T1,101\n")
    with gzip.open(tmp / "truncated.csv.gz", "wb") as f:
        f.write(b"ts,tank_id,pressure_kpa,temperature_c\n" * 2000)
    data = (tmp / "truncated.csv.gz").read_bytes()
    (tmp / "truncated.csv.gz").write_bytes(data[: len(data) // 2])
    (tmp / "a-directory.csv").mkdir()
    ok_run = (
        "--bootstrap", bootstrap, "--http-port", "0", "--state-dir", str(tmp / "state"),
        "--topic-readings", topics.readings, "--topic-dlq", topics.dlq,
        "--topic-forecasts", topics.forecasts, "--topic-state", topics.state,
    )  # fmt: skip

    def run(*extra: str) -> tuple[str, ...]:
        return ("run", *ok_run, *extra)

    return [
        # tankwatch run
        Case("run: broker unreachable", ("run", "--bootstrap", DEAD, "--http-port", "0",
             "--state-dir", str(tmp / "s1"), "--connect-timeout-s", "3"), DEAD),
        Case("run: broker unreachable, default wait", ("run", "--http-port", "0",
             "--state-dir", str(tmp / "s2")), DEAD, (("KAFKA_BOOTSTRAP", DEAD),)),
        Case("run: missing topic", run("--topic-readings", "no.such.topic"), "no.such.topic"),
        Case("run: missing artifact", run("--model", str(tmp / "nowhere")), "nowhere"),
        Case("run: metadata not JSON", run("--model", str(corrupt_json)), "metadata"),
        Case("run: feature order swapped", run("--model", str(reversed_features)), "feature"),
        Case("run: scaler missing", run("--model", str(no_scaler)), "scaler"),
        Case("run: negative tick interval", run("--model", str(bad_interval)), "interval"),
        Case("run: weights missing", run("--model", str(no_weights)), "weights"),
        Case("run: port not a number", run("--http-port", "eighty"), "eighty"),
        Case("run: unknown engine", run("--engine", "tensorrt"), "engine"),
        Case("run: zero checkpoint interval", run("--checkpoint-interval-s", "0"), "checkpoint"),
        Case("run: bad boolean", run("--forecasts-topic", "maybe"), "maybe"),
        Case("run: unknown flag", run("--turbo"), "--turbo"),
        Case("run: bad env value", run(), "TANKWATCH_HORIZON", (("TANKWATCH_HORIZON", "x"),)),
        # tankwatch replay
        Case("replay: broker unreachable", ("replay", "--bootstrap", DEAD, "--no-progress",
             "data/history.csv.gz"), DEAD),
        Case("replay: no such file", ("replay", "--bootstrap", bootstrap, "--no-progress",
             str(tmp / "missing.csv")), "missing.csv"),
        Case("replay: not gzip", ("replay", "--bootstrap", bootstrap, "--no-progress",
             str(tmp / "garbage.csv.gz")), "garbage.csv.gz"),
        Case("replay: truncated gzip", ("replay", "--bootstrap", bootstrap, "--no-progress",
             "--topic", topics.readings, str(tmp / "truncated.csv.gz")), "truncated.csv.gz"),
        Case("replay: binary file", ("replay", "--bootstrap", bootstrap, "--no-progress",
             str(tmp / "binary.csv")), "binary.csv"),
        Case("replay: a directory", ("replay", "--bootstrap", bootstrap, "--no-progress",
             str(tmp / "a-directory.csv")), "a-directory.csv"),
        Case("replay: missing columns", ("replay", "--bootstrap", bootstrap, "--no-progress",
             str(tmp / "columns.csv")), "column"),
        Case("replay: negative speed", ("replay", "--bootstrap", bootstrap, "--speed", "-5",
             "data/history.csv.gz"), "speed"),
        Case("replay: missing topic", ("replay", "--bootstrap", bootstrap, "--no-progress",
             "--topic", "no.such.topic", "data/history.csv.gz"), "no.such.topic"),
        # tankwatch train / evaluate
        Case("train: no such data", ("train", "--data", str(tmp / "missing.csv"), "--out",
             str(tmp / "out1"), "--quiet"), "missing.csv"),
        Case("train: binary data", ("train", "--data", str(tmp / "binary.csv"), "--out",
             str(tmp / "out2"), "--quiet"), "binary.csv"),
        Case("evaluate: missing artifact", ("evaluate", "--model", str(tmp / "nowhere"),
             "--quiet"), "nowhere"),
        Case("evaluate: feature order swapped", ("evaluate", "--model", str(reversed_features),
             "--out", str(tmp / "eval"), "--quiet"), "feature"),
        Case("evaluate: unreadable data", ("evaluate", "--data", str(tmp / "garbage.csv.gz"),
             "--out", str(tmp / "eval2"), "--quiet"), "garbage.csv.gz"),
        # tankwatch topics
        Case("topics create: broker unreachable", ("topics", "create", "--bootstrap", DEAD),
             DEAD),
    ]  # fmt: skip


def _error_lines(stderr: str) -> list[str]:
    """stderr without JSON log records (those go to stderr by design)."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("{")]


def test_bad_operator_input_fails_fast_with_one_clear_line(
    kafka_bootstrap: str,
    make_topics: Callable[..., Topics],
    model_copy: Path,
    tmp_path: Path,
) -> None:
    topics = make_topics()
    cases = _cases(tmp_path, kafka_bootstrap, topics, model_copy)
    procs = []
    for case in cases:
        procs.append(
            subprocess.Popen(
                [*tankwatch_command(), *case.args],
                env={**os.environ, "TANKWATCH_ENGINE": "numpy", **dict(case.env)},
                cwd=Path(__file__).resolve().parents[2],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + TIMEOUT_S
    problems = []
    for case, proc in zip(cases, procs, strict=True):
        try:
            _out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            problems.append(f"{case.name}: still running after {TIMEOUT_S:.0f} s (a hang)")
            continue
        lines = _error_lines(err)
        last = lines[-1] if lines else ""
        print(f"{case.name:40s} exit {proc.returncode}: {last}")
        if proc.returncode == 0:
            problems.append(f"{case.name}: exit 0")
        if "Traceback" in err:
            problems.append(f"{case.name}: traceback:\n{err[-1500:]}")
        elif not last.startswith("tankwatch") or "error" not in last:
            problems.append(f"{case.name}: last stderr line is not an error: {lines[-3:]}")
        elif case.hint.lower() not in last.lower():
            problems.append(f"{case.name}: error does not mention {case.hint!r}: {last}")
        # argparse prints its usage first; every other error is exactly one line.
        extra = [ln for ln in lines[:-1] if not ln.startswith(("usage:", " "))]
        if extra:
            problems.append(f"{case.name}: more than one line: {lines}")
    assert not problems, "\n".join(problems)
