"""A NUL character in a path, a query or a body field is never a 500. PostgreSQL cannot store or even compare text
holding one, so there it is a 422 that says so; SQLite takes it like any other character."""

from __future__ import annotations

import base64

import pytest

from tests.fleet_service.stack_on import stack_on

UNIT = "nul-1"
NUL = "a\x00b"
REQUESTS = [
    ("GET", "/api/devices", {"params": {"q": NUL}}),
    ("GET", "/api/devices/a%00b", {}),
    ("GET", "/api/devices/a%00b/status", {}),
    ("GET", f"/api/devices/{UNIT}/logs", {"params": {"q": NUL, "source": NUL}}),
    ("GET", "/api/audit", {"params": {"actor": NUL, "target": NUL, "route": NUL}}),
    ("GET", "/api/commands/a%00b", {}),
    ("GET", "/api/rollouts/a%00b", {}),
    ("PATCH", f"/api/devices/{UNIT}", {"json": {"name": NUL}}),
    ("POST", "/api/devices", {"json": {"id": "nul-2", "name": NUL}}),
    ("POST", "/api/tokens", {"json": {"role": "viewer", "name": NUL}}),
    ("POST", "/api/rollouts", {"json": {"command": "ping", "device_ids": [UNIT], "name": NUL}}),
    ("POST", "/api/auth/login", {"json": {"username": NUL, "password": "some password"}}),
    ("PATCH", "/api/users/a%00b", {"json": {"role": "viewer"}}),
    ("DELETE", "/api/users/a%00b", {}),
    ("DELETE", "/api/tokens/a%00b", {}),
    ("DELETE", "/api/claim-tokens/a%00b", {}),
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory):
    with stack_on(request.param, tmp_path_factory.mktemp("nul")) as st:
        with st.client() as api:
            assert api.post("/api/devices", json={"id": UNIT}).status_code == 201
        st.kind = request.param
        yield st


@pytest.mark.parametrize(("method", "path", "kw"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_nul_characters_are_refused_or_taken_never_a_500(stack, method, path, kw):
    with stack.client() as api:
        r = api.request(method, path, **kw)
    assert r.status_code < 500, r.text
    if stack.kind == "postgres":
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text


def test_a_unit_id_with_a_nul_is_a_wrong_credential(stack):
    credentials = base64.b64encode(b"a\x00b:secret").decode()
    with stack.client() as api:
        r = api.get("/api/me", headers={"Authorization": f"Basic {credentials}"})
    assert r.status_code == 401, r.text
