// The notification channel form, driven by a table: KINDS lists each kind's public settings (`config`) and its
// write-only values (`secrets`, sent only when typed, never shown again); FIELD_TYPES says how each type of field
// is asked for and read. A new kind is one entry in KINDS.
import { h } from "../dom.js";
import { splitTags, tagProblem } from "../tags.js";

export const KINDS = {
  webhook: {
    label: "Webhook (signed JSON POST)",
    config: [["url", "url", "URL", { required: true, placeholder: "https://ops.example.com/fleet-hook" }]],
    secrets: [],
    signed: true, // the service makes its signing key, shown once
  },
  slack: {
    label: "Slack (incoming webhook)",
    config: [],
    secrets: [["url", "Incoming webhook URL", { required: true, placeholder: "https://hooks.slack.com/services/…" }]],
  },
  email: {
    label: "E-mail (SMTP)",
    config: [
      ["host", "text", "SMTP server", { required: true, placeholder: "smtp.example.com" }],
      ["security", "select", "Security", { choices: [["starttls", "STARTTLS"], ["tls", "TLS from the start"],
        ["none", "none (plain, no login)"]] }],
      ["port", "number", "Port (empty: 587, or 465 with TLS)", { min: 1, max: 65535 }],
      ["username", "text", "User name (empty: no login)", {}],
      ["from", "text", "From", { required: true, placeholder: "Fleet <fleet@example.com>" }],
      ["to", "list", "To (addresses, comma-separated)", { required: true, placeholder: "oncall@example.com" }],
    ],
    secrets: [["password", "Password", {}]],
  },
  alertmanager: {
    label: "Prometheus Alertmanager",
    config: [
      ["url", "url", "Alertmanager base URL", { required: true, placeholder: "http://alertmanager:9093" }],
      ["username", "text", "User name (basic auth, optional)", {}],
    ],
    secrets: [["password", "Password (with a user name)", {}], ["bearer_token", "Bearer token (instead)", {}]],
  },
};

// How each type of config field is made, read (undefined: leave the key out) and filled.
const FIELD_TYPES = {
  text: {
    make: (o) => h("input", { type: "text", class: "input", autocomplete: "off", spellcheck: "false", placeholder: o.placeholder || "" }),
    read: (el) => el.value.trim() || undefined,
    set: (el, v) => { el.value = v ?? ""; },
  },
  url: {
    make: (o) => h("input", { type: "url", class: "input", autocomplete: "off", spellcheck: "false", placeholder: o.placeholder || "" }),
    read: (el) => el.value.trim() || undefined,
    set: (el, v) => { el.value = v ?? ""; },
  },
  number: {
    make: (o) => h("input", { type: "number", class: "input", step: "1", min: o.min, max: o.max, inputmode: "numeric" }),
    read: (el) => (el.value.trim() === "" ? undefined : Number(el.value)),
    set: (el, v) => { el.value = v === null || v === undefined ? "" : String(v); },
  },
  select: {
    make: (o) => h("select", { class: "input" }, ...o.choices.map(([v, t]) => h("option", { value: v, text: t }))),
    read: (el) => el.value,
    set: (el, v) => { el.value = v || el.options[0].value; },
  },
  list: {
    make: (o) => h("input", { type: "text", class: "input", autocomplete: "off", spellcheck: "false", placeholder: o.placeholder || "" }),
    read: (el) => {
      const items = el.value.split(/[\s,;]+/).filter(Boolean);
      return items.length ? items : undefined;
    },
    set: (el, v) => { el.value = Array.isArray(v) ? v.join(", ") : ""; },
  },
};

const SEVERITIES = ["critical", "warning", "info"];

/** Every input of the form (all kinds'), shown for the chosen kind only; reads a channel body back out. */
export function channelInputs() {
  const field = (id, label, input, hint = null) => h("div", { class: "rule-field" },
    h("label", { for: id, class: "field-label", text: label }), input, hint,
    h("p", { class: "field-error", id: `${id}-error` }));
  const input = (id, attrs) => {
    const el = h("input", { class: "input", id, autocomplete: "off", spellcheck: "false", "aria-describedby": `${id}-error`, ...attrs });
    return el;
  };
  const name = input("ch-name", { type: "text", maxlength: "200" });
  const kind = h("select", { class: "input", id: "ch-kind" },
    ...Object.entries(KINDS).map(([k, d]) => h("option", { value: k, text: d.label })));
  const enabled = h("input", { type: "checkbox", id: "ch-enabled", class: "cfg-check" });
  const severities = SEVERITIES.map((s) => h("input", { type: "checkbox", id: `ch-sev-${s}`, value: s }));
  const tags = input("ch-tags", { type: "text", placeholder: "empty: every unit" });
  const wait = input("ch-group-wait", { type: "number", min: "0", max: "3600", step: "any", inputmode: "decimal" });
  const common = [
    field("ch-name", "Name", name),
    field("ch-kind", "Kind", kind),
    h("div", { class: "rule-field" }, h("label", { class: "field-label choice", for: "ch-enabled" }, enabled, " Enabled")),
    h("fieldset", { class: "choices rule-field" }, h("legend", { class: "field-label", text: "Severities sent" }),
      ...severities.map((el) => h("label", { class: "choice", for: el.id }, el, ` ${el.value}`))),
    field("ch-tags", "Only units with these tags", tags),
    field("ch-group-wait", "Group alerts for (seconds; 0: each at once)", wait),
  ];

  const configs = {}; // kind -> [{key, type, el, wrap}]
  const secrets = {};
  const kindFields = [];
  for (const [k, d] of Object.entries(KINDS)) {
    configs[k] = d.config.map(([key, type, label, o]) => {
      const id = `ch-${k}-${key}`;
      const el = FIELD_TYPES[type].make(o);
      Object.assign(el, { id });
      el.setAttribute("aria-describedby", `${id}-error`);
      const wrap = field(id, label, el);
      kindFields.push([k, wrap]);
      return { key, type, el, wrap };
    });
    secrets[k] = d.secrets.map(([key, label, o]) => {
      const id = `ch-${k}-secret-${key}`;
      const el = h("input", { type: "password", class: "input", id, autocomplete: "new-password", spellcheck: "false",
        placeholder: o.placeholder || "", "aria-describedby": `${id}-hint ${id}-error` });
      const hint = h("p", { class: "hint", id: `${id}-hint` });
      const wrap = field(id, `${label} (write-only)`, el, hint);
      kindFields.push([k, wrap]);
      return { key, el, hint, wrap };
    });
  }

  const useKind = () => {
    for (const [k, wrap] of kindFields) wrap.hidden = k !== kind.value;
  };

  /** Fill from a channel (or defaults for a new one). */
  const fill = (c) => {
    name.value = c.name || "";
    kind.value = c.kind || "webhook";
    kind.disabled = Boolean(c.id); // a channel keeps its kind
    enabled.checked = c.enabled ?? true;
    for (const el of severities) el.checked = (c.severities || SEVERITIES).includes(el.value);
    tags.value = (c.tags || []).join(", ");
    wait.value = String(c.group_wait_s ?? 30);
    for (const [k, fields] of Object.entries(configs)) {
      for (const f of fields) FIELD_TYPES[f.type].set(f.el, k === c.kind ? (c.config || {})[f.key] : undefined);
    }
    for (const fields of Object.values(secrets)) {
      for (const s of fields) {
        s.el.value = "";
        const stored = c.id && (c.secrets_set || []).includes(s.key);
        s.hint.textContent = stored ? "Stored. Leave empty to keep it; type to replace it." : "Sent once, never shown again.";
      }
    }
    useKind();
  };

  /** The body of a POST or PUT, or {problem} when something is plainly missing. */
  const read = () => {
    const k = kind.value;
    const tagList = splitTags(tags.value);
    const bad = tagList.map(tagProblem).find(Boolean);
    if (bad) return { problem: bad, field: tags };
    const config = {};
    for (const f of configs[k]) {
      const v = FIELD_TYPES[f.type].read(f.el);
      if (v !== undefined) config[f.key] = v;
    }
    const typed = {};
    for (const s of secrets[k]) if (s.el.value) typed[s.key] = s.el.value;
    return { body: { name: name.value.trim(), kind: k, enabled: enabled.checked,
      severities: severities.filter((el) => el.checked).map((el) => el.value), tags: tagList,
      group_wait_s: wait.value.trim() === "" ? 30 : Number(wait.value), config, secrets: typed } };
  };

  /** The input a server message names ("config.url", "url: ...", "secrets.password", "tags"), if any. */
  const inputFor = (path) => {
    const k = kind.value;
    const [head, sub] = path.split(".");
    if (head === "config" || head === "secrets") {
      return (head === "config" ? configs[k] : secrets[k]).find((f) => f.key === sub)?.el || null;
    }
    const common = { name, tags, group_wait_s: wait, severities: severities[0], kind };
    return common[head] || configs[k].find((f) => f.key === head)?.el || secrets[k].find((f) => f.key === head)?.el || null;
  };

  return { elements: [...common, ...kindFields.map(([, wrap]) => wrap)], kind, name, fill, read, useKind, inputFor };
}
