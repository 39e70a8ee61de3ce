// Compact SVG line charts for metric series: nice y ticks, time axis, gaps where a unit was silent, hover readout.
import { clock, dateTime, timeTick } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const M = { top: 8, right: 10, bottom: 20, left: 50 };

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** Round a step up to 1, 2 or 5 times a power of ten. */
function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
}

function lowerBound(points, ts) {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (points[mid].ts < ts) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class LineChart {
  /**
   * @param {object} o
   * @param {string} o.title
   * @param {{key:string,label:string,dashed?:boolean}[]} o.series
   * @param {(v:number)=>string} o.format value formatter for the legend and readout
   * @param {(v:number)=>string} [o.tick] shorter formatter for the y axis (default: format)
   * @param {number} [o.min] fixed lower bound (default: 0 or the data minimum when negative)
   * @param {number} [o.max] fixed upper bound (e.g. 100 for percentages)
   */
  constructor({ title, series, format, tick = null, min = null, max = null, height = 140 }) {
    this.title = title;
    this.series = series;
    this.format = format;
    this.tick = tick || format;
    this.min = min;
    this.max = max;
    this.height = height;
    this.points = [];
    this.message = "loading…"; // shown on an empty chart until the first setData(), instead of "no data"
    this.range = { start: Date.now() - 900_000, end: Date.now(), step: 10 };
    this.el = document.createElement("figure");
    this.el.className = "chart";
    const caption = document.createElement("figcaption");
    const name = document.createElement("span");
    name.className = "chart-title";
    name.textContent = title;
    this.legend = document.createElement("span");
    this.legend.className = "chart-legend";
    caption.append(name, this.legend);
    this.svg = svg("svg", { role: "img", height, class: "chart-svg" });
    this.readout = document.createElement("div");
    this.readout.className = "chart-readout";
    this.readout.hidden = true;
    this.el.append(caption, this.svg, this.readout);
    this.svg.addEventListener("pointermove", (e) => this._hover(e));
    this.svg.addEventListener("pointerleave", () => this._hover(null));
    this.resize = new ResizeObserver(() => this.render());
    this.resize.observe(this.el);
  }

  /** Replace the data: points sorted by ts, each {ts, [series key]: number|null}. */
  setData(points, range) {
    this.message = "no data in this range";
    this.points = points.slice(); // its own array: push() on one chart must not make the others skip the point
    this.range = range;
    this.render();
  }

  /** Show a word instead of the lines (e.g. the read failed): an empty chart must not claim "no data". */
  showMessage(text) {
    this.message = text;
    this.points = [];
    this.render();
  }

  /** Add a live sample and slide the window so it ends now. */
  push(point, now = Date.now()) {
    const span = this.range.end - this.range.start;
    const last = this.points[this.points.length - 1];
    if (last && point.ts <= last.ts) return;
    this.points.push(point);
    this.range = { ...this.range, start: now - span, end: now };
    const first = lowerBound(this.points, this.range.start);
    if (first > 0) this.points.splice(0, first);
    this.render();
  }

  dispose() {
    this.resize.disconnect();
  }

  _bounds() {
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of this.points) {
      for (const s of this.series) {
        const v = p[s.key];
        if (v === null || v === undefined || Number.isNaN(v)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (lo === Infinity) {
      lo = 0;
      hi = this.max ?? 1;
    }
    const min = this.min ?? Math.min(0, lo);
    let max = this.max ?? hi;
    if (this.max === null) max = Math.max(max, min + 1e-9);
    const step = niceStep((max - min) / 3 || 1);
    if (this.max === null) max = Math.ceil(max / step) * step || step;
    return { min, max, step };
  }

  render() {
    const width = Math.max(160, Math.floor(this.svg.getBoundingClientRect().width || 320));
    const height = this.height;
    this.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const plotW = width - M.left - M.right;
    const plotH = height - M.top - M.bottom;
    const { start, end } = this.range;
    const span = Math.max(1, end - start);
    const { min, max, step } = this._bounds();
    const x = (ts) => M.left + ((ts - start) / span) * plotW;
    const y = (v) => M.top + plotH - ((v - min) / (max - min || 1)) * plotH;
    this.scale = { x, y, plotW, plotH, start, span };

    const nodes = [];
    for (let v = min; v <= max + step / 1e6; v += step) {
      const yy = y(v).toFixed(1);
      nodes.push(svg("line", { class: "grid", x1: M.left, x2: width - M.right, y1: yy, y2: yy }));
      const label = svg("text", { class: "tick", x: M.left - 4, y: Number(yy) + 3, "text-anchor": "end" });
      label.textContent = this.tick(v);
      nodes.push(label);
    }
    const xTicks = Math.max(2, Math.min(6, Math.floor(plotW / 90)));
    for (let i = 0; i <= xTicks; i += 1) {
      const ts = start + (span * i) / xTicks;
      const label = svg("text", {
        class: "tick", x: x(ts).toFixed(1), y: height - 5,
        "text-anchor": i === 0 ? "start" : i === xTicks ? "end" : "middle",
      });
      label.textContent = timeTick(ts, span);
      nodes.push(label);
    }
    // A hole longer than ~2.5 samples means the unit sent nothing: draw a gap, not a made-up line.
    const gap = Math.max(this.range.step * 1000 * 2.5, 35_000);
    this.series.forEach((s, i) => {
      let d = "";
      let prev = null;
      for (const p of this.points) {
        const v = p[s.key];
        if (v === null || v === undefined || Number.isNaN(v) || p.ts < start) {
          prev = null;
          continue;
        }
        const cmd = prev === null || p.ts - prev > gap ? "M" : "L";
        d += `${cmd}${x(p.ts).toFixed(1)} ${y(Math.min(max, Math.max(min, v))).toFixed(1)}`;
        prev = p.ts;
      }
      if (d) nodes.push(svg("path", { d, class: `line s${i}${s.dashed ? " dashed" : ""}` }));
    });
    if (!this.points.length) {
      const empty = svg("text", { class: "empty", x: M.left + plotW / 2, y: M.top + plotH / 2, "text-anchor": "middle" });
      empty.textContent = this.message;
      nodes.push(empty);
    }
    this.cursor = svg("line", { class: "cursor", y1: M.top, y2: M.top + plotH, x1: -10, x2: -10 });
    nodes.push(this.cursor);
    this.svg.replaceChildren(...nodes);
    this._legend();
  }

  _latest() {
    for (let i = this.points.length - 1; i >= 0; i -= 1) {
      if (this.series.some((s) => this.points[i][s.key] !== null && this.points[i][s.key] !== undefined)) {
        return this.points[i];
      }
    }
    return null;
  }

  _legend() {
    const latest = this._latest();
    const parts = this.series.map((s, i) => {
      const item = document.createElement("span");
      item.className = `legend-item s${i}${s.dashed ? " dashed" : ""}`;
      const v = latest ? latest[s.key] : null;
      item.textContent = `${s.label} ${v === null || v === undefined ? "–" : this.format(v)}`;
      return item;
    });
    this.legend.replaceChildren(...parts);
    const when = latest ? ` at ${clock(latest.ts)}` : "";
    this.svg.setAttribute("aria-label", `${this.title}: ${parts.map((p) => p.textContent).join(", ")}${when}`);
  }

  _hover(event) {
    if (!event || !this.points.length || !this.scale) {
      this.readout.hidden = true;
      if (this.cursor) {
        this.cursor.setAttribute("x1", -10);
        this.cursor.setAttribute("x2", -10);
      }
      return;
    }
    const rect = this.svg.getBoundingClientRect();
    const vbWidth = this.svg.viewBox.baseVal.width || rect.width;
    const px = ((event.clientX - rect.left) / rect.width) * vbWidth;
    const ts = this.scale.start + ((px - M.left) / this.scale.plotW) * this.scale.span;
    let i = lowerBound(this.points, ts);
    if (i >= this.points.length || (i > 0 && ts - this.points[i - 1].ts < this.points[i].ts - ts)) i -= 1;
    const p = this.points[Math.max(0, i)];
    const cx = this.scale.x(p.ts).toFixed(1);
    this.cursor.setAttribute("x1", cx);
    this.cursor.setAttribute("x2", cx);
    const values = this.series.map((s) => `${s.label} ${p[s.key] === null || p[s.key] === undefined ? "–" : this.format(p[s.key])}`);
    this.readout.textContent = `${dateTime(p.ts)} · ${values.join(" · ")}`;
    this.readout.hidden = false;
  }
}
