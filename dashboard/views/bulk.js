// Selecting units on the unit list (operators only): rows picked one by one, across pages, or "all N matching" the
// current filter (sent as the filter itself, never as thousands of ids), and the bar of actions on the selection.
import { h, setText } from "../dom.js";
import { count } from "../format.js";
import { openBulkDialog } from "./bulk_dialog.js";

/**
 * @param {object} o
 * @param {() => {status:string, tag:string, q:string}} o.filter the list's current filter
 * @param {() => number} o.total how many units the filter matches
 * @param {() => Map<string, {data: object}>} o.rows the rows on screen
 */
export function createSelection({ filter, total, rows }) {
  const picked = new Map(); // id -> {online}
  let all = false; // every unit the filter matches, on screen or not
  const boxes = new Map(); // id -> the row's checkbox

  const pageBox = h("input", { type: "checkbox", id: "select-page", "aria-label": "Select every unit on this page",
    onchange: () => {
      if (!pageBox.checked) {
        all = false;
        for (const id of rows().keys()) picked.delete(id);
      } else {
        for (const [id, row] of rows()) picked.set(id, { online: row.data.online });
      }
      sync();
    } });
  const headCell = h("th", { scope: "col", class: "col-select" }, pageBox, h("span", { class: "sr-only", text: "Select" }));

  const countText = h("span", { id: "bulk-count", class: "bulk-count", "aria-live": "polite" });
  const allBtn = h("button", { type: "button", class: "btn small", id: "bulk-all", onclick: () => {
    all = true;
    sync();
  } });
  const clearBtn = h("button", { type: "button", class: "btn small", id: "bulk-clear", text: "Clear selection",
    onclick: () => reset() });
  const act = (id, text, mode, cls = "btn small") => h("button", { type: "button", class: cls, id, text,
    onclick: () => openBulkDialog(mode, snapshot(), () => reset()) });
  const bar = h("div", { class: "bulk-bar", id: "bulk-bar", role: "group", "aria-label": "Selected units", hidden: true },
    countText, allBtn, clearBtn,
    h("span", { class: "bulk-actions" },
      act("bulk-restart", "Restart…", "restart"), act("bulk-update", "Update…", "update"),
      act("bulk-reboot", "Reboot…", "reboot", "btn small danger"), act("bulk-rollout", "Rollout…", "rollout")));

  /** What the actions work on: the filter (all matching) or the ids picked, in id order, with who is offline. */
  function snapshot() {
    if (all) return { all: true, filter: { ...filter() }, count: total() };
    for (const [id, row] of rows()) if (picked.has(id)) picked.set(id, { online: row.data.online });
    const ids = [...picked.keys()].sort();
    return { all: false, ids, count: ids.length, offline: ids.filter((id) => picked.get(id).online === false) };
  }

  function rowCell(item) {
    const box = h("input", { type: "checkbox", class: "row-select", "aria-label": `Select ${item.id}`,
      onchange: () => {
        if (all && !box.checked) { // leaving "all matching": what stays picked is what is on screen
          all = false;
          picked.clear();
          for (const [id, row] of rows()) if (id !== item.id) picked.set(id, { online: row.data.online });
        } else if (box.checked) {
          picked.set(item.id, { online: item.online });
        } else {
          picked.delete(item.id);
        }
        sync();
      } });
    boxes.set(item.id, box);
    return h("td", { class: "col-select" }, box);
  }

  /** Paint the checkboxes and the bar from the selection (after a page is drawn, and after every change). */
  function sync() {
    for (const [id, box] of boxes) {
      if (!rows().has(id)) boxes.delete(id);
      else box.checked = all || picked.has(id);
    }
    const onPage = [...rows().keys()];
    const chosen = onPage.filter((id) => all || picked.has(id)).length;
    pageBox.checked = onPage.length > 0 && chosen === onPage.length;
    pageBox.indeterminate = chosen > 0 && chosen < onPage.length;
    const n = all ? total() : picked.size;
    bar.hidden = n === 0;
    setText(countText, all ? `All ${count(n)} matching units selected` : `${count(n)} unit${n === 1 ? "" : "s"} selected`);
    allBtn.hidden = all || total() <= picked.size;
    setText(allBtn, `Select all ${count(total())} matching`);
  }

  /** A new filter (or a finished action): start again with nothing selected. */
  function reset() {
    all = false;
    picked.clear();
    sync();
  }

  return { bar, headCell, rowCell, sync, reset };
}
