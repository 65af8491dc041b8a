"""Connection security of every Kafka client the project makes: TLS and SASL.

One table (:data:`OPTIONS`) names each setting, its flag and its environment variable;
:class:`KafkaSecurity` holds the values (the password as a :class:`Secret`) and
:meth:`KafkaSecurity.client_kwargs` turns them into kafka-python keyword arguments for
``KafkaConsumer``, ``KafkaProducer`` and ``KafkaAdminClient`` alike. ``tankwatch run``
takes the same settings through its :data:`pipeline.config.FIELDS` table; the other
commands (``topics create``, ``replay``, ``simulate --live``, ``demo``) add them with
:func:`add_security_args` and read them back with :func:`security_from_args`.

Secrets: the SASL password (``--sasl-password``, ``KAFKA_SASL_PASSWORD``, or better a
file: ``--sasl-password-file`` / ``KAFKA_SASL_PASSWORD_FILE``) and the private key's
password are :class:`Secret` values. Their ``str``/``repr`` are ``'**********'``, no
``--help`` text shows a default, and only :meth:`KafkaSecurity.client_kwargs` (handed
straight to kafka-python) reveals them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tankwatch.errors import ConfigError

__all__ = [
    "MECHANISMS",
    "OPTIONS",
    "PROTOCOLS",
    "KafkaSecurity",
    "Secret",
    "SecurityOption",
    "add_security_args",
    "security_from_args",
]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Secret:
    """A string that never shows itself: ``str``, ``repr`` and f-strings give
    ``'**********'``; :meth:`reveal` returns the value.

    >>> s = Secret("hunter2")
    >>> f"{s} {s!r}", s.reveal()
    ('********** Secret(**********)', 'hunter2')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "**********"

    def __repr__(self) -> str:
        return "Secret(**********)"

    def __format__(self, spec: str) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:  # pickling (multiprocessing) keeps the value, not the mask
        return (Secret, (self._value,))


def _protocol(text: str) -> str:
    value = text.strip().upper()
    if value not in PROTOCOLS:
        raise ValueError(f"expected one of {', '.join(PROTOCOLS)}")
    return value


def _mechanism(text: str) -> str:
    value = text.strip().upper()
    if value not in MECHANISMS:
        raise ValueError(f"expected one of {', '.join(MECHANISMS)}")
    return value


def _secret(text: str) -> Secret:
    return Secret(text)


def _path(text: str) -> Path:
    return Path(text)


@dataclass(frozen=True)
class SecurityOption:
    """One security setting: field name, environment variable, parser, help."""

    name: str
    env: str
    parse: Any
    help: str
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


#: Every security setting (also rows of ``pipeline.config.FIELDS``).
OPTIONS: tuple[SecurityOption, ...] = (
    SecurityOption(
        "security_protocol",
        "KAFKA_SECURITY_PROTOCOL",
        _protocol,
        "Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    ),
    SecurityOption(
        "sasl_mechanism",
        "KAFKA_SASL_MECHANISM",
        _mechanism,
        "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
    ),
    SecurityOption("sasl_username", "KAFKA_SASL_USERNAME", str, "SASL user name"),
    SecurityOption(
        "sasl_password",
        "KAFKA_SASL_PASSWORD",
        _secret,
        "SASL password (prefer --sasl-password-file: a flag is visible to other users)",
        secret=True,
    ),
    SecurityOption(
        "sasl_password_file",
        "KAFKA_SASL_PASSWORD_FILE",
        _path,
        "file holding the SASL password (one line)",
    ),
    SecurityOption("ssl_cafile", "KAFKA_SSL_CAFILE", _path, "CA certificate(s) to trust, PEM"),
    SecurityOption("ssl_certfile", "KAFKA_SSL_CERTFILE", _path, "client certificate, PEM"),
    SecurityOption("ssl_keyfile", "KAFKA_SSL_KEYFILE", _path, "client private key, PEM"),
    SecurityOption(
        "ssl_key_password",
        "KAFKA_SSL_KEY_PASSWORD",
        _secret,
        "password of the client private key",
        secret=True,
    ),
)

_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class KafkaSecurity:
    """How to connect to Kafka; the default is plain TCP without authentication."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: Secret | None = None

    def __post_init__(self) -> None:
        problems = []
        proto = self.security_protocol
        if proto not in PROTOCOLS:
            problems.append(f"security protocol must be one of {', '.join(PROTOCOLS)}")
        sasl = proto.startswith("SASL_")
        if sasl:
            if self.sasl_mechanism is None:
                problems.append(f"{proto} needs a SASL mechanism (KAFKA_SASL_MECHANISM)")
            if not self.sasl_username:
                problems.append(f"{proto} needs a SASL user name (KAFKA_SASL_USERNAME)")
            if self.sasl_password is None and self.sasl_password_file is None:
                problems.append(
                    f"{proto} needs a SASL password (KAFKA_SASL_PASSWORD_FILE or "
                    "KAFKA_SASL_PASSWORD)"
                )
        for name in ("sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{_BY_NAME[name].flag}: no such file {str(path)!r}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            problems.append("--ssl-keyfile needs --ssl-certfile")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> KafkaSecurity:
        """From field values (None = unset); strings are parsed like the environment."""
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if value is None or value == "":
                continue
            option = _BY_NAME.get(name)
            if option is None:
                raise ConfigError(f"unknown security setting {name!r}")
            if isinstance(value, str):
                try:
                    value = option.parse(value)
                except ValueError as exc:
                    raise ConfigError(f"{option.flag}: bad value ({exc})") from None
            kwargs[name] = value
        return cls(**kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> KafkaSecurity:
        """Environment variables of :data:`OPTIONS`, then ``overrides`` (None ignored)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {o.name: env.get(o.env) for o in OPTIONS}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_values(values)

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def password(self) -> str | None:
        """The SASL password (from the file if one is given; trailing newline dropped)."""
        if self.sasl_password_file is not None:
            try:
                return Path(self.sasl_password_file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"cannot read the SASL password file: {exc}") from None
        return None if self.sasl_password is None else self.sasl_password.reveal()

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python keyword arguments (for consumers, producers and admin clients);
        empty for PLAINTEXT. The result holds the password in clear: hand it to the
        client and do not log it."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        out: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = self.password()
        if self.tls:
            if self.ssl_cafile is not None:
                out["ssl_cafile"] = str(self.ssl_cafile)
            if self.ssl_certfile is not None:
                out["ssl_certfile"] = str(self.ssl_certfile)
            if self.ssl_keyfile is not None:
                out["ssl_keyfile"] = str(self.ssl_keyfile)
            if self.ssl_key_password is not None:
                out["ssl_password"] = self.ssl_key_password.reveal()
        return out

    def hint(self) -> str:
        """Appended to connection errors: a broker that rejects TLS or SASL credentials
        just closes the connection, so a failed bootstrap may mean either."""
        if self.security_protocol == "PLAINTEXT":
            return ""
        return f" (connecting with {self.describe()}: check the credentials and certificates)"

    def describe(self) -> str:
        """One line for logs and messages: protocol, mechanism and user, no secrets."""
        if not self.security_protocol.startswith("SASL_"):
            return self.security_protocol
        return f"{self.security_protocol} {self.sasl_mechanism} as {self.sasl_username!r}"


def add_security_args(parser: argparse.ArgumentParser) -> None:
    """The security flags of :data:`OPTIONS`, in their own group; no defaults shown
    (an unset flag falls back to its environment variable in :func:`security_from_args`)."""
    group = parser.add_argument_group("Kafka security (each flag falls back to its env var)")
    for option in OPTIONS:
        group.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar="SECRET" if option.secret else "VALUE",
            help=f"{option.help} (env {option.env})",
        )


def security_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> KafkaSecurity:
    """Flags given on the command line, else the environment, else the default."""
    return KafkaSecurity.from_env(environ, **{o.name: getattr(args, o.name, None) for o in OPTIONS})
