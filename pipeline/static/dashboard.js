// The built-in live dashboard: polls /api/fleet and /api/tank/<id> and draws the fleet
// table and one tank's charts as inline SVG. Plain browser JavaScript, no dependencies.
"use strict";
const POLL_MS = 1500;
const SPARK_POINTS = 90;          // fleet sparklines: last N polls per tank, kept client-side
const STALE_TICKS = 10;           // a tank this many tick intervals behind is "stale"
const NS = "http://www.w3.org/2000/svg";

const state = { selected: null, interval: 60, spark: new Map(), fleetOk: false };
const $ = (id) => document.getElementById(id);

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
  if (t.anomaly_flag) return "anomaly";
  if (Number.isFinite(t.staleness_s) && t.staleness_s > STALE_TICKS * state.interval) return "stale";
  return "ok";
}

// ---- SVG path of points (x, y) with gaps where y is null/NaN -------------------
function pathData(xs, ys, sx, sy) {
  let d = "", pen = false;
  for (let i = 0; i < xs.length; i++) {
    const y = ys[i];
    if (y === null || y === undefined || !Number.isFinite(y) || !Number.isFinite(xs[i])) { pen = false; continue; }
    d += (pen ? "L" : "M") + sx(xs[i]).toFixed(1) + "," + sy(y).toFixed(1);
    pen = true;
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
    const d = pathData(s.xs, s.ys, sx, sy);
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

// ---- fleet ---------------------------------------------------------------------
function renderFleet(data) {
  state.interval = data.interval_s || state.interval;
  const model = data.model || {};
  $("model").textContent = model.model_version || model.version || "–";
  // Which forecaster serves each feature/horizon, e.g. "pressure_kpa lstm,lstm,lstm,holt".
  const src = model.sources || {};
  $("served").textContent = Object.keys(src).length
    ? Object.entries(src).map(([f, s]) => f.split("_")[0] + " " + s.join(",")).join("; ")
    : "–";
  $("interval").textContent = fmt(state.interval, 0) + " s";
  $("now").textContent = fmtTime(data.now_ts, true);
  $("updated").textContent = new Date().toLocaleTimeString();
  const tanks = (data.tanks || []).slice().sort((a, b) => String(a.tank_id).localeCompare(String(b.tank_id)));
  const body = $("fleet-rows");
  if (!tanks.length) { body.innerHTML = '<tr><td colspan="10" class="empty">waiting for data…</td></tr>'; return; }
  let nA = 0, nS = 0, errSum = 0, errN = 0;
  const rows = document.createDocumentFragment();
  for (const t of tanks) {
    const buf = state.spark.get(t.tank_id) || [];
    if (buf.lastTs !== t.ts) { buf.push(t.pressure_kpa); buf.lastTs = t.ts; }
    while (buf.length > SPARK_POINTS) buf.shift();
    state.spark.set(t.tank_id, buf);
    const st = statusOf(t);
    if (st === "anomaly") nA++; else if (st === "stale") nS++;
    if (Number.isFinite(t.residual_pressure_kpa)) { errSum += Math.abs(t.residual_pressure_kpa); errN++; }
    const tr = document.createElement("tr");
    tr.dataset.tank = t.tank_id;
    if (t.tank_id === state.selected) tr.className = "selected";
    const score = Number.isFinite(t.anomaly_score) ? t.anomaly_score : 0;
    const pct = Math.min(100, (score / 6) * 100), col = score > 5 ? "var(--bad)" : score > 3 ? "var(--warn)" : "var(--ok)";
    tr.innerHTML =
      `<td><b>${esc(t.tank_id)}</b></td>` +
      `<td class="l"><span class="badge ${st}">${st.toUpperCase()}</span></td>` +
      `<td>${fmt(t.pressure_kpa, 2)}</td><td class="l spark-cell"></td>` +
      `<td>${fmt(t.temperature_c, 2)}</td>` +
      `<td>${fmt(t.residual_pressure_kpa, 3)}</td><td>${fmt(t.residual_temperature_c, 3)}</td>` +
      `<td>${fmt(t.anomaly_score, 1)}<span class="scorebar"><i style="width:${pct}%;background:${col}"></i></span></td>` +
      `<td>${fmtAge(t.staleness_s)}</td><td title="${esc(resetsTitle(t.resets))}">${resetsTotal(t.resets)}</td>`;
    tr.querySelector(".spark-cell").appendChild(sparkline(buf));
    tr.addEventListener("click", () => selectTank(t.tank_id));
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
  $("n-tanks").textContent = tanks.length;
  $("n-anomaly").textContent = nA;
  $("n-stale").textContent = nS;
  $("mean-err").textContent = errN ? (errSum / errN).toFixed(3) : "–";
  if (!state.selected || !tanks.some((t) => t.tank_id === state.selected)) {
    // Default: the most anomalous tank, else the first one.
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
  $("tank-kv").innerHTML = kv.map(([k, v]) => `<span>${k} <b>${esc(v)}</b></span>`).join("");
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
}

function selectTank(id) {
  state.selected = id;
  for (const tr of document.querySelectorAll("#fleet-rows tr")) tr.classList.toggle("selected", tr.dataset.tank === id);
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
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
let tankBusy = false;
async function pollTank() {
  if (!state.selected || tankBusy) return;
  tankBusy = true;
  try { renderTank(await getJson("api/tank/" + encodeURIComponent(state.selected))); }
  catch (e) { /* a tank may disappear on rebalance; the fleet poll picks another */ }
  finally { tankBusy = false; }
}
async function pollFleet() {
  try {
    renderFleet(await getJson("api/fleet"));
    setConn(true, "live");
  } catch (e) {
    setConn(false, "disconnected");
  }
}
async function loop() {
  await pollFleet();
  await pollTank();
  setTimeout(loop, POLL_MS);
}
window.addEventListener("resize", pollTank);
loop();
