"""Pipeline benchmark on the embedded broker (``--broker apache``: Apache Kafka):
end-to-end latency, and the largest fleet one process keeps up with.

Parts (all by default; pick with ``--parts``):

* ``throughput`` -- N tanks x T ticks (default 1,000 x 300) already in the topic.
  (a) raw kafka-python consume + ``json.loads`` of every value (the ceiling);
  (b) the pipeline end to end -- decode + validate, tick assembly, forecast step with
  a 30-tick horizon, anomaly scoring, metrics view, checkpoints (file + ``tank.state``)
  and commits -- with the ``tank.forecasts`` topic off and on; ratio b/a.
  The pipeline runs in-process (``pipeline.bootstrap.build_service``, its loop in a
  thread, like ``tankwatch demo``): the clock starts when its partitions are assigned
  (so the ~3 s group join is not counted) and stops when every reading is consumed and
  no tick is open. The raw consumer's clock starts at ``assign``.
* ``latency`` -- ``tankwatch run`` as a subprocess; 1,000 tanks at one tick per wall
  second with ``ts = now`` (an artifact copy with ``tick_interval_s = 1``, same
  weights). Latency of a tick = from the ``send()`` of its last reading to (1) its
  forecast visible on ``/metrics`` (``tankwatch_last_tick_timestamp_seconds`` reaching
  the tick; a watcher thread scrapes every 5 ms while a sent tick has not shown) and
  (2) all its records read back from ``tank.forecasts`` by a consumer. Warm-up ticks
  are skipped; a tick not visible 10 s after the last send counts as "not seen".
* ``eos`` (not in the default set; needs a broker with transactions: ``--broker
  apache`` or ``--bootstrap``) -- the cost of exactly-once outputs in one run:
  throughput in-process with transactions off and on, and the paced latency to
  ``tank.forecasts`` as its reader sees it (read_committed when transactional) with
  transactions off, and on at checkpoint intervals of 1 s and 0.25 s.
* ``scale`` -- the same paced run for growing fleets; a fleet "keeps up" when the
  producer could send each tick within its second and the p99 latency to
  ``tank.forecasts`` stays under one tick (1 s) with no backlog at the end.
* ``group`` (not in the default set) -- the paced full configuration with 1, 2 and 3
  instances in one consumer group over 6 partitions (``--group-tanks``,
  ``--group-instances``): what the capacity plan in docs/performance.md extrapolates.

Usage::

    .venv/bin/python bench/pipeline.py [--parts throughput latency scale]
        [--tanks 1000] [--ticks 300] [--latency-ticks 30] [--scale 1000 2000 5000 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    fast_artifact,
    fleet_values,
    machine,
    percentile,
    produce,
    producer,
    table,
)
from tankwatch.broker import EmbeddedBroker, free_port  # noqa: E402
from tankwatch.topics import Topics, create_topics  # noqa: E402

PARTITIONS = 4
#: Partitions of the consumer-group part (split evenly by 1, 2 or 3 instances).
GROUP_PARTITIONS = 6


def new_topics(bootstrap: str, tag: str, partitions: int = PARTITIONS) -> Topics:
    s = f"{tag}.{uuid.uuid4().hex[:6]}"
    topics = Topics(f"r.{s}", f"d.{s}", f"f.{s}", f"s.{s}")
    create_topics(bootstrap, topics, partitions)
    return topics


# ------------------------------------------------------------------ throughput
def raw_consume(
    bootstrap: str, topic: str, total: int, fast_reader: bool = False
) -> tuple[float, float]:
    """Seconds (wall, and CPU of this process) for a bare kafka-python consumer to read
    and ``json.loads`` ``total`` messages (manual assign, from the beginning, large polls).
    ``fast_reader``: with the pipeline's record reader (``pipeline.record_batches``)."""
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.record_batches import install

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=5000,
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    if fast_reader and not install(consumer):
        raise RuntimeError("the fast record reader declined this kafka-python")
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    loads = json.loads
    while n < total:
        for msgs in consumer.poll(timeout_ms=500).values():
            for m in msgs:
                loads(m.value)
            n += len(msgs)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    consumer.close()
    return elapsed, cpu


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of a running process so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pipeline_inprocess(
    bootstrap: str,
    topics: Topics,
    total: int,
    forecasts_on: bool,
    model_dir: Path,
    tmp: Path,
    horizon: int = 30,
    exactly_once: str = "off",
    horizon_stride: int = 1,
    horizon_worker: str = "auto",
) -> dict[str, float]:
    """Run the service in this process over ``total`` readings already in the topic;
    returns seconds (from assignment to done), CPU seconds of this process and of its
    horizon worker (a child process, if the settings start one), checkpoints."""
    from prometheus_client import CollectorRegistry

    from pipeline.bootstrap import build_service
    from pipeline.config import Settings

    settings = Settings.from_env(
        environ={},
        bootstrap=bootstrap,
        topics=topics,
        state_dir=tmp / uuid.uuid4().hex[:6],
        group=f"bench-{uuid.uuid4().hex[:6]}",
        http_port=0,
        engine="numpy",
        model_dir=model_dir,
        forecasts_topic_enabled=forecasts_on,
        checkpoint_interval_s=2.0,
        horizon=horizon,
        horizons_reported=tuple(h for h in (1, 5, 15, 30) if h <= horizon),
        exactly_once=exactly_once,
        horizon_stride=horizon_stride,
        horizon_worker=horizon_worker,
    )
    svc = build_service(settings, CollectorRegistry())
    thread = threading.Thread(target=svc.run, name="pipeline", daemon=True)
    thread.start()
    deadline = time.monotonic() + 600
    while not svc.stats["assigned"]:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("pipeline never got its partitions")
        time.sleep(0.005)
    worker = svc.step.worker
    t0, c0 = time.perf_counter(), time.process_time()
    w0 = process_cpu(worker.pid) if worker is not None else 0.0
    while True:
        st = svc.stats
        if st["consumed"] >= total and st["held"] == 0:
            break
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"pipeline did not finish: {st}")
        time.sleep(0.02)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    worker_cpu = process_cpu(worker.pid) - w0 if worker is not None else 0.0
    stats = svc.stats
    svc.request_stop()
    thread.join(60)
    return {
        "seconds": elapsed,
        "cpu": cpu + worker_cpu,
        "worker_cpu": worker_cpu,
        "checkpoints": stats["checkpoints"],
        "ticks": sum(stats["ticks"].values()),
        "tanks": stats["tanks"],
    }


def bench_throughput(
    bootstrap: str, n_tanks: int, n_ticks: int, model_dir: Path, stride: int = 1
) -> str:
    from models.artifact import load_artifact

    interval = load_artifact(model_dir).tick_interval_s
    topics = new_topics(bootstrap, "tput")
    total, produce_s = produce(bootstrap, topics.readings, fleet_values(n_tanks, n_ticks, interval))
    print(f"produced {total:,} readings in {produce_s:.1f} s ({total / produce_s:,.0f}/s)")
    raw_s, raw_cpu = raw_consume(bootstrap, topics.readings, total)
    print(f"raw consume+decode: {raw_s:.2f} s, {raw_cpu:.2f} CPU s")
    fast_s, fast_cpu = raw_consume(bootstrap, topics.readings, total, fast_reader=True)
    print(f"raw consume+decode, tankwatch's record reader: {fast_s:.2f} s, {fast_cpu:.2f} CPU s")
    with tempfile.TemporaryDirectory() as tmp:
        off = pipeline_inprocess(bootstrap, topics, total, False, model_dir, Path(tmp))
        print(f"pipeline, forecasts topic off: {off}")
        on = pipeline_inprocess(bootstrap, topics, total, True, model_dir, Path(tmp))
        print(f"pipeline, forecasts topic on: {on}")
        in_loop = pipeline_inprocess(
            bootstrap, topics, total, True, model_dir, Path(tmp), horizon_worker="off"
        )
        print(f"pipeline, forecasts topic on, no horizon worker: {in_loop}")
        h1 = pipeline_inprocess(bootstrap, topics, total, False, model_dir, Path(tmp), 1)
        print(f"pipeline, forecasts topic off, horizon 1: {h1}")
        strided = None
        if stride > 1:
            strided = pipeline_inprocess(
                bootstrap, topics, total, True, model_dir, Path(tmp), horizon_stride=stride
            )
            print(f"pipeline, forecasts topic on, horizon stride {stride}: {strided}")
    raw_rate = total / raw_s
    rows = [["(a) raw kafka-python consume + json.loads", f"{raw_s:.2f}", f"{raw_rate:,.0f}",
             "1.00", f"{raw_cpu:.2f}", "1.00", f"{raw_cpu / raw_s:.2f}"]]  # fmt: skip
    rows.append(["(a') the same, with the pipeline's record reader (pipeline/record_batches)",
                 f"{fast_s:.2f}", f"{total / fast_s:,.0f}", f"{raw_s / fast_s:.2f}",
                 f"{fast_cpu:.2f}", f"{raw_cpu / fast_cpu:.2f}",
                 f"{fast_cpu / fast_s:.2f}"])  # fmt: skip
    for name, r in (
        ("(b) pipeline, forecasts topic off", off),
        ("(b) pipeline, forecasts topic on", on),
        ("(b) the same, horizon computed in the loop (--horizon-worker off)", in_loop),
        ("(b') pipeline, forecasts topic off, horizon 1 (no multi-step)", h1),
        *([(f"(b) pipeline, forecasts topic on, --horizon-stride {stride}", strided)]
          if strided else []),
    ):  # fmt: skip
        rate = total / r["seconds"]
        rows.append(
            [name, f"{r['seconds']:.2f}", f"{rate:,.0f}", f"{rate / raw_rate:.2f}",
             f"{r['cpu']:.2f}", f"{raw_cpu / r['cpu']:.2f}", f"{r['cpu'] / r['seconds']:.2f}"]
        )  # fmt: skip
    head = (
        f"Throughput: {n_tanks:,} tanks x {n_ticks} ticks = {total:,} readings already in "
        f"{PARTITIONS} partitions; pipeline in-process, NumPy engine, horizon 30; "
        f"checkpoint every 2 s; CPU of (b) includes its horizon worker process "
        f"(on: {on['worker_cpu']:.2f} s)\n\n"
    )
    return head + table(
        ["consumer", "seconds", "readings/s", "ratio to (a)", "CPU s",
         "CPU ratio (a)/(b)", "CPU cores used"],
        rows,
    )  # fmt: skip


# -------------------------------------------------------------------- paced
class PipelineChild:
    """``tankwatch run`` as a subprocess for the paced runs."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        model_dir: Path,
        tmp: Path,
        lean: bool = False,
        group: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": bootstrap,
            "TANKWATCH_MODEL": str(model_dir),
            "TANKWATCH_HTTP_PORT": str(self.port),
            "TANKWATCH_STATE_DIR": str(tmp / f"state-{self.port}"),
            "TANKWATCH_GROUP": group or f"bench-{uuid.uuid4().hex[:6]}",
            "TANKWATCH_ENGINE": "numpy",
            "TANKWATCH_TOPIC_READINGS": topics.readings,
            "TANKWATCH_TOPIC_DLQ": topics.dlq,
            "TANKWATCH_TOPIC_FORECASTS": topics.forecasts,
            "TANKWATCH_TOPIC_STATE": topics.state,
            "TANKWATCH_POLL_TIMEOUT_MS": "20",
            # Ticks at 1 s with ts = now: a reading a few seconds late is still on time.
            "TANKWATCH_ALLOWED_LATENESS_S": "5",
        }
        if lean:  # the core loop only: no forecast records, no per-tank series
            env["TANKWATCH_FORECASTS_TOPIC"] = "false"
            env["TANKWATCH_METRICS"] = "false"
        env.update(extra_env or {})
        self.log = open(tmp / f"pipeline-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "tankwatch"), "run"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    def assigned(self) -> list[int]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"pipeline exited with {self.proc.returncode}")
        try:
            status, body = self.get("/healthz", 2.0)
            if status == 200:
                return list(json.loads(body)["assigned_partitions"])
        except OSError:
            pass
        return []

    def wait_assigned(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.assigned():
                return
            time.sleep(0.1)
        raise RuntimeError("pipeline not assigned in time")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wait_group(children: list[PipelineChild], partitions: int, timeout_s: float = 90.0) -> None:
    """Until the instances of one consumer group own every partition exactly once, each
    at least one (the group has settled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        owned = [c.assigned() for c in children]
        flat = sorted(p for ps in owned for p in ps)
        if flat == list(range(partitions)) and all(owned):
            return
        time.sleep(0.2)
    raise RuntimeError("consumer group did not settle in time")


_LAST_TICK = re.compile(rb"^tankwatch_last_tick_timestamp_seconds (\S+)$", re.M)


def paced_run(
    bootstrap: str,
    n_tanks: int,
    n_ticks: int,
    model_dir: Path,
    tmp: Path,
    watch_metrics: bool,
    lean: bool = False,
    extra_env: dict[str, str] | None = None,
    isolation: str = "read_uncommitted",
    instances: int = 1,
    partitions: int = PARTITIONS,
    load: str = "batch",
) -> dict[str, Any]:
    """One paced run; returns latencies (s) per observer and producer figures. ``lean``:
    forecasts topic and per-tank metrics off (then only /metrics can be watched).
    ``instances`` > 1: that many pipelines in one consumer group (forecasts only).
    ``load``: how this process produces each tick's readings -- ``batch``, a tick at a
    time as record batches (the pipeline's BatchProducer, ~35 ms of CPU per 10,000
    readings), or ``send``, kafka-python's ``send`` per reading (~600 ms per 10,000 on
    these 2 cores, CPU the pipeline then does not have)."""
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.record_batches import install
    from pipeline.sinks.batch_produce import BatchProducer

    topics = new_topics(bootstrap, f"paced{n_tanks}", partitions)
    group = f"bench-{uuid.uuid4().hex[:6]}"
    children = [
        PipelineChild(bootstrap, topics, model_dir, tmp, lean, group, extra_env)
        for _ in range(instances)
    ]
    child = children[0]
    sent_at: dict[int, float] = {}
    send_s: list[float] = []
    seen_kafka: dict[int, float] = {}
    seen_metrics: dict[int, float] = {}
    scrape_s: list[float] = []
    stop = threading.Event()
    try:
        if instances == 1:
            child.wait_assigned()
        else:
            wait_group(children, partitions)
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                 enable_auto_commit=False, fetch_max_wait_ms=5,
                                 isolation_level=isolation)  # fmt: skip
        install(consumer)  # the pipeline's record reader: less of the 2 cores for reading back
        tps = [TopicPartition(topics.forecasts, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        counts: dict[int, int] = defaultdict(int)

        def read_forecasts() -> None:
            while not stop.is_set():
                for msgs in consumer.poll(timeout_ms=20).values():
                    now = time.time()
                    for m in msgs:
                        tick = int(m.value[m.value.index(b'"tick":') + 7 :].split(b",", 1)[0])
                        counts[tick] += 1
                        if counts[tick] == n_tanks:
                            seen_kafka[tick] = now

        def watch_last_tick() -> None:
            # Scrapes only while a sent tick has not shown yet (a scrape of 1,000 tanks'
            # series is ~5 ms of the pipeline's CPU), never blocking the producer.
            while not stop.is_set():
                pending = [t for t in list(sent_at) if t not in seen_metrics]
                if not pending:
                    time.sleep(0.002)
                    continue
                t0 = time.time()
                _, body = child.get("/metrics")
                now = time.time()
                scrape_s.append(now - t0)
                m = _LAST_TICK.search(body)
                if m:
                    last = float(m.group(1))
                    for t in pending:
                        if last >= t:
                            seen_metrics[t] = now
                time.sleep(0.005)

        reader = threading.Thread(target=read_forecasts, daemon=True)
        reader.start()
        watcher = threading.Thread(target=watch_last_tick, daemon=True)
        if watch_metrics:
            watcher.start()
        prod = producer(bootstrap)
        prod.partitions_for(topics.readings)  # metadata now, not in the first tick
        failed: list[int] = []
        batches = BatchProducer(prod, topics.readings, lambda n, exc: failed.append(n))
        keys = [f"T{k:05d}".encode() for k in range(n_tanks)]
        # Start at the next whole second; tick k is the wall second [k, k+1).
        next_t = math.floor(time.time()) + 1.0
        for _ in range(n_ticks):
            time.sleep(max(0.0, next_t - time.time()))
            t_start = time.time()
            tick = math.floor(t_start)
            ts = round(t_start, 3)
            records = [
                (
                    keys[k],
                    (
                        f'{{"tank_id":"{keys[k].decode()}","ts":{ts},'
                        f'"pressure_kpa":{220 + (k % 40) + 0.01 * (tick % 100):.3f},'
                        f'"temperature_c":{15 + (k % 10):.3f}}}'
                    ).encode(),
                )
                for k in range(n_tanks)
            ]
            if load == "batch":
                batches.send(records)
            else:
                for key, value in records:
                    prod.send(topics.readings, key=key, value=value)
            sent_at[tick] = time.time()  # the tick's last reading handed to the producer
            prod.flush()
            send_s.append(time.time() - t_start)
            next_t = float(tick + 1)
        prod.close()
        if failed:
            raise RuntimeError(f"{sum(failed)} readings of the load were not produced")
        # Let the last ticks drain (bounded).
        deadline = time.time() + 10
        seen = seen_metrics if lean else seen_kafka
        while time.time() < deadline and max(seen, default=0) < max(sent_at):
            time.sleep(0.05)
        rss = max(c.rss_mib() for c in children)
        ckpt = checkpoint_seconds(child)
        stop.set()
        reader.join(5)
        if watch_metrics:
            watcher.join(5)
        consumer.close()
    finally:
        for c in children:
            c.stop()
    warm = sorted(sent_at)[3:]  # the first ticks include new-tank setup
    lat_k = [seen_kafka[t] - sent_at[t] for t in warm if t in seen_kafka]
    lat_m = [seen_metrics[t] - sent_at[t] for t in warm if t in seen_metrics]
    return {
        "ticks": len(warm),
        "kafka": lat_k,
        "metrics": lat_m,
        "missing_kafka": sum(1 for t in warm if t not in seen_kafka),
        "missing_metrics": sum(1 for t in warm if t not in seen_metrics) if watch_metrics else 0,
        "send_s": send_s,
        "scrape_s": scrape_s,
        "rss_mib": rss,
        "checkpoint_s": ckpt,
    }


_CKPT = re.compile(rb"^tankwatch_checkpoint_seconds_(sum|count) (\S+)$", re.M)


def checkpoint_seconds(child: PipelineChild) -> tuple[int, float]:
    """(checkpoints so far, their mean seconds) from the instance's /metrics."""
    try:
        _, body = child.get("/metrics", 10.0)
    except OSError:
        return 0, math.nan
    got = {k.decode(): float(v) for k, v in _CKPT.findall(body)}
    n = int(got.get("count", 0))
    return n, (got.get("sum", math.nan) / n if n else math.nan)


def ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1000:.0f}"


def bench_latency(bootstrap: str, n_tanks: int, n_ticks: int, model_dir: Path, tmp: Path) -> str:
    r = paced_run(bootstrap, n_tanks, n_ticks, model_dir, tmp, watch_metrics=True)
    rows = []
    for name, lat, missing in (
        ("tank.forecasts (consumer, all records of the tick)", r["kafka"], r["missing_kafka"]),
        ("/metrics (last tick gauge, polled)", r["metrics"], r["missing_metrics"]),
    ):
        rows.append([name, len(lat), missing, ms(percentile(lat, 50)), ms(percentile(lat, 99)),
                     ms(max(lat) if lat else math.nan)])  # fmt: skip
    head = (
        f"Paced latency: {n_tanks:,} tanks, one tick per second, ts = now, "
        f"{r['ticks']} ticks measured (after 3 warm-up ticks); producer send+flush per tick "
        f"p50 {ms(percentile(r['send_s'], 50))} ms; a /metrics scrape took p50 "
        f"{ms(percentile(r['scrape_s'], 50))} ms; pipeline RSS {r['rss_mib']:.0f} MiB\n\n"
    )
    return head + table(["visible on", "ticks", "not seen", "p50 ms", "p99 ms", "max ms"], rows)


def bench_scale(
    bootstrap: str,
    sizes: list[int],
    n_ticks: int,
    model_dir: Path,
    tmp: Path,
    lean: bool,
    load: str = "batch",
) -> str:
    rows = []
    for n in sizes:
        r = paced_run(
            bootstrap, n, n_ticks, model_dir, tmp, watch_metrics=lean, lean=lean, load=load
        )
        lat, missing = (r["metrics"], r["missing_metrics"]) if lean else (
            r["kafka"], r["missing_kafka"])  # fmt: skip
        p99 = percentile(lat, 99)
        print(f"  {n:,} tanks, latency per tick, ms: {[round(v * 1000) for v in lat]}", flush=True)
        send99 = percentile(r["send_s"], 99)
        keeps = missing == 0 and p99 < 1.0 and send99 < 1.0
        n_ckpt, ckpt_s = r["checkpoint_s"]
        rows.append([f"{n:,}", r["ticks"], ms(percentile(r["send_s"], 50)), ms(send99),
                     ms(percentile(lat, 50)), ms(p99), missing,
                     f"{ms(ckpt_s)} ({n_ckpt})", f"{r['rss_mib']:.0f}",
                     "yes" if keeps else "no"])  # fmt: skip
        print(rows[-1], flush=True)
    what = (
        "lean: forecasts topic and per-tank metrics off; latency to the last-tick gauge on "
        "/metrics, scraped every 5 ms while a sent tick has not shown"
        if lean
        else "full: forecasts topic and per-tank metrics on; latency to tank.forecasts"
    )
    if os.environ.get("TANKWATCH_HORIZON_STRIDE", "1") != "1":
        what += f"; horizon stride {os.environ['TANKWATCH_HORIZON_STRIDE']}"
    how = "record batches (BatchProducer)" if load == "batch" else "send() per reading"
    head = (
        f"Scale ({what}): one pipeline process, one tick per second, {n_ticks} ticks per "
        f"fleet, the producer on the same 2 cores, a tick's readings produced as {how}\n\n"
    )
    return head + table(
        ["tanks", "ticks", "send p50 ms", "send p99 ms", "latency p50 ms", "latency p99 ms",
         "ticks not seen", "checkpoint ms, mean (count)", "RSS MiB", "keeps up"],
        rows,
    )  # fmt: skip


def bench_exactly_once(
    bootstrap: str, n_tanks: int, n_ticks: int, lat_tanks: int, lat_ticks: int,
    model_dir: Path, fast: Path, tmp: Path, rounds: int = 3,
) -> str:  # fmt: skip
    """The cost of exactly-once outputs, same broker, same run: throughput (in-process,
    forecasts topic on, checkpoint every 2 s) and paced latency to ``tank.forecasts``
    as its downstream reader sees it (read_committed when transactional), with
    transactions off and on; on, at two checkpoint intervals, which bound how long a
    committed reader waits."""
    from models.artifact import load_artifact

    interval = load_artifact(model_dir).tick_interval_s
    topics = new_topics(bootstrap, "eos")
    total, _ = produce(bootstrap, topics.readings, fleet_values(n_tanks, n_ticks, interval))
    # Interleaved rounds (off, on, off, on, ...): on a shared machine the load drifts
    # over minutes, so each "on" is compared with the "off" run just before it.
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for i in range(rounds):
        for mode in ("off", "on"):
            got = pipeline_inprocess(
                bootstrap, topics, total, True, model_dir, tmp, exactly_once=mode
            )
            runs[mode].append(got)
            print(f"round {i + 1}, throughput, exactly-once {mode}: {got}", flush=True)
    rows = []
    for i in range(rounds):
        off, on = runs["off"][i], runs["on"][i]
        for mode, got in (("off", off), ("on", on)):
            rate = total / got["seconds"]
            rows.append([f"round {i + 1}: throughput, exactly-once {mode}", f"{rate:,.0f}",
                         f"{off['seconds'] / got['seconds']:.2f}", f"{got['cpu']:.1f}",
                         f"{got['cpu'] / off['cpu']:.2f}", "-", "-", "-"])  # fmt: skip
    for mode, ckpt in (("off", "10"), ("on", "1"), ("on", "0.25")):
        env = {"TANKWATCH_EXACTLY_ONCE": mode, "TANKWATCH_CHECKPOINT_INTERVAL_S": ckpt}
        iso = "read_committed" if mode == "on" else "read_uncommitted"
        r = paced_run(bootstrap, lat_tanks, lat_ticks, fast, tmp, watch_metrics=False,
                      extra_env=env, isolation=iso)  # fmt: skip
        print(f"paced, exactly-once {mode}, checkpoint {ckpt} s: p99 "
              f"{ms(percentile(r['kafka'], 99))} ms", flush=True)  # fmt: skip
        rows.append([f"paced latency, exactly-once {mode}, checkpoint every {ckpt} s ({iso})",
                     "-", "-", "-", "-", ms(percentile(r["kafka"], 50)),
                     ms(percentile(r["kafka"], 99)), r["missing_kafka"]])  # fmt: skip
    head = (
        f"Exactly-once cost: throughput over {n_tanks:,} tanks x {n_ticks} ticks "
        f"({total:,} readings, in-process, forecasts topic on, checkpoint every 2 s); "
        f"paced latency {lat_tanks:,} tanks x {lat_ticks} ticks at one tick per second, "
        "from the send of a tick's last reading to all its forecasts read back\n\n"
    )
    return head + table(
        ["run", "readings/s", "speed vs off (same round)", "CPU s", "CPU vs off (same round)",
         "latency p50 ms", "latency p99 ms", "ticks not seen"],
        rows,
    )  # fmt: skip


def bench_group(
    bootstrap: str, n_tanks: int, instances: list[int], n_ticks: int, model_dir: Path, tmp: Path
) -> str:
    """The full configuration with 1..k instances in one consumer group (6 partitions)."""
    rows = []
    for k in instances:
        r = paced_run(bootstrap, n_tanks, n_ticks, model_dir, tmp, watch_metrics=False,
                      instances=k, partitions=GROUP_PARTITIONS)  # fmt: skip
        lat, missing = r["kafka"], r["missing_kafka"]
        p99, send99 = percentile(lat, 99), percentile(r["send_s"], 99)
        keeps = missing == 0 and p99 < 1.0 and send99 < 1.0
        rows.append([k, f"{n_tanks:,}", r["ticks"], ms(percentile(r["send_s"], 50)), ms(send99),
                     ms(percentile(lat, 50)), ms(p99), missing, f"{r['rss_mib']:.0f}",
                     "yes" if keeps else "no"])  # fmt: skip
        print(rows[-1], flush=True)
    head = (
        f"Consumer group (full configuration; latency to tank.forecasts): {n_tanks:,} tanks, "
        f"one tick per second, {n_ticks} ticks, {GROUP_PARTITIONS} partitions, k instances "
        "(subprocesses) in one group, all on the same 2 cores with the producer and broker\n\n"
    )
    return head + table(
        ["instances", "tanks", "ticks", "send p50 ms", "send p99 ms", "latency p50 ms",
         "latency p99 ms", "ticks not seen", "max RSS MiB", "keeps up"],
        rows,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["throughput", "latency", "scale"],
                        choices=["throughput", "latency", "scale", "group", "eos"])  # fmt: skip
    parser.add_argument("--eos-rounds", type=int, default=3,
                        help="interleaved off/on throughput rounds of the 'eos' part")  # fmt: skip
    parser.add_argument("--group-tanks", type=int, default=10000)
    parser.add_argument("--group-instances", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--bootstrap", default=None,
        help="use this running Kafka instead of starting one (--broker); the 'eos' part "
        "needs one with transactions (Apache Kafka)",
    )  # fmt: skip
    parser.add_argument("--tanks", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--latency-tanks", type=int, default=1000)
    parser.add_argument("--latency-ticks", type=int, default=30)
    parser.add_argument("--scale", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    parser.add_argument("--scale-ticks", type=int, default=15)
    parser.add_argument(
        "--scale-mode", nargs="+", default=["full", "lean"], choices=["full", "lean"],
        help="full: forecasts topic + per-tank metrics; lean: both off",
    )  # fmt: skip
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: committed)")
    parser.add_argument(
        "--load", default="batch", choices=["batch", "send"],
        help="scale: how the paced load is produced on the same cores -- a tick's readings "
        "as record batches (BatchProducer, default; a producer on another machine takes "
        "none of the pipeline's CPU) or kafka-python's send() per reading (what "
        "this benchmark did until 2026-11-29: ~60%% of a core at 10,000 tanks)",
    )  # fmt: skip
    parser.add_argument(
        "--horizon-stride",
        type=int,
        default=1,
        help="throughput: also the full configuration with this --horizon-stride "
        "(scale/group: set TANKWATCH_HORIZON_STRIDE, the instances inherit it)",
    )
    parser.add_argument(
        "--broker", default="embedded", choices=["embedded", "apache"],
        help="embedded: Tansu (in memory); apache: Apache Kafka from its Maven jars "
        "(tankwatch.apache_kafka, log dir on disk)",
    )  # fmt: skip
    args = parser.parse_args()

    from pipeline.config import default_model_dir

    model_dir = args.model or default_model_dir()
    print(f"machine: {machine()}", flush=True)
    out = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.bootstrap:
            bootstrap = args.bootstrap
            print(f"broker: {bootstrap} (--bootstrap)", flush=True)
        elif args.broker == "apache":
            from tankwatch.apache_kafka import KAFKA_VERSION, ApacheKafka

            bootstrap = stack.enter_context(ApacheKafka(tmp / "kafka")).bootstrap
            print(f"broker: Apache Kafka {KAFKA_VERSION} (KRaft, one node)", flush=True)
        else:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
            print("broker: embedded Tansu (in memory)", flush=True)
        if "throughput" in args.parts:
            out.append(
                bench_throughput(bootstrap, args.tanks, args.ticks, model_dir, args.horizon_stride)
            )
            print(out[-1] + "\n", flush=True)
        fast = fast_artifact(model_dir, tmp / "model-1s", 1.0)
        if "latency" in args.parts:
            out.append(bench_latency(bootstrap, args.latency_tanks, args.latency_ticks, fast, tmp))
            print(out[-1] + "\n", flush=True)
        if "eos" in args.parts:
            out.append(
                bench_exactly_once(
                    bootstrap, args.tanks, args.ticks, args.latency_tanks, args.latency_ticks,
                    model_dir, fast, tmp, args.eos_rounds,
                )
            )  # fmt: skip
            print(out[-1] + "\n", flush=True)
        if "scale" in args.parts:
            for mode in args.scale_mode:
                out.append(
                    bench_scale(
                        bootstrap,
                        args.scale,
                        args.scale_ticks,
                        fast,
                        tmp,
                        mode == "lean",
                        args.load,
                    )
                )
                print(out[-1] + "\n", flush=True)
        if "group" in args.parts:
            out.append(
                bench_group(
                    bootstrap,
                    args.group_tanks,
                    args.group_instances,
                    args.scale_ticks,
                    fast,
                    tmp,
                )
            )
            print(out[-1] + "\n", flush=True)
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
