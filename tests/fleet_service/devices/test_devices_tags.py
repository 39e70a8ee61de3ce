"""Units looked up by tag: exactly that tag (`_` is a LIKE wildcard, `site_1` must not find `siteA1`), wherever
the lookup happens (device list, rollouts, config defaults) and however the unit got its tags."""

from __future__ import annotations

import pytest

from fleet_service.devices.enrollment import enroll

pytestmark = pytest.mark.parametrize("fleet", ["embedded-sqlite", "embedded-postgres"], indirect=True)


def listed(fleet, tag: str) -> set[str]:
    r = fleet.api.get("/api/devices", params={"tag": tag})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["items"])
    return {d["id"] for d in body["items"]}


def test_a_tag_finds_exactly_the_units_carrying_it(fleet):
    fleet.enroll("under-1", tags=["site_1"])
    fleet.enroll("under-2", tags=["other", "site_1"])
    fleet.enroll("letter-1", tags=["siteA1"])  # `site_1` as a LIKE pattern matches this one
    fleet.enroll("prefix-1", tags=["site_10"])
    fleet.enroll("bare-1")

    assert listed(fleet, "site_1") == {"under-1", "under-2"}
    assert listed(fleet, "siteA1") == {"letter-1"}
    assert listed(fleet, "site") == set()
    assert fleet.api.get("/api/devices", params={"tag": "site_1", "q": "under-2"}).json()["total"] == 1

    group = fleet.api.put("/api/config/groups/site_1", json={"recorder": {"fps": 12}})
    assert group.status_code == 200, group.text
    assert group.json()["units"] == 2
    assert fleet.api.get("/api/config/groups/site_1").json()["units"] == 2
    assert {g["tag"]: g["units"] for g in fleet.api.get("/api/config/groups").json()["items"]} == {"site_1": 2}
    assert fleet.api.get("/api/devices/letter-1/config").json()["desired"] == {}
    assert fleet.api.get("/api/devices/under-1/config").json()["desired"] == {"recorder": {"fps": 12}}

    r = fleet.api.post("/api/rollouts", json={"command": "ping", "tag": "site_1", "batch_size": 10})
    assert r.status_code == 201, r.text
    assert sorted(u["device_id"] for u in fleet.api.get(f"/api/rollouts/{r.json()['id']}").json()["units"]) == [
        "under-1",
        "under-2",
    ]


def test_retagging_self_enrollment_and_revoking_keep_the_lookup_exact(fleet):
    fleet.enroll("move-1", tags=["hall"])
    fleet.enroll("move-2", tags=["hall", "stage"])
    assert fleet.api.patch("/api/devices/move-1", json={"tags": ["stage"]}).status_code == 200
    assert fleet.api.patch("/api/devices/move-2", json={"name": "renamed"}).status_code == 200  # tags kept
    assert listed(fleet, "hall") == {"move-2"}
    assert listed(fleet, "stage") == {"move-1", "move-2"}
    assert fleet.api.patch("/api/devices/move-2", json={"tags": []}).status_code == 200
    assert listed(fleet, "hall") == set() and listed(fleet, "stage") == {"move-1"}

    token = fleet.api.post("/api/claim-tokens", json={"tags": ["venue_b"], "ttl_s": 600}).json()["token"]
    claimed = fleet.api.post("/api/devices/claim", json={"token": token, "id": "self-1"})
    assert claimed.status_code == 201, claimed.text
    enroll(fleet.stack.ctx.engine, "cli-1", tags=["venue_b"])  # as `fleet device add --tag` does
    assert listed(fleet, "venue_b") == {"self-1", "cli-1"}

    assert fleet.api.delete("/api/devices/self-1").status_code == 204
    assert listed(fleet, "venue_b") == {"cli-1"}
    fleet.enroll("self-1")  # the id again, untagged: nothing of the revoked unit's tags is left
    assert listed(fleet, "venue_b") == {"cli-1"}
    assert fleet.api.get("/api/devices/move-1").json()["tags"] == ["stage"]  # the API shows the list as before
