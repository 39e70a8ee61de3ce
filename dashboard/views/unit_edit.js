// Rename and retag a unit (operators): tags as removable chips, checked against the tag rule as they are added,
// suggested from the whole fleet; the server's answer is shown when it refuses, and nothing is changed then.
import { enc, request } from "../api.js";
import { h, notify } from "../dom.js";
import { can } from "../session.js";
import { splitTags, suggestTags, tagProblem } from "../tags.js";

/** `unit()` gives the unit as last read; `onSaved(body)` gets the server's answer to the PATCH. */
export function createUnitEdit(deviceId, { unit, onSaved }) {
  if (!can("operator")) return { button: null, el: null, dispose() {} };
  let tags = [];
  let stopSuggest = null;

  const button = h("button", { type: "button", class: "btn small", id: "unit-edit", text: "Edit name and tags",
    "aria-expanded": "false", "aria-controls": "unit-edit-form", onclick: () => open() });
  const name = h("input", { type: "text", class: "input", id: "unit-name-input", maxlength: "200",
    autocomplete: "off" });
  const tagInput = h("input", { type: "text", class: "input", id: "unit-tag-input", list: "tag-suggestions",
    autocomplete: "off", spellcheck: "false", placeholder: "add tags: a, b", "aria-describedby": "unit-edit-error" });
  const suggestions = h("datalist", { id: "tag-suggestions" });
  const chips = h("ul", { class: "tag-chips", id: "unit-tag-chips", "aria-label": "Tags" });
  const problem = h("p", { class: "field-error", id: "unit-edit-error", role: "alert" });
  const save = h("button", { type: "submit", class: "btn primary", id: "unit-edit-save", text: "Save" });
  const add = h("button", { type: "button", class: "btn", text: "Add tag", onclick: () => addTyped() });
  const cancel = h("button", { type: "button", class: "btn", text: "Cancel", onclick: () => close() });
  const el = h("form", { class: "unit-edit", id: "unit-edit-form", hidden: true, "aria-label": `Edit ${deviceId}`,
    onsubmit: (e) => {
      e.preventDefault();
      store();
    } },
  h("label", { for: "unit-name-input", class: "field-label", text: "Name" }), name,
  h("label", { for: "unit-tag-input", class: "field-label", text: "Tags" }), chips,
  h("div", { class: "row" }, tagInput, add), suggestions, problem,
  h("div", { class: "row" }, save, cancel));

  function paintChips() {
    chips.replaceChildren(...tags.map((t) => h("li", { class: "tag-chip" }, h("span", { text: t }),
      h("button", { type: "button", class: "chip-remove", "aria-label": `Remove tag ${t}`, text: "×",
        onclick: () => {
          tags = tags.filter((x) => x !== t);
          paintChips();
          tagInput.focus();
        } }))));
  }

  /** Add what is typed; a bad tag stays in the field with the rule, the good ones before it are added. */
  function addTyped() {
    const typed = splitTags(tagInput.value);
    const bad = typed.find((t) => tagProblem(t));
    if (bad) {
      problem.textContent = tagProblem(bad);
      tagInput.setAttribute("aria-invalid", "true");
      return false;
    }
    tags = [...new Set([...tags, ...typed])].sort();
    tagInput.value = "";
    tagInput.removeAttribute("aria-invalid");
    problem.textContent = "";
    paintChips();
    return true;
  }

  tagInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      addTyped();
    }
  });
  el.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      close();
    }
  });

  function open() {
    const u = unit() || {};
    name.value = u.name || "";
    tags = [...(u.tags || [])];
    tagInput.value = "";
    tagInput.removeAttribute("aria-invalid");
    problem.textContent = "";
    paintChips();
    el.hidden = false;
    button.setAttribute("aria-expanded", "true");
    stopSuggest = stopSuggest || suggestTags(tagInput, suggestions);
    name.focus();
  }

  function close() {
    el.hidden = true;
    button.setAttribute("aria-expanded", "false");
    button.focus();
  }

  async function store() {
    if (tagInput.value.trim() && !addTyped()) return;
    save.disabled = true;
    try {
      const body = await request("PATCH", `/api/devices/${enc(deviceId)}`, { body: { name: name.value.trim(), tags } });
      onSaved(body);
      close();
      notify(`Saved the name and tags of ${deviceId}.`, "info");
    } catch (err) {
      problem.textContent = `Not saved. ${err.message}`;
    } finally {
      save.disabled = false;
    }
    // the button was disabled while saving, which took the focus away: put it where the fix is typed
    if (!el.hidden) (/\btags?\b/.test(problem.textContent) ? tagInput : name).focus();
  }

  return { button, el, dispose: () => stopSuggest && stopSuggest() };
}
