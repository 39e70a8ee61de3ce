"""TURN credentials through the HTTP API: auth, shapes, TTL clamping, and a real coturn allocation."""

from __future__ import annotations

import base64
import shutil

import httpx
import pytest

from tests.support.services import require
from tests.support.stack import StackThread, settings_for
from tests.turn_service.coturn import Coturn

SECRET = "turn-shared-secret-for-tests"


@pytest.fixture
def turn_stack(tmp_path, monkeypatch):
    require(shutil.which("turnserver") is not None, "coturn is not installed (apt install coturn)")
    coturn = Coturn(tmp_path / "coturn", [SECRET]).start()
    monkeypatch.setenv("FLEET_TURN_SECRETS", SECRET)
    monkeypatch.setenv("FLEET_TURN_URLS", f"stun:127.0.0.1:{coturn.port},turn:127.0.0.1:{coturn.port}?transport=udp")
    monkeypatch.setenv("FLEET_TURN_RATE_BURST", "3")
    monkeypatch.setenv("FLEET_TURN_RATE_PER_MINUTE", "1")
    try:
        with StackThread(settings_for(tmp_path)) as stack:
            yield stack, coturn
    finally:
        coturn.stop()


def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def test_unit_gets_credentials_that_coturn_accepts(turn_stack):
    stack, coturn = turn_stack
    with stack.client() as api:
        secret = api.post("/api/devices", json={"id": "cam-1"}).json()["secret"]
        assert httpx.get(f"{stack.url}/api/turn-credentials").status_code == 401
        assert httpx.get(f"{stack.url}/api/turn-credentials", headers=_basic("cam-1", "wrong")).status_code == 401

        r = httpx.get(f"{stack.url}/api/turn-credentials?ttl=999999999", headers=_basic("cam-1", secret))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ttl"] == 48 * 3600  # clamped
        stun, turn = body["iceServers"]
        assert stun == {"urls": [f"stun:127.0.0.1:{coturn.port}"]}
        assert "cam-1" not in turn["username"]  # opaque id on the wire
        assert coturn.uclient(turn["username"], turn["credential"]).returncode == 0

        legacy = httpx.get(f"{stack.url}/turn-credentials", headers=_basic("cam-1", secret)).json()
        assert isinstance(legacy["iceServers"], dict) and legacy["iceServers"]["username"]

        # Operators may fetch too; each issue is counted per kind of caller; the burst limit answers 429.
        assert api.get("/api/turn-credentials").status_code == 200
        statuses = [api.get("/api/turn-credentials").status_code for _ in range(4)]
        assert 429 in statuses
        metrics = api.get("/metrics").text
        assert 'fleet_turn_credentials_issued_by_kind_total{kind="unit"} 2' in metrics and "cam-1" not in metrics


def test_turn_off_gives_a_clear_503(tmp_path, monkeypatch):
    monkeypatch.delenv("FLEET_TURN_URLS", raising=False)
    with StackThread(settings_for(tmp_path)) as stack, stack.client() as api:
        r = api.get("/api/turn-credentials")
        assert r.status_code == 503 and "FLEET_TURN_URLS" in r.json()["detail"]
