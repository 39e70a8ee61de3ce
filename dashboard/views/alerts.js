// The Alerts page: open alerts in the order to work through them (live), the history of resolved ones (paged), and
// the sections for silences, rules and notification channels. Filters live in the address, so a view can be shared.
import { ApiError, get } from "../api.js";
import { clear, gate, h, notify, setText, throttle } from "../dom.js";
import { count, dateTime, duration, logTime, toMs } from "../format.js";
import { alertHref, replaceQuery } from "../router.js";
import { can } from "../session.js";
import { suggestTags } from "../tags.js";
import { OPEN_STATES, SEVERITIES, alertActions, alertTabs, describeValue, mergeAlert, severityBadge, silencedMarker,
  stateBadge, triageOrder, whereLink, who } from "./alert_parts.js";
import * as channels from "./channels.js";
import * as rules from "./alert_rules.js";
import * as silences from "./silences.js";

const PAGE = 50;
const REREAD_MS = 60_000; // a silence that ends by itself sends no event: the list is re-read this often

export function mount(root, route) {
  const section = route.id || "open";
  if (section === "silences") return silences.mount(root, route);
  if (section === "rules") return rules.mount(root, route);
  if (section === "channels") return channels.mount(root, route);
  return mountList(root, route, section === "history");
}

function when(value) {
  const ms = toMs(value);
  return ms === null ? "–" : h("time", { datetime: new Date(ms).toISOString(), title: dateTime(ms), text: logTime(ms) });
}

function mountList(root, route, history) {
  const q = route.query;
  const state = {
    state: history ? "resolved" : ["firing", "acknowledged"].includes(q.get("state")) ? q.get("state") : "open",
    severity: SEVERITIES.includes(q.get("severity")) ? q.get("severity") : "",
    unit: q.get("unit") || "", tag: q.get("tag") || "", rule: q.get("rule") || "",
    page: Math.max(1, Number(q.get("page")) || 1),
  };
  const items = new Map(); // id -> alert, the page's alerts
  const cache = new Map(); // id -> {key, tr}: a row is rebuilt only when its alert changed
  const rulesById = new Map();
  let rulesRead = 0; // rows describe values with their rule: re-drawn once the rules are read
  let total = 0;
  let loadSeq = 0;
  const actions = can("operator") && !history;
  document.title = `${history ? "Alert history" : "Alerts"} · Fleet`;

  // ---- filters -----------------------------------------------------------------------------------------------
  const select = (id, options, value) => {
    const el = h("select", { class: "input", id }, ...options.map(([v, t]) => h("option", { value: v, text: t })));
    el.value = value;
    return el;
  };
  const stateSel = history ? null : select("alert-state", [["open", "open (firing or acknowledged)"],
    ["firing", "firing"], ["acknowledged", "acknowledged"]], state.state);
  const sevSel = select("alert-severity", [["", "any severity"], ...SEVERITIES.map((s) => [s, s])], state.severity);
  const unitInput = h("input", { type: "text", class: "input", id: "alert-unit", placeholder: "unit id",
    autocomplete: "off", spellcheck: "false", value: state.unit });
  const tagInput = h("input", { type: "text", class: "input", id: "alert-tag", placeholder: "tag", autocomplete: "off",
    spellcheck: "false", list: "alert-tags", value: state.tag });
  const tagList = h("datalist", { id: "alert-tags" });
  const ruleSel = select("alert-rule", [["", "any rule"]], "");
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter alerts",
    onsubmit: (e) => e.preventDefault() },
  stateSel && h("label", { for: "alert-state", class: "field-label inline", text: "State" }), stateSel,
  h("label", { for: "alert-severity", class: "field-label inline", text: "Severity" }), sevSel,
  h("label", { for: "alert-unit", class: "field-label inline", text: "Unit" }), unitInput,
  h("label", { for: "alert-tag", class: "field-label inline", text: "Tag" }), tagInput, tagList,
  h("label", { for: "alert-rule", class: "field-label inline", text: "Rule" }), ruleSel,
  h("button", { type: "button", class: "btn small", text: "Clear filters", onclick: () => {
    unitInput.value = tagInput.value = "";
    setFilter({ state: history ? "resolved" : "open", severity: "", unit: "", tag: "", rule: "" });
  } }));
  const stopTags = suggestTags(tagInput, tagList);
  stateSel?.addEventListener("change", () => setFilter({ state: stateSel.value }));
  sevSel.addEventListener("change", () => setFilter({ severity: sevSel.value }));
  ruleSel.addEventListener("change", () => setFilter({ rule: ruleSel.value }));
  unitInput.addEventListener("change", () => setFilter({ unit: unitInput.value.trim() }));
  tagInput.addEventListener("change", () => setFilter({ tag: tagInput.value.trim() }));

  // ---- table -------------------------------------------------------------------------------------------------
  const columns = ["Severity", "Alert", "Unit", "Value", "Fired", history ? "Resolved" : "State",
    history ? "Lasted" : null, actions ? "Actions" : null].filter(Boolean);
  const tbody = h("tbody", { id: "alerts-body" });
  const table = h("table", { class: "alerts", id: "alerts-table", "aria-describedby": "alerts-pager-info" },
    h("caption", { class: "sr-only", text: history ? "Resolved alerts" : "Open alerts" }),
    h("thead", {}, h("tr", {}, ...columns.map((t) => h("th", { scope: "col", text: t })))), tbody);
  const empty = h("p", { class: "empty-state", id: "alerts-empty", hidden: true });
  const pagerInfo = h("span", { class: "pager-info", id: "alerts-pager-info", "aria-live": "polite" });
  const prev = h("button", { type: "button", class: "btn small", text: "‹ Newer", onclick: () => setFilter({ page: state.page - 1 }) });
  const next = h("button", { type: "button", class: "btn small", text: "Older ›", onclick: () => setFilter({ page: state.page + 1 }) });

  clear(root, h("section", { class: "alerts-page", "aria-labelledby": "alerts-title" },
    h("div", { class: "panel-head" }, h("h1", { id: "alerts-title", text: history ? "Alert history" : "Alerts" })),
    alertTabs(history ? "history" : "open"),
    h("p", { class: "hint", text: history ? "Resolved alerts, newest first. Open one for its events."
      : "Open alerts: firing before acknowledged, the worst first, then the newest. Updated live." +
        (actions ? "" : " Your role may watch them; an operator acknowledges and silences.") }),
    filters,
    h("div", { class: "table-wrap" }, table, empty),
    h("nav", { class: "pager", "aria-label": "Pages" }, pagerInfo, prev, next)));

  function row(a) {
    const rule = rulesById.get(a.rule_id);
    const lasted = history && toMs(a.resolved_at) !== null ? duration((toMs(a.resolved_at) - toMs(a.fired_at)) / 1000) : null;
    return h("tr", { dataset: { alert: String(a.id), state: a.state, severity: a.severity, unit: a.device_id } },
      h("td", { class: "col-sev" }, severityBadge(a.severity)),
      h("td", { class: "col-rule" }, h("a", { href: alertHref(a.id), class: "alert-link", text: a.rule_name })),
      h("td", { class: "col-unit" }, whereLink(a)),
      h("td", { class: "col-value", dataset: { label: "Value" }, text: describeValue(a, rule) }),
      h("td", { class: "col-fired", dataset: { label: "Fired" } }, when(a.fired_at)),
      history
        ? h("td", { class: "col-resolved", dataset: { label: "Resolved" } }, when(a.resolved_at),
          h("span", { class: "sub", text: a.resolved_by === "auto" ? "recovered" : who(a.resolved_by) }))
        : h("td", { class: "col-state" }, stateBadge(a), " ", silencedMarker(a),
          a.acknowledged_by ? h("span", { class: "sub", text: `by ${who(a.acknowledged_by)}` }) : null),
      history ? h("td", { class: "col-lasted", dataset: { label: "Lasted" }, text: lasted || "–" }) : null,
      actions ? h("td", { class: "col-actions" }, alertActions(a, (changed) => {
        if (changed) apply(changed);
        reloadSoon();
      })) : null);
  }

  function paint() {
    const focused = document.activeElement?.closest?.("tr[data-alert]");
    const focusId = focused && tbody.contains(focused) ? focused.dataset.alert : null;
    const list = [...items.values()].sort(history ? (a, b) => toMs(b.fired_at) - toMs(a.fired_at) || b.id - a.id
      : triageOrder);
    const rows = list.map((a) => {
      const key = `${rulesRead}:${JSON.stringify(a)}`;
      let c = cache.get(a.id);
      if (!c || c.key !== key) cache.set(a.id, (c = { key, tr: row(a) }));
      return c.tr;
    });
    for (const id of cache.keys()) if (!items.has(id)) cache.delete(id);
    if (rows.length !== tbody.children.length || rows.some((tr, i) => tbody.children[i] !== tr)) tbody.replaceChildren(...rows);
    if (focusId && !tbody.contains(document.activeElement)) {
      tbody.querySelector(`tr[data-alert="${focusId}"] button, tr[data-alert="${focusId}"] a`)?.focus();
    }
    const filtered = state.severity || state.unit || state.tag || state.rule || (!history && state.state !== "open");
    empty.hidden = list.length > 0;
    empty.textContent = filtered ? "No alerts match these filters." : history ? "No resolved alerts yet."
      : "No open alerts: nothing needs attention.";
    const first = total ? (state.page - 1) * PAGE + 1 : 0;
    setText(pagerInfo, `${count(first)}–${count(Math.min(total, first + list.length - 1))} of ${count(total)} ` +
      `${history ? "resolved" : "open"} alert${total === 1 ? "" : "s"}`);
    prev.disabled = state.page <= 1;
    next.disabled = state.page * PAGE >= total;
  }

  // ---- loading and live updates -------------------------------------------------------------------------------
  function setFilter(change) {
    Object.assign(state, change);
    if (!("page" in change)) state.page = 1;
    const { state: st, page, ...rest } = state;
    replaceQuery({ ...rest, state: history || st === "open" ? "" : st, page: page > 1 ? page : "" });
    load();
  }

  async function loadRules() {
    try {
      const body = await get("/api/alert-rules");
      rulesById.clear();
      for (const r of body.items) rulesById.set(r.id, r);
      rulesRead += 1;
      ruleSel.replaceChildren(h("option", { value: "", text: "any rule" }),
        ...body.items.map((r) => h("option", { value: r.id, text: r.name })));
      if (state.rule && !rulesById.has(state.rule)) ruleSel.append(h("option", { value: state.rule, text: "(deleted rule)" }));
      ruleSel.value = state.rule;
    } catch (err) {
      if (err.status !== 401) notify(`Could not load the alert rules: ${err.message}`);
    }
  }

  async function load() {
    const seq = ++loadSeq;
    events.close();
    table.setAttribute("aria-busy", "true");
    try {
      const body = await get("/api/alerts", { state: state.state, severity: state.severity, unit: state.unit,
        tag: state.tag, rule: state.rule, sort: history ? "newest" : "triage", limit: PAGE,
        offset: (state.page - 1) * PAGE });
      if (seq !== loadSeq) return;
      items.clear();
      for (const a of body.items) items.set(a.id, a);
      total = body.total;
      paint();
    } catch (err) {
      if (seq === loadSeq && !(err instanceof ApiError && err.status === 401)) notify(`Could not load the alerts: ${err.message}`);
    } finally {
      if (seq === loadSeq) {
        table.removeAttribute("aria-busy");
        events.open();
      }
    }
  }
  const reloadSoon = throttle(load, 1000);

  const matches = (a) => (state.state === "open" ? OPEN_STATES.includes(a.state) : a.state === state.state) &&
    (!state.severity || a.severity === state.severity) && (!state.unit || a.device_id === state.unit) &&
    (!state.rule || a.rule_id === state.rule);

  function apply(e) {
    const known = items.get(e.id);
    const merged = mergeAlert(known, e);
    if (history || state.page > 1 || (state.tag && !known)) {
      // a resolved alert joins the history's first page; elsewhere the order or the tag is the server's to tell
      if (known || (history ? e.state === "resolved" : true)) reloadSoon();
      if (known) items.set(e.id, merged);
    } else if (!matches(merged)) {
      if (known) {
        items.delete(e.id);
        total -= 1;
      }
    } else {
      if (!known) total += 1;
      items.set(e.id, merged);
    }
    paint();
  }
  const events = gate(apply);

  const timer = setInterval(load, REREAD_MS);
  loadRules().then(() => paint());
  load();

  return {
    stream: { types: "alert" },
    onAlert: (e) => events.push(e),
    onReset: () => load(),
    unmount() {
      clearInterval(timer);
      reloadSoon.cancel();
      stopTags();
    },
  };
}
