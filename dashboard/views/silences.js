// Silences: the active ones (and those still to start) and the recent ones, each with its matchers, who made it,
// why, and when it ends. Operators end one early (it stays on record, ended now).
import { alertsChanged } from "../alert_count.js";
import { enc, get, request } from "../api.js";
import { confirmAction } from "../dialog.js";
import { clear, h, labelCells, notify, setText } from "../dom.js";
import { dateTime, toMs } from "../format.js";
import { unitHref } from "../router.js";
import { can } from "../session.js";
import { alertTabs, severityBadge, who } from "./alert_parts.js";

const RECENT = 50;

export function mount(root) {
  const editable = can("operator");
  const rules = new Map();
  document.title = "Silences · Fleet";

  const table = (id, caption) => {
    const body = h("tbody", { id });
    const head = ["Matchers", "Comment", "Created", "Starts", "Ends", editable ? "Actions" : null].filter(Boolean);
    return { body, el: h("div", { class: "table-wrap" }, h("table", { class: "silences" },
      h("caption", { class: "sr-only", text: caption }),
      h("thead", {}, h("tr", {}, ...head.map((t) => h("th", { scope: "col", text: t })))), body)) };
  };
  const active = table("silences-active", "Active silences");
  const recent = table("silences-recent", "Recent silences");
  const activeEmpty = h("p", { class: "empty-state", hidden: true, text: "No active silences." });
  const recentEmpty = h("p", { class: "empty-state", hidden: true, text: "No ended silences." });
  const recentNote = h("p", { class: "hint" });

  clear(root, h("section", { class: "silences-page", "aria-labelledby": "alerts-title" },
    h("div", { class: "panel-head" }, h("h1", { id: "alerts-title", text: "Silences" })),
    alertTabs("silences"),
    h("p", { class: "hint", text: "While a silence is active, the alerts it matches (every matcher given must match) " +
      "notify nobody and do not count as firing. Silence an alert from its row." +
      (editable ? "" : " Your role may read them; an operator creates and ends them.") }),
    h("section", { class: "panel", "aria-labelledby": "silences-active-title" },
      h("h2", { id: "silences-active-title", text: "Active and scheduled" }), active.el, activeEmpty),
    h("section", { class: "panel", "aria-labelledby": "silences-recent-title" },
      h("h2", { id: "silences-recent-title", text: "Ended" }), recent.el, recentEmpty, recentNote)));

  function matchers(x) {
    const rule = x.rule_id ? rules.get(x.rule_id) : null;
    const chip = (key, ...value) => h("li", { class: "matcher", dataset: { matcher: key } },
      h("span", { class: "matcher-key", text: `${key} = ` }), ...value);
    return h("ul", { class: "matchers" },
      x.rule_id ? chip("rule", rule ? rule.name : `${x.rule_id} (deleted)`) : null,
      x.device_id ? chip("unit", h("a", { href: unitHref(x.device_id), class: "unit-link", text: x.device_id })) : null,
      x.tag ? chip("tag", h("span", { class: "mono", text: x.tag })) : null,
      x.severity ? chip("severity", severityBadge(x.severity)) : null);
  }

  function row(x, now) {
    const scheduled = toMs(x.starts_at) > now;
    const running = toMs(x.ends_at) > now;
    return labelCells(h("tr", { dataset: { silence: x.id } },
      h("td", {}, matchers(x)),
      h("td", { class: "silence-comment", text: x.comment || "–" }),
      h("td", {}, who(x.created_by), h("span", { class: "sub", text: dateTime(x.created_at) })),
      h("td", {}, dateTime(x.starts_at), scheduled ? h("span", { class: "sub", text: "scheduled" }) : null),
      h("td", { class: "silence-ends", text: dateTime(x.ends_at) }),
      editable ? h("td", {}, running ? h("button", { type: "button", class: "btn small danger act-end", text: "End now",
        "aria-label": `End now: the silence ${x.comment ? `“${x.comment}”` : x.id}`, onclick: () => end(x) }) : null) : null),
    [null, "Comment", "Created", "Starts", "Ends"]);
  }

  async function load() {
    try {
      const [on, off, known] = await Promise.all([get("/api/silences", { active: true }),
        get("/api/silences", { active: false }), get("/api/alert-rules")]);
      rules.clear();
      for (const r of known.items) rules.set(r.id, r);
      const now = Date.now();
      const upcoming = off.items.filter((x) => toMs(x.starts_at) > now);
      const ended = off.items.filter((x) => toMs(x.starts_at) <= now);
      active.body.replaceChildren(...[...on.items, ...upcoming].map((x) => row(x, now)));
      recent.body.replaceChildren(...ended.slice(0, RECENT).map((x) => row(x, now)));
      activeEmpty.hidden = on.items.length + upcoming.length > 0;
      recentEmpty.hidden = ended.length > 0;
      setText(recentNote, ended.length > RECENT ? `The ${RECENT} that ended last of ${ended.length}.` : "");
    } catch (err) {
      if (err.status !== 401) notify(`Could not load the silences: ${err.message}`);
    }
  }

  async function end(x) {
    const ok = await confirmAction({ title: "End this silence now?", confirm: "End silence",
      body: "The alerts it covers count as firing again, and new ones notify as usual." });
    if (!ok) return;
    try {
      await request("DELETE", `/api/silences/${enc(x.id)}`);
      notify("Silence ended.", "info");
      alertsChanged();
    } catch (err) {
      notify(err.message);
    }
    load();
  }

  load();
  const timer = setInterval(load, 60_000); // silences end by themselves, without an event
  return {
    stream: { types: "alert" },
    onReset: () => load(),
    unmount: () => clearInterval(timer),
  };
}
