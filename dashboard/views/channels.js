// Notification channels: where alerts are sent (webhook, Slack, e-mail, Alertmanager). Everyone reads them (never
// their secrets); admins create, edit, delete and test them and read each channel's delivery log. A webhook's
// signing key is shown once, when it is made or rotated.
import { ApiError, enc, get, post, request } from "../api.js";
import { confirmAction } from "../dialog.js";
import { clear, h, labelCells, notify, setText } from "../dom.js";
import { dateTime, duration } from "../format.js";
import { can } from "../session.js";
import { alertTabs, severityBadge } from "./alert_parts.js";
import { channelInputs, KINDS } from "./channel_form.js";

const API = "/api/notification-channels";

function target(c) {
  const cfg = c.config || {};
  if (c.kind === "email") return `${(cfg.to || []).join(", ")} via ${cfg.host || "?"}`;
  if (c.kind === "slack") return (c.secrets_set || []).includes("url") ? "incoming webhook (URL stored)" : "no URL";
  return cfg.url || "–";
}

function outcome(r) {
  const http = r.status_code ? `HTTP ${r.status_code}` : null;
  const text = [r.ok ? "delivered" : "failed", http, `${r.duration_ms} ms`].filter(Boolean).join(" · ");
  return h("span", { class: `cmd-status ${r.ok ? "ok" : "bad"}`, text });
}

export function mount(root) {
  const editable = can("admin");
  let editing = null;
  document.title = "Notification channels · Fleet";

  const tbody = h("tbody", { id: "channels-body" });
  const empty = h("p", { class: "empty-state", hidden: true, text: "No channels yet: alerts notify nobody." });
  const missing = h("p", { class: "banner warn", hidden: true, text: "This server has no notification channels." });
  const secretBox = h("div", { class: "banner warn secret-box", id: "ch-secret", role: "status", hidden: true });
  const newBtn = editable ? h("button", { type: "button", class: "btn primary", id: "ch-new", text: "New channel…",
    onclick: () => open({}) }) : null;

  const inputs = channelInputs();
  const problem = h("p", { class: "field-error", id: "ch-error", role: "alert" });
  const save = h("button", { type: "submit", class: "btn primary", id: "ch-save", text: "Save channel" });
  const rotate = h("button", { type: "button", class: "btn", id: "ch-rotate", text: "New signing key…", hidden: true,
    onclick: () => rotateKey() });
  const formTitle = h("h2", { id: "ch-form-title" });
  const form = editable ? h("form", { class: "panel rule-form", id: "ch-form", hidden: true, novalidate: true,
    "aria-labelledby": "ch-form-title", onsubmit: (e) => {
      e.preventDefault();
      store();
    } },
  formTitle, h("div", { class: "rule-grid" }, ...inputs.elements), problem,
  h("div", { class: "row" }, save, rotate, h("button", { type: "button", class: "btn", text: "Cancel", onclick: () => close() })))
    : null;
  inputs.kind.addEventListener("change", () => inputs.useKind());

  const head = ["Name", "Kind", "Sends", "To", "Enabled", editable ? "Actions" : null].filter(Boolean);
  const cardLabels = head.map((t) => (["Name", "Actions"].includes(t) ? null : t));
  clear(root, h("section", { class: "channels-page", "aria-labelledby": "alerts-title" },
    h("div", { class: "panel-head" }, h("h1", { id: "alerts-title", text: "Notification channels" }), newBtn),
    alertTabs("channels"),
    h("p", { class: "hint", text: "Where alerts are sent when they fire and resolve. A silenced alert notifies no " +
      "channel." + (editable ? "" : " Your role may read the channels; an admin changes and tests them.") }),
    missing, secretBox, form,
    h("div", { class: "table-wrap" }, h("table", { class: "rules channels", id: "channels" },
      h("caption", { class: "sr-only", text: "Notification channels" }),
      h("thead", {}, h("tr", {}, ...head.map((t) => h("th", { scope: "col", text: t })))), tbody), empty)));

  function row(c) {
    const result = h("span", { class: "ch-test-result", "aria-live": "polite" });
    const log = h("div", { class: "ch-deliveries", hidden: true });
    const label = `channel ${c.name}`;
    let reveal = () => {};
    const sends = `${c.tags.length ? `units tagged ${c.tags.join(", ")}` : "every unit"} · ` +
      (c.group_wait_s ? `grouped ${duration(c.group_wait_s)}` : "each alert at once");
    const tr = labelCells(h("tr", { dataset: { channel: c.id, kind: c.kind } },
      h("td", { class: "rule-name" }, c.name, c.kind === "webhook" ? h("span", { class: "sub",
        text: c.secret_set ? "signed (key stored)" : "unsigned" }) : null),
      h("td", { text: KINDS[c.kind] ? KINDS[c.kind].label : c.kind }),
      h("td", {}, h("span", { class: "ch-severities" }, ...c.severities.map(severityBadge)), h("span", { class: "sub", text: sends })),
      h("td", { class: "ch-target mono", text: target(c) }),
      h("td", { text: c.enabled ? "yes" : "no" }),
      editable ? h("td", { class: "group-actions" },
        h("button", { type: "button", class: "btn small ch-test", text: "Send test", "aria-label": `Send test to ${label}`,
          onclick: (e) => test(c, e.currentTarget, result, reveal) }),
        h("button", { type: "button", class: "btn small ch-log", text: "Deliveries", "aria-expanded": "false",
          "aria-label": `Deliveries of ${label}`, onclick: (e) => toggleLog(c, e.currentTarget, log, reveal) }),
        h("button", { type: "button", class: "btn small rule-edit", text: "Edit", "aria-label": `Edit ${label}`,
          onclick: () => open(c) }),
        h("button", { type: "button", class: "btn small danger rule-delete", text: "Delete", "aria-label": `Delete ${label}`,
          onclick: () => remove(c) })) : null), cardLabels);
    // the test's answer and the delivery log open under the channel's row
    const extra = h("tr", { class: "ch-extra", dataset: { channelExtra: c.id }, hidden: true },
      h("td", { colspan: String(head.length) }, result, log));
    reveal = () => {
      extra.hidden = log.hidden && !result.textContent;
    };
    return [tr, extra];
  }

  async function load() {
    try {
      const body = await get(API);
      tbody.replaceChildren(...body.items.flatMap(row));
      empty.hidden = body.items.length > 0;
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
        missing.hidden = false;
        if (newBtn) newBtn.disabled = true;
      } else if (err.status !== 401) {
        notify(`Could not load the channels: ${err.message}`);
      }
    }
  }

  async function test(c, button, out, reveal) {
    button.disabled = true;
    setText(out, "sending…");
    reveal();
    try {
      const r = await post(`${API}/${enc(c.id)}/test`);
      clear(out, outcome(r), r.error ? h("span", { class: "sub error-text", text: r.error }) : null);
    } catch (err) {
      clear(out, h("span", { class: "error-text", text: `Not sent: ${err.message}` }));
    } finally {
      button.disabled = false;
    }
  }

  async function toggleLog(c, button, box, reveal) {
    const opening = box.hidden;
    button.setAttribute("aria-expanded", String(opening));
    box.hidden = !opening;
    reveal();
    if (!opening) return;
    setText(box, "loading…");
    try {
      const body = await get(`${API}/${enc(c.id)}/deliveries`, { limit: 20 });
      if (!body.items.length) {
        clear(box, h("p", { class: "hint", text: "Nothing sent yet." }));
        return;
      }
      clear(box, h("table", { class: "kv ch-log-table" },
        h("caption", { class: "sr-only", text: `The last deliveries to ${c.name}` }),
        h("thead", {}, h("tr", {}, ...["When", "What", "Result", "Error"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, ...body.items.map((a) => h("tr", { dataset: { ok: String(a.ok) } },
          h("td", { text: dateTime(a.time ?? a.ts) }),
          h("td", { text: a.notification_id ? `notification ${a.notification_id}${a.attempt > 1 ? `, try ${a.attempt}` : ""}`
            : a.purpose || "test" }),
          h("td", {}, outcome(a)),
          h("td", { class: "silence-comment", text: a.error || "" }))))));
    } catch (err) {
      clear(box, h("p", { class: "error-text", text: err.message }));
    }
  }

  function showSecret(key, name) {
    const field = h("input", { type: "text", class: "input mono", id: "ch-secret-value", readonly: true, value: key,
      "aria-label": `Signing key of ${name}` });
    clear(secretBox,
      h("p", {}, h("strong", { text: `Signing key of ${name}. ` }),
        "Copy it now into the receiver (it checks X-Fleet-Signature with it): it will not be shown again."),
      h("div", { class: "row" }, field,
        h("button", { type: "button", class: "btn", id: "ch-secret-copy", text: "Copy", onclick: async () => {
          field.select();
          try {
            await navigator.clipboard.writeText(key);
            notify("Signing key copied.", "info");
          } catch {
            notify("Copying was refused by the browser: the key is selected, copy it with Ctrl+C.", "info");
          }
        } }),
        h("button", { type: "button", class: "btn", text: "I have stored it", onclick: () => {
          secretBox.hidden = true;
          secretBox.replaceChildren();
        } })));
    secretBox.hidden = false;
    field.focus();
    field.select();
  }

  function open(c) {
    editing = c;
    problem.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    setText(formTitle, c.id ? `Edit channel ${c.name}` : "New notification channel");
    inputs.fill(c);
    rotate.hidden = !(c.id && c.kind === "webhook");
    form.hidden = false;
    inputs.name.focus();
  }

  function close() {
    editing = null;
    form.hidden = true;
    newBtn.focus();
  }

  function showProblem(err) {
    const errors = err.body && Array.isArray(err.body.errors) ? err.body.errors
      : [{ loc: [], msg: (err.body && err.body.detail) || err.message }];
    const lines = [];
    for (const e of errors) {
      const loc = (e.loc || []).filter((p) => p !== "body").join(".");
      const msg = String(e.msg || "").replace(/^Value error, /, "");
      const named = loc || (msg.match(/^([a-z_.]+):/) || [])[1] || "";
      const el = named ? inputs.inputFor(named) : null;
      if (el) {
        el.setAttribute("aria-invalid", "true");
        const box = document.getElementById(`${el.id}-error`);
        if (box) box.textContent = msg;
      }
      lines.push(loc ? `${loc}: ${msg}` : msg);
    }
    problem.textContent = `Not saved: ${lines.join("; ")}`;
  }

  async function store(extra = {}) {
    if (!editing) return null;
    problem.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const { body, problem: bad, field } = inputs.read();
    if (bad) {
      problem.textContent = bad;
      field.setAttribute("aria-invalid", "true");
      return null;
    }
    save.disabled = true;
    try {
      const saved = await request(editing.id ? "PUT" : "POST", editing.id ? `${API}/${enc(editing.id)}` : API,
        { body: { ...body, ...extra } });
      notify(`Channel ${saved.name} saved.`, "info");
      close();
      if (saved.secret) showSecret(saved.secret, saved.name);
      load();
      return saved;
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) showProblem(err);
      else problem.textContent = `Not saved. ${err.message}`;
      return null;
    } finally {
      save.disabled = false;
    }
  }

  async function rotateKey() {
    const ok = await confirmAction({ title: `A new signing key for ${editing.name}?`, confirm: "Make a new key",
      danger: true, body: "The old key stops working at once: the receiver must get the new one, shown once." });
    if (ok) await store({ rotate_secret: true });
  }

  async function remove(c) {
    const ok = await confirmAction({ title: `Delete the channel ${c.name}?`, danger: true, confirm: "Delete channel",
      body: "Its waiting notifications and its delivery log go with it." });
    if (!ok) return;
    try {
      await request("DELETE", `${API}/${enc(c.id)}`);
      notify(`Channel ${c.name} deleted.`, "info");
      if (editing && editing.id === c.id) close();
    } catch (err) {
      notify(err.message);
    }
    load();
  }

  if (form) {
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
