"""Commands, rollouts and configs the broker could never deliver are refused at the API.

A command whose MQTT message exceeds the brokers' 256 KiB cap was accepted (202), never arrived, stayed `sent`
and was sent again on every reconnect. The API now refuses what would not fit, and says the limit.
"""

from __future__ import annotations

import json

import pytest

from fleet_service.api.routes.commands import MAX_COMMAND_BYTES
from protocol.payloads import MAX_PAYLOAD_BYTES
from protocol.topics import Kind
from tests.support.services import wait_for
from tests.support.unit import RawUnit

BIG = {"blob": "x" * 500_000}  # 500 KB: under the API's 1 MiB body cap, over the broker's 256 KiB


def test_the_command_bound_is_well_under_the_broker_cap():
    assert MAX_COMMAND_BYTES <= MAX_PAYLOAD_BYTES // 2


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_oversized_command_args_are_refused_and_nothing_is_stored(fleet):
    secret = fleet.enroll("cap-1", tags=["capped"])
    unit = RawUnit(fleet.mqtt_port, "cap-1", secret).connect()
    unit.subscribe(Kind.CMD)
    unit.birth()
    wait_for(lambda: fleet.status("cap-1")["online"], what="unit online")

    r = fleet.api.post("/api/devices/cap-1/commands", json={"name": "ping", "args": BIG})
    assert r.status_code == 422, r.text[:300]
    assert str(MAX_COMMAND_BYTES) in r.json()["detail"] and "bytes" in r.json()["detail"]
    # Escapes make a small body a large message: "\u0001" is 1 character in, 6 bytes out.
    r = fleet.api.post(
        "/api/devices/cap-1/commands",
        content=json.dumps({"name": "ping", "args": {"a": "\x01" * 30_000}}),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text[:300]
    assert fleet.api.get("/api/devices/cap-1/commands").json()["total"] == 0

    # Just under the bound: accepted, and it really reaches the unit.
    filler = "y" * (MAX_COMMAND_BYTES - 1000)
    r = fleet.api.post("/api/devices/cap-1/commands", json={"name": "ping", "args": {"blob": filler}})
    assert r.status_code == 202, r.text[:300]
    got = json.loads(unit.received.get(timeout=10).payload)
    assert got["id"] == r.json()["id"] and got["args"]["blob"] == filler

    r = fleet.api.post("/api/rollouts", json={"command": "ping", "args": BIG, "tag": "capped"})
    assert r.status_code == 422, r.text[:300]
    assert str(MAX_COMMAND_BYTES) in r.json()["detail"]
    assert fleet.api.get("/api/rollouts").json()["total"] == 0
    unit.kill()


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_oversized_configs_are_refused(fleet):
    fleet.enroll("cap-2", tags=["capped"])
    r = fleet.api.put("/api/devices/cap-2/config", json=BIG)
    assert r.status_code == 422, r.text[:300]
    assert "at most 65536" in r.json()["detail"]
    r = fleet.api.put("/api/config/groups/capped", json=BIG)
    assert r.status_code == 422, r.text[:300]
    assert "at most 65536" in r.json()["detail"]
    # Each part under the bound, their merge over it: refused too, nothing changes.
    half = {"a": "x" * 40_000}
    assert fleet.api.put("/api/devices/cap-2/config", json=half).status_code == 200
    r = fleet.api.put("/api/config/groups/capped", json={"b": "y" * 40_000})
    assert r.status_code == 422, r.text[:300]
    assert fleet.api.get("/api/devices/cap-2/config").json()["desired"] == half
