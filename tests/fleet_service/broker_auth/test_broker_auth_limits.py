"""The broker-auth routes are off unless configured, and failures are budgeted like every other credential.

Without FLEET_BROKER_AUTH_TOKEN every route answers 404, whatever is sent. With it, wrong broker tokens count
against the caller's address (401, then 429), and wrong unit credentials count per MQTT client (its address as the
broker reports it): past the budget no slow hash runs, so only a secret this replica verified before gets in.
"""

from __future__ import annotations

import httpx
import pytest

from tests.fleet_service.broker_auth.shapes import SERVICE_SECRET, TOKEN, Shape, enroll
from tests.fleet_service.broker_auth.test_broker_auth_http import ROUTES
from tests.support.auth import bearer
from tests.support.stack import StackThread, settings_for

BUDGET = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = settings_for(
        tmp_path_factory.mktemp("broker-auth-limits"),
        broker_auth_token=TOKEN,
        service_secret=SERVICE_SECRET,
        auth_failures_per_source=BUDGET,
    )
    with StackThread(settings) as st:
        yield st


def test_routes_answer_404_when_no_broker_token_is_configured(tmp_path):
    with StackThread(settings_for(tmp_path, service_secret=SERVICE_SECRET)) as st:
        for route in ROUTES:
            for headers in ({}, bearer(TOKEN), bearer("test-admin-token-0123456789abcdef")):
                r = httpx.post(st.url + route, json={"username": "u", "password": "p"}, headers=headers, timeout=15)
                assert r.status_code == 404, (route, r.status_code, r.text)
                r = httpx.post(st.url + route, content=b"{not json", headers=headers, timeout=15)
                assert r.status_code == 404, (route, r.status_code, r.text)


def test_a_short_broker_token_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="broker_auth_token"):
        settings_for(tmp_path, broker_auth_token="short")


def test_wrong_unit_secrets_from_one_client_stop_the_slow_hash_there(stack):
    known, fresh = "bl-known", "bl-fresh"
    known_secret, fresh_secret = enroll(stack, known), enroll(stack, fresh)
    noisy = Shape("emqx", stack.url, peer="198.51.100.7")
    assert noisy.login(known, known_secret)  # verified (and cached) before the noise
    for i in range(BUDGET):
        assert not noisy.login(fresh, f"guess-{i}")
    assert noisy.login(known, known_secret)  # a verified secret still gets in from there ...
    assert not noisy.login(fresh, fresh_secret)  # ... an unverified one waits out the window there
    assert Shape("emqx", stack.url, peer="198.51.100.8").login(fresh, fresh_secret)  # from elsewhere: fine
    assert noisy.login(fresh, fresh_secret)  # and now verified, from there too


def test_wrong_broker_tokens_are_budgeted_per_address(stack):
    body = {"username": "u", "password": "p", "clientid": "u"}
    statuses = [
        httpx.post(stack.url + ROUTES[0], json=body, headers=bearer(f"wrong-{i}"), timeout=15).status_code
        for i in range(BUDGET + 2)
    ]
    assert statuses == [401] * BUDGET + [429, 429]
    r = httpx.post(stack.url + ROUTES[0], json=body, headers=bearer("wrong-again"), timeout=15)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # the right token is always let in: the broker is not locked out by someone else's guesses from its address
    r = httpx.post(stack.url + ROUTES[0], json=body, headers=bearer(TOKEN), timeout=15)
    assert r.status_code == 200 and r.json() == {"result": "deny", "is_superuser": False}
