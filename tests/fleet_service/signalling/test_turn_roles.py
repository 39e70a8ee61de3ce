"""Who may mint TURN credentials, and what /metrics says about who did.

Units and operators or admins may; viewers may not: the relay (the only signalling path to a unit) needs the
operator role, so a viewer has no WebRTC session to use TURN for, and a credential would only lend it our TURN
server's bandwidth for up to 48 h. /metrics counts issues by the kind of caller, never by user or token name.
Real service, real sockets, TURN configured (no coturn needed to mint).
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.auth import add_user, basic, bearer, login, token_for
from tests.support.stack import StackThread, settings_for

ROUTES = ("/api/turn-credentials", "/turn-credentials")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLEET_TURN_SECRETS", "turn-roles-shared-secret")
        env.setenv("FLEET_TURN_URLS", "turn:127.0.0.1:3478?transport=udp")
        env.setenv("FLEET_TURN_RATE_PER_MINUTE", "0")
        with StackThread(settings_for(tmp_path_factory.mktemp("turn-roles"))) as st:
            yield st


def _status(
    stack: StackThread, path: str, headers: dict[str, str] | None = None, client: httpx.Client | None = None
) -> int:
    if client is not None:
        return client.get(path).status_code
    with httpx.Client(base_url=stack.url, timeout=15) as c:
        return c.get(path, headers=headers or {}).status_code


def test_units_operators_and_admins_may_mint_turn_credentials_viewers_may_not(stack):
    with stack.client() as api:
        secret = api.post("/api/devices", json={"id": "turn-unit"}).json()["secret"]
    viewer_password = add_user(stack, "turn-viewer-user", "viewer")
    operator_password = add_user(stack, "turn-operator-user", "operator")
    viewer_session = login(stack, "turn-viewer-user", viewer_password)
    operator_session = login(stack, "turn-operator-user", operator_password)
    callers = {
        "none": ({}, None, 401),
        "unit": (basic("turn-unit", secret), None, 200),
        "wrong unit secret": (basic("turn-unit", "not-" + secret), None, 401),
        "viewer token": (bearer(token_for(stack, "viewer", "turn-viewer")), None, 403),
        "viewer session": ({}, viewer_session.client, 403),
        "operator token": (bearer(token_for(stack, "operator", "turn-operator")), None, 200),
        "operator session": ({}, operator_session.client, 200),
        "admin token": (bearer(token_for(stack, "admin", "turn-admin")), None, 200),
    }
    try:
        got = {
            (who, path): _status(stack, path, headers, client)
            for who, (headers, client, _) in callers.items()
            for path in ROUTES
        }
    finally:
        viewer_session.client.close()
        operator_session.client.close()
    expected = {(who, path): status for who, (_, _, status) in callers.items() for path in ROUTES}
    assert got == expected


def test_metrics_count_turn_issues_by_kind_of_caller_without_names(stack):
    password = add_user(stack, "dana-dashboard-person", "operator")
    browser = login(stack, "dana-dashboard-person", password)
    token = token_for(stack, "operator", "night-shift-automation")
    with stack.client() as api:
        secret = api.post("/api/devices", json={"id": "turn-named-unit"}).json()["secret"]
    try:
        assert browser.client.get("/api/turn-credentials").status_code == 200
    finally:
        browser.client.close()
    assert _status(stack, "/api/turn-credentials", bearer(token)) == 200
    assert _status(stack, "/turn-credentials", basic("turn-named-unit", secret)) == 200
    with httpx.Client(base_url=stack.url, headers=bearer(token_for(stack, "viewer", "scraper"))) as scraper:
        metrics = scraper.get("/metrics")
    assert metrics.status_code == 200
    for name in ("dana-dashboard-person", "night-shift-automation", "turn-named-unit", "identity="):
        assert name not in metrics.text, name
    issued = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.text.splitlines()
        if line.startswith("fleet_turn_credentials_issued_by_kind_total{")
    }
    for kind in ("user", "token", "unit"):
        assert issued.get(f'fleet_turn_credentials_issued_by_kind_total{{kind="{kind}"}}', 0) >= 1, issued
