"""A reading typed by hand into ``kcat -P`` is accepted: the contract really is plain JSON.

Against Apache Kafka (the session broker) or an external Kafka (``KAFKA_BOOTSTRAP``)
kcat talks to it directly. Only under ``TANKWATCH_TEST_BROKER=embedded``: the embedded
Tansu broker answers the ApiVersions v3 handshake with every tagged field present,
including default ones (``FinalizedFeaturesEpoch = -1``); librdkafka 2.0.2 (Debian 12's
kcat) fails to skip them ("Read underflow ... ApiVersionRequest failed"). So here the test
starts its own Tansu advertised behind a tiny TCP relay that drops those optional tagged
fields from that one handshake response and passes every other byte through untouched:
the produced record and its bytes are exactly kcat's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from tankwatch.broker import broker_binary, free_port, wait_for_kafka
from tankwatch.codec import decode_reading
from tankwatch.topics import Topics, create_topics
from tests.integration.helpers import topic_partitions

pytestmark = pytest.mark.integration

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
API_VERSIONS = 18


@pytest.fixture
def kcat() -> str:
    if KCAT is None:
        if os.environ.get("CI"):
            pytest.fail("kcat is required under CI (apt-get install kcat)")
        pytest.skip("kcat not installed")
    return KCAT


# --- the handshake relay (embedded broker only) ------------------------------------------


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _read_frame(sock: socket.socket) -> bytes:
    size = struct.unpack(">i", _read_exact(sock, 4))[0]
    return _read_exact(sock, size)


def _uvarint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def strip_api_versions_tags(response: bytes) -> bytes:
    """ApiVersions v3+ response body -> the same without its trailing tagged fields."""
    i = 4  # correlation id (ApiVersions responses always use header v0)
    (error,) = struct.unpack(">h", response[i : i + 2])
    if error:
        return response  # an error answer is v0-shaped: leave it alone
    i += 2
    n, i = _uvarint(response, i)
    for _ in range(n - 1):
        i += 6  # api_key, min_version, max_version
        tags, i = _uvarint(response, i)
        for _ in range(tags):
            _, i = _uvarint(response, i)
            size, i = _uvarint(response, i)
            i += size
    i += 4  # throttle_time_ms
    return response[:i] + b"\x00"


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _relay_connection(client: socket.socket, upstream_port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", upstream_port))
    except OSError:  # kcat retrying after the test's broker is gone
        client.close()
        return
    with client, upstream as broker:
        try:
            request = _read_frame(client)
            broker.sendall(struct.pack(">i", len(request)) + request)
            api_key, version = struct.unpack(">hh", request[:4])
            response = _read_frame(broker)
            if api_key == API_VERSIONS and version >= 3:
                response = strip_api_versions_tags(response)
            client.sendall(struct.pack(">i", len(response)) + response)
        except (ConnectionError, OSError, struct.error):
            return
        back = threading.Thread(target=_pipe, args=(broker, client), daemon=True)
        back.start()
        _pipe(client, broker)
        back.join(timeout=5)


@pytest.fixture(scope="module")
def kcat_bootstrap(
    broker_kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if broker_kind != "embedded":  # a real Kafka needs no relay
        yield request.getfixturevalue("kafka_bootstrap")
        return
    inner, outer = free_port(), free_port()
    listener = socket.create_server(("127.0.0.1", outer))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=_relay_connection, args=(conn, inner), daemon=True).start()

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    log = Path(tmp_path_factory.mktemp("kcat-broker")) / "tansu.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(broker_binary()), "broker",
             "--listener-url", f"tcp://127.0.0.1:{inner}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{outer}"],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_for_kafka(f"127.0.0.1:{outer}", timeout_s=30)
        yield f"127.0.0.1:{outer}"
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        listener.close()
        acceptor.join(timeout=2)


def test_strip_api_versions_tags_keeps_the_api_list() -> None:
    body = (
        struct.pack(">ih", 7, 0)
        + bytes([3])  # two entries
        + struct.pack(">hhh", 0, 0, 11) + b"\x00"
        + struct.pack(">hhh", 18, 0, 4) + b"\x00"
        + struct.pack(">i", 0)
        + bytes.fromhex("040001010108ffffffffffffffff020101030100")
    )  # fmt: skip
    stripped = strip_api_versions_tags(body)
    assert stripped == body[: len(body) - 20] + b"\x00"


# --- the test itself ---------------------------------------------------------------------


def test_hand_typed_kcat_reading_decodes(kcat: str, kcat_bootstrap: str) -> None:
    suffix = f"kcat.{os.getpid()}.{time.monotonic_ns()}"
    topics = Topics(*(f"{name}.{suffix}" for name in ("readings", "dlq", "forecasts", "state")))
    create_topics(kcat_bootstrap, topics, partitions=2)
    lines = (
        'T01|{"tank_id":"T01","ts":"2024-03-01T00:00:00Z","pressure_kpa":101.2,'
        '"temperature_c":14.5}\n'
        'T02|{"tank_id": "T02", "ts": 1709251260, "pressure_kpa": 101, "temperature_c": 9, '
        '"event": "refill"}\n'
    )
    proc = subprocess.run(
        [kcat, "-b", kcat_bootstrap, "-t", topics.readings, "-P", "-K", "|"],
        input=lines,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr

    consumer = KafkaConsumer(bootstrap_servers=kcat_bootstrap, enable_auto_commit=False)
    try:
        tps = [
            TopicPartition(topics.readings, p) for p in topic_partitions(consumer, topics.readings)
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500).values():
                got.extend(decode_reading(m.value, key=m.key) for m in msgs)
    finally:
        consumer.close()
    got.sort(key=lambda r: r.tank_id)
    assert [(r.tank_id, r.ts, r.pressure_kpa, r.temperature_c, r.event) for r in got] == [
        ("T01", 1709251200.0, 101.2, 14.5, None),
        ("T02", 1709251260.0, 101.0, 9.0, "refill"),
    ]
