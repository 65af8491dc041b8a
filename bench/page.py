"""The dashboard page at fleet scale, measured in headless Chromium.

For fleets of 24 (the demo), 1,000 and 5,000 tanks, the real page and JSON API
(pipeline/static, pipeline/api.py, pipeline/http.py) serve a synthetic fleet built in
process (tests/integration/synthetic_fleet.py: the same FleetView and History objects
the pipeline publishes). Printed per fleet size:

* first render: ms from navigation start until the fleet rows are in the DOM, and until
  the selected tank's charts are drawn (``performance.mark`` set by the page);
* poll payload: bytes of one ``/api/fleet`` poll as the page sends it (one page of 50
  rows with 60-point sparklines), next to the unpaged whole-fleet response (what a poll
  carried before paging) for scale; and the server's time to build the page poll;
* JS heap: used JS heap (CDP ``JSHeapUsedSize``, after a GC) once loaded and after a
  further ``--soak`` seconds of polling; and DOM elements of the page.

    .venv/bin/python bench/page.py [--sizes 24,1000,5000] [--soak 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, table  # noqa: E402
from tests.integration.browser import chrome, have_chromium  # noqa: E402
from tests.integration.synthetic_fleet import serve_fleet  # noqa: E402

POLL = "api/fleet?sort=tank_id&order=asc&status=all&q=&offset=0&limit=50&spark=60"


def _get(url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        n = len(resp.read())
    return n, time.perf_counter() - t0


def measure(n: int, soak_s: float) -> list[object]:
    with serve_fleet(n, marks=True) as (url, _), chrome() as browser:
        poll_bytes, _ = _get(url + POLL)
        server_ms = statistics.median(_get(url + POLL)[1] * 1000 for _ in range(20))
        full_bytes, _ = _get(url + "api/fleet")
        browser.s("POST", "/url", {"url": url})
        browser.wait_js(
            "return performance.getEntriesByName('tankwatch:fleet-rendered').length > 0"
            " && performance.getEntriesByName('tankwatch:tank-rendered').length > 0",
            timeout_s=60,
        )
        fleet_ms, tank_ms = browser.js(
            "return ['tankwatch:fleet-rendered', 'tankwatch:tank-rendered']"
            ".map(n => performance.getEntriesByName(n)[0].startTime)"
        )
        heap0 = browser.js_heap_bytes()
        time.sleep(soak_s)
        heap1 = browser.js_heap_bytes()
        nodes = browser.js("return document.getElementsByTagName('*').length")
    return [
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
    args = ap.parse_args()
    if not have_chromium():
        print("bench/page.py: needs chromium and chromedriver (make sysdeps)", file=sys.stderr)
        return 2
    rows = [measure(int(n), args.soak) for n in args.sizes.split(",")]
    print(machine())
    print(
        table(
            [
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
