// Live updates of the unit list. The stream carries only the units on the page (plus every unit's presence and
// enrolment, which move the totals): at thousands of units the whole fleet's metrics are hundreds of events a
// second, far more than a page can show. Patches are merged per unit and painted together, at most once per
// animation frame: a change of presence on the next frame, metrics and heartbeats with the once-a-second tick of the
// "seen ... ago" column (each paint lays out the whole table, so one a second instead of one per event).
import { gate } from "../dom.js";
import { toMs } from "../format.js";
import { paint, paintAge, paintSeen } from "./overview_rows.js";

const ROW_TYPES = "presence,heartbeat,metrics,device,command";
const FLEET_TYPES = "presence,device";
const TOTALS_EVERY_MS = 5000; // units off the page start or stop failing unseen: the totals are re-read this often

/**
 * @param {object} o
 * @param {Map<string, {tr, cells, data}>} o.rows the rows on the page, by unit id
 * @param {() => void} o.refreshSummary re-read the totals (throttled by the caller)
 * @param {() => void} o.reloadPage re-read the page (throttled by the caller)
 */
export function createLive({ rows, refreshSummary, reloadPage }) {
  const pending = new Map(); // id -> patch, applied on the next paint
  const knownFailing = new Set(); // units on the page seen failing in live metrics
  const shown = new Set(); // rows in or near the viewport: only their "ago" text is kept ticking
  let frame = 0;
  let tick = false; // the next paint also advances the clock column
  let stream = null;

  // Off-screen rows get their data on time; their "ago" text catches up when they scroll into view.
  const observer = new IntersectionObserver((entries) => {
    const now = Date.now();
    for (const entry of entries) {
      const row = rows.get(entry.target.dataset.unit);
      if (!row || row.tr !== entry.target) continue;
      if (entry.isIntersecting) {
        shown.add(row);
        paintSeen(row, now);
        if (!row.cells.age.hidden) paintAge(row, now);
      } else {
        shown.delete(row);
      }
    }
  }, { rootMargin: "300px 0px" });

  function schedule() {
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function queue(id, patch, soon = false) {
    if (!rows.has(id)) return;
    const prev = pending.get(id);
    pending.set(id, prev ? { ...prev, ...patch, metrics: patch.metrics || prev.metrics } : patch);
    if (soon) schedule();
  }

  function flush() {
    frame = 0;
    const now = Date.now();
    for (const [id, patch] of pending) {
      const row = rows.get(id);
      if (!row) continue;
      Object.assign(row.data, patch);
      paint(row, now);
    }
    pending.clear();
    if (!tick) return;
    tick = false;
    for (const row of shown) {
      paintSeen(row, now);
      if (!row.cells.age.hidden) paintAge(row, now);
    }
  }

  function apply(e) {
    const id = e.device_id;
    if (e.type === "metrics") {
      const failing = Boolean(e.services && Object.values(e.services).includes("failed"));
      if (failing !== knownFailing.has(id)) {
        if (failing) knownFailing.add(id);
        else knownFailing.delete(id);
        refreshSummary();
      }
    }
    switch (e.type) {
      case "presence":
        queue(id, { online: e.online, offline_reason: e.reason ?? null, last_seen: toMs(e.last_seen),
          software_version: e.software_version || rows.get(id)?.data.software_version }, true);
        refreshSummary();
        break;
      case "heartbeat":
        queue(id, { last_seen: toMs(e.last_seen), uptime_s: e.uptime_s });
        break;
      case "metrics": {
        const { type, device_id: _, ...metrics } = e;
        queue(id, { metrics, last_seen: Date.now() });
        break;
      }
      case "device":
        reloadPage();
        break;
      case "command":
        // A finished update changes a unit's software version, which no presence event may carry.
        if (e.status === "succeeded" && e.name === "update" && rows.has(id)) reloadPage();
        break;
      default:
    }
  }

  /** What the stream should carry for the rows now on the page. */
  function query() {
    if (!rows.size) return { types: FLEET_TYPES };
    return { device_id: [...rows.keys()].join(","), types: ROW_TYPES, fleet_types: FLEET_TYPES };
  }

  const events = gate(apply);
  const ticker = setInterval(() => {
    tick = true;
    schedule();
  }, 1000);
  const totals = setInterval(refreshSummary, TOTALS_EVERY_MS);

  return {
    events,
    initialQuery: { types: FLEET_TYPES },
    attach(s) {
      stream = s;
    },
    /** The page's rows changed: follow them (a no-op when the same units are shown). */
    follow() {
      pending.clear();
      observer.disconnect();
      shown.clear();
      for (const row of rows.values()) observer.observe(row.tr);
      knownFailing.clear();
      for (const [id, row] of rows) if (row.data.failing) knownFailing.add(id);
      stream?.retarget(query());
    },
    stop() {
      clearInterval(ticker);
      clearInterval(totals);
      cancelAnimationFrame(frame);
      observer.disconnect();
    },
  };
}
