// Entry point: sign-in state, the top bar (with the count of firing alerts), routing between views, and one live
// event stream per view (which also carries every unit's `alert` events, for that count).
import { createAlertCount } from "./alert_count.js";
import { setUnauthorizedHandler } from "./api.js";
import { clear, h, notify } from "./dom.js";
import { EventStream } from "./events.js";
import { currentZone, useZone, zoneLabel } from "./format.js";
import { currentRoute, onRouteChange } from "./router.js";
import { can, loadSession, logout, session } from "./session.js";
import * as alertDetail from "./views/alert_detail.js";
import * as alerts from "./views/alerts.js";
import * as configGroups from "./views/config_groups.js";
import * as login from "./views/login.js";
import * as overview from "./views/overview.js";
import * as rollouts from "./views/rollouts.js";
import * as sessionReplay from "./views/session_replay.js";
import * as sessions from "./views/sessions.js";
import * as terminal from "./views/terminal.js";
import * as unit from "./views/unit.js";

const VIEWS = {
  overview: overview.mount,
  unit: unit.mount,
  rollouts: rollouts.mountList,
  rollout: rollouts.mountDetail,
  config: configGroups.mount,
  alerts: alerts.mount,
  alert: alertDetail.mount,
  terminal: terminal.mount,
  sessions: sessions.mount,
  session: sessionReplay.mount,
};
const SECTIONS = { rollouts: "rollouts", rollout: "rollouts", config: "config", alerts: "alerts", alert: "alerts",
  sessions: "sessions", session: "sessions" };

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
const streamState = document.getElementById("stream-state");
const who = document.getElementById("who");
const alertCount = createAlertCount(document.getElementById("alerts-link"), document.getElementById("alert-count"));
let current = null; // {view, stream}
let loginShown = false;

const RESET_TEXT = {
  expired: "the connection was away too long",
  unknown: "the server restarted",
  gap: "some were lost between the servers",
  "no resume point": "the connection was lost",
};
const STATE_TEXT = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", closed: "offline" };

function setStreamState(state, detail) {
  streamState.dataset.state = state;
  streamState.textContent = STATE_TEXT[state] || state;
  streamState.title = state === "reconnecting" && detail ? `Live updates interrupted: ${detail}` : "Live updates";
  let banner = document.getElementById("stream-banner");
  if (state === "reconnecting") {
    if (!banner) {
      banner = h("div", { id: "stream-banner", class: "banner warn", role: "status" });
      main.before(banner);
    }
    banner.textContent = `Live updates interrupted (${detail || "connection lost"}) — reconnecting…` +
      " What you see may be out of date.";
  } else if (banner) {
    banner.remove();
    if (state === "live") notify("Live updates are back.", "info");
  }
}

function teardown() {
  if (!current) return;
  current.stream && current.stream.stop();
  current.view && current.view.unmount && current.view.unmount();
  current = null;
  document.getElementById("stream-banner")?.remove();
}

function showLogin(message) {
  teardown();
  alertCount.stop();
  session.user = null;
  topbar.hidden = true;
  if (loginShown) {
    if (message) login.showMessage(message);
    return;
  }
  loginShown = true;
  document.title = "Sign in · Fleet";
  login.mount(main, { message, onSignedIn: () => { loginShown = false; showApp(); } });
}

function showApp() {
  topbar.hidden = false;
  const { name, role } = session.user;
  clear(who, h("span", { class: "who-name", text: name }), " ", h("span", { class: `role role-${role}`, text: role }));
  document.getElementById("sessions-link").hidden = !can("admin");
  alertCount.start();
  render(currentRoute());
}

function render(route) {
  teardown();
  if (!session.user) {
    showLogin();
    return;
  }
  for (const link of topbar.querySelectorAll("[data-nav]")) {
    const section = SECTIONS[route.name] || "units";
    const active = link.dataset.nav === section;
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const mountView = VIEWS[route.name];
  if (!mountView) {
    clear(main, h("section", { class: "panel" }, h("h1", { text: "Page not found" }),
      h("p", {}, "There is nothing at this address. ", h("a", { href: "#/", text: "Back to the units" }))));
    return;
  }
  const view = mountView(main, route);
  alertCount.refresh(); // events between the last page's stream and this one's are not replayed
  const stream = new EventStream({
    query: view.stream || {},
    always: ["alert"],
    onEvent: (e) => {
      if (e.type !== "alert") view.onEvent && view.onEvent(e);
      else {
        alertCount.refresh();
        view.onAlert && view.onAlert(e);
      }
    },
    onState: setStreamState,
    onReset: (reason) => {
      // The server could not replay what the stream missed: re-read what the page shows, and say so.
      alertCount.refresh();
      view.onReset && view.onReset();
      notify(`Live updates missed some changes (${RESET_TEXT[reason] || reason}); this page was re-read.`, "info");
    },
    onUnauthorized: () => showLogin("Your session has ended. Please sign in again."),
  });
  current = { view, stream };
  if (view.attachStream) view.attachStream(stream); // a view that narrows its stream as what it shows changes
  stream.start();
}

const zoneToggle = document.getElementById("zone-toggle");

function paintZone() {
  const local = currentZone() === "local";
  clear(zoneToggle, h("span", { class: "zone-word", text: "Times: " }), local ? `local (${zoneLabel()})` : "UTC");
  zoneToggle.title = local ? `Times are in this browser's zone (${Intl.DateTimeFormat().resolvedOptions().timeZone ||
    "local"}); click for UTC` : "Times are in UTC; click for this browser's zone";
}

/** Switch UTC / local and show the page again in the new zone (unless that would drop unsaved edits). */
function toggleZone() {
  useZone(currentZone() === "utc" ? "local" : "utc");
  paintZone();
  if (current && current.view && current.view.hasEdits && current.view.hasEdits()) {
    notify("Times switch zone when you next open a page (your unsaved edits stay).", "info");
  } else if (session.user) {
    render(currentRoute());
  }
}

async function boot() {
  paintZone();
  zoneToggle.addEventListener("click", toggleZone);
  setUnauthorizedHandler(() => showLogin("Your session has ended. Please sign in again."));
  document.getElementById("logout").addEventListener("click", async () => {
    teardown();
    try {
      await logout();
    } catch (err) {
      notify(err.message);
    }
    showLogin("You are signed out.");
  });
  onRouteChange((route) => {
    if (!session.user) return;
    render(route);
    window.scrollTo(0, 0); // a new page opens at its top, not as far down as the last one was scrolled
    main.focus({ preventScroll: true });
  });
  // "Skip to content" moves the focus without changing the address (#main is no route)
  document.querySelector(".skip").addEventListener("click", (e) => {
    e.preventDefault();
    main.focus();
  });
  let user = null;
  try {
    user = await loadSession();
  } catch (err) {
    clear(main, h("section", { class: "panel" }, h("h1", { text: "Fleet is not reachable" }),
      h("p", { class: "error-text", text: err.message }),
      h("button", { type: "button", class: "btn primary", onclick: () => location.reload(), text: "Try again" })));
    return;
  }
  if (user) showApp();
  else showLogin();
}

boot();
