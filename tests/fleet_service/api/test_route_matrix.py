"""The authorization matrix of docs/security.md: every route of the real app against an explicit table.

`REQUIRED` names the credential each route needs. The routes are enumerated from the app itself (HTTP routes,
WebSocket routes and mounts, included routers and the OpenAPI pages too), and the test fails when the app has a
route the table does not name, or the table names a route the app no longer has: a new route cannot skip it.

Each route is then called on a running service (SQLite) with no credential, three wrong ones (an unknown bearer
token, a unit id with a wrong secret, a forged session cookie), a unit's Basic credential, viewer, operator and
admin tokens, and an operator's dashboard session (with its CSRF token, and without it on changes). Too little ->
401 (no or a wrong credential) or 403; enough -> anything but 401 and 403 (404, 409, 422, 503 are fine: bodies
are left out). Path parameters name real records (a second unit, a command, a rollout, a user, a token, a claim
token, a tag) that are not the callers' own, so the admin's DELETEs remove nothing the callers need.

`python -m tests.fleet_service.api.test_route_matrix` prints the table for docs/security.md, and
test_the_security_doc_shows_this_table keeps the document equal to it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fastapi.routing
import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Mount
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fleet_service.refusals import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from tests.support.auth import Browser, add_user, basic, bearer, login, token_for
from tests.support.stack import StackThread, settings_for

PUBLIC, ANY, UNIT_OR_OPERATOR = "public", "any credential", "unit or operator"
BROKER = "broker token"  # FLEET_BROKER_AUTH_TOKEN, and nothing else; without the setting the routes answer 404
BROKER_TOKEN = "matrix-broker-token-0123456789abcdef"
VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
# an operator's token only: the dashboard's cookie there gets 403 (a browser's way to a unit's pages is the GET,
# which sends it on to the unit port's own origin)
OPERATOR_TOKEN = "operator token"

# (method, path) -> what it needs. "WS" is a WebSocket route, "MOUNT" a mounted app (the dashboard's files).
# ANY: any valid credential, a unit's too. UNIT_OR_OPERATOR: a unit, an operator or an admin; not a viewer.
# BROKER: only FLEET_BROKER_AUTH_TOKEN (a clustered broker asking who may connect), which opens nothing else.
# VIEWER < OPERATOR < ADMIN: that role or a higher one; never a unit.
PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # HEAD: with GET

REQUIRED: dict[tuple[str, str], str] = {
    ("MOUNT", "/"): PUBLIC,  # the dashboard's static files: no data in them, the page logs in through the API
    ("GET", "/health"): PUBLIC,  # for load balancers: up/degraded, nothing else
    ("POST", "/api/auth/login"): PUBLIC,
    ("POST", "/api/auth/logout"): PUBLIC,  # ends the cookie's session: needs its CSRF token while it is valid
    ("GET", "/api/auth/session"): PUBLIC,  # who is signed in; nobody is a 200 too (the dashboard's first look)
    ("POST", "/api/devices/claim"): PUBLIC,  # the one-time claim token in the body is the credential
    ("GET", "/api/me"): ANY,
    ("GET", "/api/turn-credentials"): UNIT_OR_OPERATOR,
    ("GET", "/turn-credentials"): UNIT_OR_OPERATOR,
    ("GET", "/openapi.json"): VIEWER,  # FLEET_API_DOCS=auth (the default)
    ("GET", "/docs"): VIEWER,
    ("GET", "/redoc"): VIEWER,
    ("GET", "/metrics"): VIEWER,
    ("GET", "/api/events"): VIEWER,
    ("GET", "/api/relay/health"): VIEWER,
    ("GET", "/api/config/schema"): VIEWER,
    ("GET", "/api/devices"): VIEWER,
    ("GET", "/api/devices/{device_id}"): VIEWER,
    ("GET", "/api/devices/{device_id}/status"): VIEWER,
    ("GET", "/api/devices/{device_id}/logs"): VIEWER,
    ("GET", "/api/devices/{device_id}/metrics"): VIEWER,
    ("GET", "/api/devices/{device_id}/commands"): VIEWER,
    ("GET", "/api/devices/{device_id}/config"): VIEWER,
    ("GET", "/api/commands/{command_id}"): VIEWER,
    ("GET", "/api/config/groups"): VIEWER,
    ("GET", "/api/config/groups/{tag}"): VIEWER,
    ("GET", "/api/tags"): VIEWER,
    ("GET", "/api/rollouts"): VIEWER,
    ("GET", "/api/rollouts/{rollout_id}"): VIEWER,
    ("GET", "/api/alerts"): VIEWER,
    ("GET", "/api/alerts/summary"): VIEWER,
    ("GET", "/api/alerts/{alert_id}"): VIEWER,
    ("GET", "/api/alert-rules"): VIEWER,
    ("GET", "/api/alert-rules/{rule_id}"): VIEWER,
    ("GET", "/api/silences"): VIEWER,
    ("GET", "/api/silences/{silence_id}"): VIEWER,
    ("GET", "/api/notification-channels"): VIEWER,  # never their secrets
    ("GET", "/api/notification-channels/{channel_id}"): VIEWER,
    ("GET", "/api/notification-channels/{channel_id}/deliveries"): VIEWER,
    ("GET", "/api/notifications"): VIEWER,
    ("PATCH", "/api/devices/{device_id}"): OPERATOR,
    ("POST", "/api/devices/{device_id}/commands"): OPERATOR,
    ("POST", "/api/devices/{device_id}/restart"): OPERATOR,
    ("POST", "/api/devices/{device_id}/reboot"): OPERATOR,
    ("POST", "/api/devices/{device_id}/update"): OPERATOR,
    ("PUT", "/api/devices/{device_id}/config"): OPERATOR,
    ("POST", "/api/commands/{command_id}/cancel"): OPERATOR,
    ("PUT", "/api/config/groups/{tag}"): OPERATOR,
    ("DELETE", "/api/config/groups/{tag}"): OPERATOR,
    ("POST", "/api/rollouts"): OPERATOR,
    ("POST", "/api/rollouts/{rollout_id}/pause"): OPERATOR,
    ("POST", "/api/rollouts/{rollout_id}/resume"): OPERATOR,
    ("POST", "/api/rollouts/{rollout_id}/cancel"): OPERATOR,
    ("POST", "/api/alerts/{alert_id}/ack"): OPERATOR,
    ("POST", "/api/silences"): OPERATOR,
    ("DELETE", "/api/silences/{silence_id}"): OPERATOR,
    ("WS", "/api/devices/{device_id}/relay"): OPERATOR,
    ("WS", "/api/devices/{device_id}/terminal"): OPERATOR,  # admin only where the unit's config says so
    ("WS", "/api/devices/{device_id}/forward/{port}"): OPERATOR,  # admin only where the unit's config says so
    ("WS", "/api/devices/{device_id}/proxy/{port}/{path:path}"): OPERATOR_TOKEN,
    **{
        (m, "/api/devices/{device_id}/proxy/{port}/{path:path}"): OPERATOR if m == "GET" else OPERATOR_TOKEN
        for m in PROXY_METHODS
    },
    **{(m, "/api/devices/{device_id}/proxy/{port}"): PUBLIC for m in PROXY_METHODS},  # on to the trailing slash
    ("POST", "/api/devices"): ADMIN,
    ("DELETE", "/api/devices/{device_id}"): ADMIN,
    ("POST", "/api/devices/{device_id}/rotate-secret"): ADMIN,
    ("GET", "/api/tokens"): ADMIN,
    ("POST", "/api/tokens"): ADMIN,
    ("DELETE", "/api/tokens/{token_id}"): ADMIN,
    ("GET", "/api/users"): ADMIN,
    ("POST", "/api/users"): ADMIN,
    ("PATCH", "/api/users/{username}"): ADMIN,
    ("DELETE", "/api/users/{username}"): ADMIN,
    ("GET", "/api/audit"): ADMIN,
    ("GET", "/api/claim-tokens"): ADMIN,
    ("POST", "/api/claim-tokens"): ADMIN,
    ("DELETE", "/api/claim-tokens/{claim_id}"): ADMIN,
    ("POST", "/api/alert-rules"): ADMIN,
    ("PUT", "/api/alert-rules/{rule_id}"): ADMIN,
    ("DELETE", "/api/alert-rules/{rule_id}"): ADMIN,
    ("POST", "/api/notification-channels"): ADMIN,
    ("PUT", "/api/notification-channels/{channel_id}"): ADMIN,
    ("DELETE", "/api/notification-channels/{channel_id}"): ADMIN,
    ("POST", "/api/notification-channels/{channel_id}/test"): ADMIN,
    ("GET", "/api/terminal-sessions"): ADMIN,
    ("GET", "/api/terminal-sessions/{session_id}"): ADMIN,
    ("GET", "/api/terminal-sessions/{session_id}/recording"): ADMIN,
    ("POST", "/api/broker-auth/emqx/authn"): BROKER,
    ("POST", "/api/broker-auth/emqx/authz"): BROKER,
    ("POST", "/api/broker-auth/go-auth/user"): BROKER,
    ("POST", "/api/broker-auth/go-auth/superuser"): BROKER,
    ("POST", "/api/broker-auth/go-auth/acl"): BROKER,
    ("POST", "/api/broker-auth/vernemq/register"): BROKER,
    ("POST", "/api/broker-auth/vernemq/publish"): BROKER,
    ("POST", "/api/broker-auth/vernemq/subscribe"): BROKER,
}

ROLES = (VIEWER, OPERATOR, ADMIN)
WRONG = ("wrong-bearer", "wrong-basic", "wrong-cookie")
CALLERS = ("none", *WRONG, "unit", VIEWER, OPERATOR, ADMIN, "session-operator", "session-without-csrf", "broker")
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGOUT = "/api/auth/logout"


def app_routes(app) -> list[tuple[str, str]]:
    """(method, path) of everything the app answers: each method of each HTTP route, ("WS", path) for WebSocket
    routes, ("MOUNT", path) for mounted apps; anything else as (its class name, path), which no table row names."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:  # FastAPI before lazily included routers: the routes are listed flat
        found = [(r, getattr(r, "path", ""), getattr(r, "methods", None)) for r in app.routes]
    else:
        found = [(c.original_route, c.path, c.methods) for c in iterate(app.routes)]
    routes = set()
    for route, path, methods in found:
        if isinstance(route, APIWebSocketRoute):
            routes.add(("WS", path))
        elif isinstance(route, Mount):
            routes.add(("MOUNT", path or "/"))
        elif isinstance(route, APIRoute):
            routes |= {(m, path) for m in methods if not (m == "HEAD" and "GET" in methods)}
        else:
            routes.add((type(route).__name__, path))
    return sorted(routes)


def allowed(needed: str, caller: str) -> bool:
    if needed == PUBLIC:
        return True
    if needed == BROKER or caller == "broker":  # the broker token opens its routes and nothing else
        return needed == BROKER and caller == "broker"
    if caller == "none" or caller in WRONG:
        return False
    if caller == "unit":
        return needed in (ANY, UNIT_OR_OPERATOR)
    if needed == OPERATOR_TOKEN:
        return not caller.startswith("session-") and ROLES.index(caller) >= ROLES.index(OPERATOR)
    if needed in (ANY, UNIT_OR_OPERATOR):
        needed = VIEWER if needed == ANY else OPERATOR
    return ROLES.index(caller.removeprefix("session-")) >= ROLES.index(needed)


def markdown_table() -> str:
    """The matrix as docs/security.md shows it: sorted by path, then method."""
    lines = ["| Route | Method | Needs |", "|---|---|---|"]
    for (method, path), needed in sorted(REQUIRED.items(), key=lambda item: (item[0][1], item[0][0])):
        shown = {"MOUNT": "GET (static files)", "WS": "WebSocket"}.get(method, method)
        lines.append(f"| `{path}` | {shown} | {needed} |")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = settings_for(
        tmp_path_factory.mktemp("route-matrix"),
        auth_failures_per_source=100_000,
        unauthenticated_changes_per_source=100_000,
        broker_auth_token=BROKER_TOKEN,
    )
    with StackThread(settings) as st:
        yield st


@pytest.fixture(scope="module")
def world(stack):
    """The callers' credentials and real ids for every path parameter."""
    with stack.client() as api:
        unit_secret = api.post("/api/devices", json={"id": "matrix-unit"}).json()["secret"]
        assert api.post("/api/devices", json={"id": "matrix-target", "tags": ["matrix-tag"]}).status_code == 201
        command = api.post("/api/devices/matrix-target/commands", json={"name": "ping"})
        assert command.status_code == 202, command.text
        rollout = api.post("/api/rollouts", json={"command": "ping", "device_ids": ["matrix-target"]})
        assert rollout.status_code == 201, rollout.text
        assert api.put("/api/config/groups/matrix-tag", json={"camera": "x"}).status_code in (200, 201)
        claim = api.post("/api/claim-tokens", json={})
        assert claim.status_code == 201, claim.text
        token = api.post("/api/tokens", json={"role": "viewer", "name": "matrix-target-token"})
        assert token.status_code == 201, token.text
        rule = api.post("/api/alert-rules", json={"name": "matrix", "kind": "offline", "device_id": "matrix-target"})
        assert rule.status_code == 201, rule.text
        silence = api.post("/api/silences", json={"device_id": "matrix-target", "duration_s": 3600})
        assert silence.status_code == 201, silence.text
        channel = api.post(
            "/api/notification-channels",
            json={"name": "matrix", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}},
        )
        assert channel.status_code == 201, channel.text
    add_user(stack, "matrix-target-user", "viewer")
    password = add_user(stack, "matrix-operator", "operator")
    browser = login(stack, "matrix-operator", password)
    params = {
        "device_id": "matrix-target",
        "command_id": command.json()["id"],
        "rollout_id": rollout.json()["id"],
        "tag": "matrix-tag",
        "claim_id": claim.json()["id"],
        "token_id": token.json()["id"],
        "username": "matrix-target-user",
        "rule_id": rule.json()["id"],
        "silence_id": silence.json()["id"],
        "channel_id": channel.json()["id"],
        "alert_id": "1",  # none exists: a 404 for whoever may ask
        "session_id": "0" * 32,  # none exists either
        "port": "8080",
        "path": "index.html",
    }
    headers = {
        "none": {},
        "unit": basic("matrix-unit", unit_secret),
        "wrong-bearer": bearer("not-a-token-0123456789abcdef"),
        "wrong-basic": basic("matrix-unit", "x" + unit_secret[1:] if unit_secret[0] != "x" else "y"),
        "wrong-cookie": {"Cookie": "fleet_session=forged-session-value"},
        "session-without-csrf": {"Cookie": f"fleet_session={browser.client.cookies['fleet_session']}"},
        "broker": bearer(BROKER_TOKEN),
    }
    for role in ROLES:
        headers[role] = bearer(token_for(stack, role, f"matrix-{role}"))
    clients = {caller: httpx.Client(base_url=stack.url, headers=h, timeout=15) for caller, h in headers.items()}
    clients["session-operator"] = browser.client
    yield World(params, headers, browser, clients, lambda: login(stack, "matrix-operator", password))
    for client in clients.values():
        client.close()


@dataclass
class World:
    params: dict[str, str]
    headers: dict[str, dict[str, str]]
    browser: Browser
    clients: dict[str, httpx.Client]

    fresh_session: Callable[[], Browser]

    def status(self, caller: str, method: str, path: str) -> int:
        if caller.startswith("session-") and path == LOGOUT:  # a session of its own: logout ends the one it names
            fresh = self.fresh_session()
            csrf = {"X-CSRF-Token": fresh.csrf_token} if caller == "session-operator" else {}
            try:
                return fresh.client.request(method, path, headers=csrf).status_code
            finally:
                fresh.client.close()
        extra = {"X-CSRF-Token": self.browser.csrf_token} if caller == "session-operator" and method in UNSAFE else {}
        with self.clients[caller].stream(method, path, headers=extra) as response:  # streamed: SSE never ends
            return response.status_code


def concrete(path: str, params: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        assert name in params, f"no value for path parameter {name!r} of {path}: add a real record to world()"
        return params[name]

    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", value, path)


def _ws_close_code(url: str, world: World, caller: str, path: str, origin: str | None = None) -> int | None:
    if caller == "session-operator":
        extra = {**world.headers["session-without-csrf"], "Origin": origin or url}
    else:
        extra = world.headers[caller]
    with connect(url.replace("http://", "ws://") + path, additional_headers=extra, open_timeout=10) as ws:
        try:
            ws.recv(timeout=5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            return None
    return None


def _expected_http(needed: str, caller: str, method: str) -> str:
    if needed == BROKER and caller != "broker":
        return "401"  # no operator or unit credential is the broker token, nor is a session
    if caller == "session-without-csrf":
        return "403" if needed != PUBLIC else "any"
    if allowed(needed, caller):
        return "allowed"
    return "401" if caller in ("none", "broker") or caller in WRONG else "403"


def _http_cells(world: World, method: str, path: str) -> list[str]:
    needed, wrong = REQUIRED[(method, path)], []
    for caller in CALLERS:
        if caller == "session-without-csrf" and method not in UNSAFE:
            continue  # a read needs no CSRF token: the session caller above covers it
        status = world.status(caller, method, concrete(path, world.params))
        expected = _expected_http(needed, caller, method)
        ok = {"allowed": status not in (401, 403), "any": True}.get(expected, str(status) == expected)
        if not ok:
            wrong.append(f"{method} {path} as {caller}: {status}, expected {expected} (needs {needed})")
    return wrong


def test_the_table_names_exactly_the_routes_of_the_app(stack):
    routes = app_routes(stack.running.app)
    assert len(routes) > 50
    unnamed = sorted(set(routes) - set(REQUIRED))
    assert not unnamed, f"routes with no row in REQUIRED (add one, with the credential each needs): {unnamed}"
    stale = sorted(set(REQUIRED) - set(routes))
    assert not stale, f"rows in REQUIRED for routes the app no longer has: {stale}"


def test_every_http_route_refuses_too_little_and_lets_enough_in(stack, world):
    routes = [r for r in app_routes(stack.running.app) if r[0] not in ("WS", "MOUNT")]
    wrong = [cell for method, path in routes if (method, path) in REQUIRED for cell in _http_cells(world, method, path)]
    assert not wrong, "\n".join(wrong)


def test_every_websocket_route_refuses_too_little_and_lets_enough_in(stack, world):
    wrong = []
    for kind, path in app_routes(stack.running.app):
        if kind != "WS":
            continue
        needed = REQUIRED[(kind, path)]
        for caller in (c for c in CALLERS if c != "session-without-csrf"):
            code = _ws_close_code(stack.url, world, caller, concrete(path, world.params))
            if allowed(needed, caller):
                ok = code not in (CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN)
            else:
                wrong_credential = caller in ("none", "broker") or caller in WRONG
                ok = code == (CLOSE_UNAUTHENTICATED if wrong_credential else CLOSE_FORBIDDEN)
            if not ok:
                wrong.append(f"WS {path} as {caller}: close code {code} (needs {needed})")
        # the session cookie from another site's page (cross-site WebSocket hijacking) is refused
        code = _ws_close_code(
            stack.url, world, "session-operator", concrete(path, world.params), origin="https://evil.example"
        )
        if needed != PUBLIC and code != CLOSE_FORBIDDEN:
            wrong.append(f"WS {path} with the operator's cookie from another origin: close code {code}")
    assert not wrong, "\n".join(wrong)


def test_the_dashboards_files_are_public_and_only_files(stack, world):
    """The mount serves the dashboard's static files to anyone; it holds no data and answers no change."""
    mount = next(r for r in stack.running.app.routes if isinstance(r, Mount))
    directory = Path(mount.app.directory)
    files = sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.suffix in (".html", ".js", ".css")
    )
    assert "index.html" in files and "app.js" in files
    wrong = []
    for name in ["", *files]:
        for caller in CALLERS:
            status = world.status(caller, "GET", f"/{name}")
            if status != 200:
                wrong.append(f"GET /{name} as {caller}: {status}")
    with httpx.Client(base_url=stack.url, timeout=15) as anonymous:
        assert anonymous.post("/index.html").status_code == 405
        assert anonymous.get("/api/no-such-route").status_code == 404  # unknown API paths fall through to files
    assert not wrong, "\n".join(wrong)


def test_probing_left_the_callers_alone(stack, world):
    """The admin's calls deleted and rotated the target records only; every caller still works."""
    for caller in ("unit", *ROLES):
        assert world.status(caller, "GET", "/api/me") == 200, caller


def test_the_security_doc_shows_this_table():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "security.md").read_text()
    assert markdown_table() in doc, (
        "docs/security.md is out of date: python -m tests.fleet_service.api.test_route_matrix"
    )


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
