// The unit list's rows: built once per load, then patched in place; only cells whose value changed are touched, so
// a live update costs a few text nodes, never a re-render of the table.
import { clear, h, setText } from "../dom.js";
import { ago, celsius, dateTime, level, percent, toMs } from "../format.js";
import { unitHref } from "../router.js";
import { badge, unitState, updateBadge } from "./status.js";

function gauge(cls) {
  const bar = h("span", { class: "gauge-bar" });
  const text = h("span", { class: "gauge-text" });
  return { el: h("span", { class: `gauge ${cls}` }, h("span", { class: "gauge-track", "aria-hidden": "true" }, bar), text),
    bar, text };
}

function setGauge(g, value, warn, crit, formatter = percent) {
  const lv = level(value, warn, crit);
  if (g.el.dataset.level !== lv) g.el.dataset.level = lv;
  setText(g.text, formatter(value));
  const width = value === null || value === undefined ? "0%" : `${Math.max(0, Math.min(100, value)).toFixed(0)}%`;
  if (g.bar.style.width !== width) g.bar.style.width = width;
}

function setTitle(el, title) {
  if (el.title !== title) el.title = title;
}

/**
 * A row of the unit list: {tr, cells, data}.
 * @param {object} item a unit as GET /api/devices lists it
 * @param {object} o
 * @param {Node} [o.selectCell] the row's selection checkbox cell (operators)
 * @param {(tag: string) => void} o.onTag a click on one of the unit's tags
 */
export function buildRow(item, { selectCell, onTag }) {
  const data = { ...item, last_seen: toMs(item.last_seen), metrics: item.metrics || {} };
  const cells = {
    badge: badge("offline"),
    link: h("a", { href: unitHref(item.id), class: "unit-link", text: item.id }),
    name: h("span", { class: "sub" }),
    tags: h("td", { class: "col-tags" }),
    version: h("td", { class: "col-software_version mono" }),
    seen: h("span", { class: "ago" }),
    cpu: gauge("cpu"), mem: gauge("mem"), disk: gauge("disk"),
    temp: h("td", { class: "col-temp num", dataset: { label: "Temp" } }),
    age: h("span", { class: "stale-age", hidden: true }),
    alerts: h("a", { class: "alert-badge", href: `#/alerts?unit=${encodeURIComponent(item.id)}`, hidden: true }),
  };
  const tr = h("tr", { dataset: { unit: item.id } }, selectCell,
    h("td", { class: "col-status" }, cells.badge, cells.alerts),
    h("td", { class: "col-id" }, cells.link, cells.name),
    cells.tags, cells.version,
    h("td", { class: "col-last_seen" }, cells.seen),
    h("td", { class: "col-cpu", dataset: { label: "CPU" } }, cells.cpu.el, cells.age),
    h("td", { class: "col-mem", dataset: { label: "Mem" } }, cells.mem.el),
    h("td", { class: "col-disk", dataset: { label: "Disk" } }, cells.disk.el), cells.temp);
  const row = { tr, cells, data };
  setText(cells.name, data.name || data.hostname || "");
  clear(cells.tags, ...(data.tags || []).map((t) => h("button", { type: "button", class: "tag", text: t,
    title: `Show units tagged ${t}`, onclick: () => onTag(t) })));
  paint(row);
  return row;
}

/** Bring a row up to date with its `data` (after a live patch). */
export function paint(row, now = Date.now()) {
  const { cells, data } = row;
  const st = unitState(data);
  updateBadge(cells.badge, st.status, st.why);
  if (row.tr.dataset.status !== st.status) row.tr.dataset.status = st.status;
  setText(cells.version, data.software_version || "–");
  paintSeen(row, now);
  const m = data.metrics || {};
  setGauge(cells.cpu, m.cpu_percent, 75, 90);
  setGauge(cells.mem, m.mem_percent, 80, 92);
  setGauge(cells.disk, m.disk_percent, 80, 92);
  setText(cells.temp, celsius(m.temp_c));
  const tl = level(m.temp_c, 75, 85);
  if (cells.temp.dataset.level !== tl) cells.temp.dataset.level = tl;
  paintAge(row, now);
}

/** The unit's open alerts: the count and the worst severity, or nothing (counts: {open, firing, worst} or null). */
export function paintAlerts(row, counts) {
  const el = row.cells.alerts;
  const key = counts ? `${counts.open}/${counts.firing}/${counts.worst}` : "";
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  el.hidden = !counts;
  if (!counts) return;
  el.dataset.severity = counts.worst;
  const shown = `${counts.worst} ×${counts.open}`;
  setText(el, shown);
  const many = counts.open === 1 ? "1 open alert" : `${counts.open} open alerts`;
  // the name starts with what is shown (speech input users say what they see), then says it in words
  el.setAttribute("aria-label", `${shown}: ${many}, the worst ${counts.worst}` +
    `${counts.firing ? `, ${counts.firing} firing` : ""}`);
  el.title = el.getAttribute("aria-label");
}

/** "12 s ago": the one cell that changes with time alone. */
export function paintSeen(row, now = Date.now()) {
  const { cells, data } = row;
  setText(cells.seen, ago(data.last_seen, now));
  if (data.last_seen !== row.seenTitleFor) {
    row.seenTitleFor = data.last_seen;
    setTitle(cells.seen, data.last_seen ? dateTime(data.last_seen) : "never seen");
  }
}

/** An offline unit's last values are history: greyed, with how old they are (updated every second). */
export function paintAge(row, now = Date.now()) {
  const { cells, data } = row;
  const m = data.metrics || {};
  const has = [m.cpu_percent, m.mem_percent, m.disk_percent, m.temp_c].some((v) => v !== null && v !== undefined);
  const stale = !data.online && has;
  const flag = String(stale);
  for (const el of [cells.cpu.el, cells.mem.el, cells.disk.el, cells.temp]) {
    if (el.dataset.stale !== flag) el.dataset.stale = flag;
  }
  if (cells.age.hidden !== !stale) cells.age.hidden = !stale;
  if (stale) {
    const at = toMs(m.ts) ?? data.last_seen;
    setText(cells.age, `as of ${ago(at, now)}`);
    setTitle(cells.age, at ? `Last reported ${dateTime(at)}; the unit is offline` : "");
  }
}
