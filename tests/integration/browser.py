"""Headless Chromium for the page tests and bench/page.py, through ChromeDriver's W3C
HTTP API (plain urllib, no selenium). Start flags from /work/shared/FACTS.md."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tankwatch.broker import free_port

#: Screenshots land here (gitignored) for a human to look at; the paths written in a
#: session are listed at the end of pytest's output (tests/conftest.py).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WRITTEN: list[Path] = []

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]


class ChromeDriver:
    """Just enough of the W3C WebDriver protocol, over urllib."""

    def __init__(self, user_data_dir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["chromedriver", f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise
                time.sleep(0.1)
        chrome = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chrome,
                        "args": [*CHROME_FLAGS, f"--user-data-dir={user_data_dir}"],
                    },
                }
            }
        }
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["value"]

    def s(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call(method, f"/session/{self.session}{path}", body)

    def js(self, script: str) -> Any:
        return self.s("POST", "/execute/sync", {"script": script, "args": []})

    def wait_js(self, script: str, timeout_s: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.js(script)
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for: {script} (last {value!r})")

    def cdp(self, cmd: str, params: dict[str, Any] | None = None) -> Any:
        """A Chrome DevTools Protocol command (ChromeDriver's ``goog/cdp/execute``)."""
        return self.s("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params or {}})

    def viewport(self, width: int, height: int) -> None:
        """Make the page's viewport exactly width x height CSS pixels (the window size
        flag counts the browser's own frame too)."""
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def js_heap_bytes(self) -> int:
        """Used JS heap of the page (CDP Performance.getMetrics ``JSHeapUsedSize``)."""
        self.cdp("HeapProfiler.collectGarbage")
        self.cdp("Performance.enable")
        metrics = self.cdp("Performance.getMetrics")["metrics"]
        return int(next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize"))

    def screenshot(self, path: Path) -> Path:
        png = base64.b64decode(self.s("GET", "/screenshot"))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        WRITTEN.append(path)
        return path

    def close(self) -> None:
        try:
            self.s("DELETE", "")
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def have_chromium() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def require_chromium() -> None:
    """Skip (fail under CI) when Chromium or ChromeDriver is missing."""
    if not have_chromium():
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing under CI (run make sysdeps)")
        pytest.skip("chromium/chromedriver not installed (make sysdeps)")


@contextlib.contextmanager
def chrome() -> Iterator[ChromeDriver]:
    """A headless Chromium session with a throw-away profile, always closed."""
    with tempfile.TemporaryDirectory(prefix="tankwatch-chrome-") as profile:
        driver = ChromeDriver(Path(profile))
        try:
            yield driver
        finally:
            driver.close()
