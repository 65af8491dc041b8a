"""The dashboard page at fleet scale, in headless Chromium: deep links, sort and filter,
5,000 tanks. The page and JSON API are the real ones (pipeline/static, pipeline/api.py,
pipeline/http.py) over a synthetic fleet (tests/integration/synthetic_fleet.py), so no
broker is needed. Screenshots are kept in ``test-artifacts/`` (listed at the end of the
pytest output); measurements of the same page: ``bench/page.py``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.browser import ARTIFACTS, ChromeDriver, chrome, require_chromium
from tests.integration.synthetic_fleet import StaticSource, serve_fleet

pytestmark = pytest.mark.browser

N_TANKS = 5000
PAGE = 50

ROWS_JS = """
return [...document.querySelectorAll('#fleet-rows tr[data-tank]')].map(r => ({
  tank: r.dataset.tank,
  status: r.querySelector('.badge').textContent,
  score: parseFloat(r.children[7].textContent),
  marks: [...r.querySelectorAll('.mark')].map(m => m.textContent),
  spark: ((r.querySelector('svg.spark path') || {getAttribute: () => ''})
          .getAttribute('d').match(/L/g) || []).length,
}));
"""


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[str, StaticSource]]:
    with serve_fleet(N_TANKS, marks=True) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[ChromeDriver]:
    require_chromium()
    with chrome() as driver:
        driver.viewport(1400, 1000)  # the size issue 13 checks the layout at
        yield driver


def _open(browser: ChromeDriver, url: str) -> None:
    browser.s("POST", "/url", {"url": url})
    browser.wait_js(
        "return document.querySelectorAll('#fleet-rows tr[data-tank]').length > 0"
        " && document.getElementById('conn').textContent === 'live'"
    )


def _rows(browser: ChromeDriver) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = browser.js(ROWS_JS)
    return rows


def _hash(browser: ChromeDriver) -> dict[str, str]:
    params: dict[str, str] = browser.js(
        "return Object.fromEntries(new URLSearchParams(location.hash.slice(1)))"
    )
    return params


def test_deep_link_opens_one_tank(fleet: tuple[str, StaticSource], browser: ChromeDriver) -> None:
    url, _ = fleet
    tank = "T04321"  # far off the first page of the id-sorted list
    _open(browser, f"{url}#tank={tank}")
    browser.wait_js(
        f"return document.getElementById('tank-id').textContent === '{tank}'"
        " && document.querySelectorAll('#chart-pressure path.actual').length === 1"
        " && document.querySelectorAll('#chart-pressure path.horizon').length === 1"
    )
    assert _hash(browser)["tank"] == tank  # not replaced by a default selection
    assert tank not in [r["tank"] for r in _rows(browser)]
    points = browser.js(
        "return (document.querySelector('#chart-pressure path.actual')"
        ".getAttribute('d').match(/L/g) || []).length"
    )
    assert points >= 100  # the server's history, drawn at once (no polls needed)
    # The tank's own link reproduces the view.
    assert browser.js("return document.getElementById('tank-link').getAttribute('href')") == (
        f"#tank={tank}"
    )
    browser.screenshot(ARTIFACTS / "page-deep-link-tank.png")

    # A link to a tank that is not there says so instead of showing another tank.
    browser.s("POST", "/url", {"url": f"{url}#tank=NO-SUCH"})
    browser.wait_js("return document.querySelector('#tank-kv .unknown') !== null")
    assert browser.js("return document.getElementById('tank-id').textContent") == "NO-SUCH"


def test_sort_and_filter_live_in_the_url(
    fleet: tuple[str, StaticSource], browser: ChromeDriver
) -> None:
    url, source = fleet
    summary = source.fleet_json()["summary"]
    # From a bookmarked URL: anomalous tanks, worst first.
    _open(browser, f"{url}#sort=anomaly&status=anomaly")
    rows = _rows(browser)
    assert len(rows) == min(PAGE, summary["anomalous"])
    assert {r["status"] for r in rows} == {"ANOMALY"}
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert browser.js("return document.getElementById('sort').value") == "anomaly"
    assert browser.js("return document.getElementById('n-anomaly').textContent") == str(
        summary["anomalous"]
    )

    # The controls: stale tanks, longest silent first; the URL follows.
    browser.js(
        "const s = document.getElementById('status'); s.value = 'stale';"
        " s.dispatchEvent(new Event('change'));"
        "const o = document.getElementById('sort'); o.value = 'staleness';"
        " o.dispatchEvent(new Event('change'));"
    )
    browser.wait_js(
        "const r = [...document.querySelectorAll('#fleet-rows .badge')].map(b => b.textContent);"
        " return r.length > 0 && r.every(t => t === 'STALE')"
        " && location.hash.includes('sort=staleness')"
    )
    assert _hash(browser) | {"tank": ""} == {"sort": "staleness", "status": "stale", "tank": ""}
    assert len(_rows(browser)) == min(PAGE, summary["stale"])
    info = browser.js("return document.getElementById('page-info').textContent")
    assert info == f"1–{min(PAGE, summary['stale'])} of {summary['stale']} matching", info

    # Id search, then the whole view survives a reload (bookmark).
    browser.js(
        "const q = document.getElementById('q'); q.value = 'T001';"
        " q.dispatchEvent(new Event('input'));"
    )
    browser.wait_js("return location.hash.includes('q=T001')")
    browser.wait_js(
        "return [...document.querySelectorAll('#fleet-rows tr[data-tank]')]"
        ".every(r => r.dataset.tank.startsWith('T001'))"
    )
    expected = sorted(
        t["tank_id"]
        for t in source.fleet_json()["tanks"]
        if t["status"] == "stale" and "T001" in t["tank_id"]
    )
    assert sorted(r["tank"] for r in _rows(browser)) == expected and expected
    bookmarked = browser.js("return location.href")
    browser.s("POST", "/url", {"url": "about:blank"})
    _open(browser, bookmarked)
    assert sorted(r["tank"] for r in _rows(browser)) == expected
    assert browser.js("return document.getElementById('q').value") == "T001"
    assert browser.js("return document.getElementById('status').value") == "stale"
    browser.screenshot(ARTIFACTS / "page-sort-filter.png")

    # Marked tanks carry their marks in the list (a hash-only change: the same page
    # follows the new URL without a reload).
    browser.s("POST", "/url", {"url": f"{url}#status=marked"})
    browser.wait_js(
        "const r = [...document.querySelectorAll('#fleet-rows tr[data-tank]')];"
        " return r.length > 0 && r.every(t => t.querySelector('.mark'))"
    )
    assert browser.js("return document.getElementById('status').value") == "marked"
    rows = _rows(browser)
    assert rows and all(r["marks"] for r in rows)
    assert {m for r in rows for m in r["marks"]} == {"OOR", "MODEL"}


def test_five_thousand_tanks_page_by_page(
    fleet: tuple[str, StaticSource], browser: ChromeDriver
) -> None:
    url, _ = fleet
    _open(browser, url)
    browser.wait_js("return document.querySelectorAll('#chart-pressure path.actual').length === 1")
    rows = _rows(browser)
    assert [r["tank"] for r in rows] == [f"T{i:05d}" for i in range(PAGE)]
    assert all(r["spark"] >= 50 for r in rows)  # sparklines from the server, first render
    assert browser.js("return document.getElementById('n-tanks').textContent") == "5,000"
    assert browser.js("return document.getElementById('page-info').textContent") == (
        "1–50 of 5,000"
    )
    browser.js("document.getElementById('next').click()")
    browser.wait_js(
        "return document.querySelector('#fleet-rows tr[data-tank]').dataset.tank === 'T00050'"
    )
    assert _hash(browser).get("page") == "2"
    # Only the page is in the DOM, and each poll carries only the page.
    assert browser.js("return document.querySelectorAll('#fleet-rows tr').length") == PAGE
    with urllib.request.urlopen(url + "api/fleet?limit=50&spark=60", timeout=30) as r:
        page_bytes = len(r.read())
    with urllib.request.urlopen(url + "api/fleet", timeout=30) as r:
        full = r.read()
    assert len(json.loads(full)["tanks"]) == N_TANKS
    assert page_bytes * 20 < len(full)
    # Layout at 1400x1000: nothing wider than the window, all four charts on screen.
    layout = browser.js(
        "const s = document.getElementById('chart-score').getBoundingClientRect();"
        "const w = document.querySelector('#fleet .table-wrap').getBoundingClientRect();"
        "const f = document.getElementById('fleet').getBoundingClientRect();"
        "return {scroll: document.documentElement.scrollWidth, width: innerWidth,"
        " height: innerHeight, score_bottom: s.bottom, wrap_right: w.right, card_right: f.right,"
        " table: document.querySelector('#fleet table').scrollWidth,"
        " wrap: document.querySelector('#fleet .table-wrap').clientWidth}"
    )
    assert layout["scroll"] <= layout["width"], layout
    assert layout["score_bottom"] <= layout["height"], layout
    assert layout["wrap_right"] <= layout["card_right"], layout
    assert layout["table"] <= layout["wrap"], layout  # every column fits, marks included
    first_ms = browser.js(
        "const m = performance.getEntriesByName('tankwatch:fleet-rendered')[0];"
        " return m ? m.startTime : null"
    )
    assert first_ms is not None  # figures: bench/page.py, docs/performance.md
    print(f"5,000 tanks: first render {first_ms:.0f} ms, poll {page_bytes} B, full {len(full)} B")
    browser.screenshot(ARTIFACTS / "page-5000-tanks.png")


def test_column_headers_sort_and_reverse(
    fleet: tuple[str, StaticSource], browser: ChromeDriver
) -> None:
    url, _ = fleet
    _open(browser, url)
    residuals = (
        "return [...document.querySelectorAll('#fleet-rows tr[data-tank]')]"
        ".map(r => Math.abs(parseFloat(r.children[5].textContent)))"
    )
    browser.js("document.querySelector('th[data-sort=residual]').click()")
    browser.wait_js(
        "return location.hash.includes('sort=residual')"
        " && document.querySelector('th[data-sort=residual]').getAttribute('aria-sort')"
        " === 'descending'"
    )
    browser.wait_js(
        "const v = " + residuals[len("return ") :] + ";"
        " return v.length === 50 && v.every((x, i) => i === 0 || v[i - 1] >= x)"
    )
    browser.js("document.querySelector('th[data-sort=residual]').click()")
    browser.wait_js("return location.hash.includes('order=asc')")
    browser.wait_js(
        "const v = " + residuals[len("return ") :] + ";"
        " return v.length === 50 && v.every((x, i) => i === 0 || v[i - 1] <= x)"
    )
    assert browser.js("return document.getElementById('order').textContent") == "↑"
