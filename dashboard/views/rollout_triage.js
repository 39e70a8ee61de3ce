// Why a rollout's units failed: each failed unit's exit code and the end of its output, the failures grouped by
// identical error (same exit code, same last line), and a retry of exactly the failed units as a new rollout.
import { enc, get, post } from "../api.js";
import { confirmAction } from "../dialog.js";
import { clear, h, notify } from "../dom.js";
import { count } from "../format.js";
import { rolloutHref, unitHref } from "../router.js";
import { can } from "../session.js";

const PAGE = 1000;
const OPEN_PER_GROUP = 5; // outputs shown open in each group; the rest one click away
const SHOWN_IDS = 8;
const ACTIVE = new Set(["running", "paused"]);
const plural = (n, word) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;

/** The last non-empty line of an output: what a failing step prints last says why. */
export function lastLine(output) {
  const lines = String(output || "").split("\n").map((l) => l.trim()).filter(Boolean);
  return lines.length ? lines[lines.length - 1] : "";
}

/** Failed units grouped by exit code and last line of output, the biggest group first. */
export function groupFailures(units) {
  const groups = new Map();
  for (const u of units) {
    const key = `${u.exit_code ?? ""}\n${lastLine(u.output)}\n${u.exit_code === null ? u.state : ""}`;
    if (!groups.has(key)) groups.set(key, { exit: u.exit_code, line: lastLine(u.output), state: u.state, units: [] });
    groups.get(key).units.push(u);
  }
  return [...groups.values()].sort((a, b) => b.units.length - a.units.length || a.line.localeCompare(b.line));
}

/** Every failed unit's id, page by page (the detail lists at most PAGE units at a time). */
async function failedIds(id) {
  const ids = [];
  for (let offset = 0; ; offset += PAGE) {
    const page = await get(`/api/rollouts/${enc(id)}`, { units: "failed", limit: PAGE, offset });
    ids.push(...page.units.map((u) => u.device_id));
    if (page.units.length < PAGE) return ids;
  }
}

function unitBlock(u, open) {
  const output = (u.output || "").replace(/\n+$/, "");
  return h("li", { class: "failed-unit", dataset: { unit: u.device_id } },
    h("div", { class: "failed-head" }, h("a", { href: unitHref(u.device_id), class: "unit-link", text: u.device_id }),
      h("span", { class: "failed-exit", text: u.exit_code === null ? u.state.replace("_", " ") : `exit ${u.exit_code}` })),
    h("details", { open }, h("summary", { text: "end of the output" }),
      h("pre", { class: "cmd-output", text: output || "(no output)" })));
}

function groupBlock(g, i) {
  const what = g.exit === null ? g.state.replace("_", " ") : `exit ${g.exit}`;
  return h("section", { class: "failure-group", "aria-labelledby": `fg-${i}` },
    h("h3", { class: "group-title", id: `fg-${i}` }, h("span", { class: "group-count", text: plural(g.units.length, "unit") }),
      ` · ${what} · `, g.line ? h("code", { class: "group-line", text: g.line }) : "no output"),
    h("ul", { class: "failed-units" }, ...g.units.map((u, j) => unitBlock(u, j < OPEN_PER_GROUP))));
}

/**
 * @param {string} id the rollout
 * @param {() => object|null} current the rollout as last read (state, name, command, args, batch size ...)
 */
export function createTriage(id, current) {
  const el = h("section", { class: "panel spaced triage", id: "triage", "aria-labelledby": "triage-title", hidden: true });
  let failed = [];
  let seq = 0;

  async function retry() {
    const r = current();
    let ids;
    try {
      ids = await failedIds(id);
    } catch (err) {
      notify(`Could not read the failed units: ${err.message}`);
      return;
    }
    if (!ids.length) return;
    const what = r.command === "update" ? `update to ${r.args?.ref}` : r.command;
    const shown = ids.slice(0, SHOWN_IDS).join(", ") + (ids.length > SHOWN_IDS ? ` and ${count(ids.length - SHOWN_IDS)} more` : "");
    const ok = await confirmAction({ title: `Retry ${what} on ${plural(ids.length, "failed unit")}?`, danger: true,
      confirm: "Start retry rollout",
      body: [h("p", { text: `A new rollout runs ${what} again on exactly the units that failed here, ` +
        `${Math.min(r.batch_size, ids.length)} at a time, stopping above ${Math.round(r.abort_threshold * 100)} % failed.` }),
      h("p", { class: "mono", text: shown })] });
    if (!ok) return;
    try {
      const created = await post("/api/rollouts", { name: `retry: ${r.name || r.id}`.slice(0, 200), command: r.command,
        args: r.args, device_ids: ids, batch_size: Math.min(r.batch_size, ids.length), pause_s: r.pause_s,
        abort_threshold: r.abort_threshold, ttl_s: r.ttl_s, ...(r.timeout_s ? { timeout_s: r.timeout_s } : {}) });
      location.hash = rolloutHref(created.id);
    } catch (err) {
      notify(`Could not start the retry: ${err.message}`);
    }
  }

  function paint() {
    const r = current();
    el.hidden = failed.length === 0;
    if (!failed.length || !r) return;
    const total = (r.totals || {}).failed || failed.length;
    const groups = groupFailures(failed);
    const canRetry = can("operator") && !ACTIVE.has(r.state);
    clear(el,
      h("div", { class: "panel-head" }, h("h2", { id: "triage-title", text: `Failures (${count(total)})` }),
        canRetry ? h("button", { type: "button", class: "btn", id: "retry-failed", text: "Retry failed units…",
          onclick: retry }) : null),
      h("p", { class: "hint", text: `${plural(groups.length, "distinct error")}, grouped by exit code and last line of ` +
        `output${total > failed.length ? `; the first ${count(failed.length)} failed units shown` : ""}` +
        `${can("operator") && !canRetry ? "; the retry is offered once the rollout has ended" : ""}.` }),
      ...groups.map(groupBlock));
  }

  async function refresh() {
    const mine = ++seq;
    try {
      const body = await get(`/api/rollouts/${enc(id)}`, { units: "failed", limit: PAGE });
      if (mine !== seq) return;
      failed = body.units;
      paint();
    } catch (err) {
      if (err.status !== 401 && err.status !== 404) notify(`Could not load the failures: ${err.message}`);
    }
  }

  return { el, refresh, paint };
}
