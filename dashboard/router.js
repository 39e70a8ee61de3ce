// Hash routes (#/, #/units/ID, #/units/ID/terminal, #/rollouts, #/rollouts/ID, #/config, #/alerts and its tabs,
// #/alerts/ID, #/terminal-sessions, #/terminal-sessions/ID): no server-side fallback needed for deep links.

const ROUTES = [
  [/^\/?$/, "overview"],
  [/^\/units\/([^/]+)$/, "unit"],
  [/^\/units\/([^/]+)\/terminal$/, "terminal"],
  [/^\/terminal-sessions\/?$/, "sessions"],
  [/^\/terminal-sessions\/([^/]+)$/, "session"],
  [/^\/rollouts\/?$/, "rollouts"],
  [/^\/rollouts\/([^/]+)$/, "rollout"],
  [/^\/config\/?$/, "config"],
  [/^\/alerts\/?$/, "alerts"],
  [/^\/alerts\/(history|silences|rules|channels)$/, "alerts"],
  [/^\/alerts\/(\d+)$/, "alert"],
];

/** The current route: {name, id, query (URLSearchParams), path}. Unknown paths name "notfound". */
export function currentRoute() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?", 2);
  const query = new URLSearchParams(search);
  for (const [pattern, name] of ROUTES) {
    const m = pattern.exec(path);
    if (m) return { name, id: m[1] ? decodeURIComponent(m[1]) : null, query, path };
  }
  return { name: "notfound", id: null, query, path };
}

/** Replace the query of the current route without adding a history entry or re-rendering the view. */
export function replaceQuery(params) {
  const { path } = currentRoute();
  const search = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  const hash = `#${path}${search.toString() ? `?${search}` : ""}`;
  if (hash !== location.hash) history.replaceState(null, "", hash);
}

export const unitHref = (id) => `#/units/${encodeURIComponent(id)}`;
export const rolloutHref = (id) => `#/rollouts/${encodeURIComponent(id)}`;
export const alertHref = (id) => `#/alerts/${encodeURIComponent(id)}`;

export function onRouteChange(fn) {
  window.addEventListener("hashchange", () => fn(currentRoute()));
}
