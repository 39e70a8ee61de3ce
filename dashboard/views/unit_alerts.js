// A unit's open alerts on its page, worst first, with acknowledge and silence (operators); kept live by the `alert`
// events of this unit.
import { enc, get } from "../api.js";
import { h, notify, setText, throttle } from "../dom.js";
import { dateTime, logTime } from "../format.js";
import { alertHref } from "../router.js";
import { alertActions, describeValue, mergeAlert, OPEN_STATES, rank, severityBadge, silencedMarker, stateBadge,
  triageOrder } from "./alert_parts.js";

export function createUnitAlerts(deviceId) {
  const items = new Map();
  const rules = new Map();
  const count = h("span", { class: "alert-badge", id: "unit-alert-badge", hidden: true });
  const tbody = h("tbody", { id: "unit-alerts" });
  const empty = h("span", { class: "hint", id: "unit-alerts-empty", text: "loading…" }); // "none" only once read
  const table = h("div", { class: "table-wrap", hidden: true }, h("table", { class: "alerts compact" },
    h("caption", { class: "sr-only", text: `Open alerts of ${deviceId}` }),
    h("thead", {}, h("tr", {}, ...["Severity", "Alert", "Value", "Fired", "State", "Actions"].map((t) =>
      h("th", { scope: "col", text: t })))), tbody));
  const el = h("section", { class: "panel unit-alerts", "aria-labelledby": "unit-alerts-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "unit-alerts-title", text: "Alerts" }), count, empty,
      h("a", { href: `#/alerts/history?unit=${enc(deviceId)}`, class: "hint history-link", text: "History" })),
    table);

  function paint() {
    const list = [...items.values()].sort(triageOrder);
    tbody.replaceChildren(...list.map((a) => h("tr", { dataset: { alert: String(a.id), state: a.state, severity: a.severity } },
      h("td", {}, severityBadge(a.severity)),
      h("td", {}, h("a", { href: alertHref(a.id), text: a.rule_name })),
      h("td", { class: "col-value", dataset: { label: "Value" }, text: describeValue(a, rules.get(a.rule_id)) }),
      h("td", { title: dateTime(a.fired_at), text: logTime(a.fired_at), dataset: { label: "Fired" } }),
      h("td", { class: "col-state" }, stateBadge(a), " ", silencedMarker(a)),
      h("td", { class: "col-actions" }, alertActions(a, (changed) => {
        if (changed) onAlert(changed);
        reload();
      }) || "–"))));
    table.hidden = list.length === 0;
    empty.hidden = list.length > 0;
    setText(empty, "No open alerts.");
    const worst = list.reduce((w, a) => (rank(a.severity) > rank(w) ? a.severity : w), null);
    count.hidden = !worst;
    if (worst) {
      count.dataset.severity = worst;
      setText(count, `${list.length} open · ${worst}`);
      count.title = `${list.length} open alert${list.length === 1 ? "" : "s"}, the worst ${worst}`;
    }
  }

  async function load() {
    try {
      const [body, known] = await Promise.all([
        get("/api/alerts", { state: "open", unit: deviceId, sort: "triage", limit: 100 }),
        rules.size ? null : get("/api/alert-rules").catch(() => ({ items: [] }))]);
      if (known) for (const r of known.items) rules.set(r.id, r);
      items.clear();
      for (const a of body.items) items.set(a.id, a);
      paint();
    } catch (err) {
      if (err.status !== 401) notify(`Could not load the unit's alerts: ${err.message}`);
      if (!items.size) setText(empty, "Could not read the alerts.");
    }
  }
  const reload = throttle(load, 1000);

  function onAlert(e) {
    if (e.device_id !== deviceId) return;
    const merged = mergeAlert(items.get(e.id), e);
    if (OPEN_STATES.includes(merged.state)) items.set(e.id, merged);
    else items.delete(e.id);
    if (!rules.has(e.rule_id)) reload(); // a rule made since the page opened
    paint();
  }

  return { el, load, onAlert, dispose: () => reload.cancel() };
}
