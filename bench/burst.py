"""Burst benchmark (issue 10, item 9): a burst of new tank ids into one running pipeline.

For each configuration (``--configs``; by default ``default`` -- ``max_tanks`` 20,000,
the shipped default -- and ``unbounded`` -- ``TANKWATCH_MAX_TANKS=1000000``, tracking as
before the fix), in one run on one broker:

1. ``tankwatch run`` starts as a subprocess (``bench.pipeline.PipelineChild``: NumPy
   engine, an artifact copy with ``tick_interval_s = 1``, same weights) on fresh
   topics, with exactly-once outputs off (``--exactly-once``: the local journal and idle
   retiring exist only without them) and a checkpoint every ``--checkpoint-s`` s;
2. a producer thread sends a steady fleet (``--steady`` tanks ``S0000``...) one tick
   per wall second with ``ts = now`` for the whole run;
3. after ``--before-ticks`` ticks a second producer sends ``--burst`` readings, each of
   a new distinct tank id (``B000000``...), valid, ``ts = now`` at its send, as fast as
   it can;
4. once the group's committed offsets cover the burst (it is consumed and
   checkpointed), ``--after-ticks`` more steady ticks; then ``/metrics`` is scraped,
   the pipeline stopped (SIGTERM) and the forecasts and DLQ topics read back.

A sampler thread reads ``VmRSS`` of ``/proc/<pid>/status`` and the size of the local
journal every 0.1 s: a growth of the journal is one checkpoint's append (growths less
than half a checkpoint interval apart are one append; a drop is a compaction).
Reported per configuration: RSS before the burst / peak / at the end; ``/metrics``
body before and after; the state directory after; the journal bytes appended per
checkpoint before the burst and after it (median of the checkpoints once the burst is
checkpointed); ``too_many_tanks`` from
``tankwatch_readings_rejected_total`` and from the DLQ topic's ``reason`` headers; and
whether every steady tank got a forecast for every tick sent during and after the
burst (from ``tank.forecasts``; delay = the forecast record's timestamp, set when the
pipeline sent it, minus the send of the tick's last reading).

``--configs idle`` (not in the default set) is the default with
``TANKWATCH_TANK_IDLE_S=--idle-s``: the burst's tanks are retired during the after
phase, which shows what retiring gives back.

Usage::

    .venv/bin/python bench/burst.py [--burst 100000] [--steady 100]
        [--configs default unbounded idle] [--broker embedded|apache]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fast_artifact, machine, percentile, producer, table  # noqa: E402
from bench.pipeline import PARTITIONS, PipelineChild, new_topics  # noqa: E402
from tankwatch.broker import EmbeddedBroker  # noqa: E402
from tankwatch.topics import Topics  # noqa: E402

#: name -> (environment on top of PipelineChild's, what it is)
CONFIGS: dict[str, tuple[dict[str, str], str]] = {
    "default": ({}, "max_tanks 20,000 (default), idle retiring 1 day (default)"),
    "unbounded": (
        {"TANKWATCH_MAX_TANKS": "1000000"},
        "max_tanks 1,000,000 (tracking as before the fix)",
    ),
    "idle": ({}, "max_tanks 20,000, idle retiring after --idle-s"),
}

_REJECTED = re.compile(
    rb'^tankwatch_readings_rejected_total\{reason="too_many_tanks"\} (\S+)$', re.M
)
#: Seconds before the stop whose steady ticks are not judged (may still be open).
DRAIN_S = 8.0
_RETIRED = re.compile(rb"^tankwatch_tanks_retired_total (\S+)$", re.M)


def mib(n: float) -> str:
    return "-" if math.isnan(n) else f"{n / 2**20:,.1f}"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on ``topic`` (OffsetFetch; does not join)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        out = {}
        for p in range(PARTITIONS):
            got = c.committed(TopicPartition(topic, p))
            out[p] = -1 if got is None else int(got)
        return out
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: int(o) for tp, o in c.end_offsets(tps).items()}
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    ends = c.end_offsets(tps)
    out: list[Any] = []
    deadline = time.monotonic() + 300
    while any(c.position(tp) < ends[tp] for tp in tps):
        if time.monotonic() > deadline:
            raise RuntimeError(f"reading {topic} back timed out")
        for msgs in c.poll(timeout_ms=500).values():
            out.extend(msgs)
    c.close()
    return out


def steady_value(k: int, tick: int, ts: float) -> bytes:
    return (
        f'{{"tank_id":"S{k:04d}","ts":{ts},'
        f'"pressure_kpa":{220 + (k % 40) + 0.01 * (tick % 100):.3f},'
        f'"temperature_c":{15 + (k % 10):.3f}}}'
    ).encode()


def burst_run(
    bootstrap: str,
    name: str,
    extra_env: dict[str, str],
    n_steady: int,
    n_burst: int,
    before_ticks: int,
    after_ticks: int,
    model_dir: Path,
    tmp: Path,
    checkpoint_s: float,
) -> dict[str, Any]:
    """One configuration: steady fleet, burst, steady fleet; returns the figures."""
    topics: Topics = new_topics(bootstrap, f"burst-{name}")
    group = f"bench-{uuid.uuid4().hex[:6]}"
    child = PipelineChild(bootstrap, topics, model_dir, tmp, group=group, extra_env=extra_env)
    state_dir = tmp / f"state-{child.port}"
    r: dict[str, Any] = {"name": name}
    rss: list[tuple[float, float]] = []  # (time, MiB)
    journal: list[tuple[float, int]] = []  # (time, size) at each change
    sent_at: dict[int, float] = {}  # steady tick -> send() of its last reading
    stop = threading.Event()
    ticks_sent = [0]

    def sample() -> None:
        last = -1
        while not stop.is_set():
            now = time.time()
            with contextlib.suppress(OSError, ValueError):
                rss.append((now, child.rss_mib()))
            size = (
                sum(p.stat().st_size for p in state_dir.glob("*.jsonl"))
                if state_dir.exists()
                else 0
            )
            if size != last:
                journal.append((now, size))
                last = size
            time.sleep(0.1)

    def steady() -> None:
        prod = producer(bootstrap)
        next_t = math.floor(time.time()) + 1.0
        while not stop.is_set():
            time.sleep(max(0.0, next_t - time.time()))
            t_start = time.time()
            tick = math.floor(t_start)
            ts = round(t_start, 3)
            for k in range(n_steady):
                prod.send(
                    topics.readings, key=f"S{k:04d}".encode(), value=steady_value(k, tick, ts)
                )
            sent_at[tick] = time.time()
            prod.flush()
            ticks_sent[0] += 1
            next_t = float(tick + 1)
        prod.close()

    def wait_ticks(n: int) -> None:
        target = ticks_sent[0] + n
        while ticks_sent[0] < target:
            if child.proc.poll() is not None:
                raise RuntimeError(f"pipeline exited with {child.proc.returncode}")
            time.sleep(0.05)

    def scrape() -> tuple[bytes, float]:
        t0 = time.perf_counter()
        _, body = child.get("/metrics", timeout=300.0)
        return body, time.perf_counter() - t0

    threads = [threading.Thread(target=f, daemon=True) for f in (sample, steady)]
    try:
        child.wait_assigned(120.0)
        for t in threads:
            t.start()
        wait_ticks(before_ticks)
        body, r["scrape_before_s"] = scrape()
        r["metrics_before"] = len(body)
        r["rss_before"] = child.rss_mib()
        t_b0 = time.time()
        prod = producer(bootstrap)
        for i in range(n_burst):
            tid = f"B{i:06d}"
            value = (
                f'{{"tank_id":"{tid}","ts":{round(time.time(), 3)},'
                f'"pressure_kpa":{200 + i % 50:.3f},"temperature_c":{15 + i % 10:.3f}}}'
            ).encode()
            prod.send(topics.readings, key=tid.encode(), value=value)
        prod.flush()
        prod.close()
        t_b1 = time.time()
        r["burst_send_s"] = t_b1 - t_b0
        print(f"[{name}] burst of {n_burst:,} sent in {r['burst_send_s']:.1f} s", flush=True)
        ends = end_offsets(bootstrap, topics.readings)
        deadline = time.monotonic() + 600
        while True:
            got = committed_offsets(bootstrap, group, topics.readings)
            if all(got[p] >= ends[p] for p in ends):
                break
            if time.monotonic() > deadline or child.proc.poll() is not None:
                raise RuntimeError(f"burst not consumed: committed {got}, ends {ends}")
            time.sleep(1.0)
        t_done = time.time()
        r["burst_done_s"] = t_done - t_b0
        print(f"[{name}] burst consumed and checkpointed {r['burst_done_s']:.1f} s after its "
              f"first send; RSS {child.rss_mib():.0f} MiB", flush=True)  # fmt: skip
        wait_ticks(after_ticks)
        r["rss_after"] = child.rss_mib()
        r["state_dir_after"] = dir_bytes(state_dir)
        status, health = child.get("/healthz")
        r["tanks_after"] = json.loads(health)["tanks"] if status == 200 else -1
        body, r["scrape_after_s"] = scrape()
        r["metrics_after"] = len(body)
        m = _REJECTED.search(body)
        r["rejected_metric"] = float(m.group(1)) if m else 0.0
        m = _RETIRED.search(body)
        r["retired"] = float(m.group(1)) if m else 0.0
        t_end = time.time()
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        stop.set()
        child.stop()
    r["rss_peak"] = max((v for t, v in rss if t >= t_b0), default=math.nan)
    r["rss_start"] = rss[0][1] if rss else math.nan

    # Journal bytes appended per checkpoint: the growth between successive changes.
    # Checkpoints start at least ``checkpoint_s`` apart; a large append seen by several
    # samples (changes less than half an interval apart) is one checkpoint's.
    merged: list[tuple[float, int]] = []
    for t, s in journal:
        if merged and t - merged[-1][0] < checkpoint_s / 2 and s >= merged[-1][1]:
            merged[-1] = (merged[-1][0], s)
        else:
            merged.append((t, s))

    def appends(t_from: float, t_to: float) -> tuple[list[int], int]:
        pts = [(t, s) for t, s in merged if t_from <= t <= t_to]
        deltas = [b - a for (_, a), (_, b) in itertools.pairwise(pts)]
        return [d for d in deltas if d > 0], sum(1 for d in deltas if d < 0)

    before, _ = appends(0.0, t_b0)
    after, compactions = appends(t_done + 0.5, t_end)
    r["ckpt_burst"] = max(appends(t_b0, t_end)[0], default=math.nan)
    r["ckpt_before"] = statistics.median(before[1:]) if len(before) > 1 else math.nan
    r["ckpt_after"] = statistics.median(after) if after else math.nan
    r["ckpt_after_max"] = max(after, default=math.nan)
    r["ckpt_after_n"] = len(after)
    r["compactions_after"] = compactions
    r["journal_max"] = max((s for _, s in journal), default=0)
    r["journal_events"] = [(round(t - t_b0, 1), s) for t, s in merged]
    r["t_done"] = t_done - t_b0

    dlq = Counter(
        dict(m.headers or []).get("reason", b"?").decode()
        for m in read_topic(bootstrap, topics.dlq)
    )
    r["rejected_dlq"] = dlq.get("too_many_tanks", 0)
    r["dlq_other"] = sum(v for k, v in dlq.items() if k != "too_many_tanks")
    # Steady tanks' forecasts per tick (records keyed by tank id; the tick is epoch s).
    seen: dict[int, set[bytes]] = defaultdict(set)
    last_ts: dict[int, float] = {}
    burst_tanks = 0
    for m in read_topic(bootstrap, topics.forecasts):
        if m.key is None or not m.key.startswith(b"S"):
            burst_tanks += 1
            continue
        tick = int(m.value[m.value.index(b'"tick":') + 7 :].split(b",", 1)[0])
        seen[tick].add(m.key)
        last_ts[tick] = max(last_ts.get(tick, 0.0), m.timestamp / 1000)
    r["burst_forecasts"] = burst_tanks
    sent = sorted(sent_at)
    warm = sent[3:]  # the first ticks include new-tank setup

    def phase(lo: float, hi: float) -> tuple[int, int, list[float]]:
        ticks = [t for t in warm if lo <= sent_at[t] < hi]
        full = [t for t in ticks if len(seen.get(t, ())) == n_steady]
        delay = [last_ts[t] - sent_at[t] for t in full]
        return len(ticks), len(full), delay

    # A tick closes at the latest when the watermark passes it (allowed lateness 5 s in
    # PipelineChild): the ticks sent in the last DRAIN_S before the stop are left out.
    cut = t_end - DRAIN_S
    r["steady_before"] = phase(0.0, t_b0)
    r["steady_during"] = phase(t_b0, t_done)
    r["steady_after"] = phase(t_done, cut)
    return r


def report(results: list[dict[str, Any]], n_steady: int, n_burst: int) -> str:
    rows = []
    for r in results:
        rows.append([
            r["name"], f"{r['tanks_after']:,}",
            f"{r['rss_before']:.0f}", f"{r['rss_peak']:.0f}", f"{r['rss_after']:.0f}",
            f"{mib(r['metrics_before'])} ({r['scrape_before_s']:.2f} s)",
            f"{mib(r['metrics_after'])} ({r['scrape_after_s']:.1f} s)",
            mib(r["state_dir_after"]), mib(r["journal_max"]),
            f"{r['ckpt_before']:,.0f}", mib(r["ckpt_burst"]),
            f"{r['ckpt_after']:,.0f} (max {r['ckpt_after_max']:,.0f}, n={r['ckpt_after_n']}"
            + (f", {r['compactions_after']} compaction(s)" if r["compactions_after"] else "")
            + ")",
            f"{r['rejected_metric']:,.0f} / {r['rejected_dlq']:,}",
        ])  # fmt: skip
    memory = table(
        ["config", "tanks tracked after", "RSS before MiB", "RSS peak MiB", "RSS after MiB",
         "/metrics before MiB (scrape)", "/metrics after MiB (scrape)", "state dir after MiB",
         "journal max MiB", "bytes/checkpoint before burst", "largest checkpoint append MiB",
         "bytes/checkpoint after burst",
         "too_many_tanks (metric / DLQ topic)"],
        rows,
    )  # fmt: skip
    rows = []
    for r in results:
        cells = [r["name"], f"{r['burst_send_s']:.1f}", f"{r['burst_done_s']:.1f}",
                 f"{r['burst_forecasts']:,}", r["dlq_other"], f"{r['retired']:,.0f}"]  # fmt: skip
        for key in ("steady_before", "steady_during", "steady_after"):
            n, full, delay = r[key]
            worst = f"{max(delay):.1f}" if delay else "-"
            slow = sum(1 for d in delay if d > 1.0)
            cells.append(
                f"{full}/{n}, delay p50 {percentile(delay, 50):.2f} s, max {worst} s, "
                f"{slow} over 1 s"
            )
        rows.append(cells)
    flow = table(
        ["config", "burst sent in s", "burst consumed+checkpointed after s",
         "forecast records of burst tanks", "other DLQ reasons", "tanks retired",
         "steady ticks fully forecast: before burst", "during burst", "after burst"],
        rows,
    )  # fmt: skip
    return (
        f"Burst: {n_steady} steady tanks at one tick per second, then {n_burst:,} readings "
        "of new distinct tank ids as fast as the producer sends them, then the steady "
        "fleet again; one `tankwatch run` per configuration\n\n" + memory + "\n\n" + flow
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=100_000, help="new distinct tank ids")
    parser.add_argument("--steady", type=int, default=100, help="tanks of the steady fleet")
    parser.add_argument("--before-ticks", type=int, default=15)
    parser.add_argument(
        "--after-ticks", type=int, default=30,
        help="steady ticks once the burst is consumed and checkpointed",
    )  # fmt: skip
    parser.add_argument("--configs", nargs="+", default=["default", "unbounded"],
                        choices=list(CONFIGS))  # fmt: skip
    parser.add_argument("--checkpoint-s", type=float, default=2.0,
                        help="TANKWATCH_CHECKPOINT_INTERVAL_S of every configuration")  # fmt: skip
    parser.add_argument("--idle-s", type=float, default=10.0,
                        help="TANKWATCH_TANK_IDLE_S of the 'idle' configuration")  # fmt: skip
    parser.add_argument(
        "--exactly-once", default="off", choices=["off", "auto", "on"],
        help="TANKWATCH_EXACTLY_ONCE (off: the local journal and idle retiring are on; "
        "with transactions the checkpoint is tank.state alone)",
    )  # fmt: skip
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: committed)")
    parser.add_argument(
        "--broker", default="embedded", choices=["embedded", "apache"],
        help="embedded: Tansu (in memory); apache: Apache Kafka from its Maven jars",
    )  # fmt: skip
    parser.add_argument("--bootstrap", default=None, help="use this running Kafka instead")
    args = parser.parse_args()

    from pipeline.config import default_model_dir

    model_dir = args.model or default_model_dir()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()
    print(f"machine: {machine()}", flush=True)
    print(f"start {started}, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    results = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.bootstrap:
            bootstrap = args.bootstrap
            broker = f"{bootstrap} (--bootstrap)"
        elif args.broker == "apache":
            from tankwatch.apache_kafka import KAFKA_VERSION, ApacheKafka

            bootstrap = stack.enter_context(ApacheKafka(tmp / "kafka")).bootstrap
            broker = f"Apache Kafka {KAFKA_VERSION} (KRaft, one node)"
        else:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
            broker = "embedded Tansu (in memory)"
        print(f"broker: {broker}", flush=True)
        fast = fast_artifact(model_dir, tmp / "model-1s", 1.0)
        for name in args.configs:
            env = {
                **CONFIGS[name][0],
                "TANKWATCH_CHECKPOINT_INTERVAL_S": str(args.checkpoint_s),
                "TANKWATCH_EXACTLY_ONCE": args.exactly_once,
            }
            if name == "idle":
                env["TANKWATCH_TANK_IDLE_S"] = str(args.idle_s)
            print(f"[{name}] {CONFIGS[name][1]}; {env}", flush=True)
            r = burst_run(bootstrap, name, env, args.steady, args.burst, args.before_ticks,
                          args.after_ticks, fast, tmp, args.checkpoint_s)  # fmt: skip
            print(f"[{name}] {r}", flush=True)
            results.append(r)
    load1 = os.getloadavg()
    print()
    print(
        f"{broker}; exactly-once {args.exactly_once}; checkpoint every {args.checkpoint_s} s; "
        f"started {started}; load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
        f"at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}\n"
    )
    print(report(results, args.steady, args.burst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
