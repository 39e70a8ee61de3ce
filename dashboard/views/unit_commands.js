// Commands of one unit: restart / update / reboot with confirmation, live status and output, and history.
import { enc, get, post } from "../api.js";
import { confirmAction } from "../dialog.js";
import { clear, h, labelCells, notify, setText } from "../dom.js";
import { ago, dateTime, duration, toMs } from "../format.js";
import { rolloutHref } from "../router.js";
import { can } from "../session.js";

const RANK = { queued: 0, sent: 1, accepted: 2, running: 3 };
const FINAL = new Set(["succeeded", "failed", "rejected", "expired", "timed_out", "canceled"]);
const TONE = { succeeded: "ok", failed: "bad", rejected: "bad", expired: "bad", timed_out: "bad", canceled: "muted" };
const REF_RE = /^[A-Za-z0-9][A-Za-z0-9._/@+-]{0,199}$/;
const COLUMNS = ["Sent", "Command", "Status", "Exit", "By", null]; // the last: the actions

const rank = (status) => (FINAL.has(status) ? 4 : RANK[status] ?? -1);
const label = (status) => String(status).replace("_", " ");

export function statusBadge(status) {
  return h("span", { class: `cmd-status ${TONE[status] || "pending"}`, dataset: { status }, text: label(status) });
}

function describe(cmd) {
  if (cmd.name === "update") return `update to ${cmd.args && cmd.args.ref}`;
  if (cmd.name === "restart" && cmd.args && cmd.args.unit) return `restart ${cmd.args.unit}`;
  return cmd.name;
}

export function createCommands(deviceId, { unitName, unitOnline }) {
  /** "Hall camera (cam-07)", or the id alone when the unit has no name of its own. */
  const who = () => (unitName() && unitName() !== deviceId ? `${unitName()} (${deviceId})` : deviceId);
  /** The dialog body, with a warning first when the unit is offline: the command would wait in the queue. */
  const body = (text) => [
    unitOnline() === false ? h("p", { class: "banner warn dialog-offline", text: `${deviceId} is offline: the ` +
      "command will queue and run only when the unit reconnects (it expires if the unit stays away too long)." })
      : null,
    h("p", { text })];

  const rows = new Map(); // command id -> {data, tr, status, exit, finished, output, cancel}
  let latestId = null;
  const tbody = h("tbody", { id: "cmd-history" });
  const live = h("div", { class: "cmd-live", id: "cmd-live", "aria-live": "polite" },
    h("p", { class: "hint", text: "Commands you send appear here with their live status and output." }));
  const empty = h("tr", { class: "empty-row" }, h("td", { colspan: "6", text: "No commands sent to this unit yet." }));
  const canAct = can("operator");

  const actions = canAct ? h("div", { class: "actions", role: "group", "aria-label": "Unit actions" },
    h("button", { type: "button", class: "btn", id: "act-restart", text: "Restart services",
      onclick: () => restart() }),
    h("button", { type: "button", class: "btn", id: "act-update", text: "Update…", onclick: () => update() }),
    h("button", { type: "button", class: "btn danger", id: "act-reboot", text: "Reboot…", onclick: () => reboot() }))
    : null;

  const el = h("section", { class: "panel commands", "aria-labelledby": "commands-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "commands-title", text: "Commands" })),
    live,
    h("div", { class: "table-wrap short" }, h("table", { class: "cmd-table cards" },
      h("thead", {}, h("tr", {}, ...COLUMNS.map((t) =>
        h("th", { scope: "col" }, t ?? h("span", { class: "sr-only", text: "Actions" }))))),
      tbody)));

  async function send(path, body, what) {
    try {
      const cmd = await post(`/api/devices/${enc(deviceId)}/${path}`, body);
      latestId = cmd.id;
      upsert(cmd, true);
      showLive(cmd.id);
    } catch (err) {
      notify(`Could not ${what}: ${err.message}`);
    }
  }

  async function restart() {
    const ok = await confirmAction({ title: `Restart services on ${who()}?`, confirm: "Restart services",
      body: body("The recorder services on this unit restart now; recording pauses for a few seconds.") });
    if (ok) send("restart", undefined, "restart the services");
  }

  async function update() {
    const ref = await confirmAction({ title: `Update ${who()}`, confirm: "Update", danger: true,
      body: body("The unit fetches this git ref, runs its post-update hook, restarts and health-checks; it rolls " +
        "back by itself when the check fails."),
      input: { label: "Branch, tag or commit", placeholder: "e.g. v1.4.2",
        validate: (v) => (REF_RE.test(v) && !v.includes("..") ? null
          : "Letters, digits and ._/@+- only, not starting with - and without ..") } });
    if (ref) send("update", { ref }, "start the update");
  }

  async function reboot() {
    const ok = await confirmAction({ title: `Reboot ${who()}?`, confirm: "Reboot unit", danger: true,
      typeToConfirm: deviceId,
      body: body("The whole unit restarts: recording stops and the unit is offline for a minute or more.") });
    if (ok) send("reboot", undefined, "reboot the unit");
  }

  async function cancel(id) {
    try {
      upsert(await post(`/api/commands/${enc(id)}/cancel`));
    } catch (err) {
      notify(`Could not cancel the command: ${err.message}`);
    }
  }

  function buildRow(cmd) {
    const row = {
      data: cmd,
      when: h("time", { class: "ago" }),
      status: statusBadge(cmd.status),
      exit: h("td", { class: "num" }),
      by: h("td", { class: "hint cmd-by" }, cmd.rollout_id
        ? h("a", { href: rolloutHref(cmd.rollout_id), text: "rollout", title: `rollout ${cmd.rollout_id}` })
        : (cmd.created_by || "").replace(/^(user|token):/, "")),
      cancel: canAct ? h("button", { type: "button", class: "btn small", text: "Cancel", hidden: true,
        onclick: () => cancel(cmd.id) }) : null,
      output: h("pre", { class: "cmd-output" }),
      details: null,
    };
    row.details = h("details", { class: "cmd-details", hidden: true }, h("summary", { text: "output" }), row.output);
    row.tr = labelCells(h("tr", { dataset: { command: cmd.id } },
      h("td", {}, row.when),
      h("td", {}, h("span", { class: "cmd-name", text: describe(cmd) }), row.details),
      h("td", {}, row.status), row.exit, row.by, h("td", {}, row.cancel)), COLUMNS);
    return row;
  }

  function paint(row) {
    const cmd = row.data;
    const st = row.status;
    if (st.dataset.status !== cmd.status) {
      st.dataset.status = cmd.status;
      st.className = `cmd-status ${TONE[cmd.status] || "pending"}`;
      setText(st, label(cmd.status));
    }
    setText(row.when, ago(cmd.created_at));
    row.when.title = dateTime(cmd.created_at);
    setText(row.exit, cmd.exit_code === null || cmd.exit_code === undefined ? "" : cmd.exit_code);
    if (row.cancel) row.cancel.hidden = !(cmd.status === "queued" || cmd.status === "sent");
    row.details.hidden = !cmd.output;
    setText(row.output, cmd.output || "");
    if (cmd.id === latestId) renderLive(cmd);
  }

  /** Add or move forward a command; a late, older status (e.g. the 202 after the result event) is ignored. */
  function upsert(cmd, mine = false) {
    let row = rows.get(cmd.id);
    if (!row) {
      row = buildRow(cmd);
      rows.set(cmd.id, row);
      empty.remove();
      tbody.prepend(row.tr);
    } else if (rank(cmd.status) < rank(row.data.status)) {
      return;
    } else {
      row.data = { ...row.data, ...cmd };
    }
    if (mine) latestId = cmd.id;
    paint(row);
  }

  function showLive(id) {
    const row = rows.get(id);
    if (row) renderLive(row.data);
  }

  function renderLive(cmd) {
    const started = toMs(cmd.started_at);
    const finished = toMs(cmd.finished_at);
    const took = started && finished ? ` in ${duration((finished - started) / 1000)}` : "";
    // clear() skips null children; replaceChildren() would print them as the text "null".
    clear(live,
      h("div", { class: "cmd-live-head" }, h("strong", { text: describe(cmd) }), " ", statusBadge(cmd.status),
        h("span", { class: "hint", text: FINAL.has(cmd.status) ? ` finished${took}` : " waiting for the unit…" }),
        cmd.exit_code !== null && cmd.exit_code !== undefined ? h("span", { class: "hint", text: ` · exit ${cmd.exit_code}` }) : null),
      cmd.output ? h("pre", { class: "cmd-output", id: "cmd-live-output", text: cmd.output }) : null);
  }

  async function load() {
    try {
      const body = await get(`/api/devices/${enc(deviceId)}/commands`, { limit: 25 });
      // A live event may already have moved a command past what this read saw: keep the further state.
      const previous = new Map([...rows].map(([id, row]) => [id, row.data]));
      tbody.replaceChildren();
      rows.clear();
      const items = body.items.slice().reverse();
      for (const cmd of items) {
        const prev = previous.get(cmd.id);
        upsert(prev && rank(prev.status) > rank(cmd.status) ? prev : cmd);
      }
      const newest = items.length ? toMs(items[items.length - 1].created_at) : 0;
      for (const [id, data] of previous) if (!rows.has(id) && toMs(data.created_at) > newest) upsert(data);
      if (!rows.size) tbody.append(empty);
    } catch (err) {
      if (err.status !== 401) notify(`Could not load the command history: ${err.message}`);
    }
  }

  const ticker = setInterval(() => rows.forEach((row) => setText(row.when, ago(row.data.created_at))), 1000);

  return {
    el, actions, load,
    onCommand: (cmd) => upsert(cmd),
    dispose: () => clearInterval(ticker),
  };
}
