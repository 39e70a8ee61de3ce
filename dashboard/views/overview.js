// Fleet overview: totals, a paged table of units (server-side filter/search/sort), live presence and metrics.
import { ApiError, get } from "../api.js";
import { clear, debounce, h, notify, setText, throttle } from "../dom.js";
import { count } from "../format.js";
import { replaceQuery } from "../router.js";
import { suggestTags } from "../tags.js";
import { createSavedFilters } from "./saved_filters.js";
import { can } from "../session.js";
import { createSelection } from "./bulk.js";
import { createRowAlerts } from "./overview_alerts.js";
import { createLive } from "./overview_live.js";
import { buildRow } from "./overview_rows.js";

const PAGE_SIZES = [50, 100, 250, 500];
const SORTABLE = { status: "Status", id: "Unit", software_version: "Version", last_seen: "Last seen" };
const COLUMNS = [
  ["status", "Status"], ["id", "Unit"], ["tags", "Tags"], ["software_version", "Version"],
  ["last_seen", "Last seen"], ["cpu", "CPU"], ["mem", "Mem"], ["disk", "Disk"], ["temp", "Temp"],
];

export function mount(root, route) {
  const q = route.query;
  const state = {
    q: q.get("q") || "",
    status: q.get("status") || "",
    tag: q.get("tag") || "",
    sort: q.get("sort") || "id",
    page: Math.max(1, Number(q.get("page")) || 1),
    size: PAGE_SIZES.includes(Number(q.get("size"))) ? Number(q.get("size")) : 100,
  };
  const rows = new Map(); // id -> {tr, cells, data}
  let loadSeq = 0;
  let total = 0;
  let abort = null;

  // ---- skeleton -------------------------------------------------------------------------------------------
  const cards = {};
  const cardValues = {};
  const summary = h("div", { class: "summary", role: "group", "aria-label": "Fleet totals" },
    ...[["units", "Units", ""], ["online", "Online", "online"], ["offline", "Offline", "offline"],
      ["failing", "Failing", "failing"]].map(([key, label, status]) => {
      const value = h("span", { class: "card-value", id: `total-${key}`, text: "–" });
      // No aria-label: it would hide the count; the name is the visible "123 Online" plus what a click does.
      cards[key] = h("button", { type: "button", class: `card card-${key}`, dataset: { status },
        onclick: () => setFilter({ status }) },
      value, h("span", { class: "card-label", text: label }), h("span", { class: "sr-only", text: ", show these units" }));
      cardValues[key] = value;
      return cards[key];
    }));

  const search = h("input", { type: "search", class: "input", id: "filter-q", placeholder: "id, name, host or IP  ( / )",
    autocomplete: "off", spellcheck: "false" });
  search.value = state.q;
  const statusSel = h("select", { class: "input", id: "filter-status" },
    ...[["", "any status"], ["online", "online"], ["offline", "offline"], ["failing", "failing"]].map(([v, t]) =>
      h("option", { value: v, text: t })));
  statusSel.value = state.status;
  const tagInput = h("input", { type: "text", class: "input", id: "filter-tag", placeholder: "tag", autocomplete: "off",
    spellcheck: "false", list: "known-tags" });
  tagInput.value = state.tag;
  const tagList = h("datalist", { id: "known-tags" });
  const sizeSel = h("select", { class: "input", id: "page-size" },
    ...PAGE_SIZES.map((n) => h("option", { value: String(n), text: `${n} per page` })));
  sizeSel.value = String(state.size);
  const clearBtn = h("button", { type: "button", class: "btn small", text: "Clear filters",
    onclick: () => {
      search.value = "";
      tagInput.value = "";
      setFilter({ q: "", tag: "", status: "" });
    } });
  const filters = h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
    h("label", { for: "filter-q", class: "field-label inline", text: "Search" }), search,
    h("label", { for: "filter-status", class: "field-label inline", text: "Status" }), statusSel,
    h("label", { for: "filter-tag", class: "field-label inline", text: "Tag" }), tagInput, tagList,
    h("label", { for: "page-size", class: "field-label inline", text: "Rows" }), sizeSel, clearBtn);
  const stopTagSuggestions = suggestTags(tagInput, tagList); // from the whole fleet, not only this page
  const saved = createSavedFilters({ current: () => ({ status: state.status, tag: state.tag, q: state.q, sort: state.sort }),
    apply: (f) => {
      search.value = f.q;
      tagInput.value = f.tag;
      setFilter(f);
    } });

  // Operators select rows for bulk actions; viewers get no selection at all.
  const selection = can("operator") ? createSelection({ filter: () => ({ status: state.status, tag: state.tag,
    q: state.q }), total: () => total, rows: () => rows }) : null;
  const headRow = h("tr", {}, selection?.headCell, ...COLUMNS.map(([key, label]) => {
    if (!SORTABLE[key]) return h("th", { scope: "col", class: `col-${key}`, text: label });
    const button = h("button", { type: "button", class: "sort", dataset: { sort: key }, text: label,
      onclick: () => {
        const cur = state.sort.replace(/^-/, "");
        const desc = cur === key ? !state.sort.startsWith("-") : key === "last_seen";
        setFilter({ sort: `${desc ? "-" : ""}${key}` });
      } });
    return h("th", { scope: "col", class: `col-${key}`, dataset: { col: key } }, button);
  }));
  const tbody = h("tbody", { id: "units-body" });
  const table = h("table", { class: "units", id: "units", "aria-describedby": "pager-info" },
    h("caption", { class: "sr-only", text: "Units" }), h("thead", {}, headRow), tbody);
  const empty = h("p", { class: "empty-state", hidden: true });
  const pagerInfo = h("span", { id: "pager-info", class: "pager-info", "aria-live": "polite" });
  const pageButtons = {};
  const pager = h("nav", { class: "pager", "aria-label": "Pages" }, pagerInfo,
    ...[["first", "« First"], ["prev", "‹ Prev"], ["next", "Next ›"], ["last", "Last »"]].map(([key, label]) => {
      pageButtons[key] = h("button", { type: "button", class: "btn small", dataset: { page: key }, text: label,
        onclick: () => goPage(key) });
      return pageButtons[key];
    }));

  clear(root, h("section", { class: "overview", "aria-labelledby": "overview-title" },
    h("h1", { id: "overview-title", class: "sr-only", text: "Units" }),
    summary, filters, saved.el, selection?.bar, h("div", { class: "table-wrap" }, table, empty), pager));
  document.title = "Units · Fleet";

  // ---- filters and paging ----------------------------------------------------------------------------------
  function setFilter(change) {
    if (["q", "status", "tag"].some((k) => k in change && change[k] !== state[k])) selection?.reset();
    Object.assign(state, change);
    if (!("page" in change)) state.page = 1;
    statusSel.value = state.status;
    saved.sync();
    replaceQuery({ q: state.q, status: state.status, tag: state.tag, page: state.page > 1 ? state.page : "",
      size: state.size !== 100 ? state.size : "", sort: state.sort !== "id" ? state.sort : "" });
    load();
  }

  function goPage(which) {
    const pages = Math.max(1, Math.ceil(total / state.size));
    const target = { first: 1, prev: state.page - 1, next: state.page + 1, last: pages }[which];
    setFilter({ page: Math.min(pages, Math.max(1, target)) });
  }

  const onSearch = debounce(() => setFilter({ q: search.value.trim() }), 250);
  search.addEventListener("input", onSearch);
  statusSel.addEventListener("change", () => setFilter({ status: statusSel.value }));
  tagInput.addEventListener("change", () => setFilter({ tag: tagInput.value.trim() }));
  sizeSel.addEventListener("change", () => setFilter({ size: Number(sizeSel.value) }));
  const slashKey = (e) => {
    if (e.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName)) {
      e.preventDefault();
      search.focus();
    }
  };
  document.addEventListener("keydown", slashKey);

  function query(extra = {}) {
    return { limit: state.size, offset: (state.page - 1) * state.size, status: state.status, tag: state.tag,
      q: state.q, sort: state.sort, ...extra };
  }

  // ---- loading -----------------------------------------------------------------------------------------------
  async function load() {
    const seq = ++loadSeq;
    abort?.abort();
    abort = new AbortController();
    events.close(); // events arriving during the read are applied after it, in order
    table.setAttribute("aria-busy", "true");
    try {
      const body = await get("/api/devices", query(), { signal: abort.signal });
      if (seq !== loadSeq) return;
      renderRows(body.items);
      renderSummary(body);
    } catch (err) {
      if (err.name === "AbortError" || seq !== loadSeq) return;
      if (err instanceof ApiError && err.status === 422) notify(err.message);
      else if (!(err instanceof ApiError && err.status === 401)) notify(`Could not load the units: ${err.message}`);
    } finally {
      if (seq === loadSeq) {
        table.removeAttribute("aria-busy");
        events.open();
      }
    }
  }

  const refreshSummary = throttle(async () => {
    try {
      const body = await get("/api/devices", query({ limit: 1, offset: 0 }));
      renderSummary(body);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) notify(`Could not refresh the totals: ${err.message}`);
    }
  }, 1000);
  const reloadPage = throttle(load, 1500);

  function renderSummary(body) {
    total = body.total;
    const s = body.summary || {};
    for (const key of ["units", "online", "offline", "failing"]) setText(cardValues[key], count(s[key]));
    for (const card of Object.values(cards)) card.setAttribute("aria-pressed", String((card.dataset.status || "") === state.status));
    const pages = Math.max(1, Math.ceil(total / state.size));
    const first = total ? (state.page - 1) * state.size + 1 : 0;
    const last = Math.min(total, state.page * state.size);
    setText(pagerInfo, `${count(first)}–${count(last)} of ${count(total)} units · page ${state.page} of ${pages}`);
    pageButtons.first.disabled = pageButtons.prev.disabled = state.page <= 1;
    pageButtons.next.disabled = pageButtons.last.disabled = state.page >= pages;
    for (const th of headRow.querySelectorAll("th[data-col]")) {
      const key = th.dataset.col;
      const cur = state.sort.replace(/^-/, "");
      if (key === cur) th.setAttribute("aria-sort", state.sort.startsWith("-") ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
    selection?.sync();
    if (state.page > pages && total > 0) setFilter({ page: pages });
  }

  const onTag = (t) => {
    tagInput.value = t;
    setFilter({ tag: t });
  };

  function renderRows(items) {
    rows.clear();
    const fragment = document.createDocumentFragment();
    for (const item of items) {
      const row = buildRow(item, { selectCell: selection?.rowCell(item), onTag });
      rows.set(item.id, row);
      fragment.append(row.tr);
    }
    tbody.replaceChildren(fragment);
    live.follow();
    rowAlerts.load();
    empty.hidden = items.length > 0;
    const filtered = state.q || state.tag || state.status;
    empty.textContent = filtered ? "No units match these filters."
      : "No units enrolled yet. Enroll one with `fleet device add ID` or POST /api/devices.";
  }

  const live = createLive({ rows, refreshSummary, reloadPage });
  const rowAlerts = createRowAlerts({ rows });
  const events = live.events;

  load();

  return {
    stream: live.initialQuery, // narrowed to the page's units once they are known
    attachStream: (stream) => live.attach(stream),
    onEvent: (e) => events.push(e),
    onAlert: (e) => rowAlerts.onAlert(e),
    onReset() {
      load();
    },
    unmount() {
      live.stop();
      rowAlerts.stop();
      onSearch.cancel();
      refreshSummary.cancel();
      reloadPage.cancel();
      abort?.abort();
      document.removeEventListener("keydown", slashKey);
      stopTagSuggestions();
    },
  };
}
