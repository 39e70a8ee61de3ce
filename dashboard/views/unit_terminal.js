// The unit page's remote access: the "Terminal" button for operators and admins (admins only when the unit's config
// says remote_shell_admin_only), disabled with the reason in words when the unit is offline or its config turns
// remote shells off, and the links to its web UI (unit_web_ui.js). The unit's desired config is read from the config
// API and again when it changes.
import { enc, get, hasToken } from "../api.js";
import { h, setText, throttle } from "../dom.js";
import { can } from "../session.js";
import { renderWebUi } from "./unit_web_ui.js";

export function terminalHref(deviceId) {
  return `#/units/${enc(deviceId)}/terminal`;
}

/** Why the terminal cannot open now ("" when it can), from the unit and its effective config. */
export function terminalBlocked(unit, config) {
  if (hasToken()) return "The terminal needs a password sign-in (a browser cannot send an API token on a WebSocket).";
  if (config.remote_shell === false) return "Remote shell is off in this unit's config (remote_shell: false).";
  if (!unit.online) return "The unit is offline.";
  return "";
}

export function createTerminalButton(deviceId) {
  if (!can("operator")) return { el: null, update() {}, onConfig() {}, load: async () => {}, dispose() {} };
  const button = h("button", { type: "button", class: "btn", id: "unit-terminal", text: "Terminal",
    "aria-describedby": "unit-terminal-why", onclick: () => { location.hash = terminalHref(deviceId); } });
  const why = h("span", { class: "hint term-why", id: "unit-terminal-why" });
  const shell = h("span", { class: "term-action", id: "act-terminal-wrap" });
  const web = h("span", { class: "term-action web-ui", id: "unit-web-ui" });
  const el = h("span", { class: "remote-actions" }, shell, web);
  let unit = null;
  let config = null;

  function paint() {
    if (!unit || !config) return;
    renderWebUi(web, deviceId, unit, config);
    if (config.remote_shell_admin_only === true && !can("admin")) {
      shell.replaceChildren();
      return;
    }
    if (!shell.firstChild) shell.append(button, why);
    const reason = terminalBlocked(unit, config);
    button.disabled = Boolean(reason);
    setText(why, reason);
  }

  async function load() {
    try {
      const view = await get(`/api/devices/${enc(deviceId)}/config`);
      config = view.desired || {};
    } catch {
      config = config || {};
    }
    paint();
  }

  const reload = throttle(load, 1000);
  return {
    el,
    load,
    update(u) {
      unit = u;
      paint();
    },
    onConfig: () => reload(),
    dispose: () => reload.cancel(),
  };
}
