// Entry point: sign-in state, the top bar, routing between views, and one live event stream per view.
import { setUnauthorizedHandler } from "./api.js";
import { clear, h, notify } from "./dom.js";
import { EventStream } from "./events.js";
import { currentRoute, onRouteChange } from "./router.js";
import { loadSession, logout, session } from "./session.js";
import * as login from "./views/login.js";
import * as overview from "./views/overview.js";
import * as rollouts from "./views/rollouts.js";
import * as unit from "./views/unit.js";

const VIEWS = {
  overview: overview.mount,
  unit: unit.mount,
  rollouts: rollouts.mountList,
  rollout: rollouts.mountDetail,
};

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
const streamState = document.getElementById("stream-state");
const who = document.getElementById("who");
let current = null; // {view, stream}
let loginShown = false;

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
  render(currentRoute());
}

function render(route) {
  teardown();
  if (!session.user) {
    showLogin();
    return;
  }
  for (const link of topbar.querySelectorAll("[data-nav]")) {
    const active = link.dataset.nav === (route.name.startsWith("rollout") ? "rollouts" : "units");
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
  const stream = new EventStream({
    query: view.stream || {},
    onEvent: (e) => view.onEvent && view.onEvent(e),
    onState: setStreamState,
    onResume: () => view.onResume && view.onResume(),
    onUnauthorized: () => showLogin("Your session has ended. Please sign in again."),
  });
  current = { view, stream };
  stream.start();
}

async function boot() {
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
    main.focus({ preventScroll: true });
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
