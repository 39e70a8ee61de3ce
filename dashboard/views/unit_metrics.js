// Metric charts of one unit over a chosen range, read from the downsampled API and extended by live samples.
import { enc, get } from "../api.js";
import { LineChart } from "../charts.js";
import { h, notify } from "../dom.js";
import { bytes, celsius, num, percent, rate } from "../format.js";

export const RANGES = {
  "15m": { label: "15 min", span: 15 * 60_000, step: 10 },
  "1h": { label: "1 h", span: 3_600_000, step: 30 },
  "24h": { label: "24 h", span: 86_400_000, step: 600 },
  "7d": { label: "7 d", span: 7 * 86_400_000, step: 3600 },
};
const LIVE_RANGES = new Set(["15m", "1h"]); // short ranges take every live sample; long ones re-read per bucket
// What the service read for the chart: raw samples for short ranges, rollups kept longer for long ones.
const TIERS = { raw: "raw samples", "1m": "1-minute rollups", "1h": "hourly rollups" };

/** Per-second rates from cumulative byte counters; a counter that went backwards (reboot) gives a gap. */
export function withRates(points) {
  let prev = null;
  return points.map((p) => {
    const out = { ...p, rx_rate: null, tx_rate: null };
    if (prev && p.ts > prev.ts) {
      const dt = (p.ts - prev.ts) / 1000;
      for (const [src, dst] of [["net_rx_bytes", "rx_rate"], ["net_tx_bytes", "tx_rate"]]) {
        const a = prev[src];
        const b = p[src];
        if (a !== null && a !== undefined && b !== null && b !== undefined && b >= a) out[dst] = (b - a) / dt;
      }
    }
    prev = p;
    return out;
  });
}

export function createMetrics(deviceId) {
  let rangeKey = "15m";
  let lastFetch = 0;
  let lastRaw = null;
  let seq = 0;
  const charts = {
    cpu: new LineChart({ title: "CPU", min: 0, max: 100, format: percent,
      series: [{ key: "cpu_percent", label: "avg" }, { key: "cpu_percent_max", label: "max", dashed: true }] }),
    mem: new LineChart({ title: "Memory", min: 0, max: 100, format: percent,
      series: [{ key: "mem_percent", label: "used" }] }),
    disk: new LineChart({ title: "Disk", min: 0, max: 100, format: percent,
      series: [{ key: "disk_percent", label: "used" }] }),
    temp: new LineChart({ title: "Temperature", format: celsius,
      series: [{ key: "temp_c", label: "avg" }, { key: "temp_c_max", label: "max", dashed: true }] }),
    net: new LineChart({ title: "Network", format: rate, tick: bytes,
      series: [{ key: "rx_rate", label: "in" }, { key: "tx_rate", label: "out" }] }),
    load: new LineChart({ title: "Load (1 min)", format: (v) => num(v, 2),
      series: [{ key: "load1", label: "load" }] }),
  };
  const buttons = Object.entries(RANGES).map(([key, r]) => h("button", {
    type: "button", class: "btn small seg", dataset: { range: key }, text: r.label,
    "aria-pressed": String(key === rangeKey), onclick: () => select(key),
  }));
  const status = h("span", { class: "hint", "aria-live": "polite" });
  const el = h("section", { class: "panel metrics", "aria-labelledby": "metrics-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "metrics-title", text: "Metrics" }),
      h("div", { class: "segmented", role: "group", "aria-label": "Time range" }, ...buttons), status),
    h("div", { class: "chart-grid" }, ...Object.values(charts).map((c) => c.el)));

  function select(key) {
    rangeKey = key;
    buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.range === key)));
    load();
  }

  async function load() {
    const mine = ++seq;
    const r = RANGES[rangeKey];
    const until = Date.now();
    const since = until - r.span;
    status.textContent = "loading…";
    try {
      const body = await get(`/api/devices/${enc(deviceId)}/metrics`, { since, until, step: r.step });
      if (mine !== seq) return;
      lastFetch = Date.now();
      const points = withRates(body.points);
      const step = body.step || r.step; // the service may round the step up to its tier's buckets
      const range = { start: since, end: until, step };
      Object.values(charts).forEach((c) => c.setData(points, range));
      lastRaw = null;
      status.textContent = `${body.points.length} points, ${step} s each (${TIERS[body.tier] || body.tier})`;
    } catch (err) {
      if (mine !== seq) return;
      status.textContent = "";
      Object.values(charts).forEach((c) => c.showMessage("could not load"));
      if (err.status !== 401) notify(`Could not load metrics: ${err.message}`);
    }
  }

  /** A live `metrics` event for this unit. */
  function onSample(e) {
    if (!LIVE_RANGES.has(rangeKey)) {
      if (Date.now() - lastFetch > RANGES[rangeKey].step * 1000) load();
      return;
    }
    const point = { ...e, ts: Math.min(Date.now(), e.ts || Date.now()), cpu_percent_max: e.cpu_percent,
      temp_c_max: e.temp_c };
    const [withRate] = withRates(lastRaw ? [lastRaw, point] : [point]).slice(-1);
    lastRaw = point;
    Object.values(charts).forEach((c) => c.push(withRate));
  }

  return {
    el, load, onSample,
    dispose: () => Object.values(charts).forEach((c) => c.dispose()),
  };
}
