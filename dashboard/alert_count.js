// The header's count of alerts that need someone (firing: not acknowledged, no active silence covers them),
// coloured by the worst severity among them, on every page. It is re-read from GET /api/alerts/summary whenever
// an `alert` event arrives (every view's stream carries them from every unit), when the stream says it missed
// events it cannot replay (`reset`), when a page opens, when this page made or ended a silence (`alertsChanged()`: a silence sends no event),
// and once a minute (a silence that ends by itself sends no event either).
import { get } from "./api.js";
import { setText, throttle } from "./dom.js";

const EVERY_MS = 60_000;
const CHANGED = "fleet:alerts-changed";

/** Tell the header's count that something it counts changed without an event (a silence made or ended here). */
export function alertsChanged() {
  window.dispatchEvent(new Event(CHANGED));
}

export function createAlertCount(link, counter) {
  let timer = null;
  let seq = 0;

  async function load() {
    const mine = ++seq;
    try {
      const body = await get("/api/alerts/summary");
      if (mine !== seq) return;
      const worst = body.firing ? body.firing_worst : "none";
      setText(counter, String(body.firing));
      counter.dataset.severity = worst;
      link.title = body.firing ? `${body.firing} firing alert${body.firing === 1 ? "" : "s"} (worst: ${worst}); ` +
        `${body.open} open in all` : `No firing alerts; ${body.open} open (acknowledged or silenced)`;
    } catch {
      // the count is a hint: the next event, reconnect or minute tries again
    }
  }
  const refresh = throttle(load, 1000);

  return {
    refresh,
    start() {
      clearInterval(timer);
      timer = setInterval(load, EVERY_MS);
      window.addEventListener(CHANGED, refresh);
      load();
    },
    stop() {
      clearInterval(timer);
      window.removeEventListener(CHANGED, refresh);
      refresh.cancel();
      seq++;
    },
  };
}
