"""A secured Apache Kafka: a SASL_SSL listener (TLS with a test CA, SCRAM users) and
ACLs (StandardAuthorizer, nothing allowed unless granted).

* ``topics create`` (as the super user ``admin``, SCRAM-SHA-512, flags and a password
  file), ``replay`` (as ``replay``, SCRAM-SHA-256, environment variables) and ``run``
  (as ``pipeline``, SCRAM-SHA-512, environment variables) work with the right
  credentials, and the pipeline's outputs arrive;
* wrong credentials: one line on stderr and a non-zero exit, for each command;
* SASL/PLAIN (same users, passwords in the broker's JAAS): ``topics create`` works, a
  wrong password gives one line;
* the pipeline's principal cannot read or write outside its topics and group;
* the password is in no log line, no ``--help`` and no ``/metrics``.

The broker keeps a PLAINTEXT listener for its own readiness check and the test's
set-up (users, ACLs); its principal ``ANONYMOUS`` is a super user like ``admin``.
Certificates are made with ``openssl`` in a temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tankwatch.broker import free_port
from tankwatch.topics import Topics
from tests.integration.helpers import REPO, http_get, synthetic_history, wait_until

pytestmark = pytest.mark.integration

PASSWORDS = {"admin": "adm1n-Pw-x7", "pipeline": "p1pe-Pw-q3", "replay": "r3play-Pw-k9"}
MECHANISM = {"admin": "SCRAM-SHA-512", "pipeline": "SCRAM-SHA-512", "replay": "SCRAM-SHA-256"}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path) -> tuple[Path, Path]:
    """A CA and a broker certificate for 127.0.0.1/localhost signed by it; returns
    (CA PEM, broker key+certificate PEM)."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.pem", "-days", "2", "-subj", "/CN=tankwatch test CA", cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out",
        "broker.csr", "-subj", "/CN=localhost", cwd=d,
    )  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "broker.pem", "-days", "2", "-extfile", "san.ext", cwd=d,
    )  # fmt: skip
    keystore = d / "broker-keystore.pem"
    keystore.write_text((d / "broker.key").read_text() + (d / "broker.pem").read_text())
    return d / "ca.pem", keystore


@dataclass
class SecureKafka:
    kafka: Any
    plain: str  # PLAINTEXT bootstrap (super user; set-up only)
    secure: str  # SASL_SSL bootstrap
    ca: Path
    dir: Path

    def password_file(self, user: str, password: str | None = None) -> Path:
        path = self.dir / f"{user}.pw"
        path.write_text((password or PASSWORDS[user]) + "\n")
        return path

    def env(self, user: str, password: str | None = None) -> dict[str, str]:
        """The client environment of ``user`` (password in a file)."""
        return {
            "KAFKA_BOOTSTRAP": self.secure,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": MECHANISM[user],
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD_FILE": str(self.password_file(user, password)),
            "KAFKA_SSL_CAFILE": str(self.ca),
        }

    def client(self, user: str, password: str | None = None) -> dict[str, Any]:
        """kafka-python arguments for ``user``."""
        return {
            "bootstrap_servers": self.secure,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": MECHANISM[user],
            "sasl_plain_username": user,
            "sasl_plain_password": password or PASSWORDS[user],
            "ssl_cafile": str(self.ca),
        }


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    from tests.conftest import require_apache_kafka

    require_apache_kafka()
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make the test certificates")
    from kafka import KafkaAdminClient
    from kafka.admin import UserScramCredentialUpsertion

    from tankwatch.apache_kafka import ApacheKafka, test_props

    d = tmp_path_factory.mktemp("secure-kafka")
    ca, keystore = make_certificates(d / "tls")
    kafka = ApacheKafka(d / "broker", extra_props=test_props(compaction=False))
    node = kafka.nodes[0]
    sport = free_port()
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    kafka.extra_props.update(
        {
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
            f"CONTROLLER://127.0.0.1:{node.controller_port},SECURE://127.0.0.1:{sport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port},SECURE://127.0.0.1:{sport}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SECURE:SASL_SSL",
            "listener.name.secure.sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
            "listener.name.secure.scram-sha-256.sasl.jaas.config": jaas,
            "listener.name.secure.scram-sha-512.sasl.jaas.config": jaas,
            # PLAIN checks passwords against the JAAS file: the same users and passwords.
            "listener.name.secure.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                + " ".join(f'user_{u}="{pw}"' for u, pw in PASSWORDS.items())
                + ";"
            ),
            "listener.name.secure.ssl.keystore.type": "PEM",
            "listener.name.secure.ssl.keystore.location": str(keystore),
            "listener.name.secure.ssl.truststore.type": "PEM",
            "listener.name.secure.ssl.truststore.location": str(ca),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS;User:admin",
            "allow.everyone.if.no.acl.found": "false",
        }
    )
    with kafka:
        admin = KafkaAdminClient(bootstrap_servers=node.bootstrap)
        try:
            admin.alter_user_scram_credentials(
                [UserScramCredentialUpsertion(u, MECHANISM[u], pw) for u, pw in PASSWORDS.items()]
            )
        finally:
            admin.close()
        sk = SecureKafka(kafka, node.bootstrap, f"127.0.0.1:{sport}", ca, d)
        wait_until(lambda: _can_login(sk), 60, "SCRAM users usable")
        yield sk


def _can_login(sk: SecureKafka) -> bool:
    from kafka import KafkaAdminClient

    try:
        KafkaAdminClient(**sk.client("admin"), bootstrap_timeout_ms=5000).close()
        return True
    except Exception:
        return False


def grant(sk: SecureKafka, acls: list[tuple[str, str, str, str]]) -> None:
    """(principal, resource type, name or prefix*, operation) ALLOW entries."""
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    entries = []
    for principal, rtype, name, op in acls:
        prefixed = name.endswith("*")
        pattern = ResourcePattern(
            ResourceType[rtype],
            name.rstrip("*"),
            ACLResourcePatternType.PREFIXED if prefixed else ACLResourcePatternType.LITERAL,
        )
        entries.append(
            ACL(f"User:{principal}", "*", ACLOperation[op], ACLPermissionType.ALLOW, pattern)
        )
    admin = KafkaAdminClient(bootstrap_servers=sk.plain)
    try:
        result = admin.create_acls(entries)
        assert not result["failed"], result["failed"]
    finally:
        admin.close()


def tankwatch(
    args: list[str], env: dict[str, str], timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.run(
        [sys.executable, "-m", "tankwatch.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )


def topic_env(topics: Topics) -> dict[str, str]:
    return {
        "TANKWATCH_TOPIC_READINGS": topics.readings,
        "TANKWATCH_TOPIC_DLQ": topics.dlq,
        "TANKWATCH_TOPIC_FORECASTS": topics.forecasts,
        "TANKWATCH_TOPIC_STATE": topics.state,
    }


def write_csv(path: Path, n_tanks: int, n_ticks: int) -> list[Any]:
    history = synthetic_history(n_tanks=n_tanks, n_ticks=n_ticks, seed=5)
    lines = ["ts,tank_id,pressure_kpa,temperature_c,event"]
    lines += [
        f"{r.ts},{r.tank_id},{r.pressure_kpa},{r.temperature_c},{r.event or ''}" for r in history
    ]
    path.write_text("\n".join(lines) + "\n")
    return history


def pipeline_acls(topics: Topics, group: str) -> list[tuple[str, str, str, str]]:
    """What the pipeline needs, and nothing else."""
    p = "pipeline"
    return [
        (p, "TOPIC", topics.readings, "READ"),
        (p, "TOPIC", topics.readings, "DESCRIBE"),
        (p, "TOPIC", topics.state, "READ"),
        (p, "TOPIC", topics.state, "WRITE"),
        (p, "TOPIC", topics.state, "DESCRIBE"),
        (p, "TOPIC", topics.forecasts, "WRITE"),
        (p, "TOPIC", topics.forecasts, "DESCRIBE"),
        (p, "TOPIC", topics.dlq, "WRITE"),
        (p, "TOPIC", topics.dlq, "DESCRIBE"),
        (p, "GROUP", group, "READ"),
        # Exactly-once: its transactional ids are tankwatch-<group>-<instance>.
        (p, "TRANSACTIONAL_ID", f"tankwatch-{group}-*", "WRITE"),
        (p, "TRANSACTIONAL_ID", f"tankwatch-{group}-*", "DESCRIBE"),
    ]


# ---------------------------------------------------------------------- tests
def test_topics_replay_and_pipeline_work_with_the_right_credentials(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    sk = secure_kafka
    suffix = os.urandom(4).hex()
    topics = Topics(f"r.{suffix}", f"d.{suffix}", f"f.{suffix}", f"s.{suffix}")
    group = f"g-{suffix}"
    # topics create: flags only (the admin super user), password from a file.
    done = tankwatch(
        [
            "topics", "create", "--bootstrap", sk.secure, "--security-protocol", "SASL_SSL",
            "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "admin",
            "--sasl-password-file", str(sk.password_file("admin")), "--ssl-cafile", str(sk.ca),
            "--topic-readings", topics.readings, "--topic-dlq", topics.dlq,
            "--topic-forecasts", topics.forecasts, "--topic-state", topics.state,
        ],
        {},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert topics.state in done.stdout
    grant(sk, pipeline_acls(topics, group))
    grant(sk, [("replay", "TOPIC", topics.readings, op) for op in ("WRITE", "DESCRIBE")])

    csv = tmp_path / "readings.csv"
    history = write_csv(csv, n_tanks=6, n_ticks=60)
    done = tankwatch(
        ["replay", str(csv), "--no-progress"], {**sk.env("replay"), **topic_env(topics)}
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(history)} readings" in done.stderr or str(len(history)) in done.stderr

    port = free_port()
    env = {
        **sk.env("pipeline"),
        **topic_env(topics),
        "TANKWATCH_GROUP": group,
        "TANKWATCH_STATE_DIR": str(tmp_path / "state"),
        "TANKWATCH_HTTP_PORT": str(port),
        "TANKWATCH_CHECKPOINT_INTERVAL_S": "1",
        "TANKWATCH_SESSION_TIMEOUT_MS": "6000",
        "TANKWATCH_HEARTBEAT_MS": "500",
    }
    # The password also as a plain variable, to check it never shows.
    env.pop("KAFKA_SASL_PASSWORD_FILE")
    env["KAFKA_SASL_PASSWORD"] = PASSWORDS["pipeline"]
    log = tmp_path / "run.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tankwatch.cli", "--log-level", "debug", "run"],
            env={**clean, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        last: dict[str, float] = {}
        for r in history:
            last[r.tank_id] = max(last.get(r.tank_id, r.ts), r.ts)

        def all_applied() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                status, body = http_get(url + "/api/fleet", 2.0)
            except OSError:
                return False
            tanks = json.loads(body)["tanks"] if status == 200 else []
            return {t["tank_id"]: t["ts"] for t in tanks} == last

        wait_until(all_applied, 120, "every tank at its last reading")
        metrics = http_get(url + "/metrics")[1].decode()
        proc.terminate()
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert '"exactly_once": true' in text and "SCRAM-SHA-512 as 'pipeline'" in text
    for secret in PASSWORDS.values():
        assert secret not in text, "a password in the pipeline's (debug) log"
        assert secret not in metrics, "a password in /metrics"
    assert "tankwatch_transactions_total" in metrics

    # The forecasts arrived (read by the super user, as a committed reader would).
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **sk.client("admin"), isolation_level="read_committed", enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(topics.forecasts, p) for p in range(4)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        keys: set[tuple[str, int]] = set()
        deadline = time.monotonic() + 60
        while len(keys) < len(history) and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500).values():
                for m in msgs:
                    rec = json.loads(m.value)
                    keys.add((rec["tank_id"], rec["tick"]))
    finally:
        consumer.close()
    assert len(keys) == len(history)


def test_sasl_plain_works_and_a_wrong_password_fails_with_one_line(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    sk = secure_kafka
    suffix = os.urandom(4).hex()
    topics = Topics(f"r.p{suffix}", f"d.p{suffix}", f"f.p{suffix}", f"s.p{suffix}")
    env = {**sk.env("admin"), "KAFKA_SASL_MECHANISM": "PLAIN", **topic_env(topics)}
    done = tankwatch(["topics", "create"], env)
    assert done.returncode == 0, done.stderr
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=sk.plain)
    try:
        assert {topics.readings, topics.state} <= set(admin.list_topics())
    finally:
        admin.close()

    wrong = {**env, "KAFKA_SASL_PASSWORD_FILE": str(sk.password_file("admin", "not-it"))}
    done = tankwatch(["topics", "create"], wrong)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert lines[0].startswith("tankwatch: error:") and "not-it" not in done.stderr


@pytest.mark.parametrize("command", ["topics", "replay", "run"])
def test_wrong_credentials_fail_with_one_line(
    command: str, secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    sk = secure_kafka
    user = {"topics": "admin", "replay": "replay", "run": "pipeline"}[command]
    env = sk.env(user, password="not-the-password")
    csv = tmp_path / "r.csv"
    write_csv(csv, 2, 3)
    args = {
        "topics": ["topics", "create"],
        "replay": ["replay", str(csv), "--no-progress"],
        "run": ["run", "--http-port", "0", "--state-dir", str(tmp_path / "s")],
    }[command]
    done = tankwatch(args, env, timeout_s=180)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tankwatch: error:"), lines[0]
    assert "not-the-password" not in done.stderr


def test_pipeline_principal_is_confined_to_its_topics_and_group(
    secure_kafka: SecureKafka,
) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAuthorizationFailedError

    sk = secure_kafka
    suffix = os.urandom(4).hex()
    mine = Topics(f"r.{suffix}", f"d.{suffix}", f"f.{suffix}", f"s.{suffix}")
    other = f"other.{suffix}"
    group = f"g-{suffix}"
    names = [mine.readings, mine.dlq, mine.forecasts, mine.state, other]
    admin = KafkaAdminClient(bootstrap_servers=sk.plain)
    try:
        admin.create_topics([NewTopic(t, 1, 1) for t in names])
        admin.wait_for_topics(names, timeout_ms=30000)
    finally:
        admin.close()
    grant(sk, pipeline_acls(mine, group))
    creds = sk.client("pipeline")

    # Allowed: write its outputs, read its input in its group.
    producer = KafkaProducer(**creds, max_block_ms=10000)
    try:
        producer.send(mine.forecasts, b"ok").get(timeout=30)
        with pytest.raises(KafkaError):  # write outside its topics
            producer.send(other, b"no").get(timeout=30)
        with pytest.raises(KafkaError):  # write to its own input
            producer.send(mine.readings, b"no").get(timeout=30)
    finally:
        producer.close(timeout=5)

    def consume(topic: str, group_id: str) -> None:
        consumer = KafkaConsumer(
            topic,
            **creds,
            group_id=group_id,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                consumer.poll(timeout_ms=500)
                if consumer.assignment():
                    return
            raise AssertionError(f"no assignment of {topic} in {group_id}")
        finally:
            consumer.close()

    consume(mine.readings, group)
    with pytest.raises(KafkaError):  # its input, another group
        consume(mine.readings, f"{group}-other")
    # Another topic: not even listed, and reading it is refused.
    reader = KafkaConsumer(**creds, group_id=None, enable_auto_commit=False)
    try:
        visible = reader.topics()
        assert mine.readings in visible and other not in visible
        with pytest.raises(TopicAuthorizationFailedError):
            reader.end_offsets([TopicPartition(other, 0)], timeout_ms=10000)
    finally:
        reader.close()

    with pytest.raises(KafkaError):  # no topic administration
        a = KafkaAdminClient(**creds)
        try:
            a.create_topics([NewTopic(f"new.{suffix}", 1, 1)])
        finally:
            a.close()
