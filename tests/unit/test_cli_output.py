"""What the ``tankwatch`` command prints: one line per error at the default log level,
and ``--help`` that tells every default (issue 13).

The error paths run as real processes, started together and bounded by a timeout; none
needs a broker (a dead address is the error being tested).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import FIELDS
from tankwatch.cli import build_parser
from tests.conftest import REPO

DEAD = "127.0.0.1:1"  # nothing listens on port 1
TIMEOUT_S = 60.0


def _cases(tmp: Path) -> list[tuple[str, list[str]]]:
    wrong = tmp / "plant.csv"
    wrong.write_text("time,tank,p\n2024-01-01T00:00:00Z,T1,101\n")
    return [
        ("topics create: dead broker", ["topics", "create", "--bootstrap", DEAD]),
        ("topics create: bad partitions", ["topics", "create", "--partitions", "0"]),
        ("simulate: missing config", ["simulate", "--config", str(tmp / "no.json")]),
        ("replay: missing file", ["replay", str(tmp / "none.csv"), "--bootstrap", DEAD]),
        ("replay: dead broker", ["replay", str(wrong.parent / "ok.csv"), "--bootstrap", DEAD]),
        ("train: missing data", ["train", "--data", str(tmp / "none.csv"), "--out", str(tmp)]),
        ("evaluate: missing model", ["evaluate", "--model", str(tmp / "nowhere"), "--quiet"]),
        ("run: dead broker", ["run", "--bootstrap", DEAD, "--http-port", "0",
                              "--connect-timeout-s", "3", "--state-dir", str(tmp / "st")]),
        ("run: bad engine", ["run", "--engine", "bogus", "--http-port", "0"]),
        ("demo: wrong CSV format", ["demo", "--tanks-file", str(wrong), "--no-browser-hint"]),
        ("demo: missing file", ["demo", "--tanks-file", str(tmp / "nope.csv")]),
        ("demo: bad port", ["demo", "--http-port", "99999"]),
    ]  # fmt: skip


def _message_lines(stderr: str) -> list[str]:
    """stderr minus argparse's usage block (``usage:`` and its indented continuation)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return [ln for ln in lines if not ln.startswith(("usage:", " "))]


@pytest.mark.slow
def test_every_subcommand_error_is_one_line_at_the_default_log_level(tmp_path: Path) -> None:
    (tmp_path / "ok.csv").write_text(
        "ts,tank_id,pressure_kpa,temperature_c\n2024-01-01T00:00:00Z,T1,101.3,20.0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TANKWATCH_", "KAFKA_"))}
    env["TMPDIR"] = str(tmp_path)
    cases = _cases(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tankwatch.cli", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _, args in cases
    ]
    deadline = time.monotonic() + TIMEOUT_S
    problems = []
    for (name, _), proc in zip(cases, procs, strict=True):
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            problems.append(f"{name}: still running after {TIMEOUT_S:.0f} s")
            continue
        lines = _message_lines(err)
        if proc.returncode == 0:
            problems.append(f"{name}: exit 0")
        if len(lines) != 1:
            problems.append(f"{name}: {len(lines)} lines on stderr: {lines[:6]}")
        elif not lines[0].startswith("tankwatch") or "error" not in lines[0]:
            problems.append(f"{name}: not an error line: {lines[0]}")
        if "demo" in name and "running" in out:
            problems.append(f"{name}: announced the demo before failing: {out!r}")
    assert not problems, "\n".join(problems)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out[name] = child
                out.update({f"{name} {k}": v for k, v in _subparsers(child).items()})
    return out


def test_every_help_states_its_defaults() -> None:
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"topics create", "replay", "train", "evaluate", "run", "demo"} <= set(commands)
    missing = []
    for name, sub in commands.items():
        text = sub.format_help()  # formatting must not fail (e.g. a stray %)
        assert text
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.help is None:
                continue
            has_default = action.default is not None or name == "run"
            if has_default and "default" not in action.help.lower():
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing


def test_run_help_shows_defaults_choices_units_and_env() -> None:
    text = " ".join(_subparsers(build_parser())["run"].format_help().split())
    for spec in FIELDS:
        assert spec.env in text, spec.env
    assert "--engine {numpy,keras}" in text
    assert "--checkpoint-interval-s SECONDS" in text and "--poll-timeout-ms MS" in text
    assert "TANKWATCH_HTTP_PORT; default 8000" in text
    assert "TANKWATCH_HORIZONS; default 1,5,15,30" in text
    assert "TANKWATCH_TOPIC_READINGS; default tank.readings" in text
    assert "VALUE" not in text


def test_train_help_gives_the_training_defaults() -> None:
    text = " ".join(_subparsers(build_parser())["train"].format_help().split())
    for flag in ("--epochs", "--units", "--window", "--learning-rate", "--patience"):
        start = text.index(f"{flag} ", text.index("options:"))
        assert "default" in text[start : start + 200], flag


_TF_SCRIPT = """
import sys
from tankwatch.logs import setup_logging
setup_logging(sys.argv[1])
from models.network import import_keras
keras = import_keras()
import tensorflow as tf
print(float((tf.constant(1.0) + 1.0).numpy()))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("level", "quiet"), [("warning", True), ("debug", False)])
def test_tensorflow_start_up_is_silent_unless_debug(level: str, quiet: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", _TF_SCRIPT, level],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "2.0"
    if quiet:
        assert result.stderr == ""
    else:  # the native notices are still there for whoever asks
        assert "oneDNN" in result.stderr or "cuda" in result.stderr.lower()


def test_library_loggers_are_quiet_unless_asked() -> None:
    import logging

    from tankwatch.logs import setup_logging

    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("kafka").level)
    try:
        setup_logging("warning")
        assert not logging.getLogger("kafka.net.manager").isEnabledFor(logging.ERROR)
        setup_logging("info")
        assert logging.getLogger("kafka").isEnabledFor(logging.WARNING)
        assert not logging.getLogger("kafka").isEnabledFor(logging.INFO)
        setup_logging("debug")
        # kafka-python's DEBUG prints its config, SASL password included: never enabled.
        assert logging.getLogger("kafka").isEnabledFor(logging.WARNING)
        assert not logging.getLogger("kafka").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("tensorflow").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(before[0])
        root.handlers[:] = before[1]
        logging.getLogger("kafka").setLevel(before[2])


def test_simulate_help_gives_the_simulation_defaults() -> None:
    text = " ".join(_subparsers(build_parser())["simulate"].format_help().split())
    for needle in ("default 24", "default 14", "default 60", "default 20240301"):
        assert needle in text, needle


@pytest.mark.parametrize(
    ("env", "value", "flag"),
    [
        ("TANKWATCH_PRESSURE_MIN_KPA", "low", "--pressure-min-kpa"),
        ("TANKWATCH_CSV_PRESSURE_UNIT", "atm", "--pressure-unit"),
        ("TANKWATCH_CSV_SEP", "", None),  # empty = unset: the default, no error
    ],
)
def test_a_bad_csv_variable_is_one_line_naming_it_and_its_flag(
    env: str,
    value: str,
    flag: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tankwatch.cli import main

    monkeypatch.setenv(env, value)
    if flag is None:
        assert build_parser().parse_args(["replay", "x.csv"]).sep == ","
        return
    code = main(["replay", "missing.csv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert env in err[0] and flag in err[0] and repr(value) in err[0], err[0]
