"""docker-compose.yml is valid and consistent with the repo (Docker cannot run here).

* it validates against the Compose Specification JSON schema;
* every ``tankwatch ...`` command a service runs parses with the real CLI parser and
  its ``--help`` works;
* every file or directory a service bind-mounts, and every path the Dockerfile copies,
  exists; container paths the services are pointed at (model, replay file) resolve to
  committed files;
* the wiring agrees across files: Prometheus scrapes the pipeline service on its port,
  Grafana provisioning points where the dashboards are mounted, no password is baked in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from tankwatch.cli import build_parser
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
_SHARED_SCHEMA = REPO.parent / "shared" / "schemas" / "compose-spec.json"
# The shared copy when present, else the one vendored with the tests (same file).
SCHEMA = (
    _SHARED_SCHEMA if _SHARED_SCHEMA.exists() else REPO / "tests" / "data" / "compose-spec.json"
)
APP_WORKDIR = PurePosixPath("/app")

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?err}`` with an empty env.

    >>> interpolate("a ${X:-1} ${Y-2} $$")
    'a 1 2 $'
    """
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        if name in env and (env[name] or op not in (":-", ":?")):
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return ""

    return _VAR.sub(sub, text).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from this repo's Dockerfile (entrypoint ``tankwatch``)."""
    return {name: s for name, s in compose["services"].items() if s.get("build") == "."}


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_compose_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(compose)


def test_expected_services_exist(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= {
        "kafka",
        "topic-init",
        "replay",
        "pipeline",
        "prometheus",
        "grafana",
    }
    assert set(_app_services(compose)) == {"topic-init", "replay", "pipeline"}
    assert 'ENTRYPOINT ["tankwatch"]' in _dockerfile()


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        if service.get("build"):
            continue
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned {image!r}"
    base = re.search(r"^FROM\s+(\S+)", _dockerfile(), re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base.group(1))


def test_compose_kafka_is_the_version_the_tests_run(compose: dict[str, Any]) -> None:
    """One Apache Kafka version: the compose image, the Maven descriptor and the
    launcher the tests use (``make kafka``) -- one kafka-python 3.0 supports (<= 4.3)."""
    from tankwatch.apache_kafka import KAFKA_VERSION, POM

    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    pom = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert pom and pom.group(1) == KAFKA_VERSION
    major, minor = (int(x) for x in KAFKA_VERSION.split(".")[:2])
    assert (4, 0) <= (major, minor) <= (4, 3)
    # The compose broker's settings match the launcher's (node, roles, no auto-create).
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_the_app_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(), re.M)
    assert users and users[-1] not in ("root", "0")


@pytest.mark.parametrize("service", ["topic-init", "replay", "pipeline"])
def test_tankwatch_commands_exist_in_the_cli(
    compose: dict[str, Any], service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [interpolate(str(a)) for a in compose["services"][service]["command"]]
    parser = build_parser()
    args = parser.parse_args(argv)  # the exact command the container runs
    assert callable(args.func)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: tankwatch" in capsys.readouterr().out


def _service_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = compose["services"][service].get("environment", {})
    return {k: interpolate(str(v)) for k, v in env.items()}


def test_replay_service_settings_reach_the_cli(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _service_env(compose, "replay").items():
        monkeypatch.setenv(key, value)
    argv = [interpolate(str(a)) for a in compose["services"]["replay"]["command"]]
    args = build_parser().parse_args(argv)
    assert args.speed == 60.0  # REPLAY_SPEED's default, through TANKWATCH_REPLAY_SPEED
    assert args.loop is True
    assert args.bootstrap == "kafka:19092"


def test_pipeline_service_settings_are_valid(compose: dict[str, Any]) -> None:
    from pipeline.config import Settings

    settings = Settings.from_env(environ=_service_env(compose, "pipeline"))
    assert settings.bootstrap == "kafka:19092"
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 8000)
    assert str(settings.state_dir) == "/var/lib/tankwatch"
    assert settings.group == "tankwatch"


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                mounts.append((vol["source"], vol["target"]))
            continue
        source, target = vol.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        for source, _ in _bind_mounts(service):
            assert (REPO / interpolate(source)).exists(), f"{name} mounts missing {source}"
            checked += 1
    assert checked >= 5


def test_every_path_the_dockerfile_copies_exists() -> None:
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", _dockerfile(), re.M)
    sources = [src for line in copies for src in line.split()]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile copies missing {src}"
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert not ignored & set(sources), "a COPY source is excluded by .dockerignore"


def _to_repo_path(container_path: str, service: dict[str, Any]) -> Path:
    """Map a container path to the repo: through a bind mount, else the image's /app copy."""
    path = PurePosixPath(container_path)
    for source, target in _bind_mounts(service):
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            return REPO / interpolate(source) / path.relative_to(target)
    return REPO / path.relative_to(APP_WORKDIR)


def test_default_model_and_replay_file_resolve_to_committed_files(
    compose: dict[str, Any],
) -> None:
    pipeline = compose["services"]["pipeline"]
    model = interpolate(pipeline["environment"]["TANKWATCH_MODEL"])
    assert (_to_repo_path(model, pipeline) / "metadata.json").exists()
    replay = compose["services"]["replay"]
    files = [interpolate(a) for a in replay["command"] if str(a).startswith(("/", "${"))]
    assert files
    for f in files:
        assert _to_repo_path(f, replay).is_file(), f


def test_pipeline_is_reachable_by_prometheus(compose: dict[str, Any]) -> None:
    env = compose["services"]["pipeline"]["environment"]
    port = str(env["TANKWATCH_HTTP_PORT"])
    assert env["TANKWATCH_HTTP_HOST"] == "0.0.0.0"  # loopback would be unreachable
    for key in ("KAFKA_BOOTSTRAP", "TANKWATCH_MODEL", "TANKWATCH_STATE_DIR", "TANKWATCH_GROUP"):
        assert key in env
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert f"pipeline:{port}" in targets


def test_grafana_provisioning_matches_the_mounts(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict((t, s) for s, t in _bind_mounts(grafana))
    providers = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/tankwatch.yml").read_text()
    )["providers"]
    for provider in providers:
        source = mounts[provider["options"]["path"]]
        assert list((REPO / source).glob("*.json")), source
    ds = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert [d["uid"] for d in ds] == ["tankwatch-prom"]
    assert ds[0]["url"] == "http://prometheus:9090"


def test_no_default_password_is_baked_in(compose: dict[str, Any]) -> None:
    env = compose["services"]["grafana"]["environment"]
    raw = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GF_ADMIN_PASSWORD:\?[^}]+\}", raw), raw
    with pytest.raises(KeyError):
        interpolate(raw)
    assert interpolate(raw, {"GF_ADMIN_PASSWORD": "s3cret"}) == "s3cret"
    example = (REPO / ".env.example").read_text()
    assert "GF_ADMIN_PASSWORD=" in example
    assert ".env" in (REPO / ".dockerignore").read_text().split()
