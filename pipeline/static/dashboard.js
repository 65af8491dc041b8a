// The built-in live dashboard: polls /api/fleet and /api/tank/<id> and draws the fleet
// table and one tank's charts as inline SVG. Plain browser JavaScript, no dependencies.
//
// Fleet scale: the server sorts, filters and pages (/api/fleet?sort=&status=&q=&offset=
// &limit=&spark=), so each poll carries one page of rows and the fleet's summary counts,
// however large the fleet; sparklines come from the server's history (spark=N points).
// The view (tank, sort, order, status filter, id search, page) lives in the URL hash,
// so it survives a reload and can be bookmarked or shared.
"use strict";
const POLL_MS = 1500;
const PAGE_SIZE = 50;             // fleet rows per page
const SPARK_POINTS = 60;          // sparkline points per row, served from history
const STALE_TICKS = 10;           // fallback only: the server says each tank's status
const NS = "http://www.w3.org/2000/svg";
const SORTS = ["tank_id", "anomaly", "staleness", "residual"];
const STATUSES = ["all", "anomaly", "stale", "ok", "marked"];
const MARKS = { out_of_range: ["OOR", "a reading outside the sensor's range"],
                model_mismatch: ["MODEL", "the tank does not match the model's operating range"],
                uncalibrated: ["UNCAL", "uncalibrated sensor"] };

const state = {
  selected: null, sort: "tank_id", desc: null, status: "all", q: "", page: 1,
  interval: 60, matched: 0, fleetSeq: 0, rendered: false, tankRendered: false,
};
const $ = (id) => document.getElementById(id);
const defaultDesc = (sort) => sort !== "tank_id";
const isDesc = () => (state.desc === null ? defaultDesc(state.sort) : state.desc);

// Tank ids come from producers: never let one be markup.
function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function fmt(v, digits) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const text = v.toFixed(digits);
  return /^-0\.?0*$/.test(text) ? text.slice(1) : text;  // no "-0.000"
}
function fmtTime(ts, withDate) {
  if (!Number.isFinite(ts)) return "–";
  const iso = new Date(ts * 1000).toISOString();
  return withDate ? iso.slice(0, 16).replace("T", " ") : iso.slice(11, 16);
}
function fmtAge(s) {
  if (!Number.isFinite(s)) return "–";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
// "resets" is {reason: count} (event, gap, new_tank); older servers sent a number.
function resetsTotal(r) {
  if (r === null || r === undefined) return "–";
  return typeof r === "number" ? r : Object.values(r).reduce((a, b) => a + b, 0);
}
function resetsTitle(r) {
  return r && typeof r === "object" ? Object.entries(r).map(([k, v]) => `${k}: ${v}`).join(", ") : "";
}
function statusOf(t) {
  if (t.status) return t.status;
  if (t.anomaly_flag) return "anomaly";
  if (Number.isFinite(t.staleness_s) && t.staleness_s > STALE_TICKS * state.interval) return "stale";
  return "ok";
}

// ---- SVG path of points (x, y) with gaps where y is null/NaN -------------------
// maxGap (x units): a longer step between points lifts the pen, so a tank that was
// silent for hours is not drawn as a straight line across the silence.
function pathData(xs, ys, sx, sy, maxGap) {
  let d = "", pen = false, lastX = NaN;
  for (let i = 0; i < xs.length; i++) {
    const y = ys[i];
    if (y === null || y === undefined || !Number.isFinite(y) || !Number.isFinite(xs[i])) { pen = false; continue; }
    if (maxGap && xs[i] - lastX > maxGap) pen = false;
    d += (pen ? "L" : "M") + sx(xs[i]).toFixed(1) + "," + sy(y).toFixed(1);
    pen = true;
    lastX = xs[i];
  }
  return d;
}
function extent(arrays) {
  let lo = Infinity, hi = -Infinity;
  for (const a of arrays) for (const v of a || []) {
    if (v !== null && Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  }
  if (lo === Infinity) return null;
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.08;
  return [lo - pad, hi + pad];
}
function niceTicks(lo, hi, n) {
  const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(v);
  return out;
}

// ---- a time-series chart: series = [{cls, xs, ys}], markers = [{xs, ys}] ----------
function drawChart(svg, series, opts) {
  const w = svg.clientWidth || 600, h = svg.clientHeight || 190;
  const m = { l: 52, r: 10, t: 6, b: 18 };
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const yr = opts.yrange || extent(series.map((s) => s.ys));
  const xs = series.flatMap((s) => s.xs).filter(Number.isFinite);
  if (!yr || xs.length < 2) {
    const t = el("text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "axis" }, svg);
    t.textContent = "no data yet";
    return;
  }
  // opts.xrange lines up the x axes of all charts of one tank (history + horizon).
  const [x0, x1] = opts.xrange || [Math.min(...xs), Math.max(...xs)];
  const sx = (x) => m.l + ((x - x0) / (x1 - x0 || 1)) * (w - m.l - m.r);
  const sy = (y) => h - m.b - ((y - yr[0]) / (yr[1] - yr[0])) * (h - m.t - m.b);
  if (opts.now !== undefined && opts.now < x1) {
    el("rect", { class: "future", x: sx(opts.now), y: m.t, width: sx(x1) - sx(opts.now), height: h - m.t - m.b }, svg);
  }
  const grid = el("g", { class: "grid" }, svg), axis = el("g", { class: "axis" }, svg);
  const ticks = niceTicks(yr[0], yr[1], 4);
  // As many decimals as the tick step needs, so labels never repeat (-146.45 vs -146.50).
  const stepY = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  let dec = 0;
  while (dec < 6 && Math.abs(stepY * 10 ** dec - Math.round(stepY * 10 ** dec)) > 1e-6 * 10 ** dec) dec++;
  for (const v of ticks) {
    el("line", { x1: m.l, x2: w - m.r, y1: sy(v), y2: sy(v) }, grid);
    const t = el("text", { x: m.l - 4, y: sy(v) + 3, "text-anchor": "end" }, axis);
    t.textContent = v.toFixed(dec);
  }
  const span = x1 - x0, want = Math.max(2, Math.floor((w - m.l) / 100));
  // Round time steps (1 min … 1 day) so labels read 08:00, 08:30, … rather than 08:07.
  const step = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
    .find((s) => span / s <= want) || 86400;
  for (let x = Math.ceil(x0 / step) * step; x <= x1; x += step) {
    el("line", { x1: sx(x), x2: sx(x), y1: m.t, y2: h - m.b }, grid);
    const t = el("text", { x: sx(x), y: h - 4, "text-anchor": "middle" }, axis);
    t.textContent = fmtTime(x, step >= 86400);
  }
  if (opts.zero && yr[0] < 0 && yr[1] > 0) el("line", { class: "zero", x1: m.l, x2: w - m.r, y1: sy(0), y2: sy(0) }, svg);
  if (opts.now !== undefined && opts.now <= x1) el("line", { class: "now", x1: sx(opts.now), x2: sx(opts.now), y1: m.t, y2: h - m.b }, svg);
  for (const s of series) {
    const d = pathData(s.xs, s.ys, sx, sy, s.cls === "horizon" ? 0 : 3 * state.interval);
    if (d) el("path", { class: s.cls, d }, svg);
  }
  for (const mk of opts.markers || []) {
    for (let i = 0; i < mk.xs.length; i++) {
      if (Number.isFinite(mk.ys[i])) el("circle", { class: "anom", cx: sx(mk.xs[i]), cy: sy(mk.ys[i]), r: 3 }, svg);
    }
  }
}

function sparkline(values) {
  const svg = el("svg", { class: "spark", viewBox: "0 0 120 24", preserveAspectRatio: "none" });
  values = (values || []).map((v) => (v === null ? NaN : v));
  const ys = values.filter(Number.isFinite), span = Math.max(values.length, 24);
  if (ys.length >= 2) {
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    // Right-aligned (newest at the right edge); a short buffer still spans a fair width.
    const sx = (i) => ((i + span - values.length) / (span - 1)) * 120;
    const d = pathData(values.map((_, i) => i), values, sx, (y) => 22 - ((y - lo) / (hi - lo)) * 20);
    el("path", { d }, svg);
  }
  return svg;
}

// ---- the view in the URL: #tank=T01&sort=anomaly&order=desc&status=stale&q=T0&page=2 ----
function readHash() {
  const p = new URLSearchParams(location.hash.replace(/^#/, "") || location.search.replace(/^\?/, ""));
  state.selected = p.get("tank") || null;
  state.sort = SORTS.includes(p.get("sort")) ? p.get("sort") : "tank_id";
  const order = p.get("order");
  state.desc = order === "asc" ? false : order === "desc" ? true : null;
  state.status = STATUSES.includes(p.get("status")) ? p.get("status") : "all";
  state.q = (p.get("q") || "").slice(0, 200);
  const page = parseInt(p.get("page") || "1", 10);
  state.page = Number.isFinite(page) && page >= 1 ? page : 1;
}
function viewHash(tank) {
  const p = new URLSearchParams();
  if (tank) p.set("tank", tank);
  if (state.sort !== "tank_id") p.set("sort", state.sort);
  if (state.desc !== null && state.desc !== defaultDesc(state.sort)) p.set("order", state.desc ? "desc" : "asc");
  if (state.status !== "all") p.set("status", state.status);
  if (state.q) p.set("q", state.q);
  if (state.page > 1) p.set("page", String(state.page));
  return "#" + p.toString();
}
function writeHash() {
  const h = viewHash(state.selected);
  if (h !== location.hash && !(h === "#" && !location.hash)) history.replaceState(null, "", h);
  $("tank-link").href = h;
}
function syncControls() {
  $("sort").value = state.sort;
  $("status").value = state.status;
  if (document.activeElement !== $("q")) $("q").value = state.q;
  $("order").textContent = isDesc() ? "↓" : "↑";
  for (const th of document.querySelectorAll("th[data-sort]")) {
    const on = th.dataset.sort === state.sort;
    th.classList.toggle("sorted", on);
    th.setAttribute("aria-sort", on ? (isDesc() ? "descending" : "ascending") : "none");
    th.title = on ? "sorted; click to reverse" : "click to sort";
  }
  $("order").title = isDesc() ? "descending (worst first); click for ascending" : "ascending; click for descending";
}
function fleetUrl() {
  const p = new URLSearchParams({
    sort: state.sort, order: isDesc() ? "desc" : "asc", status: state.status, q: state.q,
    offset: String((state.page - 1) * PAGE_SIZE), limit: String(PAGE_SIZE), spark: String(SPARK_POINTS),
  });
  return "api/fleet?" + p.toString();
}
function marksHtml(t) {
  let out = "";
  for (const [key, [label, title]] of Object.entries(MARKS)) {
    if (t[key]) out += ` <span class="mark ${key}" title="${esc(title)}">${label}</span>`;
  }
  return out;
}
function sourceText(src) {
  if (src === null || src === undefined) return "";
  if (typeof src === "string") return src;
  if (Array.isArray(src)) return src.join(", ");
  return Object.entries(src).map(([k, v]) => `${k.replace(/_(kpa|c)$/, "")}: ${v}`).join(", ");
}

// ---- fleet ---------------------------------------------------------------------
function renderFleet(data) {
  state.interval = data.interval_s || state.interval;
  const model = data.model || {};
  $("model").textContent = model.model_version || model.version || "–";
  $("interval").textContent = fmt(state.interval, 0) + " s";
  $("now").textContent = fmtTime(data.now_ts, true);
  $("updated").textContent = new Date().toISOString().slice(11, 19);
  const tanks = data.tanks || [];
  const sum = data.summary || {};
  const total = sum.tanks ?? tanks.length, matched = sum.matched ?? tanks.length;
  state.matched = matched;
  $("n-tanks").textContent = total.toLocaleString("en-US");
  $("n-anomaly").textContent = sum.anomalous ?? tanks.filter((t) => statusOf(t) === "anomaly").length;
  $("n-stale").textContent = sum.stale ?? tanks.filter((t) => statusOf(t) === "stale").length;
  $("n-marked").textContent = sum.marked ?? 0;
  $("mean-err").textContent = fmt(sum.mean_abs_residual_pressure_kpa, 3);
  const pages = Math.max(1, Math.ceil(matched / PAGE_SIZE));
  const offset = (state.page - 1) * PAGE_SIZE;
  $("page-info").textContent = matched
    ? `${(offset + 1).toLocaleString("en-US")}–${(offset + tanks.length).toLocaleString("en-US")} of ${matched.toLocaleString("en-US")}` +
      (matched < total ? " matching" : "")
    : "none";
  $("prev").disabled = state.page <= 1;
  $("next").disabled = state.page >= pages;
  const body = $("fleet-rows");
  if (!tanks.length) {
    if (matched && state.page > pages) { state.page = pages; writeHash(); pollFleet(); return; }
    const text = total ? "no tank matches this filter" : "waiting for data…";
    body.innerHTML = `<tr><td colspan="10" class="empty">${text}</td></tr>`;
    return;
  }
  const rows = document.createDocumentFragment();
  for (const t of tanks) {
    const st = statusOf(t);
    const tr = document.createElement("tr");
    tr.dataset.tank = t.tank_id;
    if (t.tank_id === state.selected) tr.className = "selected";
    const score = Number.isFinite(t.anomaly_score) ? t.anomaly_score : 0;
    const pct = Math.min(100, (score / 6) * 100), col = score > 5 ? "var(--bad)" : score > 3 ? "var(--warn)" : "var(--ok)";
    const src = sourceText(t.source);
    tr.innerHTML =
      `<td${src ? ` title="forecast source: ${esc(src)}"` : ""}><b>${esc(t.tank_id)}</b>${marksHtml(t)}</td>` +
      `<td class="l"><span class="badge ${st}">${st.toUpperCase()}</span></td>` +
      `<td>${fmt(t.pressure_kpa, 2)}</td><td class="l spark-cell"></td>` +
      `<td>${fmt(t.temperature_c, 2)}</td>` +
      `<td>${fmt(t.residual_pressure_kpa, 3)}</td><td>${fmt(t.residual_temperature_c, 3)}</td>` +
      `<td>${fmt(t.anomaly_score, 1)}<span class="scorebar"><i style="width:${pct}%;background:${col}"></i></span></td>` +
      `<td>${fmtAge(t.staleness_s)}</td><td title="${esc(resetsTitle(t.resets))}">${resetsTotal(t.resets)}</td>`;
    tr.querySelector(".spark-cell").appendChild(sparkline(t.spark));
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
  if (!state.rendered) { state.rendered = true; performance.mark("tankwatch:fleet-rendered"); }
  if (!state.selected) {
    // Nothing asked for: the most anomalous tank on this page, else its first one.
    const worst = tanks.slice().sort((a, b) => (b.anomaly_score || 0) - (a.anomaly_score || 0))[0];
    selectTank(tanks.some((t) => t.anomaly_flag) ? worst.tank_id : tanks[0].tank_id);
  }
}

// ---- one tank ------------------------------------------------------------------
function renderTank(d) {
  const h = d.history || {}, hz = d.horizon || {};
  const ts = h.ts || [], n = ts.length;
  const last = n - 1, now = ts[last];
  $("tank-id").textContent = d.tank_id;
  const resid = ts.map((_, i) => (Number.isFinite(h.pressure_kpa[i]) && Number.isFinite(h.forecast_pressure_kpa[i]))
    ? h.pressure_kpa[i] - h.forecast_pressure_kpa[i] : null);
  const flagged = (arrName) => {
    const xs = [], ys = [];
    for (let i = 0; i < n; i++) if ((h.anomaly_flag || [])[i]) { xs.push(ts[i]); ys.push(h[arrName][i]); }
    return { xs, ys };
  };
  const kv = [
    ["pressure", fmt(h.pressure_kpa?.[last], 2) + " kPa"],
    ["temperature", fmt(h.temperature_c?.[last], 2) + " °C"],
    ["anomaly score", fmt(h.anomaly_score?.[last], 2)],
    ["last reading", fmtTime(now, true)],
    ["points", String(n)],
  ];
  const src = sourceText(d.source);
  if (src) kv.push(["forecast source", src]);
  $("tank-kv").innerHTML = kv.map(([k, v]) => `<span>${k} <b>${esc(v)}</b></span>`).join("");
  $("tank-marks").innerHTML = Object.entries(MARKS).filter(([key]) => d[key])
    .map(([key, [label, title]]) => `<span class="mark ${key}">${label}</span> ${esc(title)}`).join(" · ");
  // The horizon line starts at the last actual so it reads as "continuing from now".
  const hzTs = [now, ...(hz.ts || [])];
  const xrange = [ts[0], Math.max(now, ...hzTs.filter(Number.isFinite))];
  if (!(xrange[1] > xrange[0])) xrange[1] = xrange[0] + state.interval;
  drawChart($("chart-pressure"), [
    { cls: "actual", xs: ts, ys: h.pressure_kpa || [] },
    { cls: "forecast", xs: ts, ys: h.forecast_pressure_kpa || [] },
    { cls: "horizon", xs: hzTs, ys: [h.pressure_kpa?.[last], ...(hz.pressure_kpa || [])] },
  ], { now, xrange, markers: [flagged("pressure_kpa")] });
  drawChart($("chart-temperature"), [
    { cls: "actual", xs: ts, ys: h.temperature_c || [] },
    { cls: "forecast", xs: ts, ys: h.forecast_temperature_c || [] },
    { cls: "horizon", xs: hzTs, ys: [h.temperature_c?.[last], ...(hz.temperature_c || [])] },
  ], { now, xrange, markers: [flagged("temperature_c")] });
  drawChart($("chart-residual"), [{ cls: "resid", xs: ts, ys: resid }], { now, xrange, zero: true });
  const score = h.anomaly_score || [];
  drawChart($("chart-score"), [{ cls: "score", xs: ts, ys: score }], { now, xrange, markers: [flagged("anomaly_score")] });
  if (!state.tankRendered) { state.tankRendered = true; performance.mark("tankwatch:tank-rendered"); }
}
function renderUnknownTank(id) {
  $("tank-id").textContent = id;
  $("tank-kv").innerHTML = `<span class="unknown">no tank <b>${esc(id)}</b> on this pipeline instance (yet)</span>`;
  $("tank-marks").innerHTML = "";
  for (const c of ["chart-pressure", "chart-temperature", "chart-residual", "chart-score"]) drawChart($(c), [], {});
}

function selectTank(id) {
  state.selected = id;
  for (const tr of document.querySelectorAll("#fleet-rows tr")) tr.classList.toggle("selected", tr.dataset.tank === id);
  writeHash();
  pollTank();
}

// ---- polling -------------------------------------------------------------------
function setConn(ok, text) {
  const c = $("conn");
  c.className = ok ? "ok" : "bad";
  c.textContent = text;
}
async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
let tankBusy = false, tankAgain = false;
async function pollTank() {
  if (!state.selected) return;
  if (tankBusy) { tankAgain = true; return; }
  tankBusy = true;
  try {
    const id = state.selected;
    const d = await getJson("api/tank/" + encodeURIComponent(id));
    if (id === state.selected) { if (d) renderTank(d); else renderUnknownTank(id); }
  } catch (e) { /* the next poll retries */ }
  finally {
    tankBusy = false;
    if (tankAgain) { tankAgain = false; pollTank(); }
  }
}
async function pollFleet() {
  const seq = ++state.fleetSeq;  // a newer request (filter change) wins over older ones
  try {
    const data = await getJson(fleetUrl());
    if (seq !== state.fleetSeq) return;
    renderFleet(data || {});
    setConn(true, "live");
  } catch (e) {
    if (seq === state.fleetSeq) setConn(false, "disconnected");
  }
}
function viewChanged() {
  syncControls();
  writeHash();
  pollFleet();
}

// ---- controls ------------------------------------------------------------------
$("sort").addEventListener("change", (e) => { state.sort = e.target.value; state.desc = null; state.page = 1; viewChanged(); });
$("order").addEventListener("click", () => { state.desc = !isDesc(); state.page = 1; viewChanged(); });
$("status").addEventListener("change", (e) => { state.status = e.target.value; state.page = 1; viewChanged(); });
let qTimer = null;
$("q").addEventListener("input", (e) => {
  clearTimeout(qTimer);
  qTimer = setTimeout(() => { state.q = e.target.value.trim(); state.page = 1; viewChanged(); }, 250);
});
// Column headers sort too; a second click on the sorted column reverses it.
for (const th of document.querySelectorAll("th[data-sort]")) {
  th.addEventListener("click", () => {
    if (state.sort === th.dataset.sort) state.desc = !isDesc();
    else { state.sort = th.dataset.sort; state.desc = null; }
    state.page = 1;
    viewChanged();
  });
}
$("prev").addEventListener("click", () => { if (state.page > 1) { state.page--; viewChanged(); } });
$("next").addEventListener("click", () => { state.page++; viewChanged(); });
$("fleet-rows").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-tank]");
  if (tr) selectTank(tr.dataset.tank);
});
window.addEventListener("hashchange", () => { readHash(); syncControls(); pollFleet(); pollTank(); });
window.addEventListener("resize", pollTank);

async function loop() {
  await pollFleet();
  await pollTank();
  setTimeout(loop, POLL_MS);
}
readHash();
syncControls();
writeHash();
loop();
