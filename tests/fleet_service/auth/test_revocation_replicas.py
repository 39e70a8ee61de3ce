"""A unit secret revoked or rotated on one replica stops working on every replica's HTTP routes at once.

Each replica caches a verified unit secret (the slow hash runs once per secret), so the cache must not outlive the
stored secret: `DELETE /api/devices/{id}` or `rotate-secret` on replica A, and replica B refuses the old secret on
the very next request — here `GET /api/turn-credentials`, which would otherwise mint 48 h TURN credentials.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.auth import basic
from tests.support.managed_mosquitto import settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for


@pytest.fixture
def replicas(tmp_path, monkeypatch, mosquitto_factory, postgres_url):
    # Issuing TURN credentials is an HMAC over the shared secret: no TURN server is needed to be given them.
    monkeypatch.setenv("FLEET_TURN_SECRETS", "turn-shared-secret-for-tests")
    monkeypatch.setenv("FLEET_TURN_URLS", "turn:127.0.0.1:3478?transport=udp")
    monkeypatch.setenv("FLEET_TURN_RATE_PER_MINUTE", "0")
    base = {"database_url": postgres_url, **settings_overrides(tmp_path / "mosquitto-files")}
    settings_a = settings_for(tmp_path / "a", replica_id="replica-a", **base)
    settings_b = settings_for(tmp_path / "b", replica_id="replica-b", **base)
    start_managed_mosquitto(tmp_path, mosquitto_factory, settings_a)
    with StackThread(settings_a) as a, StackThread(settings_b) as b:
        wait_for(lambda: a.ctx.link.connected.is_set() and b.ctx.link.connected.is_set(), what="both connected")
        assert a.ctx.turn is not None and b.ctx.turn is not None, a.ctx.turn_off_reason
        yield a, b


def turn_status(stack: StackThread, device_id: str, secret: str) -> int:
    return httpx.get(f"{stack.url}/api/turn-credentials", headers=basic(device_id, secret), timeout=15).status_code


def test_a_unit_deleted_on_one_replica_is_refused_on_the_other_at_once(replicas):
    a, b = replicas
    with a.client() as api_a:
        secret = api_a.post("/api/devices", json={"id": "gone-1"}).json()["secret"]
        assert turn_status(b, "gone-1", secret) == 200  # B has verified (and cached) the secret
        assert turn_status(b, "gone-1", secret) == 200
        assert api_a.delete("/api/devices/gone-1").status_code == 204
    assert turn_status(b, "gone-1", secret) == 401
    assert turn_status(a, "gone-1", secret) == 401


def test_a_secret_rotated_on_one_replica_is_refused_on_the_other_at_once(replicas):
    a, b = replicas
    with a.client() as api_a:
        old = api_a.post("/api/devices", json={"id": "rekeyed-1"}).json()["secret"]
        assert turn_status(b, "rekeyed-1", old) == 200
        r = api_a.post("/api/devices/rekeyed-1/rotate-secret")
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
    assert turn_status(b, "rekeyed-1", old) == 401
    assert turn_status(b, "rekeyed-1", new) == 200
    assert turn_status(b, "rekeyed-1", old) == 401  # the new secret in B's cache does not let the old one back in
    assert turn_status(a, "rekeyed-1", old) == 401 and turn_status(a, "rekeyed-1", new) == 200
