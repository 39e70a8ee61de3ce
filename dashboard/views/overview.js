// Fleet overview: totals, a paged table of units (server-side filter/search/sort), live presence and metrics.
import { ApiError, get } from "../api.js";
import { clear, debounce, gate, h, notify, setText, throttle } from "../dom.js";
import { ago, celsius, count, dateTime, level, percent, toMs } from "../format.js";
import { replaceQuery, unitHref } from "../router.js";
import { badge, unitState, updateBadge } from "./status.js";

const PAGE_SIZES = [50, 100, 250, 500];
const SORTABLE = { status: "Status", id: "Unit", software_version: "Version", last_seen: "Last seen" };
const COLUMNS = [
  ["status", "Status"], ["id", "Unit"], ["tags", "Tags"], ["software_version", "Version"],
  ["last_seen", "Last seen"], ["cpu", "CPU"], ["mem", "Mem"], ["disk", "Disk"], ["temp", "Temp"],
];

function gauge(cls) {
  const bar = h("span", { class: "gauge-bar" });
  const text = h("span", { class: "gauge-text" });
  return { el: h("span", { class: `gauge ${cls}` }, h("span", { class: "gauge-track", "aria-hidden": "true" }, bar), text),
    bar, text };
}

function setGauge(g, value, warn, crit, formatter = percent) {
  const lv = level(value, warn, crit);
  if (g.el.dataset.level !== lv) g.el.dataset.level = lv;
  setText(g.text, formatter(value));
  const width = value === null || value === undefined ? "0%" : `${Math.max(0, Math.min(100, value)).toFixed(0)}%`;
  if (g.bar.style.width !== width) g.bar.style.width = width;
}

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
  const pending = new Map(); // id -> patch, applied on the next animation frame
  let frame = 0;
  let loadSeq = 0;
  let total = 0;
  const knownFailing = new Set(); // units seen failing in live metrics, on this page or not
  let abort = null;

  // ---- skeleton -------------------------------------------------------------------------------------------
  const cards = {};
  const cardValues = {};
  const summary = h("div", { class: "summary", role: "group", "aria-label": "Fleet totals" },
    ...[["units", "Units", ""], ["online", "Online", "online"], ["offline", "Offline", "offline"],
      ["failing", "Failing", "failing"]].map(([key, label, status]) => {
      const value = h("span", { class: "card-value", id: `total-${key}`, text: "–" });
      cards[key] = h("button", { type: "button", class: `card card-${key}`, dataset: { status },
        "aria-label": `${label}: show these units`, onclick: () => setFilter({ status }) },
      value, h("span", { class: "card-label", text: label }));
      cardValues[key] = value;
      return cards[key];
    }));

  const search = h("input", { type: "search", class: "input", id: "filter-q", placeholder: "id, name or host  ( / )",
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
    sizeSel, clearBtn);

  const headRow = h("tr", {}, ...COLUMNS.map(([key, label]) => {
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
    summary, filters, h("div", { class: "table-wrap" }, table, empty), pager));
  document.title = "Units · Fleet";

  // ---- filters and paging ----------------------------------------------------------------------------------
  function setFilter(change) {
    Object.assign(state, change);
    if (!("page" in change)) state.page = 1;
    statusSel.value = state.status;
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
    if (state.page > pages && total > 0) setFilter({ page: pages });
  }

  function renderRows(items) {
    rows.clear();
    pending.clear();
    const fragment = document.createDocumentFragment();
    const tags = new Set();
    for (const item of items) {
      const row = buildRow(item);
      rows.set(item.id, row);
      fragment.append(row.tr);
      (item.tags || []).forEach((t) => tags.add(t));
    }
    tbody.replaceChildren(fragment);
    tagList.replaceChildren(...[...tags].sort().map((t) => h("option", { value: t })));
    empty.hidden = items.length > 0;
    const filtered = state.q || state.tag || state.status;
    empty.textContent = filtered ? "No units match these filters."
      : "No units enrolled yet. Enroll one with `fleet device add ID` or POST /api/devices.";
  }

  function buildRow(item) {
    const data = { ...item, last_seen: toMs(item.last_seen), metrics: item.metrics || {} };
    const cells = {
      badge: badge("offline"),
      link: h("a", { href: unitHref(item.id), class: "unit-link", text: item.id }),
      name: h("span", { class: "sub" }),
      tags: h("td", { class: "col-tags" }),
      version: h("td", { class: "col-software_version mono" }),
      seen: h("span", { class: "ago" }),
      cpu: gauge("cpu"), mem: gauge("mem"), disk: gauge("disk"),
      temp: h("td", { class: "col-temp num" }),
    };
    const tr = h("tr", { dataset: { unit: item.id } },
      h("td", { class: "col-status" }, cells.badge),
      h("td", { class: "col-id" }, cells.link, cells.name),
      cells.tags, cells.version,
      h("td", { class: "col-last_seen" }, cells.seen),
      h("td", { class: "col-cpu" }, cells.cpu.el), h("td", { class: "col-mem" }, cells.mem.el),
      h("td", { class: "col-disk" }, cells.disk.el), cells.temp);
    const row = { tr, cells, data };
    paint(row, true);
    return row;
  }

  function paint(row, full = false) {
    const { cells, data } = row;
    const st = unitState(data);
    updateBadge(cells.badge, st.status, st.why);
    if (row.tr.dataset.status !== st.status) row.tr.dataset.status = st.status;
    if (full) {
      setText(cells.name, data.name || data.hostname || "");
      clear(cells.tags, ...(data.tags || []).map((t) => h("button", { type: "button", class: "tag", text: t,
        title: `Show units tagged ${t}`, onclick: () => {
          tagInput.value = t;
          setFilter({ tag: t });
        } })));
    }
    setText(cells.version, data.software_version || "–");
    setText(cells.seen, ago(data.last_seen));
    cells.seen.title = data.last_seen ? dateTime(data.last_seen) : "never seen";
    const m = data.metrics || {};
    setGauge(cells.cpu, m.cpu_percent, 75, 90);
    setGauge(cells.mem, m.mem_percent, 80, 92);
    setGauge(cells.disk, m.disk_percent, 80, 92);
    setText(cells.temp, celsius(m.temp_c));
    const tl = level(m.temp_c, 75, 85);
    if (cells.temp.dataset.level !== tl) cells.temp.dataset.level = tl;
  }

  // ---- live events -----------------------------------------------------------------------------------------
  function queue(id, patch) {
    if (!rows.has(id)) return;
    const prev = pending.get(id);
    pending.set(id, prev ? { ...prev, ...patch, metrics: patch.metrics || prev.metrics } : patch);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function flush() {
    frame = 0;
    for (const [id, patch] of pending) {
      const row = rows.get(id);
      if (!row) continue;
      Object.assign(row.data, patch);
      paint(row);
    }
    pending.clear();
  }

  function apply(e) {
    const id = e.device_id;
    if (e.type === "metrics") {
      // Failing is counted over the whole fleet: a change on any unit, shown or not, refreshes the totals.
      const failing = Boolean(e.services && Object.values(e.services).includes("failed"));
      if (failing !== knownFailing.has(id)) {
        if (failing) knownFailing.add(id);
        else knownFailing.delete(id);
        refreshSummary();
      }
    }
    if (!rows.has(id) && e.type !== "presence" && e.type !== "device") return;
    switch (e.type) {
      case "presence":
        queue(id, { online: e.online, offline_reason: e.reason ?? null, last_seen: toMs(e.last_seen),
          software_version: e.software_version || rows.get(id)?.data.software_version });
        refreshSummary();
        break;
      case "heartbeat":
        queue(id, { last_seen: toMs(e.last_seen), uptime_s: e.uptime_s });
        break;
      case "metrics": {
        const { type, device_id: _, ...metrics } = e;
        queue(id, { metrics, last_seen: Date.now() });
        break;
      }
      case "device":
        reloadPage();
        break;
      case "command":
        // A finished update changes a unit's software version, which no presence event may carry.
        if (e.status === "succeeded" && e.name === "update" && rows.has(id)) reloadPage();
        break;
      default:
    }
  }

  const events = gate(apply);
  const ticker = setInterval(() => {
    const now = Date.now();
    for (const row of rows.values()) setText(row.cells.seen, ago(row.data.last_seen, now));
  }, 1000);

  load();

  return {
    stream: { types: "presence,heartbeat,metrics,device,command" },
    onEvent: (e) => events.push(e),
    onResume() {
      load();
    },
    unmount() {
      clearInterval(ticker);
      cancelAnimationFrame(frame);
      onSearch.cancel();
      refreshSummary.cancel();
      reloadPage.cancel();
      abort?.abort();
      document.removeEventListener("keydown", slashKey);
    },
  };
}
