// Configuration of one unit: its own settings as a form for the known keys (JSON for the rest) or as JSON,
// validated before saving; the effective desired config (own settings merged over its tags' defaults) and what
// the unit reports, with the sync state.
import { ApiError, enc, get, request } from "../api.js";
import { h, notify, setText } from "../dom.js";
import { can } from "../session.js";
import { createConfigForm } from "./config_form.js";

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

/** The first known key whose value has the wrong type for its field in the form; null when all fit. */
function typeProblem(config, schema) {
  for (const [key, value] of Object.entries(config)) {
    const s = schema[key];
    if (s && !typeOk(value, s.type)) return `${key} must be ${TYPE_WORDS[s.type] || s.type} (${s.help}), got ${JSON.stringify(value)}`;
  }
  return null;
}

/** What is wrong with a config object before it is sent (size, known keys); null when nothing. */
export function checkValue(value, schema = {}) {
  const size = new TextEncoder().encode(JSON.stringify(value)).length;
  if (size > MAX_BYTES) return `The config is ${size} bytes; at most ${MAX_BYTES} are allowed.`;
  const known = checkKnown(value, schema);
  return known ? `Not allowed: ${known}.` : null;
}

/** The value each known key gets from the unit's tags' defaults ({key: {value, tag}}), later groups winning. */
function tagDefaults(refs, groups, schema) {
  const byTag = new Map(groups.map((g) => [g.tag, g.config || {}]));
  const out = {};
  for (const ref of refs || []) {
    const config = byTag.get(ref.tag) || {};
    for (const key of Object.keys(schema)) if (key in config) out[key] = { value: config[key], tag: ref.tag };
  }
  return out;
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
  const problem = checkValue(value, schema);
  return problem ? { error: problem } : { value };
}

const pretty = (v) => JSON.stringify(v ?? {}, null, 2);

export function createConfig(deviceId) {
  const editable = can("operator");
  let current = null; // last config view from the server
  let schema = {};
  let dirty = false;
  let saving = false;
  let missed = false; // a config event came while our save was in flight: re-read when it is done
  let base = null; // the settings the edits started from: {version, text, value}; saves are made against it
  let mode = "form"; // the known keys as a form (the rest as JSON), or everything as JSON
  let defaults = {}; // key -> {value, tag}: what the unit's tags' defaults give

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
  const form = createConfigForm({ editable, onInput: () => validate() });
  const modeButton = (to, text) => h("button", { type: "button", class: "btn small", id: `config-mode-${to}`, text,
    onclick: () => switchMode(to) });
  const modeForm = modeButton("form", "Form");
  const modeJson = modeButton("json", "JSON");
  const modes = h("div", { class: "config-modes", role: "group", "aria-label": "Edit the settings as" }, modeForm, modeJson);
  const jsonPane = h("div", { class: "config-json" }, editorLabel, editor);

  const el = h("section", { class: "panel config", "aria-labelledby": "config-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "config-title", text: "Configuration" }), sync, versions),
    applyError, notice,
    h("div", { class: "config-grid" },
      h("div", {}, modes, form.el, jsonPane, problem, editable ? h("div", { class: "row" }, save, revert, format) : null,
        help),
      h("div", {}, h("span", { class: "field-label", id: "desired-label", text: "Desired (sent to the unit)" }), desired,
        sources),
      h("div", {}, h("span", { class: "field-label", id: "reported-label", text: "Reported by the unit" }), reported)));
  desired.setAttribute("aria-labelledby", "desired-label");
  reported.setAttribute("aria-labelledby", "reported-label");

  const editsOwn = () => current && "own" in current;

  /** The settings as the current view holds them: {value} or {error}. */
  function edited() {
    if (mode === "json") return parseConfig(editor.value, schema);
    const read = form.read();
    if (read.error) return read;
    const error = checkValue(read.value, schema);
    return error ? { error } : read;
  }

  function validate() {
    const parsed = edited();
    if (mode === "json") dirty = base !== null && editor.value !== base.text;
    else dirty = base !== null && (Boolean(parsed.error) || JSON.stringify(parsed.value) !== JSON.stringify(base.value));
    problem.textContent = parsed.error || "";
    editor.setAttribute("aria-invalid", String(mode === "json" && Boolean(parsed.error)));
    form.markInvalid(parsed.error ? parsed.key || Object.keys(schema).find((k) => parsed.error.includes(`${k} must`)) : null);
    if (save) save.disabled = Boolean(parsed.error) || !dirty;
    return parsed;
  }
  editor.addEventListener("input", validate);

  function paintMode() {
    const formOk = form.hasFields();
    if (!formOk) mode = "json";
    modes.hidden = !formOk;
    form.el.hidden = mode !== "form";
    jsonPane.hidden = mode !== "json";
    modeForm.setAttribute("aria-pressed", String(mode === "form"));
    modeJson.setAttribute("aria-pressed", String(mode === "json"));
    if (format) format.hidden = mode !== "json";
    help.hidden = mode !== "json" || !Object.keys(schema).length;
  }

  /** Form <-> JSON carrying every edit across; a view that cannot show the edits is not left. */
  function switchMode(to) {
    if (to === mode) return;
    if (to === "json") {
      const read = form.read();
      if (read.error) {
        problem.textContent = read.error;
        return;
      }
      editor.value = JSON.stringify(read.value) === JSON.stringify(base && base.value) ? base.text : pretty(read.value);
    } else {
      const parsed = parseConfig(editor.value);
      const wrong = parsed.error || typeProblem(parsed.value, schema);
      if (wrong) {
        problem.textContent = parsed.error ? wrong : `The form cannot show this: ${wrong}. Fix it here first.`;
        editor.setAttribute("aria-invalid", "true");
        return;
      }
      form.set(schema, parsed.value, defaults);
    }
    mode = to;
    paintMode();
    validate();
  }

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
      const own = (editsOwn() ? view.own : view.desired) || {};
      base = { version: view.desired_version, text: pretty(own), value: own };
      editor.value = base.text;
      if (typeProblem(own, schema)) mode = "json"; // a stored value the form cannot show
      else form.set(schema, own, defaults);
      notice.hidden = true;
    } else {
      form.setDefaults(defaults);
    }
    paintMode();
    validate();
  }

  function paintHelp() {
    const keys = Object.entries(schema);
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
      const [view, known, groups] = await Promise.all([get(`/api/devices/${enc(deviceId)}/config`), loadSchema(),
        get("/api/config/groups").catch(() => ({ items: [] }))]);
      if (schema !== known) {
        schema = known;
        paintHelp();
      }
      defaults = tagDefaults(view.groups, groups.items || [], schema);
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

  return { el, load, onConfig, hasEdits: () => dirty };
}
