// Rollouts: create one (target tag, ref, batch size, abort threshold), watch it live, pause / resume / cancel.
import { ApiError, enc, get, post } from "../api.js";
import { confirmAction } from "../dialog.js";
import { clear, gate, h, labelCells, notify, setText, throttle } from "../dom.js";
import { ago, count, dateTime } from "../format.js";
import { rolloutHref, unitHref } from "../router.js";
import { can } from "../session.js";
import { createTriage } from "./rollout_triage.js";
import { statusBadge } from "./unit_commands.js";

const REF_RE = /^[A-Za-z0-9][A-Za-z0-9._/@+-]{0,199}$/;
const TAG_RE = /^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}$/;
const STATE_TONE = { running: "pending", paused: "muted", completed: "ok", aborted: "bad", canceled: "muted" };
const ACTIVE = new Set(["running", "paused"]);
const FAILED = new Set(["failed", "rejected", "expired", "timed_out"]);

/** A unit's cell: its command's status, or, never sent one, "waiting" (not yet) or "skipped" (never will be). */
function unitCell(u) {
  if (u.command_id) return statusBadge(u.state);
  const word = u.state === "pending" ? "waiting" : u.state === "canceled" ? "skipped" : u.state;
  return h("span", { class: `cmd-status ${word === "waiting" ? "pending" : "muted"}`, dataset: { status: word },
    text: word });
}

function stateBadge(state) {
  return h("span", { class: `cmd-status ${STATE_TONE[state] || "pending"} rollout-state`, dataset: { state }, text: state });
}

function target(r) {
  const t = r.target || {};
  if (t.tag) return `tag ${t.tag}`;
  if (t.device_ids) {
    const n = t.device_ids.length + (t.more || 0);
    return `${count(n)} listed unit${n === 1 ? "" : "s"}`;
  }
  if (t.filter) {
    const f = t.filter;
    const parts = [f.status && `status ${f.status}`, f.tag && `tag ${f.tag}`, f.q && `“${f.q}”`].filter(Boolean);
    return parts.length ? `units matching ${parts.join(", ")}` : "every unit";
  }
  return "–";
}

function what(r) {
  if (r.command === "update") return `update to ${(r.args && r.args.ref) || "?"}`;
  return r.command;
}

/**
 * The counts in one vocabulary: "waiting" (not sent yet), "skipped" (never sent: the rollout ended first),
 * "canceled" (sent, then canceled before the unit ran it). The API counts the last two together; the detail view
 * knows each unit and passes how many of them were skipped; the list says "skipped or canceled".
 */
function progress(r, skipped = null) {
  const t = r.totals || {};
  const total = t.total || 0;
  const part = (n) => `${total ? (100 * (n || 0)) / total : 0}%`;
  const decided = (t.succeeded || 0) + (t.failed || 0);
  const failedPct = decided && t.failed ? ` (${Math.round((100 * t.failed) / decided)} %)` : "";
  let notRun = "";
  if (t.canceled && skipped === null) notRun = ` · ${count(t.canceled)} skipped or canceled`;
  else if (t.canceled) {
    const canceled = Math.max(0, t.canceled - skipped);
    notRun = `${skipped ? ` · ${count(skipped)} skipped` : ""}${canceled ? ` · ${count(canceled)} canceled` : ""}`;
  }
  const text = `${count(t.succeeded || 0)} succeeded · ${count(t.failed || 0)} failed${failedPct} · ` +
    `${count(t.in_progress || 0)} in progress · ${count(t.pending || 0)} waiting${notRun} · ${count(total)} units`;
  return h("div", { class: "progress-cell" },
    h("div", { class: "progress", role: "img", "aria-label": text },
      h("span", { class: "p-ok", style: { width: part(t.succeeded) } }),
      h("span", { class: "p-bad", style: { width: part(t.failed) } }),
      h("span", { class: "p-run", style: { width: part(t.in_progress) } })),
    h("span", { class: "hint progress-text", text }));
}

const ABORT_RE = /^aborted: (\d+) of (\d+) units failed, more than the abort threshold of ([\d.eE-]+)$/;

/**
 * Why the rollout ended, in the header's words: percentages, and the counts as they were when it stopped (units
 * already running go on to their end, so the header may count more failures later). Null when the header's
 * counts already say it all (a completed rollout).
 */
export function reasonText(r) {
  if (!r.reason || r.state === "completed") return null;
  const m = ABORT_RE.exec(r.reason);
  if (!m) return r.reason;
  const [failed, of, threshold] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return `Aborted: ${failed} of ${of} units had failed (${Math.round((100 * failed) / of)} %) when the rollout ` +
    `stopped, above its ${Math.round(threshold * 100)} % threshold. Units not reached were skipped; commands ` +
    "units had already started ran to their end (the counts above include how they ended).";
}

async function control(r, action) {
  if (action === "cancel") {
    const ok = await confirmAction({ title: `Cancel rollout ${r.name || r.id}?`, confirm: "Cancel rollout", danger: true,
      body: "Units not reached yet are skipped and commands still waiting for their unit are canceled; commands a " +
        "unit already started run to their end." });
    if (!ok) return null;
  }
  try {
    return await post(`/api/rollouts/${enc(r.id)}/${action}`);
  } catch (err) {
    notify(`Could not ${action} the rollout: ${err.message}`);
    return null;
  }
}

function controls(r, onChange) {
  if (!can("operator") || !ACTIVE.has(r.state)) return null;
  const act = (action) => async () => {
    const updated = await control(r, action);
    if (updated) onChange(updated);
  };
  return h("div", { class: "actions" },
    r.state === "running" ? h("button", { type: "button", class: "btn small", dataset: { action: "pause" }, text: "Pause",
      onclick: act("pause") }) : null,
    r.state === "paused" ? h("button", { type: "button", class: "btn small", dataset: { action: "resume" },
      text: "Resume", onclick: act("resume") }) : null,
    h("button", { type: "button", class: "btn small danger", dataset: { action: "cancel" }, text: "Cancel…",
      onclick: act("cancel") }));
}

function createForm(onCreated) {
  const input = (id, attrs) => h("input", { class: "input", id, autocomplete: "off", spellcheck: "false", ...attrs });
  const f = {
    tag: input("ro-tag", { required: true, placeholder: "e.g. hall" }),
    ref: input("ro-ref", { required: true, placeholder: "e.g. v1.4.2" }),
    batch: input("ro-batch", { type: "number", min: "1", max: "20000", required: true }),
    threshold: input("ro-threshold", { type: "number", min: "0", max: "100", step: "1", required: true }),
    pause: input("ro-pause", { type: "number", min: "0", max: "604800", step: "1" }),
  };
  f.batch.value = "5";
  f.threshold.value = "10";
  f.pause.value = "0";
  const problem = h("p", { class: "field-error", role: "alert", id: "ro-error" });
  const submit = h("button", { type: "submit", class: "btn primary", id: "ro-create", text: "Start rollout…" });

  function read() {
    const v = { tag: f.tag.value.trim(), ref: f.ref.value.trim(), batch: Number(f.batch.value),
      threshold: Number(f.threshold.value), pause: Number(f.pause.value || 0) };
    if (!TAG_RE.test(v.tag)) return { error: "The target tag is missing or has characters other than letters, digits and _.:=-." };
    if (!REF_RE.test(v.ref) || v.ref.includes("..")) {
      return { error: "The ref must be a branch, tag or commit name (letters, digits and ._/@+-)." };
    }
    if (!Number.isInteger(v.batch) || v.batch < 1) return { error: "The batch size is a whole number of units, at least 1." };
    if (!(v.threshold >= 0 && v.threshold <= 100)) return { error: "The abort threshold is a percentage from 0 to 100." };
    if (!(v.pause >= 0)) return { error: "The pause between batches is a number of seconds, 0 or more." };
    return { value: v };
  }

  async function start(e) {
    e.preventDefault();
    const { value: v, error } = read();
    problem.textContent = error || "";
    if (error) return;
    let units;
    try {
      units = (await get("/api/devices", { tag: v.tag, limit: 1 })).total;
    } catch (err) {
      problem.textContent = err.message;
      return;
    }
    if (!units) {
      problem.textContent = `No unit carries the tag ${v.tag}.`;
      return;
    }
    const ok = await confirmAction({
      title: `Update ${count(units)} unit${units === 1 ? "" : "s"} to ${v.ref}?`, danger: true, confirm: "Start rollout",
      typeToConfirm: v.tag,
      body: h("p", { text: `Every unit tagged ${v.tag} (${count(units)} now) updates to ${v.ref}, ${v.batch} at a time` +
        `${v.pause ? `, ${v.pause} s apart` : ""}. The rollout stops by itself when more than ${v.threshold} % of ` +
        "the finished units failed." }),
    });
    if (!ok) return;
    submit.disabled = true;
    try {
      const created = await post("/api/rollouts", { name: `${v.ref} → ${v.tag}`, command: "update",
        args: { ref: v.ref }, tag: v.tag, batch_size: v.batch, abort_threshold: v.threshold / 100, pause_s: v.pause });
      problem.textContent = "";
      onCreated(created);
    } catch (err) {
      problem.textContent = err instanceof ApiError ? err.message : String(err);
    } finally {
      submit.disabled = false;
    }
  }

  const field = (key, label) => h("div", {}, h("label", { for: f[key].id, class: "field-label", text: label }), f[key]);
  return h("form", { class: "panel", "aria-labelledby": "ro-title", onsubmit: start },
    h("h2", { id: "ro-title", text: "New rollout (software update)" }),
    h("div", { class: "rollout-form" }, field("tag", "Target tag"), field("ref", "Software ref (branch, tag, commit)"),
      field("batch", "Batch size (units)"), field("threshold", "Abort when failed above (%)"),
      field("pause", "Pause between batches (s)"), h("div", {}, submit)),
    problem);
}

const LIST_COLUMNS = ["Rollout", "Target", "Command", "State", "Progress", "Started", "By", null];

/** #/rollouts: the form and the list, live. */
export function mountList(root) {
  const rows = new Map();
  const tbody = h("tbody", { id: "rollouts-body" });
  const empty = h("p", { class: "empty-state", text: "No rollouts yet.", hidden: true });
  document.title = "Rollouts · Fleet";

  function row(r) {
    return labelCells(h("tr", { dataset: { rollout: r.id, state: r.state } },
      h("td", {}, h("a", { href: rolloutHref(r.id), text: r.name || r.id })),
      h("td", { text: target(r) }), h("td", { class: "mono", text: what(r) }),
      h("td", {}, stateBadge(r.state)), h("td", { class: "card-wide" }, progress(r)),
      h("td", { title: dateTime(r.created_at), text: ago(r.created_at) }), h("td", { class: "sub", text: r.created_by || "" }),
      h("td", {}, controls(r, upsert))), LIST_COLUMNS);
  }

  function upsert(r) {
    const fresh = row(r);
    const old = rows.get(r.id);
    rows.set(r.id, fresh);
    if (old) old.replaceWith(fresh);
    else tbody.prepend(fresh);
    empty.hidden = true;
  }

  async function load() {
    try {
      const body = await get("/api/rollouts", { limit: 100 });
      rows.clear();
      tbody.replaceChildren();
      body.items.slice().reverse().forEach(upsert);
      empty.hidden = body.items.length > 0;
    } catch (err) {
      if (err.status !== 401) notify(`Could not load the rollouts: ${err.message}`);
    }
  }

  const reload = throttle(load, 2000);
  const events = gate((e) => {
    if (e.type === "rollout" && e.id) upsert(e);
    // A command of an ended rollout (one its unit had started) still ends: the rollout's counts change silently.
    else if (e.type === "command" && e.rollout_id && rows.get(e.rollout_id)?.dataset.state &&
      !ACTIVE.has(rows.get(e.rollout_id).dataset.state)) reload();
  });

  clear(root, h("section", { class: "rollouts", "aria-labelledby": "rollouts-title" },
    h("h1", { id: "rollouts-title", class: "page-title", text: "Rollouts" }),
    can("operator") ? createForm((r) => {
      upsert(r);
      location.hash = rolloutHref(r.id);
    }) : h("p", { class: "hint", text: "Your role may watch rollouts but not start or change them." }),
    h("div", { class: "table-wrap spaced" }, h("table", { class: "rollouts-table cards" },
      h("thead", {}, h("tr", {}, ...LIST_COLUMNS.map((t) =>
        h("th", { scope: "col" }, t ?? h("span", { class: "sr-only", text: "Actions" }))))), tbody), empty)));

  load().then(() => events.open());
  return {
    stream: { types: "rollout,command" },
    onEvent: (e) => events.push(e),
    onReset: () => load(),
    unmount: () => reload.cancel(),
  };
}

/** #/rollouts/ID: one rollout with each unit's command, live. */
export function mountDetail(root, route) {
  const id = route.id;
  let rollout = null;
  const units = new Map(); // device id -> {cell, exit, command}
  const head = h("div", { class: "panel", id: "rollout-head" });
  const tbody = h("tbody", { id: "rollout-units" });
  const triage = createTriage(id, () => rollout);
  document.title = `Rollout ${id} · Fleet`;

  function paintHead() {
    const r = rollout;
    const threshold = Math.round((r.abort_threshold ?? 1) * 100);
    clear(head,
      h("div", { class: "unit-title" }, h("h1", { text: r.name || r.id }), stateBadge(r.state)),
      h("p", { class: "hint", text: `${what(r)} on ${target(r)} · batch ${r.batch} of ${r.batches} (${r.batch_size} ` +
        `units each${r.pause_s ? `, ${r.pause_s} s apart` : ""}) · aborts above ${threshold} % failed · started ` +
        `${dateTime(r.created_at)}${r.created_by ? ` by ${r.created_by}` : ""}` +
        `${r.finished_at ? ` · finished ${dateTime(r.finished_at)}` : ""}` }),
      reasonText(r) ? h("p", { class: `banner ${r.state === "aborted" ? "bad" : "info"}`, id: "rollout-reason",
        text: reasonText(r) }) : null,
      // every unit known (the API lists at most 1000): the header can tell skipped from canceled
      progress(r, units.size && units.size >= ((r.totals || {}).total || 0) ? skippedCount() : null),
      controls(r, (updated) => {
        rollout = { ...rollout, ...updated };
        paintHead();
      }));
    triage.paint(); // an ended rollout offers the retry
  }

  /** How many units were never sent anything and never will be (the rollout ended first). */
  const skippedCount = () => [...units.values()].filter((u) => !u.command && u.state === "canceled").length;

  function paintUnits(list) {
    units.clear();
    tbody.replaceChildren(...list.map((u) => {
      const cell = h("td", {}, unitCell(u));
      const exit = h("td", { class: "num", text: u.exit_code ?? "" });
      units.set(u.device_id, { cell, exit, command: u.command_id, state: u.state });
      return h("tr", { dataset: { unit: u.device_id } },
        h("td", {}, h("a", { href: unitHref(u.device_id), class: "unit-link", text: u.device_id })),
        h("td", { class: "num", text: String(u.batch + 1) }), cell, exit);
    }));
  }

  async function load() {
    try {
      rollout = await get(`/api/rollouts/${enc(id)}`);
      paintUnits(rollout.units || []);
      paintHead();
      triage.refresh();
    } catch (err) {
      if (err.status === 404) {
        clear(root, h("section", { class: "panel" }, h("h1", { text: "Rollout not found" }), h("p", { text: err.message }),
          h("a", { href: "#/rollouts", text: "All rollouts" })));
      } else if (err.status !== 401) {
        notify(`Could not load the rollout: ${err.message}`);
      }
    }
  }

  const reloadUnits = throttle(load, 2000); // a new batch was dispatched: its units got their commands
  const reloadFailures = throttle(() => triage.refresh(), 1000);
  const events = gate((e) => {
    if (e.type === "rollout" && e.id === id) {
      // A new batch got its commands; an ended rollout skipped the units it never reached: re-read the units.
      const reread = rollout && (e.batch !== rollout.batch || e.state !== rollout.state);
      rollout = { ...rollout, ...e };
      paintHead();
      if (reread) reloadUnits();
    } else if (e.type === "command" && e.rollout_id === id) {
      const u = units.get(e.device_id);
      if (!u) return;
      Object.assign(u, { command: e.id || u.command, state: e.status });
      u.cell.replaceChildren(statusBadge(e.status));
      setText(u.exit, e.exit_code ?? "");
      if (FAILED.has(e.status)) reloadFailures();
      // An ended rollout announces nothing more, yet commands units had started still end: re-read its counts.
      if (rollout && !ACTIVE.has(rollout.state)) reloadUnits();
    }
  });

  clear(root, h("section", { class: "rollout" },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/rollouts", text: "← All rollouts" })),
    head, triage.el,
    h("div", { class: "table-wrap spaced" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["Unit", "Batch", "Command status", "Exit"].map((t) =>
        h("th", { scope: "col", text: t })))), tbody))));

  load().then(() => events.open());
  return {
    stream: { types: "rollout,command" },
    onEvent: (e) => events.push(e),
    onReset: () => load(),
    unmount: () => {
      reloadUnits.cancel();
      reloadFailures.cancel();
    },
  };
}
