"""One HTTP port: ``/metrics``, ``/healthz``, ``/api/fleet?...``, ``/api/tank/<id>``, ``/``.

A ``ThreadingHTTPServer`` in a daemon thread. Handlers only read immutable snapshots
(:class:`~pipeline.sinks.view.FleetView`) or copies taken under a short lock, so the
forecasting loop is never blocked by a slow client. JSON shapes: docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from pipeline.api import FleetQuery, QueryError
from tankwatch.errors import ConfigError

__all__ = ["ApiSource", "HttpServer"]

log = logging.getLogger(__name__)

_PLACEHOLDER = b"""<!doctype html><html><head><meta charset="utf-8"><title>tankwatch</title></head>
<body><h1>tankwatch</h1><p>The dashboard page is not installed. The pipeline is running:
<a href="/metrics">/metrics</a>, <a href="/healthz">/healthz</a>,
<a href="/api/fleet">/api/fleet</a>.</p></body></html>
"""


class ApiSource(Protocol):
    """What the server needs from the service."""

    registry: CollectorRegistry

    def health(self) -> tuple[bool, dict[str, Any]]: ...

    def metrics_text(self) -> bytes: ...

    def fleet_json(self, query: FleetQuery | None = None) -> dict[str, Any]: ...

    def tank_json(self, tank_id: str) -> dict[str, Any] | None: ...


def _static(name: str) -> bytes | None:
    """A file of pipeline/static (None if missing; no path tricks)."""
    if not name or "/" in name or name.startswith("."):
        return None
    try:
        node = resources.files("pipeline").joinpath("static").joinpath(name)
        if not node.is_file():
            return None
        return node.read_bytes()
    except (OSError, ModuleNotFoundError):
        return None


def _handler(source: ApiSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tankwatch"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: metrics, not logs
            log.debug("http " + format, *args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            body = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
            self._send(code, body, "application/json")

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            try:
                if path == "/metrics":
                    self._send(200, source.metrics_text(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok, body = source.health()
                    self._json(200 if ok else 503, body)
                elif path == "/api/fleet":
                    try:
                        query = FleetQuery.parse(parse_qs(parts.query))
                    except QueryError as exc:
                        self._json(400, {"error": str(exc)})
                    else:
                        self._json(200, source.fleet_json(query))
                elif path.startswith("/api/tank/"):
                    tank = source.tank_json(unquote(path[len("/api/tank/") :]))
                    if tank is None:
                        self._json(404, {"error": "unknown tank"})
                    else:
                        self._json(200, tank)
                elif path in ("/", "/index.html"):
                    page = _static("index.html")
                    self._send(200, page or _PLACEHOLDER, "text/html; charset=utf-8")
                else:
                    data = _static(path.lstrip("/"))
                    if data is None:
                        self._json(404, {"error": "not found"})
                    else:
                        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
                        self._send(200, data, ctype)
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception:
                log.exception("http handler failed", extra={"path": path})
                with contextlib.suppress(OSError):
                    self._json(500, {"error": "internal error"})

    return Handler


class HttpServer:
    """Serves ``source`` on host:port (0 = a free port) from a daemon thread."""

    def __init__(self, source: ApiSource, host: str, port: int) -> None:
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(source))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="tankwatch-http", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
