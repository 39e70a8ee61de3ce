"""Strangers cannot fill the audit log, and the audit log does not grow forever.

Changes answered without a valid credential are audit rows only within a budget per source address (30 per
window by default); past it they are counted in `fleet_http_unauthenticated_changes_total` and routes that need
a credential answer 429. Retention deletes audit entries older than FLEET_AUDIT_RETENTION_DAYS, in batches.
Real service, real sockets; each test uses its own loopback source address (127.0.3.x).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from fleet_service.auth.models import AuditEntry
from fleet_service.devices.retention import DAY_MS, Keep, prune
from fleet_service.settings import open_database
from protocol.ids import now_ms
from tests.support.auth import bearer, token_for
from tests.support.stack import StackThread, settings_for

BUDGET = 30
FLOOD = 500


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = settings_for(tmp_path_factory.mktemp("audit-noise"))
    assert settings.unauthenticated_changes_per_source == BUDGET
    with StackThread(settings) as st:
        yield st


def _client(stack: StackThread, source: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=15, transport=httpx.HTTPTransport(local_address=source))


def _rows_from(stack: StackThread, source: str) -> int:
    with stack.ctx.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.source_ip == source)
        ).scalar_one()


def _counted(metrics: str, route: str) -> Counter:
    pattern = re.compile(
        r'^fleet_http_unauthenticated_changes_total\{route="' + re.escape(route) + r'",status="(\d+)"\} (\S+)$', re.M
    )
    return Counter({int(status): int(float(value)) for status, value in pattern.findall(metrics)})


def test_an_anonymous_flood_is_counted_not_stored_and_answered_429(stack):
    with stack.client() as api:
        before = _counted(api.get("/metrics").text, "/api/devices/{device_id}/reboot")
    with _client(stack, "127.0.3.1") as c:
        statuses = [c.post(f"/api/devices/unit-{i % 7}/reboot").status_code for i in range(FLOOD)]
    assert statuses[:BUDGET] == [401] * BUDGET and set(statuses[BUDGET:]) == {429}, Counter(statuses)
    assert _rows_from(stack, "127.0.3.1") == BUDGET  # the first ones are there to read, the rest only counted
    with stack.client() as api:
        counted = _counted(api.get("/metrics").text, "/api/devices/{device_id}/reboot") - before
    assert counted == Counter({401: BUDGET, 429: FLOOD - BUDGET}), counted


def test_a_parallel_anonymous_flood_stores_at_most_the_budget(stack):
    def burst(_: int) -> list[int]:
        with _client(stack, "127.0.3.2") as c:
            return [c.post("/api/auth/logout").status_code for _ in range(25)]

    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(s for batch in pool.map(burst, range(8)) for s in batch)
    assert statuses == Counter({204: 200}), statuses  # logout needs no credential: never refused
    assert _rows_from(stack, "127.0.3.2") == BUDGET


def test_a_valid_credential_from_a_flooding_address_is_served_and_audited(stack):
    token = token_for(stack, "admin", "noise-admin")
    with _client(stack, "127.0.3.3") as c:
        for _ in range(BUDGET):
            assert c.delete("/api/devices/nobody").status_code == 401
        assert c.delete("/api/devices/nobody").status_code == 429
        assert c.post("/api/devices", json={"id": "noise-unit"}, headers=bearer(token)).status_code == 201
        assert c.delete("/api/devices/nobody").status_code == 429
    with stack.client() as api:
        rows = api.get("/api/audit", params={"actor": "token:noise-admin"}).json()["items"]
    assert [(r["path"], r["status"], r["source_ip"]) for r in rows] == [("/api/devices", 201, "127.0.3.3")]
    assert _rows_from(stack, "127.0.3.3") == BUDGET + 1


def _audit(ts: int, path: str) -> dict:
    return {
        "ts": ts,
        "actor": "token:ci",
        "role": "admin",
        "method": "POST",
        "route": "/api/devices",
        "path": path,
        "target": "",
        "status": 201,
        "source_ip": "127.0.0.1",
    }


def test_prune_deletes_audit_entries_past_retention_in_batches(engine):
    now = now_ms()
    with engine.begin() as conn:
        conn.execute(
            AuditEntry.__table__.insert(), [_audit(now - age * DAY_MS, f"/{age}") for age in (400, 366, 364, 0)]
        )
    assert "audit" not in prune(engine, Keep(), batch=1)  # audit not asked
    assert prune(engine, Keep(audit_days=365), batch=1)["audit"] == 2
    with engine.connect() as conn:
        assert sorted(r.path for r in conn.execute(AuditEntry.__table__.select())) == ["/0", "/364"]
    assert prune(engine, Keep(audit_days=0))["audit"] == 0  # 0 keeps everything


def test_the_services_retention_loop_deletes_old_audit_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_AUDIT_RETENTION_DAYS", "30")
    settings = settings_for(tmp_path)
    assert settings.audit_retention_days == 30
    engine = open_database(settings.database_url)
    now = now_ms()
    with engine.begin() as conn:
        conn.execute(AuditEntry.__table__.insert(), [_audit(now - age * DAY_MS, f"/{age}") for age in (90, 31, 29, 1)])
    engine.dispose()
    with StackThread(settings) as stack, stack.client() as api:
        deadline = time.monotonic() + 20
        while True:
            paths = sorted(r["path"] for r in api.get("/api/audit", params={"limit": 500}).json()["items"])
            if paths == ["/1", "/29"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert paths == ["/1", "/29"]
        assert 'fleet_retention_deleted_total{kind="audit"} 2' in api.get("/metrics").text
