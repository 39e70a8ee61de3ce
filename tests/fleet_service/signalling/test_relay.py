"""Signalling relay: controllers on real WebSockets, a unit on real MQTT, through the real service."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from protocol.topics import Kind
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN
from tests.support.unit import RawUnit


def _ws(fleet, device_id: str, token: str = ADMIN_TOKEN):
    url = fleet.stack.url.replace("http://", "ws://") + f"/api/devices/{device_id}/relay"
    return connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10)


def _close_code(fleet, device_id: str, token: str = ADMIN_TOKEN) -> int:
    with _ws(fleet, device_id, token) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    return closed.value.rcvd.code


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_two_controllers_and_a_unit_exchange_messages(fleet):
    secret = fleet.enroll("cam-7")
    unit = RawUnit(fleet.mqtt_port, "cam-7", secret).connect()
    unit.subscribe(Kind.RELAY_DOWN)
    unit.birth()
    wait_for(lambda: fleet.status("cam-7")["online"], what="unit online")

    with _ws(fleet, "cam-7") as a, _ws(fleet, "cam-7") as b:
        wait_for(lambda: fleet.api.get("/api/relay/health").json()["controllers"] == 2, what="2 controllers")
        assert fleet.api.get("/api/relay/health").json() == {"status": "ok", "units": 1, "controllers": 2}
        offer = json.dumps({"type": "offer", "sdp": "v=0..."})
        a.send(offer)
        got = unit.received.get(timeout=10)
        assert got.topic == "fleet/cam-7/relay/down" and got.payload.decode() == offer

        answer = json.dumps({"type": "answer", "sdp": "v=0 answer"})
        unit.publish(Kind.RELAY_UP, answer.encode())
        assert a.recv(timeout=10) == answer
        assert b.recv(timeout=10) == answer

        a.send("x" * (64 * 1024 + 1))  # over the size limit: a clean close with its own code
        with pytest.raises(ConnectionClosed) as closed:
            a.recv(timeout=5)
        assert closed.value.rcvd.code == 4413
    wait_for(lambda: fleet.api.get("/api/relay/health").json()["controllers"] == 0, what="controllers gone")


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_relay_refuses_cleanly(fleet):
    viewer = fleet.api.post("/api/tokens", json={"role": "viewer"}).json()["token"]
    secret = fleet.enroll("cam-8")
    assert _close_code(fleet, "cam-8") == 4409  # enrolled but offline
    assert _close_code(fleet, "nope-1") == 4404
    assert _close_code(fleet, "cam-8", viewer) == 4403
    assert _close_code(fleet, "cam-8", "flt_wrong") == 4401
    unit = RawUnit(fleet.mqtt_port, "cam-8", secret).connect()
    unit.birth()
    wait_for(lambda: fleet.status("cam-8")["online"], what="unit online")
    with _ws(fleet, "cam-8") as ws:
        for _ in range(60):  # past the per-connection burst
            try:
                ws.send("{}")
            except ConnectionClosed:
                break
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert closed.value.rcvd.code == 4429
