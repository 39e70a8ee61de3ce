// Alert rules: everyone reads them; admins create, edit and delete them with a form that asks for each kind's own
// parameters (rule_form.js). The server checks a rule whole: its messages appear next to the form.
import { ApiError, enc, get, request } from "../api.js";
import { confirmAction } from "../dialog.js";
import { clear, h, labelCells, notify, setText } from "../dom.js";
import { duration } from "../format.js";
import { can } from "../session.js";
import { alertTabs, severityBadge, SEVERITIES } from "./alert_parts.js";
import { condition, KINDS, paramInputs, problemsByField, scopeText } from "./rule_form.js";

const COMMON = ["name", "kind", "severity", "enabled", "tag", "device_id", "for_s", "clear_for_s"];

export function mount(root) {
  const editable = can("admin");
  let editing = null; // null, or the rule being edited ({} for a new one)
  document.title = "Alert rules · Fleet";

  const tbody = h("tbody", { id: "rules-body" });
  const newBtn = editable ? h("button", { type: "button", class: "btn primary", id: "rule-new", text: "New rule…",
    onclick: () => open({}) }) : null;

  // ---- the form ----------------------------------------------------------------------------------------------
  const field = (id, label, input, extra = null) => h("div", { class: "rule-field" },
    h("label", { for: id, class: "field-label", text: label }), input, extra,
    h("p", { class: "field-error", id: `${id}-error` }));
  const input = (id, attrs = {}) => h("input", { class: "input", id, autocomplete: "off", spellcheck: "false",
    "aria-describedby": `${id}-error`, ...attrs });
  const name = input("rule-name", { type: "text", maxlength: "200", required: true });
  const kind = h("select", { class: "input", id: "rule-kind", "aria-describedby": "rule-kind-help" },
    ...Object.entries(KINDS).map(([k, d]) => h("option", { value: k, text: d.label })));
  const kindHelp = h("p", { class: "hint rule-kind-help", id: "rule-kind-help" });
  const severity = h("select", { class: "input", id: "rule-severity" }, ...SEVERITIES.map((s) => h("option", { value: s, text: s })));
  const scope = h("select", { class: "input", id: "rule-scope" },
    h("option", { value: "all", text: "every unit" }), h("option", { value: "tag", text: "units with a tag" }),
    h("option", { value: "unit", text: "one unit" }));
  const scopeValue = input("rule-scope-value", { type: "text", placeholder: "tag or unit id" });
  const forS = input("rule-for-s", { type: "number", min: "0", step: "any", inputmode: "decimal" });
  const clearForS = input("rule-clear-for-s", { type: "number", min: "0", step: "any", inputmode: "decimal" });
  const enabled = h("input", { type: "checkbox", id: "rule-enabled", class: "cfg-check" });
  const params = paramInputs();
  const problem = h("p", { class: "field-error", id: "rule-error", role: "alert" });
  const save = h("button", { type: "submit", class: "btn primary", id: "rule-save", text: "Save rule" });
  const formTitle = h("h2", { id: "rule-form-title" });
  const fieldInputs = { name, kind, severity, tag: scopeValue, device_id: scopeValue, for_s: forS,
    clear_for_s: clearForS, ...params.inputs };
  const form = editable ? h("form", { class: "panel rule-form", id: "rule-form", hidden: true, novalidate: true,
    "aria-labelledby": "rule-form-title", onsubmit: (e) => {
      e.preventDefault();
      store();
    } },
  formTitle,
  h("div", { class: "rule-grid" },
    field("rule-name", "Name", name),
    field("rule-kind", "Kind", kind),
    field("rule-severity", "Severity", severity),
    h("div", { class: "rule-field" }, h("label", { for: "rule-scope", class: "field-label", text: "Applies to" }), scope,
      h("label", { for: "rule-scope-value", class: "sr-only", text: "Tag or unit id" }), scopeValue,
      h("p", { class: "field-error", id: "rule-scope-value-error" })),
    kindHelp,
    ...params.wrappers,
    h("div", { class: "rule-after" }, field("rule-for-s", "Fires after (seconds)", forS)),
    h("div", { class: "rule-after" }, field("rule-clear-for-s", "Resolves after (seconds clear)", clearForS)),
    h("div", { class: "rule-field rule-after" }, h("label", { class: "field-label choice", for: "rule-enabled" }, enabled,
      " Enabled"))),
  params.metrics, problem,
  h("div", { class: "row" }, save, h("button", { type: "button", class: "btn", text: "Cancel", onclick: () => close() })))
    : null;

  const head = ["Name", "Kind", "Applies to", "Condition", "Fires after", "Resolves after", "Severity", "Enabled",
    editable ? "Actions" : null].filter(Boolean);
  const cardLabels = head.map((t) => (["Name", "Severity", "Actions"].includes(t) ? null : t));
  clear(root, h("section", { class: "rules-page", "aria-labelledby": "alerts-title" },
    h("div", { class: "panel-head" }, h("h1", { id: "alerts-title", text: "Alert rules" }), newBtn),
    alertTabs("rules"),
    h("p", { class: "hint", text: "What the fleet watches. Editing a rule starts its pending conditions over; an " +
      "alert already firing stays until the edited rule clears it. Deleting a rule resolves its open alerts." +
      (editable ? "" : " Your role may read the rules; an admin changes them.") }),
    form,
    h("div", { class: "table-wrap" }, h("table", { class: "rules", id: "rules" },
      h("caption", { class: "sr-only", text: "Alert rules" }),
      h("thead", {}, h("tr", {}, ...head.map((t) => h("th", { scope: "col", text: t })))), tbody))));

  function row(r) {
    const label = `rule ${r.name}`;
    return labelCells(h("tr", { dataset: { rule: r.id, kind: r.kind } },
      h("td", { class: "rule-name" }, r.name, r.builtin ? h("span", { class: "sub", text: `built-in: ${r.builtin}` }) : null),
      h("td", { text: KINDS[r.kind] ? KINDS[r.kind].label : r.kind }),
      h("td", { text: scopeText(r) }),
      h("td", { class: "rule-condition", text: condition(r) }),
      h("td", { class: "num", text: duration(r.for_s) }),
      h("td", { class: "num", text: duration(r.clear_for_s) }),
      h("td", {}, severityBadge(r.severity)),
      h("td", { class: "rule-enabled", text: r.enabled ? "yes" : "no" }),
      editable ? h("td", { class: "group-actions" },
        h("button", { type: "button", class: "btn small rule-edit", text: "Edit", "aria-label": `Edit ${label}`,
          onclick: () => open(r) }),
        h("button", { type: "button", class: "btn small danger rule-delete", text: "Delete", "aria-label": `Delete ${label}`,
          onclick: () => remove(r) })) : null), cardLabels);
  }

  async function load() {
    try {
      const body = await get("/api/alert-rules");
      tbody.replaceChildren(...body.items.map(row));
    } catch (err) {
      if (err.status !== 401) notify(`Could not load the alert rules: ${err.message}`);
    }
  }

  function useKind() {
    params.useKind(kind.value);
    setText(kindHelp, KINDS[kind.value].help);
  }

  function useScope() {
    scopeValue.hidden = scope.value === "all";
    scopeValue.placeholder = scope.value === "tag" ? "tag" : "unit id";
  }

  function clearProblems() {
    problem.textContent = "";
    for (const el of form.querySelectorAll(".rule-field .field-error, .rule-param .field-error")) el.textContent = "";
    for (const el of Object.values(fieldInputs)) el.removeAttribute("aria-invalid");
  }

  function open(rule) {
    editing = rule;
    clearProblems();
    setText(formTitle, rule.id ? `Edit rule ${rule.name}` : "New alert rule");
    name.value = rule.name || "";
    kind.value = rule.kind || "metric";
    severity.value = rule.severity || "warning";
    scope.value = rule.tag ? "tag" : rule.device_id ? "unit" : "all";
    scopeValue.value = rule.tag || rule.device_id || "";
    forS.value = String(rule.for_s ?? 60);
    clearForS.value = String(rule.clear_for_s ?? 0);
    enabled.checked = rule.enabled ?? true;
    params.fill(rule.id ? rule : null);
    useKind();
    useScope();
    form.hidden = false;
    name.focus();
  }

  function close() {
    editing = null;
    form.hidden = true;
    newBtn.focus();
  }

  function body() {
    const seconds = (el) => (el.value.trim() === "" ? 0 : Number(el.value));
    const where = scopeValue.value.trim();
    return { name: name.value.trim(), kind: kind.value, severity: severity.value, enabled: enabled.checked,
      tag: scope.value === "tag" ? where : null, device_id: scope.value === "unit" ? where : null,
      for_s: seconds(forS), clear_for_s: seconds(clearForS), ...params.read(kind.value) };
  }

  async function store() {
    if (!editing) return;
    clearProblems();
    save.disabled = true;
    try {
      const saved = await request(editing.id ? "PUT" : "POST",
        editing.id ? `/api/alert-rules/${enc(editing.id)}` : "/api/alert-rules", { body: body() });
      notify(`Rule ${saved.name} saved.`, "info");
      close();
      load();
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) {
        const found = problemsByField(err, [...COMMON, ...Object.keys(params.inputs)]);
        for (const [key, message] of Object.entries(found)) {
          const el = fieldInputs[key];
          if (key === "_" || !el) continue;
          el.setAttribute("aria-invalid", "true");
          document.getElementById(`${el.id}-error`).textContent = message;
        }
        problem.textContent = `Not saved: ${Object.values(found).join("; ")}`;
      } else {
        problem.textContent = `Not saved. ${err.message}`;
      }
    } finally {
      save.disabled = false;
    }
  }

  async function remove(r) {
    const ok = await confirmAction({ title: `Delete the rule ${r.name}?`, danger: true, confirm: "Delete rule",
      body: r.builtin ? "Its open alerts are resolved. A built-in rule is not created again." : "Its open alerts are resolved." });
    if (!ok) return;
    try {
      await request("DELETE", `/api/alert-rules/${enc(r.id)}`);
      notify(`Rule ${r.name} deleted.`, "info");
      if (editing && editing.id === r.id) close();
    } catch (err) {
      notify(err.message);
    }
    load();
  }

  if (editable) {
    kind.addEventListener("change", useKind);
    scope.addEventListener("change", useScope);
    form.addEventListener("keydown", (e) => {
      if (e.key === "Escape") close();
    });
  }
  load();

  return {
    stream: { types: "alert" },
    onReset: () => load(),
    hasEdits: () => Boolean(editing),
  };
}
