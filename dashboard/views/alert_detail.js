// One alert: what fired it, where it stands, and every event of its life (fired, acknowledged, resolved) with who
// and when. Re-read when a live `alert` event names it.
import { enc, get } from "../api.js";
import { clear, h, notify, throttle } from "../dom.js";
import { dateTime, duration, toMs } from "../format.js";
import { alertActions, alertTabs, describeValue, isRolloutAlert, severityBadge, silencedMarker, stateBadge, whereLink,
  who } from "./alert_parts.js";

function fact(label, value, id) {
  return h("div", { class: "fact" }, h("dt", { text: label }), h("dd", { id }, value));
}

const EVENT_WORDS = { fired: "fired", acknowledged: "acknowledged", resolved: "resolved" };

export function mount(root, route) {
  const id = route.id;
  let rule = null;
  document.title = `Alert ${id} · Fleet`;
  const head = h("header", { class: "panel alert-head", id: "alert-head" }, h("p", { class: "hint", text: "loading…" }));
  const eventsBody = h("tbody", { id: "alert-events" });
  clear(root, h("section", { class: "alert-detail", "aria-labelledby": "alert-title" },
    alertTabs(null),
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/alerts", text: "← Open alerts" }), " · ",
      h("a", { href: "#/alerts/history", text: "History" })),
    head,
    h("section", { class: "panel", "aria-labelledby": "alert-events-title" },
      h("h2", { id: "alert-events-title", text: "Events" }),
      h("div", { class: "table-wrap" }, h("table", { class: "alert-events" },
        h("caption", { class: "sr-only", text: "The alert's events, oldest first" }),
        h("thead", {}, h("tr", {}, ...["Event", "When", "Who", "Value", "Silenced"].map((t) =>
          h("th", { scope: "col", text: t })))), eventsBody)))));

  function paint(a) {
    const fired = toMs(a.fired_at);
    const end = toMs(a.resolved_at);
    clear(head,
      h("div", { class: "unit-title" }, severityBadge(a.severity), h("h1", { id: "alert-title", text: a.rule_name }),
        stateBadge(a), silencedMarker(a)),
      h("dl", { class: "facts" },
        fact(isRolloutAlert(a) ? "Rollouts" : "Unit", whereLink(a), "alert-unit"),
        fact("Value", describeValue(a, rule), "alert-value"),
        fact("Fired", dateTime(fired), "alert-fired"),
        fact("Acknowledged", a.acknowledged_at ? `${dateTime(a.acknowledged_at)} by ${who(a.acknowledged_by)}` : "–",
          "alert-acked"),
        fact("Resolved", end ? `${dateTime(end)} (${a.resolved_by === "auto" ? "recovered" : who(a.resolved_by)})` : "–",
          "alert-resolved"),
        fact(end ? "Lasted" : "Open for", duration(((end ?? Date.now()) - fired) / 1000)),
        fact("Rule", rule ? h("a", { href: "#/alerts/rules", text: `${rule.kind} · ${rule.name}` }) : `${a.kind} (deleted)`)),
      alertActions(a, () => load()));
    eventsBody.replaceChildren(...a.events.map((e) => h("tr", { dataset: { event: e.type } },
      h("td", {}, h("span", { class: "event-type", text: EVENT_WORDS[e.type] || e.type })),
      h("td", { text: dateTime(e.time) }),
      h("td", { text: e.actor === "auto" ? "recovered (auto)" : who(e.actor) || (e.type === "fired" ? "the rule" : "–") }),
      h("td", { text: e.value === null || e.value === undefined ? "–" : describeValue({ ...a, value: e.value }, rule) }),
      h("td", { text: e.silenced ? "yes" : "no" }))));
  }

  async function load() {
    try {
      const a = await get(`/api/alerts/${enc(id)}`);
      if (!rule) rule = await get(`/api/alert-rules/${enc(a.rule_id)}`).catch(() => null);
      paint(a);
    } catch (err) {
      if (err.status === 404) {
        clear(head, h("h1", { id: "alert-title", text: "Alert not found" }), h("p", { text: err.message }));
      } else if (err.status !== 401) {
        notify(`Could not load alert ${id}: ${err.message}`);
      }
    }
  }
  const reload = throttle(load, 500);
  load();

  return {
    stream: { types: "alert" },
    onAlert: (e) => {
      if (String(e.id) === String(id)) reload();
    },
    onReset: () => load(),
    unmount: () => reload.cancel(),
  };
}
