"""The role matrix over every route of the app, generated from `app.routes`.

A route nobody listed gets the default rule (reads: viewer, changes: operator), so a new route is covered
the moment it exists; a route that needs another role must be listed below, or this test fails for it.
Each route is called with no credentials, a unit's Basic credentials, viewer/operator/admin bearer tokens,
and an operator's dashboard session: too little -> 401 (none) or 403, enough -> anything but 401/403.
"""

from __future__ import annotations

import re

import fastapi.routing
import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fleet_service.relay import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from tests.support.auth import add_user, basic, bearer, login, token_for
from tests.support.stack import StackThread, settings_for

ROLE_ORDER = ("viewer", "operator", "admin")
PUBLIC = {  # no credential needed (login, logout, a unit claiming itself with its one-time token, health)
    ("GET", "/health"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/devices/claim"),
}
ANY_CALLER = {  # any operator role, and units
    ("GET", "/api/me"),
}
UNIT_OR_OPERATOR = {  # units, operators and admins; not viewers (see README, TURN)
    ("GET", "/api/turn-credentials"),
    ("GET", "/turn-credentials"),
}
ADMIN = {
    ("POST", "/api/devices"),
    ("DELETE", "/api/devices/{device_id}"),
    ("POST", "/api/devices/{device_id}/rotate-secret"),
    ("GET", "/api/tokens"),
    ("POST", "/api/tokens"),
    ("DELETE", "/api/tokens/{token_id}"),
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("PATCH", "/api/users/{username}"),
    ("DELETE", "/api/users/{username}"),
    ("GET", "/api/audit"),
    ("GET", "/api/claim-tokens"),
    ("POST", "/api/claim-tokens"),
    ("DELETE", "/api/claim-tokens/{claim_id}"),
}
WEBSOCKET_ROLE = {"/api/devices/{device_id}/relay": "operator"}
CALLERS = ("none", "unit", "viewer", "operator", "admin", "session-operator")


def expected_role(method: str, path: str) -> str:
    if (method, path) in PUBLIC:
        return "public"
    if (method, path) in ANY_CALLER:
        return "any"
    if (method, path) in UNIT_OR_OPERATOR:
        return "unit-or-operator"
    if (method, path) in ADMIN:
        return "admin"
    return "viewer" if method in ("GET", "HEAD") else "operator"


def allowed(role_needed: str, caller: str) -> bool:
    if role_needed == "public":
        return True
    if caller == "none":
        return False
    if role_needed == "any" or (role_needed == "unit-or-operator" and caller == "unit"):
        return True
    if caller == "unit":
        return False
    role_needed = role_needed.removeprefix("unit-or-")
    role = caller.removeprefix("session-")
    return ROLE_ORDER.index(role) >= ROLE_ORDER.index(role_needed)


def app_routes(app) -> tuple[list[tuple[str, str]], list[str]]:
    """(method, path) of every HTTP route and the path of every WebSocket route, prefixes included."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:  # FastAPI before lazily included routers: the routes are listed flat
        found = [(r, r.path, getattr(r, "methods", None)) for r in app.routes]
    else:
        found = [(c.original_route, c.path, c.methods) for c in iterate(app.routes)]
    http = sorted((m, path) for route, path, methods in found if isinstance(route, APIRoute) for m in methods)
    ws = sorted(path for route, path, _ in found if isinstance(route, APIWebSocketRoute))
    return http, ws


def concrete(path: str) -> str:
    """Fill path parameters with ids that do not exist: an allowed call ends in 404/422, changing nothing."""
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: "nobody" if m.group(1) == "username" else "no-such-thing",
                  path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with StackThread(settings_for(tmp_path_factory.mktemp("roles"), auth_failures_per_source=10_000,
                                  unauthenticated_changes_per_source=10_000)) as st:
        yield st


@pytest.fixture(scope="module")
def callers(stack):
    with stack.client() as api:
        secret = api.post("/api/devices", json={"id": "matrix-unit"}).json()["secret"]
    password = add_user(stack, "matrix-operator", "operator")
    browser = login(stack, "matrix-operator", password)
    headers = {"none": {}, "unit": basic("matrix-unit", secret)}
    for role in ROLE_ORDER:
        headers[role] = bearer(token_for(stack, role))
    yield headers, browser
    browser.client.close()


def _http_status(stack, headers, browser, caller: str, method: str, path: str) -> int:
    if caller.startswith("session-"):
        client, extra = browser.client, ({"X-CSRF-Token": browser.csrf_token} if method != "GET" else {})
    else:
        client, extra = httpx.Client(base_url=stack.url, timeout=15), headers[caller]
    try:
        with client.stream(method, path, headers=extra) as response:  # streams: SSE routes never end
            return response.status_code
    finally:
        if not caller.startswith("session-"):
            client.close()


def _ws_close_code(stack, headers, browser, caller: str, path: str) -> int | None:
    url = stack.url.replace("http://", "ws://") + path
    if caller.startswith("session-"):
        extra = {"Cookie": f"fleet_session={browser.client.cookies['fleet_session']}", "Origin": stack.url}
    else:
        extra = headers[caller]
    with connect(url, additional_headers=extra, open_timeout=10) as ws:
        try:
            ws.recv(timeout=5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            return None
    return None


def test_every_route_allows_exactly_its_roles(stack, callers):
    headers, browser = callers
    http_routes, ws_routes = app_routes(stack.running.app)
    assert len(http_routes) > 30 and ("GET", "/api/devices") in http_routes
    wrong = []
    for path in ws_routes:
        needed = WEBSOCKET_ROLE.get(path, "operator")
        for caller in CALLERS:
            code = _ws_close_code(stack, headers, browser, caller, concrete(path))
            refused = code in (CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN)
            if allowed(needed, caller) == refused:
                wrong.append(f"WS {path} as {caller}: close code {code} (needs {needed})")
    # logout last: it ends the operator's session used by the other calls
    for method, path in sorted(http_routes, key=lambda mp: mp == ("POST", "/api/auth/logout")):
        needed = expected_role(method, path)
        for caller in CALLERS:
            status = _http_status(stack, headers, browser, caller, method, concrete(path))
            if allowed(needed, caller):
                ok = status not in (401, 403)
            else:
                ok = status == (401 if caller == "none" else 403)
            if not ok:
                wrong.append(f"{method} {path} as {caller}: {status} (needs {needed})")
    assert not wrong, "\n".join(wrong)


def test_the_expectations_name_only_routes_that_exist(stack):
    """A renamed or removed route must not leave a stale rule behind (it would silently guard nothing)."""
    http_routes, ws_routes = app_routes(stack.running.app)
    stale = sorted((PUBLIC | ANY_CALLER | UNIT_OR_OPERATOR | ADMIN) - set(http_routes))
    assert not stale, stale
    assert set(WEBSOCKET_ROLE) <= set(ws_routes)


def test_nothing_changed_while_probing(stack, callers):
    """The matrix calls every route; with made-up ids and no bodies none of them may have changed anything."""
    with stack.client() as api:
        devices = api.get("/api/devices").json()
        assert [d["id"] for d in devices["items"]] == ["matrix-unit"]
        assert [u["username"] for u in api.get("/api/users").json()["items"]] == ["matrix-operator"]
        assert all(not t["revoked"] for t in api.get("/api/tokens").json()["items"])
