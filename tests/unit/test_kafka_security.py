"""tankwatch.kafka_security: settings from flags, environment and files; kafka-python
arguments; secrets never shown (str, repr, Settings repr, --help)."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from pipeline.config import Settings
from tankwatch.cli import build_parser
from tankwatch.errors import ConfigError
from tankwatch.kafka_security import (
    KafkaSecurity,
    Secret,
    add_security_args,
    security_from_args,
)

PASSWORD = "s3cr3t-Pa55"


def test_plaintext_by_default_adds_nothing() -> None:
    assert KafkaSecurity.from_env({}).client_kwargs() == {}


def test_sasl_ssl_from_environment_with_password_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    sec = KafkaSecurity.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "KAFKA_SASL_MECHANISM": "scram-sha-512",
            "KAFKA_SASL_USERNAME": "pipeline",
            "KAFKA_SASL_PASSWORD_FILE": str(pw),
            "KAFKA_SSL_CAFILE": str(ca),
        }
    )
    assert sec.client_kwargs() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "pipeline",
        "sasl_plain_password": PASSWORD,  # the file's line, newline dropped
        "ssl_cafile": str(ca),
    }
    assert sec.describe() == "SASL_SSL SCRAM-SHA-512 as 'pipeline'"


def test_plain_mechanism_over_sasl_plaintext() -> None:
    sec = KafkaSecurity.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": PASSWORD,
        }
    )
    kw = sec.client_kwargs()
    assert (kw["sasl_mechanism"], kw["sasl_plain_password"]) == ("PLAIN", PASSWORD)
    assert "ssl_cafile" not in kw


def test_flags_win_over_environment(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_security_args(parser)
    args = parser.parse_args(["--sasl-username", "flag-user"])
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "env-user",
        "KAFKA_SASL_PASSWORD": PASSWORD,
    }
    assert security_from_args(args, env).sasl_username == "flag-user"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "expected one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs a SASL mechanism"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "expected one of PLAIN",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "u",
            },
            "needs a SASL password",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nope.pem"}, "no such file"),
    ],
)
def test_bad_settings_are_one_line_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        KafkaSecurity.from_env(env)
    assert "\n" not in str(info.value)


def test_secret_never_shows_itself() -> None:
    s = Secret(PASSWORD)
    for text in (str(s), repr(s), f"{s}", f"{s!r}", f"{s:>20}", str([s]), str({"p": s})):
        assert PASSWORD not in text
    assert s.reveal() == PASSWORD


def test_settings_repr_and_errors_hide_the_password() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "KAFKA_SASL_USERNAME": "pipeline",
            "KAFKA_SASL_PASSWORD": PASSWORD,
        }
    )
    assert isinstance(settings.security.sasl_password, Secret)
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in repr(settings.security)
    assert settings.security.client_kwargs()["sasl_plain_password"] == PASSWORD
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"KAFKA_SASL_PASSWORD": PASSWORD, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--help"],
        ["topics", "create", "--help"],
        ["replay", "--help"],
        ["simulate", "--help"],
        ["demo", "--help"],
    ],
)
def test_help_lists_security_flags_and_never_a_secret(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("KAFKA_SSL_KEY_PASSWORD", PASSWORD)
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "someone")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    text = out.getvalue()
    for flag in ("--security-protocol", "--sasl-mechanism", "--sasl-password-file", "--ssl-cafile"):
        assert flag in text, f"{argv}: {flag} missing"
    assert PASSWORD not in text
    assert "KAFKA_SASL_PASSWORD" in text


def test_exactly_once_setting() -> None:
    assert Settings.from_env({}).exactly_once == "auto"
    assert Settings.from_env({"TANKWATCH_EXACTLY_ONCE": "off"}).exactly_once == "off"
    assert Settings.from_env({}, exactly_once="ON").exactly_once == "on"
    with pytest.raises(ConfigError, match="TANKWATCH_EXACTLY_ONCE"):
        Settings.from_env({"TANKWATCH_EXACTLY_ONCE": "maybe"})
