"""Operator authentication: dashboard login sessions, CSRF, brute-force limits, users, timing, body limits.

Every test talks to the real service over real sockets. Distinct loopback source addresses (127.0.0.x)
stand for distinct callers, so the per-source limits of one test do not leak into another.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie

import httpx
import pytest
from sqlmodel import Session, select

from fleet_service.auth.credentials import role_allows
from fleet_service.auth.models import User, WebSession
from protocol.secrets import fingerprint
from tests.support.auth import add_user, basic, bearer, login
from tests.support.stack import StackThread, settings_for

PER_USER = 3
PER_SOURCE = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    settings = settings_for(tmp, auth_failures_per_user=PER_USER, auth_failures_per_source=PER_SOURCE)
    with StackThread(settings) as st:
        yield st


def _client(stack: StackThread, source: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=15, transport=httpx.HTTPTransport(local_address=source))


def _cookie(response: httpx.Response) -> SimpleCookie:
    jar = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar


def _login(client: httpx.Client, username: str, password: str, **kw) -> httpx.Response:
    return client.post("/api/auth/login", json={"username": username, "password": password}, **kw)


def test_login_sets_a_hardened_session_cookie_stored_only_as_a_hash(stack):
    password = add_user(stack, "alice", "operator")
    with _client(stack, "127.0.0.2") as c:
        r = _login(c, "alice", password)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"] == {"username": "alice", "role": "operator"} and set(body) == {"user", "csrf_token"}
        morsel = _cookie(r)["fleet_session"]
        assert morsel["httponly"] and morsel["samesite"].lower() == "strict" and morsel["path"] == "/"
        assert not morsel["secure"]  # plain HTTP here; see the next test for HTTPS
        me = c.get("/api/me").json()
        assert me == {"kind": "user", "name": "alice", "role": "operator", "csrf_token": body["csrf_token"]}
        token = morsel.value
    with Session(stack.ctx.engine) as s:
        ids = s.exec(select(WebSession.id)).all()
    assert fingerprint(token) in ids and token not in ids


def test_cookie_is_secure_behind_https(stack, tmp_path):
    password = add_user(stack, "hugo", "viewer")
    with _client(stack, "127.0.0.1") as c:  # uvicorn trusts X-Forwarded-Proto from the local proxy
        r = _login(c, "hugo", password, headers={"X-Forwarded-Proto": "https"})
        assert _cookie(r)["fleet_session"]["secure"]
    with StackThread(settings_for(tmp_path, cookie_secure=True)) as other:
        add_user(other, "hugo", "viewer", password)
        with httpx.Client(base_url=other.url) as c:
            assert _cookie(_login(c, "hugo", password))["fleet_session"]["secure"]


def test_cookie_requests_that_change_state_need_the_csrf_header(stack):
    password = add_user(stack, "carl", "operator")
    browser = login(stack, "carl", password, "127.0.0.3")
    with stack.client() as api:
        api.post("/api/devices", json={"id": "csrf-unit"})
    c = browser.client
    assert c.get("/api/devices/csrf-unit").status_code == 200  # reads need no token
    assert c.patch("/api/devices/csrf-unit", json={"name": "x"}).status_code == 403
    assert c.patch("/api/devices/csrf-unit", json={"name": "x"}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert c.get("/api/devices/csrf-unit").json()["name"] == ""  # nothing changed
    assert browser.request("PATCH", "/api/devices/csrf-unit", json={"name": "hall"}).status_code == 200
    assert c.get("/api/devices/csrf-unit").json()["name"] == "hall"
    with stack.client() as api:  # bearer tokens are not sent by browsers on their own: no CSRF token needed
        assert api.patch("/api/devices/csrf-unit", json={"name": "stage"}).status_code == 200


def test_wrong_password_is_401_then_429_per_username_and_address(stack):
    password = add_user(stack, "dave", "viewer")
    add_user(stack, "erin", "viewer", "erins password")
    with _client(stack, "127.0.0.4") as c:
        for _ in range(PER_USER):
            assert _login(c, "dave", "guess").status_code == 401
        blocked = _login(c, "dave", password)  # even the right password waits: this is the lock-out
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
        assert _login(c, "erin", "erins password").status_code == 200  # other accounts are unaffected
    with _client(stack, "127.0.0.5") as c:
        # per username and address: guesses from elsewhere cannot lock the account out for everyone
        assert _login(c, "dave", password).status_code == 200


def test_failed_logins_are_limited_per_source_address(stack):
    password = add_user(stack, "fay", "viewer")
    with _client(stack, "127.0.0.6") as c:
        for i in range(PER_SOURCE):
            assert _login(c, f"nobody{i}", "guess").status_code == 401
        assert _login(c, "fay", "guess").status_code == 429
        assert _login(c, "fay", password).status_code == 200  # only failures are refused (test_auth_limits.py)
    with _client(stack, "127.0.0.7") as c:
        assert _login(c, "fay", password).status_code == 200


def test_failed_unit_basic_auths_are_limited_per_source_address(stack):
    with stack.client() as api:
        secret = api.post("/api/devices", json={"id": "basic-unit"}).json()["secret"]
    with _client(stack, "127.0.0.8") as c:
        assert c.get("/api/me", headers=basic("basic-unit", secret)).json()["kind"] == "device"
        for _ in range(PER_SOURCE):
            assert c.get("/api/me", headers=basic("basic-unit", "wrong-" + secret[6:])).status_code == 401
        r = c.get("/api/me", headers=basic("basic-unit", "wrong-" + secret[6:]))
        assert r.status_code == 429 and r.headers["Retry-After"]
        assert c.get("/api/me", headers=bearer("flt_not-a-token")).status_code == 429  # any credential kind
        assert c.get("/api/me", headers=basic("basic-unit", secret)).status_code == 200  # the right one is let in
    with _client(stack, "127.0.0.9") as c:
        assert c.get("/api/me", headers=basic("basic-unit", secret)).status_code == 200


def test_logout_ends_the_session_and_needs_the_csrf_token(stack):
    password = add_user(stack, "gwen", "admin")
    browser = login(stack, "gwen", password, "127.0.0.10")
    stolen = browser.client.cookies["fleet_session"]
    assert browser.client.post("/api/auth/logout").status_code == 403  # a cross-site form cannot log us out
    assert browser.client.get("/api/me").status_code == 200
    r = browser.request("POST", "/api/auth/logout")
    assert r.status_code == 204
    assert "fleet_session" in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    assert browser.client.get("/api/me").status_code == 401
    with httpx.Client(base_url=stack.url, cookies={"fleet_session": stolen}) as replay:
        assert replay.get("/api/me").status_code == 401  # deleted on the server, not just in the browser
        assert replay.post("/api/auth/logout").status_code == 204  # idempotent


def test_sessions_expire_when_idle_and_at_their_absolute_limit(stack):
    password = add_user(stack, "ivan", "viewer")
    idle_ms = stack.settings.session_idle_s * 1000

    def shift(browser, **fields) -> None:
        token = browser.client.cookies["fleet_session"]
        with Session(stack.ctx.engine) as s:
            row = s.get(WebSession, fingerprint(token))
            for name, value in fields.items():
                setattr(row, name, value)
            s.add(row)
            s.commit()

    now = int(time.time() * 1000)
    idle = login(stack, "ivan", password, "127.0.0.11")
    shift(idle, last_seen_at=now - idle_ms + 5_000)  # idle for almost the limit: still valid ...
    assert idle.client.get("/api/me").status_code == 200
    shift(idle, last_seen_at=now - idle_ms - 1)  # ... one moment past it: gone
    assert idle.client.get("/api/me").status_code == 401

    busy = login(stack, "ivan", password, "127.0.0.11")
    shift(busy, expires_at=now - 1)  # active, but past the absolute lifetime
    assert busy.client.get("/api/me").status_code == 401


def test_password_change_and_deletion_end_sessions_and_role_changes_apply_at_once(stack):
    password = add_user(stack, "judy", "viewer")
    browser = login(stack, "judy", password, "127.0.0.12")
    with stack.client() as api:
        assert api.patch("/api/users/judy", json={"role": "operator"}).json()["role"] == "operator"
        assert browser.client.get("/api/me").json()["role"] == "operator"
        assert api.patch("/api/users/judy", json={"password": "a brand new one"}).status_code == 200
        assert browser.client.get("/api/me").status_code == 401
        again = login(stack, "judy", "a brand new one", "127.0.0.12")
        assert api.delete("/api/users/judy").status_code == 204
        assert again.client.get("/api/me").status_code == 401
        assert api.delete("/api/users/judy").status_code == 404


def test_users_api_validates_and_never_returns_hashes(stack):
    with stack.client() as api:
        assert (
            api.post("/api/users", json={"username": "kim", "password": "long enough", "role": "viewer"}).status_code
            == 201
        )
        dup = api.post("/api/users", json={"username": "kim", "password": "long enough", "role": "viewer"})
        assert dup.status_code == 409
        for bad in (
            {"username": "kim lee", "password": "long enough", "role": "viewer"},
            {"username": "lee", "password": "short", "role": "viewer"},
            {"username": "lee", "password": "long enough", "role": "root"},
        ):
            r = api.post("/api/users", json=bad)
            assert r.status_code == 422 and r.json()["detail"], bad
        listing = api.get("/api/users").text
    assert "kim" in listing and "password_hash" not in listing and "scrypt" not in listing
    with Session(stack.ctx.engine) as s:
        stored = s.exec(select(User).where(User.username == "kim")).one().password_hash
    assert "long enough" not in stored and stored.startswith("scrypt$")


def _median_seconds(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_unknown_names_cost_as_much_time_as_wrong_secrets(stack):
    """Timing does not reveal which usernames or unit ids exist: both paths run the same slow hash."""
    add_user(stack, "leo", "viewer")
    with stack.client() as api:
        api.post("/api/devices", json={"id": "timed-unit"})
    limits = stack.ctx.limits
    with _client(stack, "127.0.0.13") as c:

        def attempt(username: str) -> None:
            assert _login(c, username, "not the password").status_code == 401
            limits.per_login.reset(limits.login_key("127.0.0.13", username))
            limits.per_source.reset("127.0.0.13")

        def unit(device_id: str) -> None:
            assert c.get("/api/me", headers=basic(device_id, "not-the-secret")).status_code == 401
            limits.per_source.reset("127.0.0.13")

        attempt("leo")  # warm-up
        known, unknown = _median_seconds(lambda: attempt("leo")), _median_seconds(lambda: attempt("no-such-user"))
        assert unknown > 0.5 * known, (known, unknown)
        known, unknown = _median_seconds(lambda: unit("timed-unit")), _median_seconds(lambda: unit("no-such-unit"))
        assert unknown > 0.5 * known, (known, unknown)


def test_request_bodies_are_limited_with_and_without_content_length(stack):
    limit = stack.settings.max_request_bytes
    big = b'{"id": "big-unit", "name": "' + b"x" * limit + b'"}'

    def chunked():
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    with stack.client() as api:
        r = api.post("/api/devices", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and str(limit) in r.json()["detail"]
        r = api.post("/api/devices", content=chunked(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "content-length" not in r.request.headers
        assert api.get("/api/devices/big-unit").status_code == 404
        r = api.post(
            "/api/devices", content=iter([b'{"id": "small-unit"}']), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 201  # a small chunked body is fine


def _fleet(stack: StackThread, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLEET_DATABASE_URL": stack.settings.database_url, "FLEET_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "fleet_cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_user_add_reads_the_password_from_stdin_never_from_argv(stack):
    done = _fleet(stack, "user", "add", "mona", "--role", "operator", "--password-stdin", stdin="stdin password\n")
    assert done.returncode == 0, done.stderr
    assert "stdin password" not in done.stdout + done.stderr
    assert login(stack, "mona", "stdin password", "127.0.0.14").client.get("/api/me").json()["role"] == "operator"
    refused = _fleet(stack, "user", "add", "nina", "--role", "admin", "--password", "on-the-command-line")
    assert refused.returncode == 2 and "unrecognized arguments" in refused.stderr
    no_tty = _fleet(stack, "user", "add", "nina", "--role", "admin", stdin="")
    assert no_tty.returncode == 2 and "--password-stdin" in no_tty.stderr
    assert _fleet(stack, "user", "passwd", "mona", "--password-stdin", stdin="changed password\n").returncode == 0
    with _client(stack, "127.0.0.14") as c:
        assert _login(c, "mona", "stdin password").status_code == 401
        assert _login(c, "mona", "changed password").status_code == 200
    with stack.client() as api:
        assert "nina" not in api.get("/api/users").text


def test_cli_token_revoke(stack):
    with stack.client() as api:
        created = api.post("/api/tokens", json={"role": "viewer", "name": "ci"}).json()
    with httpx.Client(base_url=stack.url, headers=bearer(created["token"])) as c:
        assert c.get("/api/devices").status_code == 200
        done = _fleet(stack, "token", "revoke", created["id"])
        assert done.returncode == 0, done.stderr
        assert c.get("/api/devices").status_code == 401
    assert _fleet(stack, "token", "revoke", "no-such-id").returncode == 1


def test_claim_token_enrolls_a_unit_once(stack):
    with stack.client() as api:
        made = api.post("/api/claim-tokens", json={"tags": ["venue-a"], "ttl_s": 600})
        assert made.status_code == 201
        token = made.json()["token"]
        assert api.get("/api/claim-tokens", params={"state": "open"}).json()["items"][0]["id"] == made.json()["id"]
    with _client(stack, "127.0.0.15") as unit:
        assert unit.post("/api/devices/claim", json={"token": token, "id": "Bad Id"}).status_code == 422
        with stack.client() as api:
            api.post("/api/devices", json={"id": "taken-unit"})
        taken = unit.post("/api/devices/claim", json={"token": token, "id": "taken-unit"})
        assert taken.status_code == 409  # and the token is still good:
        r = unit.post("/api/devices/claim", json={"token": token, "id": "self-unit", "name": "Stage left"})
        assert r.status_code == 201, r.text
        device = r.json()
        assert device["id"] == "self-unit" and device["tags"] == ["venue-a"] and device["name"] == "Stage left"
        assert unit.get("/api/me", headers=basic("self-unit", device["secret"])).json()["name"] == "self-unit"
        again = unit.post("/api/devices/claim", json={"token": token, "id": "second-unit"})
        assert again.status_code == 401
        assert unit.post("/api/devices/claim", json={"token": "flc_made-up", "id": "x-unit"}).status_code == 401
    with stack.client() as api:
        listed = {t["id"]: t for t in api.get("/api/claim-tokens").json()["items"]}
        assert listed[made.json()["id"]]["state"] == "used" and listed[made.json()["id"]]["device_id"] == "self-unit"
        assert api.get("/api/devices/second-unit").status_code == 404


def test_cli_claim_token_expires_and_races_have_one_winner(stack):
    done = _fleet(stack, "device", "claim-token", "--tag", "hall", "--ttl", "600")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    assert token.startswith("flc_")
    with _client(stack, "127.0.0.16") as unit, ThreadPoolExecutor(4) as pool:
        codes = list(
            pool.map(
                lambda i: unit.post("/api/devices/claim", json={"token": token, "id": f"race-{i}"}).status_code,
                range(4),
            )
        )
    assert sorted(codes) == [201, 401, 401, 401]

    short = _fleet(stack, "device", "claim-token", "--ttl", "1")
    token = short.stdout.strip().splitlines()[-1]
    time.sleep(1.2)
    with _client(stack, "127.0.0.16") as unit:
        assert unit.post("/api/devices/claim", json={"token": token, "id": "late-unit"}).status_code == 401


@pytest.mark.parametrize("needed", ["viewer", "operator", "admin"])
def test_a_units_identity_holds_no_operator_role(needed):
    """The one rule every role check asks (routes, the terminal, the relay, port forwards): a unit is never an
    operator of any rank, and each operator role includes the ones below it."""
    ranks = ["viewer", "operator", "admin"]
    assert role_allows("unit", needed) is False
    assert [role for role in ranks if role_allows(role, needed)] == ranks[ranks.index(needed) :]
