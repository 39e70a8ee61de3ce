"""Brute-force limits count failures only: a valid credential is never refused because other attempts from the
same address failed, while further wrong guesses from there keep getting 429.

Real service, real sockets, default budgets (20 failures per source address, 5 failed logins per address and
username). Each test uses its own loopback source address (127.0.1.x), so budgets do not leak between tests.
"""

from __future__ import annotations

import httpx
import pytest

from fleet_service.auth.rate_limits import FailureLimiter
from tests.support.auth import add_user, basic, bearer, token_for
from tests.support.stack import StackThread, settings_for

PER_SOURCE = 20
PER_LOGIN = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = settings_for(tmp_path_factory.mktemp("limits"))
    assert (settings.auth_failures_per_source, settings.auth_failures_per_user) == (PER_SOURCE, PER_LOGIN)
    with StackThread(settings) as st:
        yield st


def _client(stack: StackThread, source: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=15, transport=httpx.HTTPTransport(local_address=source))


def _login(c: httpx.Client, username: str, password: str) -> httpx.Response:
    return c.post("/api/auth/login", json={"username": username, "password": password})


def _throttled(r: httpx.Response) -> None:
    assert r.status_code == 429, (r.status_code, r.text)
    assert int(r.headers["Retry-After"]) >= 1


def test_failed_logins_do_not_refuse_the_addresses_valid_bearer_token(stack):
    token = token_for(stack, "viewer")
    with _client(stack, "127.0.1.1") as c:
        for i in range(PER_SOURCE):
            assert _login(c, f"guess{i}", "wrong password").status_code == 401
        _throttled(_login(c, "guess-more", "wrong password"))
        assert c.get("/api/me", headers=bearer(token)).status_code == 200
        assert c.get("/api/devices", headers=bearer(token)).status_code == 200
        _throttled(c.get("/api/me", headers=bearer("flt_a-wrong-guess")))
        _throttled(_login(c, "guess-again", "wrong password"))
        assert c.get("/api/me", headers=bearer(token)).status_code == 200  # still, after more failures


def test_wrong_bearer_tokens_do_not_refuse_valid_tokens_units_or_logins_from_the_same_address(stack):
    token = token_for(stack, "operator")
    password = add_user(stack, "nat-user", "viewer")
    with stack.client() as api:
        secret = api.post("/api/devices", json={"id": "nat-unit"}).json()["secret"]
    with _client(stack, "127.0.1.2") as c:
        for i in range(PER_SOURCE):
            assert c.get("/api/me", headers=bearer(f"flt_wrong-{i}")).status_code == 401
        for i in range(5):
            _throttled(c.get("/api/me", headers=bearer(f"flt_still-wrong-{i}")))
        assert c.get("/api/me", headers=bearer(token)).json()["role"] == "operator"
        assert c.get("/api/me", headers=basic("nat-unit", secret)).json()["kind"] == "device"
        _throttled(c.get("/api/me", headers=basic("nat-unit", "not-" + secret)))
        assert _login(c, "nat-user", password).status_code == 200
        _throttled(_login(c, "nat-user", "not the password"))


def test_a_valid_claim_token_is_redeemed_from_a_throttled_address(stack):
    with stack.client() as api:
        claim = api.post("/api/claim-tokens", json={}).json()["token"]
    with _client(stack, "127.0.1.3") as c:
        for i in range(PER_SOURCE):
            assert c.post("/api/devices/claim", json={"token": f"wrong-{i}", "id": "claimer-1"}).status_code == 401
        _throttled(c.post("/api/devices/claim", json={"token": "wrong-again", "id": "claimer-1"}))
        assert c.post("/api/devices/claim", json={"token": claim, "id": "claimer-1"}).status_code == 201
        _throttled(c.post("/api/devices/claim", json={"token": "wrong-after", "id": "claimer-2"}))


def test_failed_logins_lock_that_username_at_that_address_only(stack):
    password = add_user(stack, "ann", "viewer")
    other = add_user(stack, "bob", "viewer")
    with _client(stack, "127.0.1.4") as c:
        for _ in range(PER_LOGIN):
            assert _login(c, "ann", "wrong password").status_code == 401
        _throttled(_login(c, "ann", password))  # the lock-out: here even the right password waits
        _throttled(_login(c, "ANN", password))  # the username is matched without case
        assert _login(c, "bob", other).status_code == 200  # another account from the same address
    with _client(stack, "127.0.1.5") as c:
        assert _login(c, "ann", password).status_code == 200  # the account itself is not locked for everyone


def test_failed_says_whether_a_failure_was_past_the_budget_and_how_long_to_wait():
    now = [1000.0]
    limiter = FailureLimiter(2, 60.0, clock=lambda: now[0])
    assert limiter.failed("ip") == 0 and limiter.failed("ip") == 0  # within the budget: a 401 each
    now[0] += 10
    assert limiter.failed("ip") == 50.0  # past it: a 429, until the second failure leaves the window
    now[0] += 50
    assert limiter.blocked("ip") == 0
    assert limiter.failed("ip") == 0
    assert limiter.blocked("ip") == 10.0  # the failure answered 429 counted too: guessing on keeps it blocked
