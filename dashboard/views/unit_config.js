// Configuration of one unit: its own settings in a JSON editor that validates before saving, the effective
// desired config (own settings merged over its tags' defaults) and what the unit reports, with the sync state.
import { ApiError, enc, get, request } from "../api.js";
import { h, notify, setText } from "../dom.js";
import { can } from "../session.js";

const MAX_BYTES = 64 * 1024;
const TYPE_WORDS = { boolean: "true or false", integer: "an integer", number: "a number", string: "a string",
  array: "a list" };

let schemaPromise = null;

/** The known settings ({key: {type, help, minimum, maximum, choices}}), read once; {} when the server has none. */
function loadSchema() {
  if (!schemaPromise) {
    schemaPromise = get("/api/config/schema").then((body) => body.known || {}).catch((err) => {
      schemaPromise = null;
      if (err instanceof ApiError && err.status === 404) return {};
      throw err;
    });
  }
  return schemaPromise;
}

function typeOk(value, type) {
  switch (type) {
    case "boolean": return typeof value === "boolean";
    case "integer": return Number.isInteger(value);
    case "number": return typeof value === "number" && Number.isFinite(value);
    case "string": return typeof value === "string";
    case "array": return Array.isArray(value) && value.every((v) => typeof v === "string" && v.length > 0);
    default: return true;
  }
}

/** The first problem with a known key, in the server's words; null when the known keys look right. */
export function checkKnown(config, schema) {
  for (const [key, value] of Object.entries(config)) {
    const s = schema[key];
    if (!s) continue;
    if (!typeOk(value, s.type)) return `${key} must be ${TYPE_WORDS[s.type] || s.type} (${s.help}), got ${JSON.stringify(value)}`;
    if (s.minimum !== undefined && value < s.minimum) return `${key} must be at least ${s.minimum}, got ${value}`;
    if (s.maximum !== undefined && value > s.maximum) return `${key} must be at most ${s.maximum}, got ${value}`;
    if (s.choices && !s.choices.includes(value)) return `${key} must be one of ${s.choices.join(", ")}, got ${JSON.stringify(value)}`;
  }
  return null;
}

/** Parse the editor text; returns {value} or {error} with a message that says where the problem is. */
export function parseConfig(text, schema = {}) {
  if (!text.trim()) return { error: "The config is empty; write a JSON object such as {}." };
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    const m = /position (\d+)/.exec(err.message);
    let where = "";
    if (m && !/line \d+/.test(err.message)) {
      const before = text.slice(0, Number(m[1]));
      where = ` (line ${before.split("\n").length}, column ${Number(m[1]) - before.lastIndexOf("\n")})`;
    }
    return { error: `Not valid JSON: ${err.message}${where}` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    const what = Array.isArray(value) ? "an array" : value === null ? "null" : `a ${typeof value}`;
    return { error: `The config must be a JSON object ({ ... }), not ${what}.` };
  }
  const size = new TextEncoder().encode(JSON.stringify(value)).length;
  if (size > MAX_BYTES) return { error: `The config is ${size} bytes; at most ${MAX_BYTES} are allowed.` };
  const known = checkKnown(value, schema);
  if (known) return { error: `Not allowed: ${known}.` };
  return { value };
}

const pretty = (v) => JSON.stringify(v ?? {}, null, 2);

export function createConfig(deviceId) {
  const editable = can("operator");
  let current = null; // last config view from the server
  let schema = {};
  let dirty = false;
  let saving = false;
  let missed = false; // a config event came while our save was in flight: re-read when it is done
  let base = null; // the settings the editor text started from: {version, text}; saves are made against it

  const sync = h("span", { class: "sync", id: "config-sync", hidden: true });
  const versions = h("span", { class: "hint", id: "config-versions" });
  const applyError = h("p", { class: "error-text", id: "config-apply-error", hidden: true });
  const editor = h("textarea", { class: "input code", id: "config-editor", rows: "14", spellcheck: "false",
    autocomplete: "off", "aria-describedby": "config-error", readonly: !editable });
  const problem = h("p", { class: "field-error", id: "config-error", role: "alert" });
  const notice = h("div", { class: "banner info", id: "config-notice", hidden: true });
  const desired = h("pre", { class: "code reported", id: "config-desired", tabindex: "0" });
  const sources = h("p", { class: "hint", id: "config-sources" });
  const reported = h("pre", { class: "code reported", id: "config-reported", tabindex: "0" });
  const help = h("details", { class: "config-help", hidden: true });
  const save = editable ? h("button", { type: "button", class: "btn primary", id: "config-save", text: "Save",
    disabled: true, onclick: () => store() }) : null;
  const revert = editable ? h("button", { type: "button", class: "btn", id: "config-revert", text: "Revert",
    onclick: () => reset() }) : null;
  const format = editable ? h("button", { type: "button", class: "btn", text: "Format", onclick: () => {
    const parsed = parseConfig(editor.value, schema);
    if (parsed.value) {
      editor.value = pretty(parsed.value);
      validate();
    }
  } }) : null;
  const editorLabel = h("label", { for: "config-editor", class: "field-label" });

  const el = h("section", { class: "panel config", "aria-labelledby": "config-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "config-title", text: "Configuration" }), sync, versions),
    applyError, notice,
    h("div", { class: "config-grid" },
      h("div", {}, editorLabel, editor, problem, editable ? h("div", { class: "row" }, save, revert, format) : null, help),
      h("div", {}, h("span", { class: "field-label", id: "desired-label", text: "Desired (sent to the unit)" }), desired,
        sources),
      h("div", {}, h("span", { class: "field-label", id: "reported-label", text: "Reported by the unit" }), reported)));
  desired.setAttribute("aria-labelledby", "desired-label");
  reported.setAttribute("aria-labelledby", "reported-label");

  const editsOwn = () => current && "own" in current;

  function validate() {
    const parsed = parseConfig(editor.value, schema);
    dirty = base !== null && editor.value !== base.text;
    problem.textContent = parsed.error || "";
    editor.setAttribute("aria-invalid", String(Boolean(parsed.error)));
    if (save) save.disabled = Boolean(parsed.error) || !dirty;
    return parsed;
  }
  editor.addEventListener("input", validate);

  function paintState(view) {
    const status = view.status === "failed" ? "failed" : view.in_sync ? "in-sync" : "pending";
    sync.hidden = false;
    sync.className = `sync ${status}`;
    setText(sync, { failed: "apply failed", "in-sync": "in sync", pending: "not applied yet" }[status]);
    setText(versions, `desired v${view.desired_version} · reported v${view.reported_version}`);
    applyError.hidden = !(view.status === "failed" && view.error);
    setText(applyError, view.error ? `The unit could not apply version ${view.reported_version}: ${view.error}` : "");
  }

  function render(view, { keepEdits = false } = {}) {
    current = view;
    paintState(view);
    setText(editorLabel, editsOwn() ? `This unit's own settings (JSON${editable ? ", edit and save" : ""})`
      : `Desired (JSON${editable ? ", edit and save" : ""})`);
    setText(desired, pretty(view.desired));
    const groups = view.groups || [];
    setText(sources, groups.length ? `Own settings merged over the defaults of tag${groups.length === 1 ? "" : "s"} ` +
      `${groups.map((g) => `${g.tag} (v${g.version})`).join(", ")}; later tags and own settings win.`
      : editsOwn() ? "No tag defaults apply: this is the unit's own settings." : "");
    setText(reported, view.reported_version ? pretty(view.reported) : "(nothing reported yet)");
    if (!keepEdits || base === null) {
      base = { version: view.desired_version, text: pretty(editsOwn() ? view.own : view.desired) };
      editor.value = base.text;
      notice.hidden = true;
    }
    validate();
  }

  function paintHelp() {
    const keys = Object.entries(schema);
    help.hidden = !keys.length;
    help.replaceChildren(h("summary", { text: "Known settings" }),
      h("table", { class: "kv" }, h("tbody", {}, ...keys.map(([key, s]) => h("tr", {},
        h("td", { class: "mono", text: key }),
        h("td", { text: `${TYPE_WORDS[s.type] || s.type}${s.choices ? `: ${s.choices.join(", ")}` : ""}` +
          `${s.minimum !== undefined ? `, ≥ ${s.minimum}` : ""}${s.maximum !== undefined ? `, ≤ ${s.maximum}` : ""}` }),
        h("td", { class: "hint", text: s.help })))),
      h("p", { class: "hint", text: "Other keys are passed to the unit unchecked." })));
  }

  function reset() {
    if (current) render(current);
  }

  async function load({ keepEdits = false } = {}) {
    try {
      const [view, known] = await Promise.all([get(`/api/devices/${enc(deviceId)}/config`), loadSchema()]);
      if (schema !== known) {
        schema = known;
        paintHelp();
      }
      render(view, { keepEdits });
    } catch (err) {
      if (err.status !== 401) notify(`Could not load the configuration: ${err.message}`);
    }
  }

  async function store() {
    const parsed = validate();
    if (parsed.error || !base) return;
    save.disabled = true;
    saving = true;
    try {
      const view = await request("PUT", `/api/devices/${enc(deviceId)}/config`, { body: parsed.value,
        headers: { "If-Match": `"${base.version}"` } });
      render(view);
      notify(`Desired config version ${view.desired_version} saved; the unit applies it when it is online.`, "info");
    } catch (err) {
      validate();
      if (err instanceof ApiError && err.status === 412) {
        notice.replaceChildren(h("span", { text: `${err.message} ` }),
          h("button", { type: "button", class: "btn small", text: "Load the newer version (drops your edits)",
            onclick: () => load() }));
        notice.hidden = false;
      } else {
        problem.textContent = `Not saved. ${err.message}`;
      }
    } finally {
      saving = false;
      if (missed) {
        missed = false;
        load({ keepEdits: dirty });
      }
    }
  }

  /** A live `config` event: versions/sync changed; re-read the contents without dropping edits in progress. */
  function onConfig(e) {
    if (!current) return;
    if (saving) {
      missed = true; // the unit may report before our PUT is answered
      return;
    }
    const newerDesired = e.desired_version > current.desired_version;
    if (newerDesired && dirty) {
      notice.replaceChildren(h("span", { text: `Desired version ${e.desired_version} was saved (by someone else or ` +
        "through a tag default) while you were editing; saving now would be refused. " }),
      h("button", { type: "button", class: "btn small", text: "Load it (drops your edits)", onclick: () => load() }));
      notice.hidden = false;
    }
    load({ keepEdits: dirty });
  }

  return { el, load, onConfig };
}
