"""Guesses sent in parallel get no more tries than guesses sent one by one.

An attempt is counted against its budgets before its credential is checked, so 60 wrong credentials sent at the
same moment from one address get at most the budget of 401s and 429 for the rest; past the lock-out of an
address and username the password is not even checked. Real service, real sockets, 60 threads released at once;
each test uses its own loopback source address (127.0.2.x).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from fleet_service.api.routes import auth as auth_routes
from fleet_service.auth.rate_limits import FailureLimiter
from fleet_service.settings import ServiceSettings
from tests.support.auth import add_user, basic, bearer, token_for
from tests.support.stack import StackThread, settings_for

DEFAULTS = ServiceSettings.model_fields
PER_SOURCE = DEFAULTS["auth_failures_per_source"].default  # 20
PER_LOGIN = DEFAULTS["auth_failures_per_user"].default  # 5, per source address and username
PARALLEL = 60


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with StackThread(settings_for(tmp_path_factory.mktemp("parallel"))) as st:
        yield st


def _at_once(stack: StackThread, source: str, send: Callable[[httpx.Client, int], httpx.Response]) -> Counter:
    """Send PARALLEL requests from `source`, each on its own connection, all released at the same moment."""
    clients = [
        httpx.Client(base_url=stack.url, timeout=30, transport=httpx.HTTPTransport(local_address=source))
        for _ in range(PARALLEL)
    ]
    for c in clients:  # connect first, so the requests themselves start together
        assert c.get("/health").status_code in (200, 503)
    start = threading.Barrier(PARALLEL)

    def one(i: int) -> int:
        start.wait()
        r = send(clients[i], i)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
        return r.status_code

    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            return Counter(pool.map(one, range(PARALLEL)))
    finally:
        for c in clients:
            c.close()


def _login(c: httpx.Client, username: str, password: str) -> httpx.Response:
    return c.post("/api/auth/login", json={"username": username, "password": password})


@pytest.fixture
def password_checks(monkeypatch) -> list[str]:
    """The usernames whose password the login route really checked (the slow hash)."""
    checked: list[str] = []
    real = auth_routes.check_password

    def counting(engine, username: str, password: str):
        checked.append(username)
        return real(engine, username, password)

    monkeypatch.setattr(auth_routes, "check_password", counting)
    return checked


def test_parallel_wrong_passwords_for_one_user_get_the_budget_of_checks_and_429(stack, password_checks):
    password = add_user(stack, "par-ann", "viewer")
    statuses = _at_once(stack, "127.0.2.1", lambda c, i: _login(c, "par-ann", f"guess {i}"))
    assert statuses[401] <= PER_LOGIN and statuses[429] >= PARALLEL - PER_LOGIN, statuses
    assert set(statuses) <= {401, 429}, statuses
    assert len(password_checks) <= PER_LOGIN, len(password_checks)  # the rest were refused without a check
    with httpx.Client(base_url=stack.url, transport=httpx.HTTPTransport(local_address="127.0.2.2")) as clean:
        assert _login(clean, "par-ann", password).status_code == 200  # the account itself is not locked


def test_parallel_wrong_passwords_for_many_users_get_the_source_budget(stack):
    statuses = _at_once(stack, "127.0.2.3", lambda c, i: _login(c, f"par-nobody-{i}", "guess"))
    assert statuses[401] <= PER_SOURCE and statuses[429] >= PARALLEL - PER_SOURCE, statuses
    assert set(statuses) <= {401, 429}, statuses


def test_parallel_wrong_bearer_tokens_get_the_source_budget(stack):
    statuses = _at_once(stack, "127.0.2.4", lambda c, i: c.get("/api/me", headers=bearer(f"flt_par-wrong-{i}")))
    assert statuses[401] <= PER_SOURCE and statuses[429] >= PARALLEL - PER_SOURCE, statuses
    assert set(statuses) <= {401, 429}, statuses


def test_parallel_wrong_unit_secrets_get_the_source_budget(stack):
    with stack.client() as api:
        secret = api.post("/api/devices", json={"id": "par-unit"}).json()["secret"]
    statuses = _at_once(stack, "127.0.2.5", lambda c, i: c.get("/api/me", headers=basic("par-unit", f"wrong-{i}")))
    assert statuses[401] <= PER_SOURCE and statuses[429] >= PARALLEL - PER_SOURCE, statuses
    assert set(statuses) <= {401, 429}, statuses
    with httpx.Client(base_url=stack.url, transport=httpx.HTTPTransport(local_address="127.0.2.5")) as c:
        assert c.get("/api/me", headers=basic("par-unit", secret)).json()["kind"] == "device"  # still let in


def test_valid_credentials_in_parallel_with_wrong_ones_are_all_let_in(stack):
    """Reserving a try before the check must not turn a valid credential away: 30 right, 30 wrong at once."""
    token = token_for(stack, "viewer", "par-viewer")
    statuses = _at_once(
        stack, "127.0.2.6", lambda c, i: c.get("/api/me", headers=bearer(token if i % 2 else f"flt_par-wrong-{i}"))
    )
    assert statuses[200] == PARALLEL // 2, statuses
    assert statuses[401] <= PER_SOURCE and statuses[401] + statuses[429] == PARALLEL // 2, statuses


def test_tries_being_checked_use_the_budget_and_a_valid_one_gives_its_place_back():
    now = [1000.0]
    limiter = FailureLimiter(2, 60.0, clock=lambda: now[0])
    first, second = limiter.attempt("ip"), limiter.attempt("ip")
    assert not first.over and not second.over
    third = limiter.attempt("ip")  # nothing failed yet, but two tries are being checked: no place left
    assert third.over and FailureLimiter.retry_after(third.wait) == "1"
    first.passed()  # a valid credential: its place is free again
    assert third.failed() > 0  # ... yet a try that began past the budget stays a 429
    assert limiter.attempt("ip").over  # one failure and one try in flight
    assert second.failed() == 0  # within the budget: a 401
    with pytest.raises(RuntimeError):
        second.failed()
    with pytest.raises(OSError), limiter.attempt("other"):
        raise OSError("the database went away during the check")
    assert not limiter.attempt("other").over and limiter.blocked("other") == 0  # an error is no failure
