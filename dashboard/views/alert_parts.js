// Pieces every alert view shares: severity and state badges, what fired an alert in words, the order someone on
// call works through open alerts, merging a live `alert` event into what a page holds, acknowledge and silence.
import { ApiError, enc, post } from "../api.js";
import { h, notify } from "../dom.js";
import { bytes, dateTime, duration, num, toMs } from "../format.js";
import { rolloutHref, unitHref } from "../router.js";
import { can } from "../session.js";
import { silenceDialog } from "./silence_dialog.js";

export const SEVERITIES = ["critical", "warning", "info"]; // worst first
export const OPEN_STATES = ["firing", "acknowledged"];
const RANK = { critical: 3, warning: 2, info: 1 };

export const rank = (severity) => RANK[severity] || 0;

/** Rollout alerts are kept under `rollout:<command>`, not a unit: true for those. */
export const isRolloutAlert = (a) => a.device_id.startsWith("rollout:");

/** Where the alert is: a link to its unit, or for a rollout alert to the rollout that aborted. */
export function whereLink(a) {
  if (!isRolloutAlert(a)) return h("a", { href: unitHref(a.device_id), class: "unit-link", text: a.device_id });
  const what = `rollouts of ${a.device_id.slice("rollout:".length)}`;
  return a.value && a.value.rollout_id ? h("a", { href: rolloutHref(a.value.rollout_id), class: "rollout-link", text: what })
    : h("span", { text: what });
}

/** Who did it, as people read it: "user:olga" -> "olga", "token:ci" -> "ci" (as the command history shows it). */
export const who = (label) => (label || "").replace(/^(user|token):/, "");

/** The worse of two severities (either may be null). */
export const worse = (a, b) => (rank(a) >= rank(b) ? a : b);

export function severityBadge(severity) {
  return h("span", { class: `sev sev-${severity}`, dataset: { severity }, text: severity });
}

export function stateBadge(alert) {
  const tone = { firing: "bad", acknowledged: "pending", resolved: "ok" }[alert.state] || "muted";
  return h("span", { class: `cmd-status ${tone} alert-state`, dataset: { state: alert.state }, text: alert.state });
}

/** "silenced" when an active silence covers the open alert now (or, in history, it fired under one). */
export function silencedMarker(alert) {
  const now = alert.state !== "resolved" ? alert.silenced_by : null;
  if (now) return h("span", { class: "silenced", title: `Covered by silence ${now}: it notifies nobody`, text: "silenced" });
  if (alert.silenced) {
    return h("span", { class: "silenced", title: `It fired while silence ${alert.silence_id} covered it`,
      text: "fired silenced" });
  }
  return null;
}

const pct = (v) => `${num(v, 1)} %`;
const METRICS = {
  cpu_percent: ["CPU", pct], mem_percent: ["memory", pct], disk_percent: ["disk", pct],
  temp_c: ["temperature", (v) => `${num(v, 1)} °C`], load1: ["load", (v) => num(v, 2)],
  mem_used_bytes: ["memory used", bytes], disk_free_bytes: ["disk free", bytes],
  net_rx_bytes: ["received", bytes], net_tx_bytes: ["sent", bytes],
};

/** How a rule's number reads: with the metric's unit when the field is a known one. */
export function metricValue(field, value) {
  if (typeof value !== "number") return JSON.stringify(value);
  const known = METRICS[field];
  return known ? known[1](value) : num(value, 2);
}

export const metricLabel = (field) => (METRICS[field] ? METRICS[field][0] : field);

/** What fired the alert, in words: "disk 95.5 % (over 90 %)", "recorder failed", "offline since ...". */
export function describeValue(alert, rule = null) {
  const v = alert.value;
  switch (alert.kind) {
    case "offline":
      return v && v.offline_since_ms ? `offline since ${dateTime(v.offline_since_ms)}` : "offline";
    case "metric": {
      if (!rule) return typeof v === "number" ? num(v, 2) : JSON.stringify(v);
      const line = rule.threshold === null ? "" : ` (${rule.op === "<" ? "under" : "over"} ${metricValue(rule.field, rule.threshold)})`;
      return `${metricLabel(rule.field)} ${metricValue(rule.field, v)}${line}`;
    }
    case "service": {
      const failing = Object.entries(v || {});
      return failing.length ? failing.map(([name, state]) => `${name} ${state}`).join(", ") : "services back";
    }
    case "extra":
      return `${rule ? rule.field : "extra"} = ${JSON.stringify(v)}`;
    case "log": {
      if (!v) return "log lines";
      const lines = `${v.count} matching line${v.count === 1 ? "" : "s"} in ${duration(v.window_s)}`;
      return v.sample ? `${lines}, e.g. “${v.sample}”` : lines;
    }
    case "command_failed":
      if (!v) return "a command failed";
      return `${v.name} ${v.state}${v.exit_code !== null && v.exit_code !== undefined ? ` (exit ${v.exit_code})` : ""}`;
    case "rollout_failed":
      if (!v) return "a rollout aborted";
      return `rollout “${v.name || v.command}” ${v.state}${v.reason ? `: ${v.reason}` : ""}`;
    case "config_sync": {
      if (!v) return "config out of sync";
      const failed = v.status === "failed" ? " (its last apply failed)" : "";
      return `config v${v.desired_version} wanted, the unit has v${v.reported_version}${failed}`;
    }
    default:
      return v === null || v === undefined ? "–" : JSON.stringify(v);
  }
}

/** Open alerts in the order to work through them: firing before acknowledged, worst first, newest first. */
export function triageOrder(a, b) {
  const open = (x) => (x.state === "firing" ? 0 : x.state === "acknowledged" ? 1 : 2);
  return open(a) - open(b) || rank(b.severity) - rank(a.severity) || toMs(b.fired_at) - toMs(a.fired_at) || b.id - a.id;
}

/**
 * A live `alert` event (or an action's answer) merged into what the page holds. Events carry no `silenced_by`
 * (which silence covers the alert now is decided when read): a known alert keeps its own, a new one starts with
 * the silence it fired under, a resolved one has none.
 */
export function mergeAlert(old, incoming) {
  const { type, ts, ...fields } = incoming;
  const merged = { ...(old || {}), ...fields };
  if (merged.state === "resolved") merged.silenced_by = null;
  else if (typeof incoming.silenced_by === "string") merged.silenced_by = incoming.silenced_by;
  else merged.silenced_by = old ? old.silenced_by ?? null : incoming.silenced ? incoming.silence_id : null;
  return merged;
}

/**
 * Acknowledge and silence buttons for an open alert (operators and admins; nothing for viewers).
 * @param {object} alert
 * @param {(changed?: object) => void} onDone after a change (with the acknowledged alert) or a refusal
 */
export function alertActions(alert, onDone) {
  if (!can("operator") || alert.state === "resolved") return null;
  const label = `${alert.rule_name} on ${alert.device_id}`;
  const ack = alert.state === "firing" ? h("button", { type: "button", class: "btn small act-ack", text: "Acknowledge",
    "aria-label": `Acknowledge ${label}`, onclick: async (e) => {
      e.currentTarget.disabled = true;
      try {
        onDone(await post(`/api/alerts/${enc(alert.id)}/ack`));
      } catch (err) {
        notify(err instanceof ApiError && err.status === 409 ? `Not acknowledged: ${err.message}` : err.message);
        onDone();
      }
    } }) : null;
  const silence = h("button", { type: "button", class: "btn small act-silence", text: "Silence…",
    "aria-label": `Silence ${label}`, "aria-haspopup": "dialog", onclick: async () => {
      const created = await silenceDialog(alert);
      if (created) onDone();
    } });
  return h("span", { class: "alert-actions" }, ack, silence);
}

const TABS = [
  ["open", "Open", "#/alerts"], ["history", "History", "#/alerts/history"], ["silences", "Silences", "#/alerts/silences"],
  ["rules", "Rules", "#/alerts/rules"], ["channels", "Channels", "#/alerts/channels"],
];

/** The Alerts page's sections, the current one marked. */
export function alertTabs(current) {
  return h("nav", { class: "tabs", "aria-label": "Alert sections" }, ...TABS.filter(([, , , role]) => !role || can(role))
    .map(([key, label, href]) => h("a", { href, class: "tab", dataset: { tab: key },
      "aria-current": key === current ? "page" : null, text: label })));
}
