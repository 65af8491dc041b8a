"""Apache Kafka without Docker: the broker's own jars from Maven Central, run by a JVM.

The jars of ``org.apache.kafka:kafka_2.13:KAFKA_VERSION`` (+ log4j2 behind slf4j) are
resolved once by the committed descriptor ``deploy/kafka/pom.xml`` into a cache outside
the source tree (:func:`cache_dir`, ``~/.cache/tankwatch/kafka-<version>/lib``); every
later start only launches ``java``. The version is the one of ``docker-compose.yml``.

:class:`ApacheKafka` runs one broker or a small cluster on loopback ports, every node in
KRaft *combined* mode (broker and controller in one process, a static quorum of all
nodes), with its log directory on disk under ``workdir``. Its API is kept stable for the
test fixtures and other branches::

    kafka = ApacheKafka(workdir, port=0, brokers=1, extra_props={...}).start()
    kafka.bootstrap         # "127.0.0.1:PORT[,127.0.0.1:PORT...]"
    kafka.kill(i)           # SIGKILL node i (its log directory stays)
    kafka.restart(i)        # start node i again on the same log directory and port
    kafka.freeze(i) / kafka.thaw(i)   # SIGSTOP / SIGCONT (an outage without a restart)
    kafka.stop()            # always: SIGTERM, then SIGKILL after a grace period

``test_props(...)`` are the settings the test suite adds (aggressive compaction, short
group sessions allowed, tiny internal topics). ``python -m tankwatch.apache_kafka``
(``make kafka``) runs one broker for a user until Ctrl-C; ``... jars`` only resolves.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tankwatch.broker import free_port
from tankwatch.errors import BrokerError

log = logging.getLogger(__name__)

#: The pinned broker version: also ``deploy/kafka/pom.xml`` and ``apache/kafka:<version>``
#: in ``docker-compose.yml`` (a unit test keeps the three equal). kafka-python 3.0
#: supports brokers up to 4.3 with the classic group protocol.
KAFKA_VERSION = "4.1.1"

POM = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"

#: Written last into the lib directory: a resolution interrupted half-way is redone.
_COMPLETE = ".complete"

#: JVM options: a small heap (tests run up to three brokers on two shared cores).
DEFAULT_JVM_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true")


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """``$TANKWATCH_KAFKA_CACHE`` or ``$XDG_CACHE_HOME/tankwatch`` (``~/.cache/tankwatch``),
    plus ``kafka-<version>``."""
    root = os.environ.get("TANKWATCH_KAFKA_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "tankwatch"
    return base / f"kafka-{version}"


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH (Kafka 4 needs Java 17+)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError("Apache Kafka needs Java 17 or newer: no 'java' on PATH")
    return found


def jars_resolved(version: str = KAFKA_VERSION) -> bool:
    return (cache_dir(version) / "lib" / _COMPLETE).exists()


def resolve_jars(version: str = KAFKA_VERSION, quiet: bool = True) -> Path:
    """The lib directory of ``version``, resolving it with Maven first if needed.

    Runs ``mvn dependency:copy-dependencies`` on :data:`POM` into a temporary directory
    beside the cache and renames it into place, so the cache is either complete or
    absent. Raises BrokerError with Maven's output tail on failure.
    """
    lib = cache_dir(version) / "lib"
    if (lib / _COMPLETE).exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("resolving Apache Kafka's jars needs Maven ('mvn' on PATH)")
    if not POM.exists():
        raise BrokerError(f"no Maven descriptor at {POM} (run from a source checkout)")
    tmp = lib.with_name(f"lib.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn, "-B", *(["-q"] if quiet else []), "-f", str(POM),
        f"-Dkafka.version={version}", "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
    ]  # fmt: skip
    log.info("resolving Apache Kafka jars", extra={"version": version, "into": str(lib)})
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not any(tmp.glob(f"kafka_2.13-{version}.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise BrokerError(f"'{' '.join(cmd)}' failed (exit {proc.returncode}):\n{tail}")
    (tmp / _COMPLETE).write_text(version + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    return lib


def new_cluster_id() -> str:
    """A random KRaft cluster id (Kafka's ``Uuid``: 22 chars of URL-safe base64).

    Never one starting with ``-`` (1 in 64 would): StorageTool's argument parser takes
    ``-t -abc...`` for a missing value (Kafka's own ``Uuid.randomUuid`` avoids them too).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def test_props(compaction: bool = True) -> dict[str, str]:
    """Broker settings for tests: group sessions down to 1 s (the reliability suite
    uses 3 s), no initial rebalance delay, small internal topics, and -- with
    ``compaction`` -- segments that roll every second and a cleaner that compacts any
    dirty closed segment within about a second."""
    props = {
        "group.min.session.timeout.ms": "1000",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
    }
    if compaction:
        props.update(
            {
                # Kafka 4 rejects segment.bytes below 1 MiB; roll by time instead.
                "log.roll.ms": "1000",
                "log.cleaner.backoff.ms": "500",
                "log.cleaner.min.cleanable.ratio": "0.01",
                "log.cleaner.min.compaction.lag.ms": "0",
                "log.cleaner.delete.retention.ms": "1000",
                "log.cleaner.dedupe.buffer.size": "16777216",
                "log.segment.delete.delay.ms": "500",
            }
        )
    return props


test_props.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


_LOG4J2 = """\
status = error
name = tankwatch-kafka
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = INFO
"""


@dataclass
class Node:
    """One broker process: node id, client port, controller port, files under ``dir``."""

    node_id: int
    port: int
    controller_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def props_path(self) -> Path:
        return self.dir / "server.properties"

    @property
    def log_path(self) -> Path:
        """stdout/stderr of the JVM plus log4j2's WARN+ lines (``server.log``)."""
        return self.dir / "server.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ApacheKafka:
    """Apache Kafka ``brokers`` nodes on loopback, each in KRaft combined mode.

    ``workdir``: one sub-directory per node (``node-<id>``: properties, log4j2 config,
    ``server.log``, ``data/``); an existing formatted directory is reused (same cluster
    id, same ports), so a stopped or killed broker restarts with its data.
    ``port``: client port of node 0 (0 = a free one; others always free ones).
    ``extra_props``: added to (and overriding) every node's ``server.properties``.
    With 3 or more nodes, replicated internal topics get replication factor 3 and
    ``min.insync.replicas`` 2 (also the default for new topics); with fewer, 1.
    """

    def __init__(
        self,
        workdir: Path,
        port: int = 0,
        brokers: int = 1,
        extra_props: Mapping[str, str] | None = None,
        version: str = KAFKA_VERSION,
        jvm_opts: Sequence[str] = DEFAULT_JVM_OPTS,
        cluster_id: str | None = None,
    ) -> None:
        if brokers < 1:
            raise BrokerError(f"brokers must be >= 1, got {brokers}")
        self.workdir = Path(workdir)
        self.version = version
        self.jvm_opts = list(jvm_opts)
        self.extra_props = dict(extra_props or {})
        self._port = port
        id_file = self.workdir / "cluster.id"
        if id_file.exists():
            self.cluster_id = id_file.read_text().strip()
        else:
            self.cluster_id = cluster_id or new_cluster_id()
        self.nodes: list[Node] = []
        for i in range(brokers):
            node_dir = self.workdir / f"node-{i}"
            ports_file = node_dir / "ports"
            if ports_file.exists():  # a restart of an existing directory: same addresses
                p, c = (int(x) for x in ports_file.read_text().split())
            else:
                p, c = (port if i == 0 and port else free_port()), free_port()
            self.nodes.append(Node(i, p, c, node_dir))
        self._lib: Path | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def pid(self, i: int = 0) -> int:
        proc = self.nodes[i].proc
        if proc is None or proc.poll() is not None:
            raise BrokerError(f"Kafka node {i} is not running")
        return proc.pid

    # ------------------------------------------------------------------ config
    def properties(self, node: Node) -> dict[str, str]:
        n = len(self.nodes)
        rf = "3" if n >= 3 else "1"
        isr = "2" if n >= 3 else "1"
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.controller_port}" for m in self.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data_dir),
            "num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            # As in docker-compose.yml: topics are created explicitly (tankwatch topics).
            "auto.create.topics.enable": "false",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        props.update(self.extra_props)
        return props

    def _write_config(self, node: Node) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        (node.dir / "ports").write_text(f"{node.port} {node.controller_port}\n")
        lines = [f"{k}={v}" for k, v in self.properties(node).items()]
        node.props_path.write_text("\n".join(lines) + "\n")
        (node.dir / "log4j2.properties").write_text(_LOG4J2.format(path=node.log_path))

    def _java(self, node: Node, main: str, *args: str) -> list[str]:
        assert self._lib is not None
        return [
            java_binary(), *self.jvm_opts,
            f"-Dlog4j2.configurationFile={node.dir / 'log4j2.properties'}",
            "-cp", f"{self._lib}/*", main, *args,
        ]  # fmt: skip

    def _format(self, node: Node) -> None:
        if (node.data_dir / "meta.properties").exists():
            return
        cmd = self._java(
            node, "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
            "-c", str(node.props_path), "--ignore-formatted",
        )  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BrokerError(
                f"formatting {node.data_dir} failed (exit {proc.returncode}):\n"
                + (proc.stdout + proc.stderr)[-2000:]
            )

    def _launch(self, node: Node) -> None:
        cmd = self._java(node, "kafka.Kafka", str(node.props_path))
        with open(node.log_path, "ab") as out:
            node.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own process group: Ctrl-C in a terminal reaches us, and we stop it.
                start_new_session=True,
            )

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 120.0) -> ApacheKafka:
        """Resolve the jars (cached), format new log directories, start every node and
        wait until each answers and the cluster shows all of them; stops what it
        started if that fails. Free ports picked here can be taken by another process
        before the JVM binds them: a first start then retries with new ports."""
        self._lib = resolve_jars(self.version)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cluster.id").write_text(self.cluster_id + "\n")
        fresh = self._port == 0 and not any((n.dir / "ports").exists() for n in self.nodes)
        for attempt in range(3):
            try:
                for node in self.nodes:
                    self._write_config(node)
                    self._format(node)
                for node in self.nodes:
                    self._launch(node)
                self.wait_ready(timeout_s)
                break
            except BrokerError as exc:
                self.stop()
                if not (fresh and attempt < 2 and "Address already in use" in str(exc)):
                    raise
                log.warning("kafka port taken; retrying with new ports", extra={"error": str(exc)})
                for node in self.nodes:
                    node.port, node.controller_port = free_port(), free_port()
            except BaseException:
                self.stop()
                raise
        log.info(
            "apache kafka up",
            extra={"bootstrap": self.bootstrap, "version": self.version, "dir": str(self.workdir)},
        )
        return self

    def wait_ready(self, timeout_s: float = 120.0, nodes: Sequence[int] | None = None) -> None:
        """Until every node in ``nodes`` (default: all running ones) answers a metadata
        request on its own port and lists all of them as live brokers."""
        wanted = [self.nodes[i] for i in nodes] if nodes is not None else self.nodes
        wanted = [n for n in wanted if n.proc is not None]
        expect = {n.node_id for n in self.nodes if n.alive()}
        deadline = time.monotonic() + timeout_s
        for node in wanted:
            _wait_node(node, expect, deadline)

    def kill(self, i: int = 0) -> None:
        """SIGKILL node ``i`` and reap it (no clean shutdown; its log dir stays)."""
        node = self.nodes[i]
        if node.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.proc.pid, signal.SIGCONT)
            node.proc.kill()
        node.proc.wait(30)
        node.proc = None

    def restart(self, i: int = 0, timeout_s: float = 120.0) -> None:
        """Start node ``i`` again on the same log directory and ports (kill it first if
        it still runs) and wait until it is back in the cluster."""
        if self.nodes[i].alive():
            self.kill(i)
        if self._lib is None:
            self._lib = resolve_jars(self.version)
        self._launch(self.nodes[i])
        self.wait_ready(timeout_s, nodes=[i])

    def freeze(self, i: int = 0) -> None:
        """SIGSTOP node ``i``: an outage that keeps its state (SIGCONT with thaw)."""
        os.kill(self.pid(i), signal.SIGSTOP)

    def thaw(self, i: int = 0) -> None:
        os.kill(self.pid(i), signal.SIGCONT)

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop every node: SIGCONT (a frozen JVM cannot act on SIGTERM), SIGTERM, and
        SIGKILL whatever has not exited after ``grace_s``. Never raises."""
        running = [n for n in self.nodes if n.proc is not None]
        for node in running:
            assert node.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.proc.pid, signal.SIGCONT)
                node.proc.terminate()
        deadline = time.monotonic() + grace_s
        for node in running:
            assert node.proc is not None
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(10)
            node.proc = None

    def log_tail(self, i: int = 0, n: int = 3000) -> str:
        try:
            return self.nodes[i].log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _wait_node(node: Node, expect: set[int], deadline: float) -> None:
    from kafka import KafkaAdminClient

    last: Exception | str | None = None
    while time.monotonic() < deadline:
        if node.proc is None or node.proc.poll() is not None:
            code = node.proc.returncode if node.proc else None
            raise BrokerError(
                f"Kafka node {node.node_id} exited ({code}); see {node.log_path}:\n"
                + _tail(node.log_path)
            )
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=node.bootstrap,
                request_timeout_ms=5000,
                bootstrap_timeout_ms=3000,
            )
            try:
                brokers = admin.describe_cluster()["brokers"]
                live = {int(b["broker_id"]) for b in brokers if not b.get("is_fenced")}
            finally:
                admin.close()
            if expect <= live:
                return
            last = f"live brokers {sorted(live)}, want {sorted(expect)}"
        except Exception as exc:  # any failure means "not ready yet"
            last = exc
        time.sleep(0.3)
    raise BrokerError(
        f"Kafka node {node.node_id} at {node.bootstrap} not ready ({last}); "
        f"see {node.log_path}:\n" + _tail(node.log_path)
    )


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tankwatch.apache_kafka [run|jars]`` (``make kafka`` / ``make kafka-jars``)."""
    parser = argparse.ArgumentParser(
        prog="python -m tankwatch.apache_kafka",
        description=f"Run Apache Kafka {KAFKA_VERSION} (KRaft, single node) without Docker.",
    )
    parser.add_argument("command", nargs="?", default="run", choices=["run", "jars"])
    parser.add_argument("--port", type=int, default=9092, help="client port (default 9092)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="log directory root, kept between runs (default: <cache>/data)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # The readiness probe's refused connections are expected while the JVM starts.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        lib = resolve_jars()
        if args.command == "jars":
            print(lib)
            return 0
        workdir = args.data_dir or cache_dir() / "data"
        kafka = ApacheKafka(
            workdir, port=args.port, extra_props={"group.initial.rebalance.delay.ms": "0"}
        )
        stop = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        print(f"starting Apache Kafka {KAFKA_VERSION} (jars {lib}) ...", flush=True)
        kafka.start()
        try:
            print(
                f"Apache Kafka {KAFKA_VERSION} at {kafka.bootstrap} (data {workdir}); "
                "Ctrl-C stops it.\n"
                f"  export KAFKA_BOOTSTRAP={kafka.bootstrap}",
                flush=True,
            )
            while not stop and kafka.nodes[0].alive():
                time.sleep(0.5)
        finally:
            kafka.stop()
        return 0
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
