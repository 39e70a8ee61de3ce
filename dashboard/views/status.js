// How a unit's state reads at a glance: one badge (online / failing / offline) with a reason in words.
import { h, setText } from "../dom.js";

/** Services reported in a state other than running, as [[name, state], ...]. */
export function failedServices(metrics) {
  const services = (metrics && metrics.services) || {};
  return Object.entries(services).filter(([, state]) => state === "failed");
}

/** "online" | "failing" | "offline" and a sentence explaining it. */
export function unitState(unit) {
  if (!unit.online) {
    const why = unit.offline_reason === "timeout" ? "silent for too long"
      : unit.offline_reason === "disconnected" ? "disconnected" : "not connected";
    return { status: "offline", why: `Offline: ${why}` };
  }
  // Live metrics carry every service; a list item only the failed ones and whether anything failed.
  const live = unit.metrics && unit.metrics.services;
  const failed = live ? failedServices(unit.metrics).map(([n]) => n) : unit.failed_services || [];
  if (failed.length) return { status: "failing", why: `Failing: ${failed.join(", ")} failed` };
  if (!live && unit.failing) return { status: "failing", why: "Failing: the unit reports a failed state" };
  return { status: "online", why: "Online" };
}

const BADGE_TEXT = { loading: "loading…" };

export function badge(status, why = "") {
  return h("span", { class: `badge ${status}`, dataset: { status }, title: why, text: BADGE_TEXT[status] || status });
}

export function updateBadge(el, status, why = "") {
  if (el.dataset.status !== status) {
    el.dataset.status = status;
    el.className = `badge ${status}`;
  }
  setText(el, status);
  if (el.title !== why) el.title = why;
}
