// The HTTP API: credentials (session cookie + CSRF token, or a pasted bearer token), errors as readable messages.

const TOKEN_KEY = "fleet.token";

const auth = {
  token: sessionStorage.getItem(TOKEN_KEY),
  csrf: null,
};

let onUnauthorized = () => {};

/** Called whenever the server says our credentials are gone (401), so the app can show the login page. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function useToken(token) {
  auth.token = token || null;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export const hasToken = () => Boolean(auth.token);

export function useCsrf(csrf) {
  auth.csrf = csrf || null;
}

/** Headers that authenticate a request (used by the event stream too). */
export function authHeaders() {
  return auth.token ? { Authorization: `Bearer ${auth.token}` } : {};
}

export class ApiError extends Error {
  constructor(status, message, body = null, headers = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

/** Turn an error response into a sentence an operator can act on. */
export function describeError(status, body, headers) {
  let detail = body && typeof body === "object" ? body.detail : null;
  if (Array.isArray(detail)) {
    detail = detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ");
  }
  if (typeof body === "string" && body && !detail) detail = body.slice(0, 200);
  switch (status) {
    case 401:
      return detail && detail !== "missing or invalid credentials"
        ? detail
        : "You are not signed in (or your session has ended). Please sign in again.";
    case 403:
      return `Not allowed: ${detail || "your role may not do this"}.`;
    case 404:
      return detail || "Not found.";
    case 409:
      return detail || "Conflict: the item changed or already exists.";
    case 412:
      return `Someone else changed this first (${detail || "version mismatch"}). Reload and try again.`;
    case 413:
      return detail || "The request is too large.";
    case 422:
      return `Invalid input: ${detail || "the server rejected the values"}.`;
    case 429: {
      const wait = headers && headers.get("Retry-After");
      return `${detail || "Too many requests"}${wait ? ` — try again in ${wait} s` : ""}.`;
    }
    case 503:
      return detail || "The service is not available right now.";
    default:
      if (status >= 500) return `The server failed (HTTP ${status})${detail ? `: ${detail}` : ""}.`;
      return detail || `Request failed (HTTP ${status}).`;
  }
}

function queryString(query) {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== null && v !== undefined && v !== "") params.set(k, String(v));
  }
  const s = params.toString();
  return s ? `?${s}` : "";
}

/**
 * One API call. Resolves with the parsed body (null for 204); rejects with ApiError carrying a readable message.
 * `quiet401` keeps a 401 from sending the app to the login page (the login call itself, the first session check).
 */
export async function request(method, path, { body, query, headers = {}, quiet401 = false, signal } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    signal,
    headers: { Accept: "application/json", ...authHeaders(), ...headers },
  };
  if (method !== "GET" && method !== "HEAD" && auth.csrf && !auth.token) init.headers["X-CSRF-Token"] = auth.csrf;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path + queryString(query), init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "Cannot reach the server — check the network connection.");
  }
  const type = response.headers.get("Content-Type") || "";
  let data = null;
  if (response.status !== 204) {
    const text = await response.text();
    data = type.includes("json") && text ? safeJson(text) : text;
  }
  if (!response.ok) {
    if (response.status === 401 && !quiet401) onUnauthorized();
    throw new ApiError(response.status, describeError(response.status, data, response.headers), data, response.headers);
  }
  return data;
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export const get = (path, query, opts) => request("GET", path, { ...opts, query });
export const post = (path, body, opts) => request("POST", path, { ...opts, body });
export const put = (path, body, opts) => request("PUT", path, { ...opts, body });

export const enc = encodeURIComponent;
