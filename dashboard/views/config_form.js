// The known settings of a unit's config as a form generated from GET /api/config/schema: the right input per
// type, the value its tags' defaults give shown where the unit sets none, and "reset to default" to drop the
// unit's own value. Every other key stays JSON in a box of its own, passed back exactly as it was.
import { h, setText } from "../dom.js";

const shown = (v) => (Array.isArray(v) ? v.join(", ") : typeof v === "string" ? v : JSON.stringify(v));

function control(id, s, editable) {
  const off = !editable;
  if (s.type === "boolean") return h("input", { type: "checkbox", id, class: "cfg-check", disabled: off });
  if (s.choices) return h("select", { id, class: "input", disabled: off });
  if (s.type === "array") {
    return h("textarea", { id, class: "input", rows: "2", spellcheck: "false", readonly: off });
  }
  if (s.type === "integer" || s.type === "number") {
    return h("input", { type: "number", id, class: "input", readonly: off, min: s.minimum ?? false,
      max: s.maximum ?? false, step: s.type === "integer" ? "1" : "any" });
  }
  return h("input", { type: "text", id, class: "input", readonly: off, spellcheck: "false", autocomplete: "off" });
}

/** `onInput()` is called after every change a person makes. */
export function createConfigForm({ editable, onInput }) {
  let schema = {};
  let rows = {}; // key -> {row, input, source, reset, set, raw}
  let defaults = {}; // key -> {value, tag}
  let order = []; // the keys of the document the form was given, in its order

  const fields = h("div", { class: "cfg-fields" });
  const other = h("textarea", { class: "input code", id: "config-other", rows: "6", spellcheck: "false",
    autocomplete: "off", readonly: !editable, "aria-describedby": "config-error" });
  const el = h("div", { class: "cfg-form", id: "config-form" }, fields,
    h("label", { for: "config-other", class: "field-label", text: "Other settings (JSON, passed to the unit unchecked)" }),
    other);
  other.addEventListener("input", () => onInput());

  function paintRow(key) {
    const r = rows[key];
    const d = defaults[key];
    const s = schema[key];
    r.row.dataset.overridden = String(r.set);
    if (s.type === "boolean") {
      r.input.checked = r.set ? Boolean(r.raw) : Boolean(d && d.value);
    } else if (s.choices) {
      r.input.firstChild.textContent = d ? `default (${shown(d.value)})` : "default (not set)";
    } else {
      r.input.placeholder = !d ? "" : s.type === "array" && Array.isArray(d.value) ? d.value.join("\n") : shown(d.value);
    }
    const from = d ? `default from tag ${d.tag}: ${shown(d.value)}` : "no default: the recorder's own";
    setText(r.source, r.set ? `This unit's own value · ${from}` : from);
    if (r.reset) r.reset.disabled = !r.set;
  }

  function build() {
    rows = {};
    fields.replaceChildren(...Object.entries(schema).map(([key, s]) => {
      const id = `cfg-${key}`;
      const input = control(id, s, editable);
      if (s.choices) input.append(h("option", { value: "" }), ...s.choices.map((c) => h("option", { value: c, text: c })));
      const source = h("span", { class: "cfg-source hint", id: `${id}-source` });
      input.setAttribute("aria-describedby", `${id}-source`);
      const r = { input, source, set: false, raw: null, reset: null };
      if (editable) {
        r.reset = h("button", { type: "button", class: "btn small cfg-reset", text: "Reset", title: "Reset to default",
          "aria-label": `Reset to default: ${key}`, onclick: () => {
            r.set = false;
            r.raw = null;
            if (s.type !== "boolean") input.value = "";
            paintRow(key);
            onInput();
          } });
      }
      input.addEventListener(s.type === "boolean" || s.choices ? "change" : "input", () => {
        if (s.type === "boolean") {
          r.set = true;
          r.raw = input.checked;
        } else {
          r.set = input.value.trim() !== "" || (s.type === "number" || s.type === "integer" ? input.validity.badInput : false);
          r.raw = input.value;
        }
        paintRow(key);
        onInput();
      });
      r.row = h("div", { class: "cfg-row", dataset: { key } },
        h("label", { for: id, class: "cfg-label" }, h("span", { class: "mono", text: key }),
          h("span", { class: "hint", text: ` ${s.help}` })),
        h("div", { class: "cfg-control" }, input, r.reset), source);
      rows[key] = r;
      return r.row;
    }));
  }

  /** Show `doc` (its known keys must have their schema's type: checkKnown first). */
  function set(known, doc, tagDefaults) {
    if (known !== schema) {
      schema = known;
      build();
    }
    defaults = tagDefaults;
    order = Object.keys(doc);
    const rest = {};
    for (const [key, value] of Object.entries(doc)) if (!schema[key]) rest[key] = value;
    other.value = Object.keys(rest).length ? JSON.stringify(rest, null, 2) : "";
    for (const [key, r] of Object.entries(rows)) {
      const s = schema[key];
      r.set = key in doc;
      r.raw = r.set ? doc[key] : null;
      if (s.type === "boolean") r.input.checked = Boolean(r.raw);
      else if (s.type === "array") r.input.value = r.set ? doc[key].join("\n") : "";
      else r.input.value = r.set ? String(doc[key]) : "";
      paintRow(key);
    }
  }

  /** New tag defaults (a group changed) without touching what is being edited. */
  function setDefaults(tagDefaults) {
    defaults = tagDefaults;
    Object.keys(rows).forEach(paintRow);
  }

  function valueOf(key) {
    const { input, raw } = rows[key];
    const s = schema[key];
    if (s.type === "boolean") return { value: Boolean(raw) };
    if (s.type === "array") {
      const text = typeof raw === "string" ? raw : raw.join("\n");
      const items = text.split(/[\n,]/).map((v) => v.trim()).filter(Boolean);
      if (s.items !== "integer") return { value: text.split("\n").map((v) => v.trim()).filter(Boolean) };
      if (items.some((v) => !/^\d+$/.test(v))) return { error: `${key} must list whole numbers, one a line` };
      return { value: items.map(Number) };
    }
    if (s.type === "integer" || s.type === "number") {
      if (input.validity.badInput) return { error: `${key} must be a number` };
      return { value: typeof raw === "number" ? raw : Number(raw) };
    }
    return { value: raw };
  }

  /** The document as the form holds it: {value} or {error, key}; the keys keep the order they came in. */
  function read() {
    let rest = {};
    if (other.value.trim()) {
      try {
        rest = JSON.parse(other.value);
      } catch (err) {
        return { error: `Other settings are not valid JSON: ${err.message}` };
      }
      if (rest === null || typeof rest !== "object" || Array.isArray(rest)) {
        return { error: "Other settings must be a JSON object ({ ... })." };
      }
      const dup = Object.keys(rest).find((k) => schema[k]);
      if (dup) return { error: `${dup} has its own field above; set it there (or in the JSON view).`, key: dup };
    }
    const out = {};
    const put = (key) => {
      if (key in out) return null;
      if (rows[key]) {
        if (!rows[key].set) return null;
        const v = valueOf(key);
        if (v.error) return { error: v.error, key };
        out[key] = v.value;
      } else if (key in rest) {
        out[key] = rest[key];
      }
      return null;
    };
    for (const key of [...order, ...Object.keys(rows), ...Object.keys(rest)]) {
      const problem = put(key);
      if (problem) return problem;
    }
    return { value: out };
  }

  /** Mark the field a problem is about (or none). */
  function markInvalid(key) {
    for (const [k, r] of Object.entries(rows)) r.input.setAttribute("aria-invalid", String(k === key));
  }

  return { el, set, setDefaults, read, markInvalid, hasFields: () => Object.keys(rows).length > 0 };
}
