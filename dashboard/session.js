// Who is signed in, and what their role lets them do.
import { ApiError, get, hasToken, post, useCsrf, useToken } from "./api.js";

const ROLES = ["viewer", "operator", "admin"];

export const session = { user: null };

/** True when the signed-in role is at least `needed` (viewer < operator < admin). */
export function can(needed) {
  const role = session.user ? session.user.role : null;
  return ROLES.includes(role) && ROLES.indexOf(role) >= ROLES.indexOf(needed);
}

/** Ask the server who we are; null when not signed in ("nobody" is a 200 there: no error in the console). */
export async function loadSession() {
  try {
    const me = await get("/api/auth/session", null, { quiet401: true });
    if (!me.signed_in) throw new ApiError(401, "not signed in");
    useCsrf(me.csrf_token);
    session.user = { name: me.name, role: me.role, kind: me.kind };
    return session.user;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      if (hasToken()) useToken(null); // a pasted token that no longer works is forgotten
      session.user = null;
      return null;
    }
    throw err;
  }
}

/** Password sign-in; the server sets the HttpOnly session cookie. */
export async function login(username, password) {
  useToken(null);
  try {
    const body = await post("/api/auth/login", { username, password }, { quiet401: true });
    useCsrf(body.csrf_token);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) throw new ApiError(401, "Wrong user name or password.");
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
      throw new ApiError(err.status, "This server has no password sign-in; use an API token instead.");
    }
    throw err;
  }
  const user = await loadSession();
  if (!user) throw new ApiError(401, "Signed in, but the session was not accepted. Are cookies blocked?");
  return user;
}

/** Sign in with a pasted API token (kept for this browser tab only). */
export async function loginWithToken(token) {
  useToken(token.trim());
  const user = await loadSession();
  if (!user) throw new ApiError(401, "That API token was not accepted.");
  return user;
}

export async function logout() {
  const hadToken = hasToken();
  useToken(null);
  if (!hadToken) {
    try {
      await post("/api/auth/logout", undefined, { quiet401: true });
    } catch (err) {
      if (!(err instanceof ApiError) || ![401, 404, 405].includes(err.status)) throw err;
    }
  }
  useCsrf(null);
  session.user = null;
}
