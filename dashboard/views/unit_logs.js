// Live log tail of one unit: stored history (newest first from the API) followed by live `log` events.
import { enc, get } from "../api.js";
import { debounce, h, notify } from "../dom.js";
import { dateTime, logTime } from "../format.js";

const LEVELS = ["debug", "info", "notice", "warning", "error", "critical"];
const MAX_LINES = 2000;
const MAX_PAUSED = 5000;

export function createLogs(deviceId) {
  let minLevel = "debug";
  let text = "";
  let paused = false;
  let held = [];
  let incoming = [];
  let frame = 0;
  let cursor = null;
  let seq = 0;
  const seen = new Set();

  const levelSel = h("select", { class: "input", id: "log-level" },
    ...LEVELS.map((l) => h("option", { value: l, text: l === "debug" ? "all levels" : `${l} and above` })));
  const search = h("input", { type: "search", class: "input", id: "log-q", placeholder: "text in message",
    autocomplete: "off", spellcheck: "false" });
  const pause = h("button", { type: "button", class: "btn small", id: "log-pause", "aria-pressed": "false",
    text: "Pause", onclick: () => setPaused(!paused) });
  const heldNote = h("span", { class: "hint", id: "log-held", "aria-live": "polite" });
  const older = h("button", { type: "button", class: "btn small", text: "Load older", hidden: true,
    onclick: () => loadOlder() });
  const view = h("div", { class: "log-view", id: "log-view", role: "log", "aria-live": "off",
    "aria-label": "Log lines", tabindex: "0" });
  const el = h("section", { class: "panel logs", "aria-labelledby": "logs-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "logs-title", text: "Logs" }),
      h("label", { for: "log-level", class: "sr-only", text: "Minimum level" }), levelSel,
      h("label", { for: "log-q", class: "sr-only", text: "Search log messages" }), search,
      pause, heldNote, older),
    view);

  levelSel.addEventListener("change", () => {
    minLevel = levelSel.value;
    load();
  });
  const onSearch = debounce(() => {
    text = search.value.trim();
    load();
  }, 300);
  search.addEventListener("input", onSearch);

  const matches = (r) => LEVELS.indexOf(r.level) >= LEVELS.indexOf(minLevel) &&
    (!text || String(r.msg).toLowerCase().includes(text.toLowerCase()));

  function line(r) {
    const when = logTime(r.ts);
    if (when.length > 8) view.classList.add("dated"); // a line not from today: the time column makes room for dates
    return h("div", { class: "log-line", dataset: { level: r.level, id: r.id } },
      h("time", { class: "log-time", datetime: new Date(r.ts).toISOString(), title: dateTime(r.ts), text: when }),
      h("span", { class: "log-level", text: r.level }),
      h("span", { class: "log-source", text: r.source || "" }),
      h("span", { class: "log-msg", text: r.msg }));
  }

  const atBottom = () => view.scrollHeight - view.scrollTop - view.clientHeight < 24;

  function setPaused(value) {
    paused = value;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      const release = held;
      held = [];
      append(release);
    }
    showHeld();
  }

  function showHeld() {
    heldNote.textContent = paused ? (held.length ? `paused · ${held.length} new line${held.length === 1 ? "" : "s"} waiting`
      : "paused") : "";
  }

  function append(records) {
    if (!records.length) return;
    incoming.push(...records);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function flush() {
    frame = 0;
    const stick = atBottom();
    const batch = incoming;
    incoming = [];
    const fragment = document.createDocumentFragment();
    batch.forEach((r) => fragment.append(line(r)));
    view.append(fragment);
    while (view.childElementCount > MAX_LINES) view.firstElementChild.remove();
    if (stick) view.scrollTop = view.scrollHeight;
  }

  async function load() {
    const mine = ++seq;
    try {
      const body = await get(`/api/devices/${enc(deviceId)}/logs`, { level: minLevel === "debug" ? "" : minLevel,
        q: text, limit: 200 });
      if (mine !== seq) return;
      seen.clear();
      incoming = [];
      held = [];
      const records = body.items.slice().reverse();
      records.forEach((r) => seen.add(r.id));
      view.classList.remove("dated");
      view.replaceChildren(...records.map(line));
      if (!records.length) view.append(h("div", { class: "log-empty", text: "No log lines yet." }));
      view.scrollTop = view.scrollHeight;
      cursor = body.next_cursor;
      older.hidden = !cursor;
      showHeld();
    } catch (err) {
      if (mine === seq && err.status !== 401) notify(`Could not load logs: ${err.message}`);
    }
  }

  async function loadOlder() {
    if (!cursor) return;
    older.disabled = true;
    try {
      const body = await get(`/api/devices/${enc(deviceId)}/logs`, { level: minLevel === "debug" ? "" : minLevel,
        q: text, limit: 200, cursor });
      const records = body.items.filter((r) => !seen.has(r.id)).reverse();
      records.forEach((r) => seen.add(r.id));
      const before = view.scrollHeight;
      view.querySelector(".log-empty")?.remove();
      view.prepend(...records.map(line));
      view.scrollTop += view.scrollHeight - before;
      cursor = body.next_cursor;
      older.hidden = !cursor;
    } catch (err) {
      if (err.status !== 401) notify(`Could not load older logs: ${err.message}`);
    } finally {
      older.disabled = false;
    }
  }

  /** A live `log` event for this unit. */
  function onRecord(r) {
    if (seen.has(r.id) || !matches(r)) return;
    seen.add(r.id);
    if (seen.size > 20000) [...seen].slice(0, 5000).forEach((id) => seen.delete(id));
    view.querySelector(".log-empty")?.remove();
    if (paused) {
      held.push(r);
      if (held.length > MAX_PAUSED) held.splice(0, held.length - MAX_PAUSED);
      showHeld();
    } else {
      append([r]);
    }
  }

  return {
    el, load, onRecord,
    dispose() {
      cancelAnimationFrame(frame);
      onSearch.cancel();
    },
  };
}
