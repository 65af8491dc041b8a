"""The dashboard page at fleet scale, measured in headless Chromium.

For fleets of 24 (the demo), 1,000 and 5,000 tanks, the real page and JSON API
(pipeline/static, pipeline/api.py, pipeline/http.py) serve a synthetic fleet built in
process (tests/integration/synthetic_fleet.py: the same FleetView and History objects
the pipeline publishes). Printed per fleet size:

* first render: ms from navigation start until the first fleet row is in the DOM, and
  until the selected tank's pressure chart is drawn (a MutationObserver installed before
  the page's own scripts, so any version of the page is timed the same way);
* poll payload: bytes of one ``/api/fleet`` poll as the page sends it (one page of 50
  rows with 60-point sparklines), next to the unpaged whole-fleet response (what a poll
  carried before paging) for scale; and the server's time to build the page poll;
* JS heap: used JS heap (CDP ``JSHeapUsedSize``, after a GC) once loaded and after a
  further ``--soak`` seconds of polling; and DOM elements of the page.

Each size is measured for this page and for ``--baseline`` (the page before issue 13,
served from git over the same API: it polls and draws the whole fleet).

    .venv/bin/python bench/page.py [--sizes 24,1000,5000] [--soak 15] [--baseline REF]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, table  # noqa: E402
from tests.integration.browser import chrome, have_chromium  # noqa: E402
from tests.integration.synthetic_fleet import serve_fleet  # noqa: E402

POLL = "api/fleet?sort=tank_id&order=asc&status=all&q=&offset=0&limit=50&spark=60"
#: Installed before any page script: marks the first fleet row and first chart path the
#: same way for any version of the page (the baseline has no marks of its own).
OBSERVER = """
new MutationObserver((_, obs) => {
  const mark = (name) => {
    if (!performance.getEntriesByName(name).length) performance.mark(name);
  };
  if (document.querySelector('#fleet-rows tr[data-tank]')) mark('bench:rows');
  if (document.querySelector('#chart-pressure path.actual')) mark('bench:charts');
  if (performance.getEntriesByName('bench:rows').length
      && performance.getEntriesByName('bench:charts').length) obs.disconnect();
}).observe(document, {subtree: true, childList: true});
"""


@contextlib.contextmanager
def page_version(ref: str | None) -> Iterator[None]:
    """Serve pipeline/static as of git ``ref`` (None = the working tree)."""
    if ref is None:
        yield
        return
    import pipeline.http as http

    with tempfile.TemporaryDirectory(prefix="tankwatch-page-") as tmp:
        for name in ("index.html", "dashboard.js", "dashboard.css"):
            data = subprocess.run(
                ["git", "show", f"{ref}:pipeline/static/{name}"],
                cwd=ROOT,
                capture_output=True,
                check=True,
            ).stdout
            (Path(tmp) / name).write_bytes(data)
        original = http._static
        http._static = lambda name: (  # type: ignore[assignment]
            (Path(tmp) / name).read_bytes() if (Path(tmp) / name).is_file() else None
        )
        try:
            yield
        finally:
            http._static = original


def _get(url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        n = len(resp.read())
    return n, time.perf_counter() - t0


def measure(n: int, soak_s: float, ref: str | None = None) -> list[object]:
    with page_version(ref), serve_fleet(n, marks=True) as (url, _), chrome() as browser:
        browser.viewport(1400, 1000)
        browser.cdp("Page.addScriptToEvaluateOnNewDocument", {"source": OBSERVER})
        poll = POLL if ref is None else "api/fleet"  # the baseline polls the whole fleet
        poll_bytes, _ = _get(url + poll)
        server_ms = statistics.median(_get(url + poll)[1] * 1000 for _ in range(20))
        full_bytes, _ = _get(url + "api/fleet")
        browser.s("POST", "/url", {"url": url})
        browser.wait_js(
            "return performance.getEntriesByName('bench:rows').length > 0"
            " && performance.getEntriesByName('bench:charts').length > 0",
            timeout_s=120,
        )
        fleet_ms, tank_ms = browser.js(
            "return ['bench:rows', 'bench:charts']"
            ".map(n => performance.getEntriesByName(n)[0].startTime)"
        )
        heap0 = browser.js_heap_bytes()
        time.sleep(soak_s)
        heap1 = browser.js_heap_bytes()
        nodes = browser.js("return document.getElementsByTagName('*').length")
    return [
        "this page" if ref is None else f"page of {ref}",
        f"{n:,}",
        f"{fleet_ms:.0f}",
        f"{tank_ms:.0f}",
        f"{poll_bytes / 1024:.1f}",
        f"{server_ms:.1f}",
        f"{full_bytes / 1024:.0f}",
        f"{heap0 / 2**20:.1f}",
        f"{heap1 / 2**20:.1f}",
        f"{nodes:,}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="24,1000,5000", help="fleet sizes (default %(default)s)")
    ap.add_argument(
        "--soak", type=float, default=15.0, help="seconds of polling (default %(default)s)"
    )
    ap.add_argument(
        "--baseline",
        default="8a54068",
        help="git ref of the page to compare with, '' for none (default %(default)s: "
        "the page before issue 13, which polled and drew the whole fleet)",
    )
    args = ap.parse_args()
    if not have_chromium():
        print("bench/page.py: needs chromium and chromedriver (make sysdeps)", file=sys.stderr)
        return 2
    rows = []
    for n in args.sizes.split(","):
        rows.append(measure(int(n), args.soak))
        if args.baseline:
            rows.append(measure(int(n), args.soak, args.baseline))
    print(machine())
    print(
        table(
            [
                "page",
                "tanks",
                "fleet rows ms",
                "charts ms",
                "poll KiB",
                "poll server ms",
                "whole fleet KiB",
                "heap MiB",
                f"heap MiB +{args.soak:g}s",
                "DOM elements",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
