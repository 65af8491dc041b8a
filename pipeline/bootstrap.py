"""The one place that wires the application: config -> clients, model, sinks -> Service.

``build_service`` is what ``tankwatch run`` and ``tankwatch demo`` call (the demo runs
the service in a thread: nothing here installs signal handlers). Tests call it with
their own settings and a fresh ``CollectorRegistry``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.assembler import INTAKE_REJECTS, TickAssembler
from pipeline.checkpoint import Checkpointer, check_writable
from pipeline.config import Settings
from pipeline.consumer import ReadingsConsumer
from pipeline.dlq import DeadLetters
from pipeline.forecast_step import ForecastStep
from pipeline.horizon_worker import HorizonWorker, usable_cpus
from pipeline.ports import ConsumerLike, ModelInfo
from pipeline.service import Service
from pipeline.sinks.forecasts import ForecastSink
from pipeline.sinks.history import History
from pipeline.sinks.metrics import PipelineMetrics
from pipeline.transactions import (
    TransactionalOutputs,
    broker_has_transactions,
    default_transactional_id,
)
from tankwatch.codec import NO_KEY, REJECT_REASONS
from tankwatch.errors import BrokerError, ConfigError
from tankwatch.logs import quiet_kafka_logs

__all__ = ["build_service", "limit_blas_threads", "make_producer"]

log = logging.getLogger(__name__)


def make_producer(bootstrap: str, **config: Any) -> Any:
    """The shared producer: idempotent, acks=all, batched; sends never block for long.
    ``config``: more KafkaProducer arguments (security, ``transactional_id``)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            batch_size=256 * 1024,
            # A full buffer during an outage fails the send (counted) instead of
            # stalling the loop for a minute.
            max_block_ms=2000,
            client_id="tankwatch-pipeline",
            **config,
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from None


def transaction_timeout_s(settings: Settings) -> float:
    """How long the broker lets a checkpoint's transaction stay open before aborting it:
    a few checkpoint intervals, at least 10 s. A new owner's restore waits for (at
    most) this long on a transaction its frozen predecessor left open in ``tank.state``."""
    return max(10.0, 3.0 * settings.checkpoint_interval_s)


def _wait_tcp(bootstrap: str, timeout_s: float) -> None:
    """Until one bootstrap address accepts a TCP connection, or BrokerError.

    A cheap first gate: kafka-python's own bootstrap retries with growing back-off
    for ~30 s regardless of its timeouts, and logs every refusal.
    """
    addresses = []
    for part in bootstrap.split(","):
        host, _, port_text = part.strip().rpartition(":")
        try:
            addresses.append((host.strip("[]") or "localhost", int(port_text)))
        except ValueError:
            raise ConfigError(f"bad bootstrap address {part.strip()!r} (want host:port)") from None
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        for host, port in addresses:
            try:
                socket.create_connection((host, port), timeout=min(2.0, timeout_s)).close()
                return
            except OSError as exc:
                last = exc
        if time.monotonic() >= deadline:
            raise BrokerError(f"cannot reach Kafka at {bootstrap} within {timeout_s:g} s ({last})")
        time.sleep(0.2)


def _check_topics(
    bootstrap: str, settings: Settings, timeout_s: float, client: dict[str, Any] | None = None
) -> dict[int, Any]:
    """Bounded wait for the broker, then make sure the topics exist (one-line errors);
    returns the broker's ApiVersions (key -> (min, max); {} if unknown)."""
    _wait_tcp(bootstrap, timeout_s)
    hint = settings.security.hint()
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        with quiet_kafka_logs():  # our one-line error, not kafka-python's retries
            probe = KafkaConsumer(
                bootstrap_servers=bootstrap,
                request_timeout_ms=int(timeout_s * 1000),
                **(client or {}),
            )
        try:
            existing = probe.topics()
            data = getattr(getattr(probe, "_manager", None), "broker_version_data", None)
            api_versions = dict(getattr(data, "api_versions", None) or {})
        finally:
            probe.close()
    except KafkaError as exc:
        raise BrokerError(f"Kafka at {bootstrap} did not answer: {exc}{hint}") from None
    t = settings.topics
    needed = [t.readings, t.state] + ([t.forecasts] if settings.forecasts_topic_enabled else [])
    needed.append(t.dlq)
    missing = [name for name in needed if name not in existing]
    if missing:
        raise BrokerError(
            f"missing topic(s) {', '.join(missing)} on {bootstrap} "
            "(create them with `tankwatch topics create`)"
        )
    return api_versions


#: Environment variables through which a user picks the BLAS thread count himself.
_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> None:
    """One BLAS thread in this process, unless the environment chose a count.

    The per-tick matrix products are small (1,000 rows x a few hundred columns); a
    multi-threaded OpenBLAS gains little there, and on a busy machine its spinning
    worker threads turned the 30-tick horizon (~15 ms) into 70-230 ms stalls, the
    largest part of the paced latency (docs/performance.md). Process-wide and
    persistent (threadpoolctl); TensorFlow's own pools are not affected.
    """
    if any(v in os.environ for v in _BLAS_THREAD_VARS):
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a declared dependency; without it only speed suffers
        log.warning("threadpoolctl missing: BLAS thread count left as is")
        return
    threadpool_limits(limits=1, user_api="blas")


def horizon_worker_wanted(settings: Settings) -> bool:
    """Whether the settings call for a child process for per-tick horizons."""
    mode = settings.horizon_worker
    if mode == "off" or settings.engine != "numpy" or settings.horizon <= 1:
        return False
    return mode == "on" or (
        settings.forecasts_topic_enabled and settings.horizon_stride == 1 and usable_cpus() >= 2
    )


def start_horizon_worker(
    model_dir: str | os.PathLike[str], encode_args: tuple[object, ...] | None
) -> HorizonWorker:
    """A horizon worker (it loads its engine in the background; until it is ready the
    loop computes horizons), formatting records with the sink's ``encode_args`` (None:
    no forecasts topic, horizons only). Raises OSError when no process can start."""
    worker = HorizonWorker(model_dir)
    if encode_args is not None:
        worker.configure(encode_args)
    return worker


def build_service(settings: Settings, registry: CollectorRegistry | None = None) -> Service:
    """Build every part of one pipeline instance (raises TankwatchError subclasses)."""
    from models.anomaly import AnomalyScorer
    from models.artifact import load_artifact, load_forecaster
    from models.data_checks import artifact_reference, check_reference, range_bounds
    from tankwatch.codec import pressure_limits

    limit_blas_threads()
    # Before any client is built: a state dir that cannot be written is an operator
    # error (one line, exit 2), not a service that runs without ever checkpointing.
    check_writable(settings.state_dir)
    artifact = load_artifact(settings.model_dir)
    # The fleet's pressure reference must be the model's (one line, before any I/O).
    reference = settings.pressure_reference or artifact_reference(artifact.metadata)
    check_reference(artifact.metadata, reference, "the fleet (TANKWATCH_PRESSURE_REFERENCE)")
    engine = load_forecaster(settings.model_dir, settings.engine, n_rows=0)
    max_gap = settings.max_gap_ticks or artifact.max_gap_ticks
    from models.serving import ServingPlan

    plan = ServingPlan.from_artifact(artifact)
    sources = plan.sources(artifact.features, settings.horizons_reported)
    model = ModelInfo(
        model_version=artifact.model_version,
        engine=settings.engine,
        tick_interval_s=artifact.tick_interval_s,
        max_gap_ticks=max_gap,
        path=str(settings.model_dir),
        sources=sources,
        pressure_reference=reference,
        pressure_range=pressure_limits(
            reference, settings.pressure_min_kpa, settings.pressure_max_kpa
        ),
        value_range=range_bounds(artifact.metadata, artifact.features),
    )
    security = settings.security.client_kwargs()
    api_versions = _check_topics(settings.bootstrap, settings, settings.connect_timeout_s, security)
    topics = settings.topics
    exactly_once = settings.exactly_once == "on" or (
        settings.exactly_once == "auto" and broker_has_transactions(api_versions)
    )
    restore_timeout_s = 30.0
    reader = dict(security)
    producer: Any
    if exactly_once:
        txn_timeout_s = transaction_timeout_s(settings)
        tid = settings.transactional_id or default_transactional_id(
            settings.group, settings.state_dir
        )

        def make_txn_producer() -> Any:
            return make_producer(
                settings.bootstrap,
                transactional_id=tid,
                transaction_timeout_ms=int(txn_timeout_s * 1000),
                **security,
            )

        producer = TransactionalOutputs(
            make_txn_producer, topics.readings, init_timeout_s=settings.connect_timeout_s * 2
        )
        reader["isolation_level"] = "read_committed"
        # A restore may wait for a transaction a frozen predecessor left open.
        restore_timeout_s += txn_timeout_s
    else:
        producer = make_producer(settings.bootstrap, **security)
    log.info(
        "outputs",
        extra={
            "exactly_once": exactly_once,
            "mode": settings.exactly_once,
            "security": settings.security.describe(),
        },
    )
    scorer = AnomalyScorer(
        0,
        alpha=settings.anomaly_alpha,
        threshold=settings.anomaly_threshold,
        consecutive=settings.anomaly_consecutive,
        warmup=settings.anomaly_warmup,
        n_features=engine.n_features,
    )
    step = ForecastStep(
        engine,
        scorer,
        settings.horizon,
        settings.horizons_reported,
        artifact.scaler.std,
        plan,
        horizon_stride=settings.horizon_stride,
    )
    assembler = TickAssembler(
        artifact.tick_interval_s,
        settings.allowed_lateness_s,
        max_gap,
        max_skew_s=settings.max_clock_skew_s,
        max_tanks=settings.max_tanks,
    )
    checkpointer = Checkpointer(
        producer,
        settings.bootstrap,
        topics.state,
        settings.state_dir,
        settings.group,
        topics.readings,
        timeout_s=restore_timeout_s,
        model_version=artifact.model_version,
        client_config=reader,
        use_file=not exactly_once,
    )
    forecasts = (
        ForecastSink(
            producer,
            topics.forecasts,
            artifact.tick_interval_s,
            settings.horizons_reported,
            artifact.model_version,
            topics.readings,
            plan.sources(artifact.features, (1, *settings.horizons_reported)),
        )
        if settings.forecasts_topic_enabled
        else None
    )
    metrics = PipelineMetrics(
        registry if registry is not None else CollectorRegistry(),
        artifact.model_version,
        settings.engine,
        artifact.tick_interval_s,
        (*REJECT_REASONS, NO_KEY, *INTAKE_REJECTS),
        per_tank=settings.metrics_enabled,
        sources=sources,
        horizons=settings.horizons_reported,
    )

    if isinstance(producer, TransactionalOutputs):
        producer.on_outcome = lambda outcome: metrics.transactions.labels(outcome).inc()
        metrics.transaction_open.set_function(producer.open_seconds)

    def make_consumer(on_revoked: Any, on_assigned: Any, on_lost: Any) -> ConsumerLike:
        return ReadingsConsumer(
            settings.bootstrap,
            topics.readings,
            settings.group,
            on_revoked,
            on_assigned,
            on_lost,
            max_poll_records=settings.max_poll_records,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            client_config=reader,
        )

    try:
        service = Service(
            settings,
            model,
            make_consumer,
            producer,
            assembler,
            step,
            checkpointer,
            DeadLetters(
                producer, topics.dlq, settings.dlq_max_bytes, metrics.dead_letters_truncated
            ),
            forecasts,
            History(settings.history_len),
            metrics,
        )
    except Exception:
        producer.close(timeout=1)
        raise
    # Last, so that nothing above can fail with the child already started.
    if horizon_worker_wanted(settings):
        args = forecasts.encode_args() if forecasts is not None else None
        service.use_horizon_worker(partial(start_horizon_worker, settings.model_dir, args))
    return service
