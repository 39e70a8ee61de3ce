// Time, size and number formatting for the operator UI.

const pad = (n) => String(n).padStart(2, "0");

/** Milliseconds since the epoch from an API value (ms number or ISO 8601 string); null when absent. */
export function toMs(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/** "just now", "12 s ago", "4 min ago", "3 h ago", "2 d ago"; "never" when unknown. */
export function ago(value, now = Date.now()) {
  const ms = toMs(value);
  if (ms === null) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 2) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A length of time in seconds, two units at most: "3 d 4 h", "12 min 5 s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  let s = Math.max(0, Math.round(seconds));
  const parts = [];
  for (const [size, label] of [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]]) {
    if (s >= size || (size === 1 && parts.length === 0)) {
      parts.push(`${Math.floor(s / size)} ${label}`);
      s %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

// Times are shown in the browser's zone or in UTC, as the operator chose (kept in this browser), and say which.
const ZONE_KEY = "fleet.zone";
let zone = readZone();

function readZone() {
  try {
    return localStorage.getItem(ZONE_KEY) === "utc" ? "utc" : "local";
  } catch {
    return "local";
  }
}

/** "local" or "utc": the zone every time below is shown in. */
export const currentZone = () => zone;

export function useZone(value) {
  zone = value === "utc" ? "utc" : "local";
  try {
    localStorage.setItem(ZONE_KEY, zone);
  } catch {
    // private mode: the choice lasts for this page only
  }
}

/** The zone's label at a moment: "UTC", or the browser's offset then, e.g. "UTC+2", "UTC-3:30". */
export function zoneLabel(value = Date.now()) {
  if (zone === "utc") return "UTC";
  const offset = -new Date(toMs(value) ?? Date.now()).getTimezoneOffset();
  const abs = Math.abs(offset);
  return `UTC${offset < 0 ? "-" : "+"}${Math.floor(abs / 60)}${abs % 60 ? `:${pad(abs % 60)}` : ""}`;
}

function fields(ms) {
  const d = new Date(ms);
  return zone === "utc"
    ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
}

const day = ([y, mo, d]) => `${y}-${pad(mo)}-${pad(d)}`;

/** Wall-clock time "14:03:21" in the chosen zone. */
export function clock(value) {
  const ms = toMs(value);
  if (ms === null) return "–";
  const [, , , hh, mm, ss] = fields(ms);
  return `${pad(hh)}:${pad(mm)}:${pad(ss)}`;
}

/** Date, time and zone "2024-05-01 14:03:21 UTC+2". */
export function dateTime(value) {
  const ms = toMs(value);
  if (ms === null) return "–";
  return `${day(fields(ms))} ${clock(ms)} ${zoneLabel(ms)}`;
}

/** "2024-05-01T14:03" in the chosen zone: the value of a datetime-local input. */
export function wallInput(value) {
  const ms = toMs(value);
  if (ms === null) return "";
  const [y, mo, d, hh, mm] = fields(ms);
  return `${day([y, mo, d])}T${pad(hh)}:${pad(mm)}`;
}

/** The moment a datetime-local input's "2024-05-01T14:03" means in the chosen zone (ms), or null. */
export function fromWallInput(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(text || "");
  if (!m) return null;
  const [y, mo, d, hh, mm, ss] = m.slice(1).map((v) => Number(v || 0));
  return zone === "utc" ? Date.UTC(y, mo - 1, d, hh, mm, ss) : new Date(y, mo - 1, d, hh, mm, ss).getTime();
}

/** A log line's time: "14:03:21" today, "2024-05-01 14:03:21" on any other day (in the chosen zone). */
export function logTime(value, now = Date.now()) {
  const ms = toMs(value);
  if (ms === null) return "–";
  const date = day(fields(ms));
  return date === day(fields(now)) ? clock(ms) : `${date} ${clock(ms)}`;
}

/** An axis label for a time, coarser when the visible span is long. */
export function timeTick(ms, spanMs) {
  const [, mo, d, hh, mm] = fields(ms);
  const hm = `${pad(hh)}:${pad(mm)}`;
  if (spanMs <= 2 * 86400_000) return hm;
  return `${pad(mo)}-${pad(d)} ${hm}`;
}

const BYTE_UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];

export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  let v = Math.abs(n);
  let i = 0;
  while (v >= 1000 && i < BYTE_UNITS.length - 1) {
    v /= 1000;
    i += 1;
  }
  const digits = v >= 100 || i === 0 ? 0 : 1;
  return `${n < 0 ? "-" : ""}${v.toFixed(digits)} ${BYTE_UNITS[i]}`;
}

export const rate = (n) => (n === null || n === undefined ? "–" : `${bytes(n)}/s`);

export function percent(v) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : `${Math.round(v)} %`;
}

export function celsius(v) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : `${Math.round(v)} °C`;
}

/** A number with at most `digits` decimals and no trailing zeros. */
export function num(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return String(Number(v.toFixed(digits)));
}

export const count = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

/** Warning level of a gauge value for colouring: "ok", "warn" or "crit". */
export function level(v, warn, crit) {
  if (v === null || v === undefined) return "none";
  if (v >= crit) return "crit";
  if (v >= warn) return "warn";
  return "ok";
}
