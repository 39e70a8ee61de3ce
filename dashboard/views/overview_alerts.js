// The open alerts of the units on the page of the unit list: ONE GET /api/alerts/summary for the page's units (not
// a request per row), read again — at most once a second — when an `alert` event names a unit on the page. Alerts
// are rare next to metrics, so this costs nothing measurable at thousands of units.
import { get } from "../api.js";
import { throttle } from "../dom.js";
import { paintAlerts } from "./overview_rows.js";

/** @param {{rows: Map<string, {tr, cells, data}>}} o the rows on the page, by unit id */
export function createRowAlerts({ rows }) {
  let seq = 0;

  async function load() {
    const mine = ++seq;
    const ids = [...rows.keys()];
    if (!ids.length) return;
    try {
      const body = await get("/api/alerts/summary", { device_id: ids.join(",") });
      if (mine !== seq) return;
      const counts = new Map(body.units.map((u) => [u.device_id, u]));
      for (const [id, row] of rows) paintAlerts(row, counts.get(id));
    } catch {
      // the badges are a hint: the next alert event or page load reads them again
    }
  }
  const reload = throttle(load, 1000);

  return {
    load,
    onAlert(e) {
      if (rows.has(e.device_id)) reload();
    },
    stop() {
      reload.cancel();
      seq++;
    },
  };
}
