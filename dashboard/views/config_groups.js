// Config defaults per tag: every unit carrying the tag gets these settings under its own (higher priority wins
// among tags). Operators create, edit (against the version they read, like a unit's config) and delete them;
// viewers read them. Changes by others arrive live.
import { ApiError, enc, get, request } from "../api.js";
import { confirmAction } from "../dialog.js";
import { clear, h, labelCells, notify, setText, throttle } from "../dom.js";
import { ago, count, dateTime, toMs } from "../format.js";
import { can } from "../session.js";
import { suggestTags, tagProblem } from "../tags.js";
import { parseConfig } from "./unit_config.js";

const pretty = (v) => JSON.stringify(v ?? {}, null, 2);
const units = (n) => `${count(n)} unit${n === 1 ? "" : "s"}`;
const gets = (n) => (n === 1 ? "gets" : "get");

export function mount(root) {
  const editable = can("operator");
  let schema = {};
  let editing = null; // null, or {tag, version} of the group being edited (version 0: a new one)
  document.title = "Config defaults · Fleet";

  const tbody = h("tbody", { id: "groups-body" });
  const empty = h("p", { class: "empty-state", hidden: true, text: "No config defaults yet." +
    (editable ? " Create one to change a setting on every unit of a tag at once." : "") });
  const newBtn = editable ? h("button", { type: "button", class: "btn primary", id: "group-new", text: "New defaults…",
    onclick: () => openEditor(null) }) : null;

  const tagInput = h("input", { type: "text", class: "input", id: "group-tag", list: "group-tag-suggestions",
    autocomplete: "off", spellcheck: "false", required: true, "aria-describedby": "group-error" });
  const tagList = h("datalist", { id: "group-tag-suggestions" });
  const priority = h("input", { type: "number", class: "input", id: "group-priority", min: "-1000", max: "1000",
    step: "1", value: "0" });
  const editor = h("textarea", { class: "input code", id: "group-editor", rows: "10", spellcheck: "false",
    autocomplete: "off", "aria-describedby": "group-error" });
  const problem = h("p", { class: "field-error", id: "group-error", role: "alert" });
  const notice = h("div", { class: "banner info", id: "group-notice", hidden: true });
  const save = h("button", { type: "submit", class: "btn primary", id: "group-save", text: "Save" });
  const formTitle = h("h2", { id: "group-form-title" });
  const form = editable ? h("form", { class: "panel group-form", id: "group-form", hidden: true,
    "aria-labelledby": "group-form-title", onsubmit: (e) => {
      e.preventDefault();
      store();
    } },
  formTitle, notice,
  h("div", { class: "row" },
    h("div", {}, h("label", { for: "group-tag", class: "field-label", text: "Tag" }), tagInput, tagList),
    h("div", {}, h("label", { for: "group-priority", class: "field-label", text: "Priority (higher wins)" }), priority)),
  h("label", { for: "group-editor", class: "field-label", text: "Settings (JSON; known keys are checked)" }), editor,
  problem,
  h("div", { class: "row" }, save, h("button", { type: "button", class: "btn", text: "Cancel", onclick: () => closeEditor() })))
    : null;

  const columns = ["Tag", "Priority", "Units", "Version", "Updated", "Settings", editable ? "Actions" : null];
  const head = h("tr", {}, ...columns.filter(Boolean).map((t) => h("th", { scope: "col", text: t })));
  clear(root, h("section", { class: "groups", "aria-labelledby": "groups-title" },
    h("div", { class: "panel" },
      h("div", { class: "panel-head" }, h("h1", { id: "groups-title", text: "Config defaults" }), newBtn),
      h("p", { class: "hint", text: "Settings every unit of a tag gets. A unit's own settings win over these; " +
        "among several tags, the higher priority (then the later tag name) wins." +
        (editable ? "" : " Your role may read them; an operator changes them.") })),
    form,
    h("div", { class: "panel table-wrap" }, h("table", { class: "groups-table cards", id: "groups" },
      h("caption", { class: "sr-only", text: "Config defaults by tag" }), h("thead", {}, head), tbody), empty)));

  function row(g) {
    const actions = editable ? h("td", { class: "group-actions" },
      h("button", { type: "button", class: "btn small group-edit", text: "Edit", "aria-label": `Edit the defaults of ${g.tag}`,
        onclick: () => openEditor(g) }),
      h("button", { type: "button", class: "btn small danger group-delete", text: "Delete",
        "aria-label": `Delete the defaults of ${g.tag}`, onclick: () => remove(g) })) : null;
    const updated = toMs(g.updated_at);
    return labelCells(h("tr", { dataset: { tag: g.tag } },
      h("td", { class: "group-tag mono", text: g.tag }),
      h("td", { class: "group-priority num", text: String(g.priority) }),
      h("td", { class: "group-units num" }, h("a", { href: `#/?tag=${enc(g.tag)}`, text: String(g.units),
        "aria-label": `${units(g.units)} tagged ${g.tag}` })),
      h("td", { class: "group-version num", text: `v${g.version}` }),
      h("td", { class: "group-updated", title: updated ? dateTime(updated) : "" },
        `${ago(updated)}${g.updated_by ? ` by ${g.updated_by}` : ""}`),
      h("td", { class: "card-wide" }, h("pre", { class: "code group-config", tabindex: "0",
        "aria-label": `Settings of ${g.tag}`, text: pretty(g.config) })),
      actions), columns.map((t) => (t === "Actions" ? null : t)));
  }

  async function load() {
    try {
      const [body, known] = await Promise.all([get("/api/config/groups"),
        schema && Object.keys(schema).length ? schema : get("/api/config/schema").then((b) => b.known || {}).catch(() => ({}))]);
      schema = known;
      tbody.replaceChildren(...body.items.map(row));
      empty.hidden = body.items.length > 0;
    } catch (err) {
      if (err.status !== 401) notify(`Could not load the config defaults: ${err.message}`);
    }
  }
  const reload = throttle(load, 500);

  function validate() {
    const tag = tagInput.value.trim();
    const tagBad = editing && editing.version ? null : tag ? tagProblem(tag) : "A tag is required.";
    const parsed = parseConfig(editor.value, schema);
    const message = (tag || editor.value.trim() ? tagBad : null) || parsed.error || "";
    problem.textContent = message;
    tagInput.setAttribute("aria-invalid", String(Boolean(tag && tagBad)));
    editor.setAttribute("aria-invalid", String(Boolean(parsed.error)));
    save.disabled = Boolean(tagBad || parsed.error);
    return { tag, value: parsed.value };
  }

  let stopSuggest = null;
  function openEditor(group) {
    editing = group ? { tag: group.tag, version: group.version } : { tag: null, version: 0 };
    setText(formTitle, group ? `Defaults of tag ${group.tag}` : "New config defaults");
    tagInput.value = group ? group.tag : "";
    tagInput.readOnly = Boolean(group);
    priority.value = String(group ? group.priority : 0);
    editor.value = pretty(group ? group.config : {});
    notice.hidden = true;
    form.hidden = false;
    validate();
    if (!group) stopSuggest = stopSuggest || suggestTags(tagInput, tagList);
    (group ? editor : tagInput).focus();
  }

  function closeEditor() {
    editing = null;
    form.hidden = true;
    newBtn.focus();
  }

  async function store() {
    const { tag, value } = validate();
    if (save.disabled || !editing) return;
    save.disabled = true;
    try {
      const body = await request("PUT", `/api/config/groups/${enc(tag)}`, { body: value,
        query: { priority: priority.value.trim() || 0 }, headers: { "If-Match": `"${editing.version}"` } });
      notify(`Defaults of ${tag} saved (v${body.version}); ${units(body.changed_units)} ${gets(body.changed_units)} ` +
        "a new config.", "info");
      closeEditor();
      load();
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        notice.replaceChildren(h("span", { text: editing.version ? `${err.message} ` :
          `Defaults for ${tag} exist already (someone just created them). ` }),
        h("button", { type: "button", class: "btn small", text: "Load the newer version (drops your edits)",
          onclick: () => reloadEditing(tag) }));
        notice.hidden = false;
      } else {
        problem.textContent = `Not saved. ${err.message}`;
      }
    } finally {
      save.disabled = false;
    }
  }

  async function reloadEditing(tag) {
    try {
      openEditor(await get(`/api/config/groups/${enc(tag)}`));
    } catch (err) {
      notify(err.message);
    }
  }

  async function remove(g) {
    const ok = await confirmAction({ title: `Delete the config defaults of tag ${g.tag}?`, danger: true,
      body: g.units === 1 ? `1 unit tagged ${g.tag} loses these settings (its own settings stay) and gets a new config.`
        : `${units(g.units)} tagged ${g.tag} lose these settings (their own settings stay) and get a new config.`,
      confirm: "Delete defaults" });
    if (!ok) return;
    try {
      const body = await request("DELETE", `/api/config/groups/${enc(g.tag)}`);
      notify(`Defaults of ${g.tag} deleted; ${units(body.changed_units)} ${gets(body.changed_units)} a new config.`, "info");
      if (editing && editing.tag === g.tag) closeEditor();
    } catch (err) {
      notify(err.message);
    }
    load();
  }

  if (editable) {
    for (const input of [tagInput, editor]) input.addEventListener("input", validate);
    form.addEventListener("keydown", (e) => {
      if (e.key === "Escape") closeEditor();
    });
  }
  load();

  return {
    stream: { types: "config_group" },
    onEvent: () => reload(),
    onReset: () => load(),
    hasEdits: () => Boolean(editing),
    unmount() {
      reload.cancel();
      if (stopSuggest) stopSuggest();
    },
  };
}
