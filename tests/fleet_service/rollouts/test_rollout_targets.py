"""A rollout's units from a filter (the unit list's own query), and what its detail tells about failures."""

from __future__ import annotations

import pytest

from protocol.payloads import MAX_OUTPUT_BYTES
from tests.fleet_service.control_support import Responder, succeed
from tests.fleet_service.rollouts.test_rollouts import units_by_id, wait_rollout
from tests.support.services import wait_for


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_a_filter_target_takes_the_units_the_list_shows_once_in_id_order(fleet):
    for device_id, tags, name in [
        ("cam-3", ["hall"], "stage left"),
        ("cam-1", ["hall"], "stage right"),
        ("cam-2", ["hall"], "lobby"),
        ("cam-4", ["yard"], "stage gate"),
    ]:
        fleet.enroll(device_id, tags=tags, name=name)
    query = {"tag": "hall", "q": "STAGE", "status": "offline"}
    listed = [d["id"] for d in fleet.api.get("/api/devices", params={**query, "sort": "id"}).json()["items"]]
    assert listed == ["cam-1", "cam-3"]

    r = fleet.api.post("/api/rollouts", json={"command": "ping", "filter": query, "batch_percent": 100})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["target"] == {"filter": query}
    assert created["totals"]["total"] == 2 and created["batches"] == 1
    view = fleet.api.get(f"/api/rollouts/{created['id']}").json()
    assert [u["device_id"] for u in view["units"]] == listed

    # resolved once: a unit that matches later is not added
    fleet.enroll("cam-0", tags=["hall"], name="stage centre")
    view = fleet.api.get(f"/api/rollouts/{created['id']}").json()
    assert [u["device_id"] for u in view["units"]] == listed

    # an empty filter is the whole fleet, as on the unit list
    every = fleet.api.post("/api/rollouts", json={"command": "ping", "filter": {}, "batch_size": 10}).json()
    assert every["totals"]["total"] == 5 and every["target"] == {"filter": {}}


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_bad_filter_targets_are_refused_and_store_nothing(fleet):
    fleet.enroll("only-1", tags=["hall"])
    bad = [
        {"filter": {"status": "sleeping"}},  # not a status the list knows
        {"filter": {"tag": "no spaces"}},  # not a tag
        {"filter": {"q": "x" * 101}},  # longer than the list accepts
        {"filter": {"colour": "red"}},  # not a filter field
        {"filter": "tag=hall"},
        {"filter": {"tag": "nobody"}},  # matches no unit
        {"filter": {"q": "zzz", "status": "online"}},
        {"filter": {"tag": "hall"}, "tag": "hall"},  # more than one target
        {"filter": {"tag": "hall"}, "device_ids": ["only-1"]},
        {"filter": {"tag": "hall"}, "tag": "hall", "device_ids": ["only-1"]},
    ]
    for body in bad:
        r = fleet.api.post("/api/rollouts", json={"command": "ping", **body})
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"]
    nomatch = fleet.api.post("/api/rollouts", json={"command": "ping", "filter": {"tag": "nobody"}})
    assert "no unit matches" in nomatch.json()["detail"]
    assert fleet.api.get("/api/rollouts").json()["total"] == 0


def noisy_failure(cmd: dict) -> list:
    """Fails with more output than the detail view carries: its end says why."""
    body = "".join(f"step {i}: fine\n" for i in range(400))
    return [("running", None, ""), ("failed", 4, body + "health check failed: recorder.service inactive")]


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_the_detail_carries_each_units_exit_code_and_the_end_of_its_output(fleet):
    units = {}
    for device_id, policy in [("tr-1", succeed), ("tr-2", noisy_failure), ("tr-3", noisy_failure)]:
        units[device_id] = Responder(fleet.mqtt_port, device_id, fleet.enroll(device_id), policy).start()
    wait_for(lambda: fleet.api.get("/api/devices", params={"status": "online"}).json()["total"] == 3, what="online")
    created = fleet.api.post(
        "/api/rollouts",
        json={"command": "update", "args": {"ref": "v2"}, "device_ids": list(units), "batch_percent": 100},
    ).json()
    done = wait_rollout(fleet.api, created["id"], lambda v: v["state"] not in ("running", "paused"), "ended")
    per_unit = units_by_id(done)
    assert per_unit["tr-1"]["output"] == "update done" and per_unit["tr-1"]["exit_code"] == 0
    for device_id in ("tr-2", "tr-3"):
        u = per_unit[device_id]
        assert u["state"] == "failed" and u["exit_code"] == 4
        assert u["output"].endswith("health check failed: recorder.service inactive")
        assert len(u["output"].encode()) <= 2048 < MAX_OUTPUT_BYTES
        assert u["output"].startswith("…[truncated]")

    # only the failed units, for triage and retry
    failed = fleet.api.get(f"/api/rollouts/{created['id']}", params={"units": "failed"}).json()
    assert [u["device_id"] for u in failed["units"]] == ["tr-2", "tr-3"]
    assert fleet.api.get(f"/api/rollouts/{created['id']}", params={"units": "bogus"}).status_code == 422
    for unit in units.values():
        unit.stop()
