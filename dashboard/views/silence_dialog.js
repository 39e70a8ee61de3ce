// Silence an alert's rule on its unit: 1 h, 8 h or until a chosen moment (in the zone the times are shown in),
// with a comment that tells others why. Creates a silence matching that rule and that unit.
import { alertsChanged } from "../alert_count.js";
import { post } from "../api.js";
import { h, notify } from "../dom.js";
import { dateTime, fromWallInput, wallInput, zoneLabel } from "../format.js";

const CHOICES = [["1h", "1 hour", 3600], ["8h", "8 hours", 8 * 3600], ["until", "Until…", null]];
const MAX_MS = 366 * 86400_000;

/** Ask for the window and comment, create the silence; resolves with it, or null when cancelled. */
export function silenceDialog(alert) {
  // A rollout's alert is kept under `rollout:<command>`, not a unit: its silence matches the rule alone.
  const rollout = alert.device_id.startsWith("rollout:");
  const where = rollout ? `rollouts of ${alert.device_id.slice("rollout:".length)}` : alert.device_id;
  return new Promise((resolve) => {
    const radios = CHOICES.map(([value, label], i) => {
      const input = h("input", { type: "radio", name: "silence-for", id: `silence-for-${value}`, value,
        checked: i === 0 });
      return h("label", { class: "choice", for: `silence-for-${value}` }, input, ` ${label}`);
    });
    const until = h("input", { type: "datetime-local", class: "input", id: "silence-until", disabled: true,
      "aria-describedby": "silence-until-hint" });
    until.value = wallInput(Date.now() + 24 * 3600_000);
    const comment = h("textarea", { class: "input", id: "silence-comment", rows: "2", maxlength: "1000",
      placeholder: "e.g. disk swap booked for Tuesday", "aria-describedby": "silence-error" });
    const problem = h("p", { class: "field-error", id: "silence-error", role: "alert" });
    const ok = h("button", { type: "submit", class: "btn primary", id: "silence-submit", text: "Silence" });
    const cancel = h("button", { type: "button", class: "btn", text: "Cancel" });
    const form = h("form", { method: "dialog", class: "dialog-form" },
      h("h2", { id: "silence-title", text: `Silence ${alert.rule_name} on ${where}` }),
      h("p", { class: "hint", text: `New alerts of this rule ${rollout ? "" : "on this unit "}notify nobody while ` +
        "the silence lasts, and this one stops counting as firing. It still shows here, marked silenced." }),
      h("fieldset", { class: "choices" }, h("legend", { class: "field-label", text: "For how long" }), ...radios),
      h("label", { for: "silence-until", class: "field-label", text: `Until (${zoneLabel()})` }), until,
      h("p", { class: "hint", id: "silence-until-hint", text: "Used with “Until…”; at most a year ahead." }),
      h("label", { for: "silence-comment", class: "field-label", text: "Comment (why; shown to everyone)" }), comment,
      problem,
      h("div", { class: "dialog-actions" }, cancel, ok));
    const dialog = h("dialog", { class: "dialog", "aria-labelledby": "silence-title" }, form);

    const choice = () => form.querySelector("input[name=silence-for]:checked").value;
    const chosen = () => {
      const picked = CHOICES.find(([v]) => v === choice());
      if (picked[2]) return { duration_s: picked[2] };
      const end = fromWallInput(until.value);
      if (end === null) return { error: "Choose the date and time the silence ends." };
      if (end <= Date.now()) return { error: `The end (${dateTime(end)}) is in the past.` };
      if (end - Date.now() > MAX_MS) return { error: "A silence lasts at most a year." };
      return { ends_at: end };
    };
    const check = () => {
      until.disabled = choice() !== "until";
      const w = chosen();
      const message = w.error || (comment.value.trim() ? "" : "Write a comment: others need to know why.");
      problem.textContent = comment.value.trim() || w.error ? message : "";
      until.setAttribute("aria-invalid", String(Boolean(w.error)));
      ok.disabled = Boolean(message);
      return !message;
    };
    form.addEventListener("change", check);
    form.addEventListener("input", check);
    const finish = (value) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!check()) return;
      ok.disabled = true;
      const { error, ...span } = chosen();
      try {
        const matchers = rollout ? { rule_id: alert.rule_id } : { rule_id: alert.rule_id, device_id: alert.device_id };
        const silence = await post("/api/silences", { ...matchers, ...span, comment: comment.value.trim() });
        notify(`Silenced ${alert.rule_name} on ${where} until ${dateTime(silence.ends_at)}.`, "info");
        alertsChanged();
        finish(silence);
      } catch (err) {
        problem.textContent = `Not silenced. ${err.message}`;
        ok.disabled = false;
      }
    });
    cancel.addEventListener("click", () => finish(null));
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      finish(null);
    });
    document.body.append(dialog);
    check();
    dialog.showModal();
    comment.focus();
  });
}
