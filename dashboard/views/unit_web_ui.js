// Links that open a unit's own web UI (the ports its config lists in remote_ports) in a new tab. The fleet path
// they point at sends a signed-in browser on to the unit port's own origin, so the unit's pages never run on the
// dashboard's (where their scripts could act as the operator).
import { enc, hasToken } from "../api.js";
import { h } from "../dom.js";
import { can } from "../session.js";

/** The ports whose web UI this user may open, from the unit's desired config. */
export function webUiPorts(config) {
  const ports = Array.isArray(config.remote_ports) ? config.remote_ports.filter(Number.isInteger) : [];
  return config.remote_ports_admin_only === true && !can("admin") ? [] : ports;
}

/** Fill `el` with a link per port, or the ports and the reason they cannot open now. */
export function renderWebUi(el, deviceId, unit, config) {
  const ports = webUiPorts(config);
  if (!ports.length) {
    el.replaceChildren();
    return;
  }
  const why = hasToken() ? "A unit's web UI needs a password sign-in." : unit.online ? "" : "The unit is offline.";
  const items = ports.map((port) => why
    ? h("span", { class: "web-ui-off", text: `port ${port}` })
    : h("a", { href: `/api/devices/${enc(deviceId)}/proxy/${port}/`, target: "_blank", rel: "noopener noreferrer",
      dataset: { port: String(port) }, text: `port ${port}`, title: `Open the unit's web server on port ${port}` }));
  el.replaceChildren(h("span", { class: "web-ui-label", text: "Web UI:" }), ...items,
    why ? h("span", { class: "hint", text: why }) : null);
}
