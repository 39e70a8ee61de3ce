// Unit detail: identity and presence, metrics, services, commands, logs, configuration, TURN test — all live.
import { enc, get } from "../api.js";
import { clear, gate, h, notify, setText, throttle } from "../dom.js";
import { ago, bytes, celsius, count, dateTime, duration, percent, toMs } from "../format.js";
import { can } from "../session.js";
import { badge, unitState, updateBadge } from "./status.js";
import { createUnitAlerts } from "./unit_alerts.js";
import { createCommands } from "./unit_commands.js";
import { createConfig } from "./unit_config.js";
import { createUnitEdit } from "./unit_edit.js";
import { createLogs } from "./unit_logs.js";
import { createMetrics } from "./unit_metrics.js";
import { createUnitSessions } from "./sessions.js";
import { createTerminalButton } from "./unit_terminal.js";

const SERVICE_TONE = { active: "ok", reloading: "pending", activating: "pending", deactivating: "pending",
  inactive: "muted", failed: "bad" };

function fact(label, value, id) {
  return h("div", { class: "fact" }, h("dt", { text: label }), h("dd", { id }, value));
}

export function mount(root, route) {
  const deviceId = route.id;
  let unit = null;
  let heartbeatAt = Date.now();
  document.title = `${deviceId} · Fleet`;

  const metrics = createMetrics(deviceId);
  const logs = createLogs(deviceId);
  const commands = createCommands(deviceId, { unitName: () => (unit && unit.name) || deviceId,
    unitOnline: () => (unit ? Boolean(unit.online) : null) });
  const config = createConfig(deviceId);
  const alerts = createUnitAlerts(deviceId);
  const terminal = createTerminalButton(deviceId);
  const sessions = createUnitSessions(deviceId);
  const edit = createUnitEdit(deviceId, { unit: () => unit, onSaved: (body) => {
    Object.assign(unit, { name: body.name, tags: body.tags });
    paint();
  } });

  const stateBadge = badge("loading", "Reading the unit's state"); // never a guessed "offline" before the first read
  const nameEl = h("span", { class: "unit-name" });
  const f = {
    seen: h("span", { class: "ago", id: "unit-last-seen" }),
    uptime: h("span"), software: h("span", { class: "mono", id: "unit-version" }), agent: h("span", { class: "mono" }),
    host: h("span"), ips: h("span", { class: "mono" }), tags: h("span", { id: "unit-tags" }), changed: h("span"), boot: h("span", { class: "mono" }),
    why: h("span", { id: "unit-why", text: "loading…" }),
  };
  const services = h("tbody", { id: "services" });
  const servicesEmpty = h("p", { class: "hint", text: "loading…" }); // "none" only once the unit is read
  const servicesStale = h("p", { class: "hint", hidden: true, text: "As last reported: the unit is offline." });
  const glance = h("p", { class: "glance", id: "unit-glance" });
  const revoked = h("div", { class: "banner bad", role: "alert", hidden: true });
  const turnOut = h("div", { class: "turn-out", id: "turn-result", "aria-live": "polite" },
    h("p", { class: "hint", text: "Ask for TURN credentials the way a WebRTC client of this fleet would." }));
  const turnBtn = can("operator") ? h("button", { type: "button", class: "btn", id: "act-turn", text: "Test TURN credentials",
    onclick: () => testTurn() }) : null;

  const head = h("header", { class: "unit-head panel" },
    h("div", { class: "unit-title" }, h("h1", { id: "unit-title" }, deviceId), stateBadge, nameEl,
      edit.button),
    h("dl", { class: "facts" },
      fact("Status", f.why, "unit-status-text"), fact("Last seen", f.seen), fact("Uptime", f.uptime),
      fact("Software", f.software), fact("Agent", f.agent), fact("Host", f.host), fact("Addresses", f.ips),
      fact("Tags", f.tags), fact("Presence changed", f.changed), fact("Boot", f.boot)),
    edit.el, glance,
    commands.actions || turnBtn || terminal.el
      ? h("div", { class: "head-actions" }, commands.actions, turnBtn, terminal.el) : null);

  const servicesPanel = h("section", { class: "panel services", "aria-labelledby": "services-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "services-title", text: "Services" })),
    h("table", { class: "kv" }, h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Unit" }),
      h("th", { scope: "col", text: "State" }))), services), servicesEmpty, servicesStale,
    turnBtn ? h("div", { class: "turn" }, h("h3", { text: "TURN" }), turnOut) : null);

  clear(root, h("div", { class: "unit", dataset: { unit: deviceId } },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/", text: "← All units" })),
    revoked, head, alerts.el,
    h("div", { class: "unit-grid" }, metrics.el, h("div", { class: "side" }, servicesPanel, commands.el)),
    logs.el, config.el, sessions.el));

  function paint() {
    if (!unit) return;
    const st = unitState(unit);
    terminal.update(unit);
    updateBadge(stateBadge, st.status, st.why);
    setText(nameEl, unit.name || "");
    setText(f.why, st.why);
    setText(f.seen, ago(unit.last_seen));
    f.seen.title = unit.last_seen ? dateTime(unit.last_seen) : "never seen";
    const up = unit.online && unit.uptime_s !== null && unit.uptime_s !== undefined
      ? unit.uptime_s + (Date.now() - heartbeatAt) / 1000 : unit.uptime_s;
    setText(f.uptime, up === null || up === undefined ? "–" : duration(up));
    setText(f.software, unit.software_version || "–");
    setText(f.agent, unit.agent_version || "–");
    setText(f.host, unit.hostname || "–");
    setText(f.ips, (unit.ips || []).join(", ") || "–");
    setText(f.tags, (unit.tags || []).join(", ") || "–");
    setText(f.changed, unit.online_changed_at ? `${ago(unit.online_changed_at)} (${dateTime(unit.online_changed_at)})` : "–");
    setText(f.boot, unit.boot_id || "–");
    const m = unit.metrics || {};
    // An offline unit's numbers are its last report, not its state now: say so and grey them.
    const stale = !unit.online && Object.keys(m).length > 0;
    glance.classList.toggle("stale", stale);
    servicesPanel.classList.toggle("stale", stale);
    servicesStale.hidden = !stale;
    setText(glance, (stale ? `Offline · last reported ${ago(toMs(m.ts) ?? unit.last_seen)}: ` : "") + `CPU ${percent(m.cpu_percent)} · memory ${percent(m.mem_percent)} (${bytes(m.mem_used_bytes)}) · ` +
      `disk ${percent(m.disk_percent)} (${bytes(m.disk_free_bytes)} free) · ${celsius(m.temp_c)} · load ` +
      `${m.load1 === undefined || m.load1 === null ? "–" : m.load1.toFixed(2)}` +
      (unit.logs_dropped ? ` · ${count(unit.logs_dropped)} log lines dropped by the unit` : "") +
      (unit.ingest_throttled ? ` · ${count(unit.ingest_throttled)} messages over its ingest budget (sent again later)`
        : ""));
  }

  function paintServices() {
    const entries = Object.entries((unit && unit.metrics && unit.metrics.services) || {}).sort();
    services.replaceChildren(...entries.map(([name, state]) => h("tr", { dataset: { service: name } },
      h("td", { class: "mono", text: name }),
      h("td", {}, h("span", { class: `svc ${SERVICE_TONE[state] || "pending"}`, text: state })))));
    servicesEmpty.hidden = entries.length > 0;
    setText(servicesEmpty, "No services reported yet.");
  }

  async function loadUnit() {
    try {
      const body = await get(`/api/devices/${enc(deviceId)}`);
      unit = { ...body, last_seen: toMs(body.last_seen), online_changed_at: toMs(body.online_changed_at) };
      heartbeatAt = Date.now();
      paint();
      paintServices();
      return true;
    } catch (err) {
      if (err.status === 404) {
        clear(root, h("section", { class: "panel" }, h("h1", { text: "Unit not found" }),
          h("p", { text: err.message }), h("a", { href: "#/", text: "Back to all units" })));
      } else if (err.status !== 401) {
        notify(`Could not load unit ${deviceId}: ${err.message}`);
      }
      return false;
    }
  }

  async function testTurn() {
    turnBtn.disabled = true;
    turnOut.replaceChildren(h("p", { class: "hint", text: "Asking for credentials…" }));
    try {
      const body = await get("/api/turn-credentials");
      const servers = body.iceServers || [];
      turnOut.replaceChildren(
        h("p", { class: "ok-text", text: `Credentials issued, valid for ${duration(body.ttl)} (until ` +
          `${dateTime(body.expiresAt)}).` }),
        h("ul", { class: "turn-servers" }, ...servers.map((s) => h("li", {},
          h("span", { class: "mono", text: [].concat(s.urls || []).join(", ") }),
          s.username ? h("span", { class: "hint", text: ` · user ${s.username} · credential ${s.credential ? "•".repeat(8) : "none"}` }) : null))));
    } catch (err) {
      turnOut.replaceChildren(h("p", { class: "error-text", text: `TURN test failed: ${err.message}` }));
    } finally {
      turnBtn.disabled = false;
    }
  }

  function apply(e) {
    switch (e.type) {
      case "presence":
        Object.assign(unit, { online: e.online, offline_reason: e.reason ?? null, last_seen: toMs(e.last_seen),
          online_changed_at: Date.now(), software_version: e.software_version || unit.software_version });
        paint();
        break;
      case "heartbeat":
        Object.assign(unit, { last_seen: toMs(e.last_seen), uptime_s: e.uptime_s });
        heartbeatAt = Date.now();
        paint();
        break;
      case "metrics": {
        const { type, device_id: _, ...sample } = e;
        unit.metrics = sample;
        unit.last_seen = Date.now();
        paint();
        paintServices();
        metrics.onSample(sample);
        break;
      }
      case "log":
        logs.onRecord(e);
        break;
      case "command":
        commands.onCommand(e);
        // An update or reboot changes what the unit runs; heartbeats do not carry the version, so re-read it.
        if (e.status === "succeeded" && (e.name === "update" || e.name === "reboot")) reloadUnit();
        break;
      case "config":
        config.onConfig(e);
        terminal.onConfig();
        break;
      case "alert":
        alerts.onAlert(e);
        break;
      case "device":
        if (e.action === "revoked") {
          revoked.textContent = "This unit was revoked: its credentials no longer work.";
          revoked.hidden = false;
        } else {
          loadUnit();
        }
        break;
      default:
    }
  }

  const reloadUnit = throttle(loadUnit, 1000);
  const events = gate(apply);

  async function loadAll() {
    events.close();
    if (!(await loadUnit())) return;
    await Promise.all([metrics.load(), logs.load(), commands.load(), config.load(), alerts.load(), terminal.load(),
      sessions.load()]);
    events.open();
  }

  const ticker = setInterval(paint, 1000);
  loadAll();

  return {
    stream: { device_id: deviceId },
    onEvent: (e) => events.push(e),
    onAlert: (e) => events.push(e),
    onReset: () => loadAll(),
    hasEdits: () => config.hasEdits(),
    unmount() {
      clearInterval(ticker);
      alerts.dispose();
      reloadUnit.cancel();
      metrics.dispose();
      logs.dispose();
      commands.dispose();
      edit.dispose();
      terminal.dispose();
    },
  };
}
