// Terminal sessions (admins): the fleet-wide list (#/terminal-sessions, `?unit=ID` for one unit) and the last few on a
// unit's page. Each row says who, where, when, how many bytes and how it ended, with the recording to download or
// replay in the browser.
import { authHeaders, enc, get, hasToken } from "../api.js";
import { h, labelCells, notify } from "../dom.js";
import { bytes, dateTime, duration, toMs } from "../format.js";
import { replaceQuery, unitHref } from "../router.js";
import { can } from "../session.js";

const PAGE = 50;

const REASONS = {
  operator: "closed by the operator",
  idle: "idle timeout",
  max_duration: "maximum length reached",
  agent_stopping: "the agent stopped",
  unit_offline: "the unit went offline",
  timeout: "the unit stopped answering",
  disabled: "refused: remote shell disabled",
  limit: "refused: too many sessions",
  no_user: "refused: no such remote user",
  unsupported: "refused: not offered",
  error: "transport error",
  service_stopping: "the service stopped",
};

export const sessionHref = (id) => `#/terminal-sessions/${enc(id)}`;
export const recordingUrl = (id) => `/api/terminal-sessions/${enc(id)}/recording`;

/** How a session ended, in words. */
export function outcome(row) {
  if (!row.ended_at) return "open";
  if (row.close_reason === "exited") return `exited with status ${row.exit_status}`;
  const words = REASONS[row.close_reason] || row.close_reason || "ended";
  return row.close_message && !REASONS[row.close_reason] ? `${words}: ${row.close_message}` : words;
}

/** A download link for a recording: a plain link with the session cookie, fetched with the token otherwise. */
export function downloadLink(row, text = "Download") {
  const name = `${row.device_id}-${row.id}.cast`;
  return h("a", { class: "cast-download", href: recordingUrl(row.id), download: name, text,
    "aria-label": `${text} the recording of session ${row.id.slice(0, 8)} (.cast)`,
    onclick: (e) => {
      if (!hasToken()) return;
      e.preventDefault();
      saveWithToken(row.id, name);
    } });
}

async function saveWithToken(id, name) {
  try {
    const response = await fetch(recordingUrl(id), { headers: authHeaders(), cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    const a = h("a", { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) {
    notify(`Could not download the recording: ${err.message}`);
  }
}

const columns = (showUnit) => ["Started", showUnit ? "Unit" : null, "Who", "Length", "Bytes in / out", "Result",
  "Recording"].filter(Boolean);

function sessionRow(row, showUnit) {
  const started = toMs(row.started_at);
  const ended = toMs(row.ended_at);
  const recording = row.recording_available
    ? h("span", { class: "cast-links" }, h("a", { class: "cast-replay", href: sessionHref(row.id), text: "Replay",
      "aria-label": `Replay session ${row.id.slice(0, 8)}` }), " · ", downloadLink(row))
    : h("span", { class: "hint", text: row.recording_bytes ? "deleted" : "none" });
  return labelCells(h("tr", { dataset: { session: row.id } },
    h("td", { text: dateTime(started) }),
    showUnit ? h("td", {}, h("a", { class: "mono", href: unitHref(row.device_id), text: row.device_id })) : null,
    h("td", {}, h("span", { text: row.actor }), " ", h("span", { class: "hint", text: `(${row.role})` })),
    h("td", { text: ended ? duration(Math.round((ended - started) / 1000)) : "open" }),
    h("td", { class: "num", text: `${bytes(row.bytes_in)} / ${bytes(row.bytes_out)}` }),
    h("td", { class: `outcome outcome-${row.close_reason || "open"}`, text: outcome(row) }),
    h("td", {}, recording)), columns(showUnit));
}

function table(body, showUnit, caption) {
  return h("div", { class: "table-wrap" }, h("table", { class: "sessions-table cards" },
    h("caption", { class: "sr-only", text: caption }),
    h("thead", {}, h("tr", {}, ...columns(showUnit).map((text) => h("th", { scope: "col", text })))), body));
}

/** The fleet-wide list (route "sessions"). */
export function mount(root, route) {
  document.title = "Terminal sessions · Fleet";
  if (!can("admin")) {
    root.replaceChildren(h("section", { class: "panel" }, h("h1", { text: "Terminal sessions" }),
      h("p", { text: "Only admins may see terminal sessions and their recordings." })));
    return {};
  }
  const unit = route.query.get("unit") || "";
  const body = h("tbody", { id: "sessions-body" });
  const total = h("p", { class: "hint", id: "sessions-total", "aria-live": "polite" });
  const more = h("button", { type: "button", class: "btn", id: "sessions-more", hidden: true, text: "Show older",
    onclick: () => load(true) });
  const filter = h("input", { class: "input", id: "sessions-unit", type: "search", value: unit,
    placeholder: "unit id", autocomplete: "off" });
  const form = h("form", { class: "row", role: "search", onsubmit: (e) => {
    e.preventDefault();
    replaceQuery({ unit: filter.value.trim() });
    load(false);
  } }, h("label", { class: "field-label inline", for: "sessions-unit", text: "Unit" }), filter,
  h("button", { type: "submit", class: "btn small", text: "Show" }));
  root.replaceChildren(h("section", { class: "panel sessions", "aria-labelledby": "sessions-title" },
    h("div", { class: "panel-head" }, h("h1", { id: "sessions-title", text: "Terminal sessions" })),
    h("p", { class: "hint", text: "Every remote shell, refused ones included, newest first. Recordings hold the " +
      "sessions' output (not what was typed)." }),
    form, total, table(body, true, "Terminal sessions"), more));

  let offset = 0;
  async function load(append) {
    offset = append ? offset : 0;
    try {
      const page = await get("/api/terminal-sessions", { device_id: filter.value.trim() || null, limit: PAGE,
        offset });
      const rows = page.items.map((r) => sessionRow(r, true));
      if (append) body.append(...rows);
      else body.replaceChildren(...rows);
      offset += page.items.length;
      total.textContent = page.total ? `${page.total} session${page.total === 1 ? "" : "s"}` : "No sessions yet.";
      more.hidden = offset >= page.total;
    } catch (err) {
      if (err.status !== 401) notify(`Could not load the terminal sessions: ${err.message}`);
    }
  }
  load(false);
  return { onReset: () => load(false) };
}

/** The last sessions on one unit, for its page (admins; nothing for others). */
export function createUnitSessions(deviceId) {
  if (!can("admin")) return { el: null, load: async () => {} };
  const body = h("tbody", {});
  const empty = h("p", { class: "hint", text: "loading…" }); // "none" only once read
  const el = h("section", { class: "panel", id: "unit-sessions", "aria-labelledby": "unit-sessions-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "unit-sessions-title", text: "Terminal sessions" }),
      h("a", { href: `#/terminal-sessions?unit=${enc(deviceId)}`, text: "All of this unit's sessions" })),
    empty, table(body, false, `Terminal sessions on ${deviceId}`));
  return {
    el,
    async load() {
      try {
        const page = await get("/api/terminal-sessions", { device_id: deviceId, limit: 10 });
        body.replaceChildren(...page.items.map((r) => sessionRow(r, false)));
        empty.hidden = page.items.length > 0;
        empty.textContent = "No terminal sessions on this unit yet.";
      } catch (err) {
        if (err.status !== 401) notify(`Could not load the unit's terminal sessions: ${err.message}`);
        if (!body.children.length) empty.textContent = "Could not read the sessions.";
      }
    },
  };
}
