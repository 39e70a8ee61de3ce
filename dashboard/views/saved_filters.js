// Saved filters of the unit list: a name for a status, tag, search and sort, kept in this browser's
// localStorage (nothing on the server: they are one operator's shortcuts), listed, applied and deleted here.
import { confirmAction } from "../dialog.js";
import { h, notify } from "../dom.js";

const KEY = "fleet.savedFilters";
const FIELDS = ["status", "tag", "q", "sort"];

/** {name: {status, tag, q, sort}}; {} when nothing (or nothing readable) is stored. */
export function readSaved() {
  try {
    const all = JSON.parse(localStorage.getItem(KEY) || "{}");
    return all && typeof all === "object" && !Array.isArray(all) ? all : {};
  } catch {
    return {};
  }
}

const pick = (f) => Object.fromEntries(FIELDS.map((k) => [k, typeof f[k] === "string" ? f[k] : ""]));
const same = (a, b) => FIELDS.every((k) => (a[k] || "") === (b[k] || ""));

function describe(f) {
  const parts = [f.status && `status ${f.status}`, f.tag && `tag ${f.tag}`, f.q && `search “${f.q}”`,
    f.sort && f.sort !== "id" && `sorted by ${f.sort.replace(/^-/, "")}${f.sort.startsWith("-") ? " (descending)" : ""}`];
  return parts.filter(Boolean).join(", ") || "all units";
}

/** `current()` gives the list's filter now; `apply(filter)` shows the units of a saved one. */
export function createSavedFilters({ current, apply }) {
  const select = h("select", { class: "input", id: "saved-filter" });
  const saveBtn = h("button", { type: "button", class: "btn small", id: "saved-filter-save", text: "Save filter…",
    onclick: () => save() });
  const deleteBtn = h("button", { type: "button", class: "btn small", id: "saved-filter-delete", text: "Delete",
    onclick: () => remove() });
  const el = h("div", { class: "saved-filters", role: "group", "aria-label": "Saved filters" },
    h("label", { for: "saved-filter", class: "field-label inline", text: "Saved filters" }), select, saveBtn, deleteBtn);

  /** List the saved filters, selecting the one the list shows now (if any). */
  function sync() {
    const all = readSaved();
    const now = current();
    const names = Object.keys(all).sort((a, b) => a.localeCompare(b));
    select.replaceChildren(h("option", { value: "", text: names.length ? "choose…" : "none saved" }),
      ...names.map((n) => h("option", { value: n, text: n, title: describe(all[n]) })));
    select.value = names.find((n) => same(pick(all[n]), now)) || "";
    deleteBtn.disabled = !select.value;
    deleteBtn.setAttribute("aria-label", select.value ? `Delete saved filter ${select.value}` : "Delete saved filter");
  }

  select.addEventListener("change", () => {
    const chosen = readSaved()[select.value];
    deleteBtn.disabled = !select.value;
    if (chosen) apply(pick(chosen));
  });

  async function save() {
    const filter = pick(current());
    const all = readSaved();
    const name = await confirmAction({ title: "Save this filter", confirm: "Save", body: `Shows: ${describe(filter)}. ` +
      "Kept in this browser only.", input: { label: "Name", placeholder: "e.g. offline at venue B",
      value: select.value, validate: (v) => (v.length > 60 ? "At most 60 characters." : null) } });
    if (!name) return;
    const replaced = name in all;
    all[name] = filter;
    try {
      localStorage.setItem(KEY, JSON.stringify(all));
    } catch (err) {
      notify(`The filter could not be saved in this browser: ${err.message}`);
      return;
    }
    sync();
    notify(`Filter “${name}” ${replaced ? "replaced" : "saved"}.`, "info");
  }

  function remove() {
    const name = select.value;
    if (!name) return;
    const all = readSaved();
    delete all[name];
    localStorage.setItem(KEY, JSON.stringify(all));
    sync();
    notify(`Saved filter “${name}” deleted.`, "info");
    saveBtn.focus();
  }

  sync();
  return { el, sync };
}
