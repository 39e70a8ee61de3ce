// The alert rule form, driven by tables: KINDS names each kind's parameters, PARAMS says how each parameter is
// asked for and read. A new kind is one entry in KINDS (and a PARAMS entry if it brings a new parameter). The server
// checks every rule whole; its 422 messages are shown next to the form, on the field they name when they name one.
import { h } from "../dom.js";
import { duration } from "../format.js";
import { metricLabel } from "./alert_parts.js";

export const KINDS = {
  offline: { label: "Unit offline", params: [], help: "Fires when the unit has been offline for the duration." },
  metric: {
    label: "Metric threshold", params: ["field", "op", "threshold", "clear_threshold"], ops: [">", "<"],
    field: { label: "Metric (a metrics field or a key of extra)", placeholder: "disk_percent", list: "rule-metrics" },
    help: "Fires when the metric stays past the threshold for the duration; resolves once it is back across the " +
      "clear line (default: the threshold) for the clear duration.",
  },
  service: {
    label: "Service not active", params: ["field"],
    field: { label: "Service (empty: any service the unit reports)", placeholder: "recorder", optional: true },
    help: "Fires when the service (or any service) is not active for the duration.",
  },
  extra: {
    label: "Extra value", params: ["field", "op", "value"], ops: ["==", "!="],
    field: { label: "Key of the unit's extra metrics", placeholder: "recording" },
    help: "Compares a value the unit reports under extra (true, 1 and \"1\" are different values).",
  },
  config_sync: { label: "Config out of sync", params: [],
    help: "Fires when the unit's configuration differs from the desired one, or its last apply failed." },
  log: {
    label: "Log lines", params: ["level", "pattern", "regex", "threshold", "window_s"],
    labels: { threshold: "More than this many lines", window_s: "Within (seconds)" },
    help: "Fires when more lines than the count, at the level or above and containing the text (or matching the " +
      "regular expression), arrive within the window; resolves when the window has fewer.",
  },
  command_failed: {
    label: "Command failed", params: ["field", "window_s"], labels: { window_s: "Within (seconds, optional)" },
    field: { label: "Command (empty: any)", placeholder: "update", list: "rule-commands", optional: true },
    help: "Fires when the unit's last command of that name failed, timed out or was rejected; resolves when the " +
      "next one succeeds.",
  },
  rollout_failed: {
    label: "Rollout aborted", params: ["field", "window_s"], labels: { window_s: "Within (seconds, optional)" },
    field: { label: "Command rolled out (empty: any)", placeholder: "update", list: "rule-commands", optional: true },
    help: "Fires when the last rollout of that command touching units in scope was aborted; one alert per " +
      "command, not per unit.",
  },
};
const COMMANDS = ["restart", "update", "reboot", "config_update", "ping"];
const LEVELS = ["debug", "info", "notice", "warning", "error", "critical"];

const METRIC_FIELDS = ["cpu_percent", "mem_percent", "disk_percent", "temp_c", "load1", "mem_used_bytes",
  "disk_free_bytes", "net_rx_bytes", "net_tx_bytes"];
const OP_WORDS = { ">": "above (>)", "<": "below (<)", "==": "equals (==)", "!=": "differs from (!=)" };

/** A number input's value: null when empty, else the number (the server says what is wrong with it). */
const number = (el) => (el.value.trim() === "" ? null : Number(el.value));
const text = (v) => (v === null || v === undefined ? "" : String(v));
const labelOf = (kind, name, fallback) => (KINDS[kind].labels && KINDS[kind].labels[name]) || fallback;

/** An extra value as typed: true/false/null and numbers as such, anything else as text ("\"1\"" for the text 1). */
function typed(raw) {
  const t = raw.trim();
  if (t === "") return null;
  try {
    const v = JSON.parse(t);
    if (v === null || ["boolean", "number", "string"].includes(typeof v)) return v;
  } catch {
    // plain text
  }
  return t;
}

const numberParam = (label, attrs = {}) => ({
  make: () => h("input", { type: "number", step: "any", class: "input", inputmode: "decimal", ...attrs }),
  label: (kind, name) => labelOf(kind, name, label),
  read: number,
  set: (el, v) => { el.value = text(v); },
});

// How each parameter is asked for (make, label), read from its input and put back into it.
export const PARAMS = {
  field: {
    make: () => h("input", { type: "text", class: "input", autocomplete: "off", spellcheck: "false", maxlength: "128" }),
    label: (kind) => KINDS[kind].field.label,
    setup: (el, kind) => {
      el.placeholder = KINDS[kind].field.placeholder || "";
      if (KINDS[kind].field.list) el.setAttribute("list", KINDS[kind].field.list);
      else el.removeAttribute("list");
    },
    read: (el) => el.value.trim(),
    set: (el, v) => { el.value = text(v); },
  },
  op: {
    make: () => h("select", { class: "input" }),
    label: () => "Comparison",
    setup: (el, kind) => {
      const keep = el.value;
      el.replaceChildren(...KINDS[kind].ops.map((op) => h("option", { value: op, text: OP_WORDS[op] || op })));
      if (KINDS[kind].ops.includes(keep)) el.value = keep;
    },
    read: (el) => el.value,
    set: (el, v) => { el.value = v || el.value; },
  },
  threshold: numberParam("Threshold"),
  clear_threshold: numberParam("Clear at (optional)", { placeholder: "the threshold" }),
  value: {
    make: () => h("input", { type: "text", class: "input", autocomplete: "off", spellcheck: "false",
      placeholder: "true, 3, or text" }),
    label: () => "Value (JSON: true, 3, \"text\"; other text is taken as text)",
    read: (el) => typed(el.value),
    set: (el, v) => { el.value = v === null || v === undefined ? "" : typeof v === "string" && typed(v) === v ? v : JSON.stringify(v); },
  },
  level: {
    make: () => h("select", { class: "input" }, h("option", { value: "", text: "any level" }),
      ...LEVELS.map((l) => h("option", { value: l, text: `${l} or above` }))),
    label: () => "Level",
    read: (el) => el.value,
    set: (el, v) => { el.value = v || ""; },
  },
  pattern: {
    make: () => h("input", { type: "text", class: "input code", autocomplete: "off", spellcheck: "false",
      placeholder: "e.g. ICE failed" }),
    label: () => "Containing (empty: any line)",
    read: (el) => el.value,
    set: (el, v) => { el.value = text(v); },
  },
  regex: {
    make: () => h("input", { type: "checkbox", class: "cfg-check" }),
    label: () => "The text is a regular expression",
    read: (el) => el.checked,
    set: (el, v) => { el.checked = Boolean(v); },
  },
  window_s: numberParam("Window (seconds)", { min: "0" }),
};

/** The rule's condition in words, for the list: "disk_percent > 90 (clear at 85)". */
export function condition(r) {
  switch (r.kind) {
    case "metric":
      return `${metricLabel(r.field)} ${r.op} ${r.threshold}${r.clear_threshold !== null ? ` (clear at ${r.clear_threshold})` : ""}`;
    case "service":
      return r.field ? `${r.field} not active` : "any service not active";
    case "extra":
      return `extra ${r.field} ${r.op} ${JSON.stringify(r.value)}`;
    case "log":
      return `more than ${r.threshold} ${r.level ? `${r.level}+ ` : ""}lines${r.pattern ? ` ${r.regex ? "matching" : "with"} ` +
        `“${r.pattern}”` : ""} in ${duration(r.window_s)}`;
    case "command_failed":
      return `last ${r.field || "command"} failed${r.window_s ? ` (within ${duration(r.window_s)})` : ""}`;
    case "rollout_failed":
      return `rollout of ${r.field || "any command"} aborted${r.window_s ? ` (within ${duration(r.window_s)})` : ""}`;
    default:
      return KINDS[r.kind] ? KINDS[r.kind].label.toLowerCase() : r.kind;
  }
}

export const scopeText = (r) => (r.tag ? `tag ${r.tag}` : r.device_id ? `unit ${r.device_id}` : "every unit");

/** The parameter inputs, each in its own labelled wrapper, and a datalist of known metrics. */
export function paramInputs() {
  const inputs = {};
  const wrappers = {};
  const labels = {};
  for (const [name, p] of Object.entries(PARAMS)) {
    const id = `rule-${name.replace("_", "-")}`;
    inputs[name] = p.make();
    inputs[name].id = id;
    inputs[name].setAttribute("aria-describedby", `${id}-error`);
    const error = h("p", { class: "field-error", id: `${id}-error` });
    if (inputs[name].type === "checkbox") {
      labels[name] = h("span");
      wrappers[name] = h("div", { class: "rule-param", dataset: { param: name } },
        h("label", { for: id, class: "field-label choice" }, inputs[name], " ", labels[name]), error);
    } else {
      labels[name] = h("label", { for: id, class: "field-label" });
      wrappers[name] = h("div", { class: "rule-param", dataset: { param: name } }, labels[name], inputs[name], error);
    }
  }
  const metrics = h("div", { hidden: true },
    h("datalist", { id: "rule-metrics" }, ...METRIC_FIELDS.map((f) => h("option", { value: f }))),
    h("datalist", { id: "rule-commands" }, ...COMMANDS.map((c) => h("option", { value: c }))));
  /** Show the inputs of `kind` only, labelled for it. */
  const useKind = (kind) => {
    for (const [name, p] of Object.entries(PARAMS)) {
      const at = KINDS[kind].params.indexOf(name);
      wrappers[name].hidden = at < 0;
      if (at < 0) continue;
      wrappers[name].style.order = String(1 + at); // in the kind's own order, between the common fields
      labels[name].textContent = p.label(kind, name);
      if (p.setup) p.setup(inputs[name], kind);
    }
  };
  const read = (kind) => Object.fromEntries(KINDS[kind].params.map((name) => [name, PARAMS[name].read(inputs[name])]));
  const fill = (rule) => {
    for (const [name, p] of Object.entries(PARAMS)) p.set(inputs[name], rule ? rule[name] : null);
  };
  return { inputs, wrappers: Object.values(wrappers), metrics, useKind, read, fill };
}

/**
 * A 422's messages by field: {field: message} for the ones that name a field of the form (in `loc`, or first in
 * the sentence of a whole-rule check), and `_` for the rest.
 */
export function problemsByField(err, fields) {
  const errors = (err.body && Array.isArray(err.body.errors)) ? err.body.errors : [{ loc: [], msg: err.message }];
  const out = {};
  for (const e of errors) {
    const msg = String(e.msg || "").replace(/^Value error, /, "");
    const loc = (e.loc || []).filter((p) => p !== "body");
    const named = fields.find((f) => loc[0] === f) || (loc.length ? null : fields.find((f) => msg.startsWith(`${f} `) || msg.startsWith(`${f}:`)));
    const key = named || "_";
    out[key] = out[key] ? `${out[key]}; ${msg}` : msg;
  }
  return out;
}
