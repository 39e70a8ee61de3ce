// The confirmation of a bulk action: how many units and which, how many are offline (their commands will queue),
// then one rollout over the selection, so the operator has one page to watch.
import { ApiError, get, post } from "../api.js";
import { h, setText } from "../dom.js";
import { count } from "../format.js";
import { rolloutHref } from "../router.js";

const REF_RE = /^[A-Za-z0-9][A-Za-z0-9._/@+-]{0,199}$/;
const SHOWN = 5;
const COMMANDS = [["restart", "Restart services"], ["update", "Update software"], ["reboot", "Reboot"]];
const plural = (n, word) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;

/** The first few ids and how many units are offline; for "all matching", read from the list with the filter. */
async function describe(sel) {
  if (!sel.all) return { ids: sel.ids.slice(0, SHOWN), offline: sel.offline.length };
  const base = { status: sel.filter.status, tag: sel.filter.tag, q: sel.filter.q };
  const first = await get("/api/devices", { ...base, sort: "id", limit: SHOWN });
  let offline = sel.filter.status === "offline" ? first.total : 0;
  if (!sel.filter.status) offline = (await get("/api/devices", { ...base, status: "offline", limit: 1 })).total;
  return { ids: first.items.map((d) => d.id), offline, count: first.total };
}

function filterWords(f) {
  const parts = [f.status && `status ${f.status}`, f.tag && `tag ${f.tag}`, f.q && `“${f.q}”`].filter(Boolean);
  return parts.length ? `units matching ${parts.join(", ")}` : "every unit";
}

/**
 * @param {"restart"|"update"|"reboot"|"rollout"} mode "rollout" lets the operator choose the command and batches
 * @param {{all:boolean, filter?:object, ids?:string[], offline?:string[], count:number}} sel
 * @param {() => void} onStarted
 */
export async function openBulkDialog(mode, sel, onStarted) {
  let facts;
  try {
    facts = await describe(sel);
  } catch (err) {
    facts = { ids: [], offline: 0, error: err.message };
  }
  const n = facts.count ?? sel.count;
  const staged = mode === "rollout";
  const input = (id, attrs) => h("input", { class: "input", id, autocomplete: "off", spellcheck: "false", ...attrs });
  const f = {
    command: staged ? h("select", { class: "input", id: "bulk-command" },
      ...COMMANDS.map(([v, t]) => h("option", { value: v, text: t }))) : null,
    ref: input("bulk-ref", { placeholder: "e.g. v1.4.2" }),
    batch: staged ? input("bulk-batch", { type: "number", min: "1", max: "20000", placeholder: "all at once" }) : null,
    pause: staged ? input("bulk-pause", { type: "number", min: "0", max: "604800", step: "1", value: "0" }) : null,
    threshold: input("bulk-threshold", { type: "number", min: "0", max: "100", step: "1", value: staged ? "10" : "100" }),
    typed: input("bulk-typed", { "aria-describedby": "bulk-typed-hint" }),
  };
  const command = () => (staged ? f.command.value : mode);
  const word = () => `reboot ${n}`;

  const title = h("h2", { id: "bulk-title" });
  const problem = h("p", { class: "field-error", role: "alert", id: "bulk-error", text: facts.error || "" });
  const go = h("button", { type: "submit", class: "btn danger", id: "bulk-go", text: "Start" });
  const cancel = h("button", { type: "button", class: "btn", id: "bulk-cancel", text: "Cancel", onclick: () => close() });
  const more = n - facts.ids.length;
  const field = (el, label, extra = null) => el && h("div", { class: "bulk-field" },
    h("label", { for: el.id, class: "field-label" }, label), el, extra);
  const refField = field(f.ref, "Branch, tag or commit");
  const typedField = field(f.typed, h("span", {}, "Type ", h("code", { text: word() }), " to confirm"),
    h("p", { id: "bulk-typed-hint", class: "hint", text: "A reboot stops recording on every one of these units." }));
  const form = h("form", { method: "dialog", class: "dialog-form" }, title,
    h("p", {}, sel.all ? `${filterWords(sel.filter)}: ` : "", h("span", { id: "bulk-ids", class: "mono",
      text: `${facts.ids.join(", ")}${more > 0 ? ` and ${count(more)} more` : ""}` })),
    facts.offline ? h("p", { class: "banner warn", id: "bulk-offline", text: `${facts.offline === 1
      ? "1 of these units is offline: its command" : `${count(facts.offline)} of these units are offline: their commands`}` +
      " will queue and run when the unit reconnects (counted as failed after an hour away)." }) : null,
    h("p", { class: "hint", text: staged ? "One rollout over these units, batch by batch; it stops by itself " +
      "when too many fail." : "One rollout over these units, all at once: the next page links to it." }),
    field(f.command, "Command"), refField,
    h("div", { class: "bulk-grid" }, field(f.batch, "Batch size (units)"), field(f.pause, "Pause between batches (s)"),
      field(f.threshold, "Stop when failed above (%)")),
    typedField, problem,
    h("div", { class: "dialog-actions" }, cancel, go));
  const dialog = h("dialog", { class: "dialog bulk-dialog", "aria-labelledby": "bulk-title" }, form);

  function read() {
    const v = { command: command(), ref: f.ref.value.trim(), threshold: Number(f.threshold.value),
      batch: staged && f.batch.value ? Number(f.batch.value) : null, pause: staged ? Number(f.pause.value || 0) : 0 };
    if (v.command === "update" && (!REF_RE.test(v.ref) || v.ref.includes(".."))) {
      return { error: v.ref ? "The ref must be a branch, tag or commit name (letters, digits and ._/@+-)." : "" };
    }
    if (v.batch !== null && !(Number.isInteger(v.batch) && v.batch >= 1)) return { error: "The batch size is a whole number, at least 1." };
    if (!(f.threshold.value !== "" && v.threshold >= 0 && v.threshold <= 100)) return { error: "The threshold is a percentage from 0 to 100." };
    if (!(v.pause >= 0)) return { error: "The pause is a number of seconds, 0 or more." };
    if (v.command === "reboot" && f.typed.value.trim() !== word()) return { error: "" };
    return { value: v };
  }

  function paint() {
    const c = command();
    const units = plural(n, "unit");
    const ref = f.ref.value.trim();
    setText(title, { restart: `Restart services on ${units}?`, reboot: `Reboot ${units}?`,
      update: `Update ${units}${ref ? ` to ${ref}` : ""}?` }[c]);
    refField.hidden = c !== "update";
    typedField.hidden = c !== "reboot";
    const { error } = read();
    problem.textContent = error || facts.error || "";
    go.disabled = error !== undefined || !n;
    const danger = c !== "restart";
    dialog.classList.toggle("danger", danger);
    go.className = `btn ${danger ? "danger" : "primary"}`;
    setText(go, staged ? "Start rollout" : { restart: "Restart services", update: "Update", reboot: "Reboot units" }[c]);
  }

  async function start(e) {
    e.preventDefault();
    const { value: v } = read();
    if (!v) return;
    const what = v.command === "update" ? `update to ${v.ref}` : v.command;
    const body = { name: `${what} · ${sel.all ? filterWords(sel.filter) : plural(n, "selected unit")}`,
      command: v.command, args: v.command === "update" ? { ref: v.ref } : {}, pause_s: v.pause,
      abort_threshold: v.threshold / 100, ...(v.batch ? { batch_size: v.batch } : { batch_percent: 100 }),
      ...(sel.all ? { filter: sel.filter } : { device_ids: sel.ids }) };
    for (const k of ["status", "tag", "q"]) if (body.filter && !body.filter[k]) delete body.filter[k];
    go.disabled = true;
    try {
      const r = await post("/api/rollouts", body);
      onStarted();
      const link = h("a", { href: rolloutHref(r.id), id: "bulk-link", text: "Watch the rollout", onclick: () => close() });
      form.replaceChildren(h("h2", { id: "bulk-title", text: "Started" }),
        h("p", { id: "bulk-result" }, `${what} on ${plural(r.totals.total, "unit")}, as one rollout: `, link),
        h("div", { class: "dialog-actions" }, h("button", { type: "button", class: "btn", text: "Close", onclick: () => close() })));
      link.focus();
    } catch (err) {
      problem.textContent = err instanceof ApiError ? err.message : String(err);
      go.disabled = false;
    }
  }

  function close() {
    dialog.close();
    dialog.remove();
  }

  form.addEventListener("submit", start);
  form.addEventListener("input", paint);
  form.addEventListener("change", paint);
  dialog.addEventListener("cancel", (e) => {
    e.preventDefault();
    close();
  });
  document.body.append(dialog);
  paint();
  dialog.showModal();
  (staged ? f.command : mode === "update" ? f.ref : cancel).focus();
}
