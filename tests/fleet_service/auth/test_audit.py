"""The audit log: every state-changing call (who, what, target, when, result), readable and filterable by admins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import text

from tests.support.auth import add_user, bearer, login
from tests.support.stack import StackThread, settings_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with StackThread(settings_for(tmp_path_factory.mktemp("audit"))) as st:
        yield st


def _entries(api: httpx.Client, **params) -> list[dict]:
    r = api.get("/api/audit", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_each_state_changing_call_is_recorded_before_its_answer(stack):
    with stack.client() as api:
        admin_token = api.post("/api/tokens", json={"role": "admin", "name": "ci-admin"}).json()["token"]
        operator_token = api.post("/api/tokens", json={"role": "operator", "name": "ops-bot"}).json()["token"]
        viewer_token = api.post("/api/tokens", json={"role": "viewer", "name": "wall"}).json()["token"]
    password = add_user(stack, "olga", "operator")
    started = int(time.time() * 1000)
    with httpx.Client(base_url=stack.url, headers=bearer(admin_token)) as admin:
        assert admin.post("/api/devices", json={"id": "aud-1"}).status_code == 201
    browser = login(stack, "olga", password)
    assert browser.request("PATCH", "/api/devices/aud-1", json={"name": "Hall"}).status_code == 200
    with httpx.Client(base_url=stack.url, headers=bearer(operator_token)) as op:
        assert op.post("/api/devices/aud-1/restart").status_code == 202
        assert op.get("/api/devices/aud-1").status_code == 200  # reads are not audited
    with httpx.Client(base_url=stack.url, headers=bearer(viewer_token)) as viewer:
        assert viewer.post("/api/devices/aud-1/reboot").status_code == 403
    with httpx.Client(base_url=stack.url) as anonymous:
        assert anonymous.delete("/api/devices/aud-1").status_code == 401
        assert anonymous.post("/api/auth/login", json={"username": "olga", "password": "nope"}).status_code == 401

    with stack.client() as api:
        rows = [e for e in _entries(api) if e["ts"] >= started]
    picked = [(e["actor"], e["role"], e["method"], e["route"], e["path"], e["target"], e["status"]) for e in rows]
    assert picked == [  # newest first
        ("anonymous", "", "POST", "/api/auth/login", "/api/auth/login", "olga", 401),
        ("anonymous", "", "DELETE", "/api/devices/{device_id}", "/api/devices/aud-1", "aud-1", 401),
        ("token:wall", "viewer", "POST", "/api/devices/{device_id}/reboot", "/api/devices/aud-1/reboot", "aud-1", 403),
        (
            "token:ops-bot",
            "operator",
            "POST",
            "/api/devices/{device_id}/restart",
            "/api/devices/aud-1/restart",
            "aud-1",
            202,
        ),
        ("user:olga", "operator", "PATCH", "/api/devices/{device_id}", "/api/devices/aud-1", "aud-1", 200),
        ("user:olga", "operator", "POST", "/api/auth/login", "/api/auth/login", "olga", 200),
        ("token:ci-admin", "admin", "POST", "/api/devices", "/api/devices", "aud-1", 201),
    ]
    assert all(e["source_ip"] == "127.0.0.1" and e["time"].endswith("Z") for e in rows)


def test_the_log_holds_no_bodies_secrets_or_passwords(stack):
    with stack.client() as api:
        secret = api.post("/api/devices", json={"id": "aud-secret"}).json()["secret"]
        rotated = api.post("/api/devices/aud-secret/rotate-secret").json()["secret"]
        token = api.post("/api/tokens", json={"role": "viewer"}).json()["token"]
        claim = api.post("/api/claim-tokens", json={"ttl_s": 600}).json()["token"]
        api.post("/api/users", json={"username": "pia", "password": "pia's very own password", "role": "viewer"})
    with httpx.Client(base_url=stack.url) as c:
        claimed = c.post("/api/devices/claim", json={"token": claim, "id": "aud-claimed"}).json()["secret"]
        c.post("/api/auth/login", json={"username": "pia", "password": "a wrong password"})
        c.post("/api/auth/login", json={"username": "typed my password here", "password": "x"})
        browser_csrf = c.post(
            "/api/auth/login", json={"username": "pia", "password": "pia's very own password"}
        ).json()["csrf_token"]
    with stack.ctx.engine.connect() as conn:
        table = json.dumps([list(r) for r in conn.execute(text("SELECT * FROM audit_entry")).all()])
    with stack.client() as api:
        shown = json.dumps(_entries(api))
    for needle in (
        secret,
        rotated,
        token,
        claim,
        claimed,
        "pia's very own password",
        "a wrong password",
        "typed my password here",
        browser_csrf,
    ):
        assert needle not in table and needle not in shown, needle
    assert '"aud-claimed"' in shown and "claim:" in shown  # the self-enrollment is there, by its claim token


def test_filters_and_paging(stack):
    with stack.client() as api:
        for i in range(5):
            api.post("/api/devices", json={"id": f"page-{i}"})
        api.post("/api/devices", json={"id": "page-0"})  # 409
        everything = api.get("/api/audit", params={"limit": 500}).json()
        assert everything["total"] == len(everything["items"]) >= 6
        page = api.get("/api/audit", params={"route": "/api/devices", "limit": 2, "offset": 1}).json()
        assert page["total"] >= 6 and len(page["items"]) == 2 and page["offset"] == 1
        assert [e["target"] for e in page["items"]] == ["page-4", "page-3"]  # after the newest (the 409)
        assert [e["status"] for e in _entries(api, target="page-0")] == [409, 201]
        assert {e["status"] for e in _entries(api, failed="true")} >= {409}
        assert all(e["status"] < 400 for e in _entries(api, failed="false"))
        assert all(e["method"] == "DELETE" for e in _entries(api, method="DELETE"))
        assert all(e["actor"] == "bootstrap:admin" for e in _entries(api, actor="bootstrap:admin"))
        newest = everything["items"][0]["ts"]
        assert _entries(api, since=str(newest + 1)) == []
        assert len(_entries(api, until=str(newest))) == everything["total"]
        for bad in ({"method": "GET"}, {"since": "yesterday"}, {"limit": 0}, {"status": 42}):
            r = api.get("/api/audit", params=bad)
            assert r.status_code == 422 and r.json()["detail"], bad


def test_command_line_changes_are_recorded_too(stack):
    env = {**os.environ, "FLEET_DATABASE_URL": stack.settings.database_url, "FLEET_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-m", "fleet_cli.main", "user", "add", "quinn", "--role", "viewer", "--password-stdin"],
        input="quinn's password\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with stack.client() as api:
        rows = _entries(api, method="CLI")
    assert [(e["route"], e["target"], e["role"]) for e in rows] == [("fleet user add", "quinn", "admin")]
    assert rows[0]["actor"].startswith("cli:")
