"""Desired/reported config over a real broker: versions, If-Match, validation, group defaults per tag."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fleet_service.devices.enrollment import enroll
from fleet_service.unit_config.merge import deep_merge, effective_config
from fleet_service.unit_config.models import ConfigGroup
from fleet_service.unit_config.schema import ConfigInvalid, validate_config
from protocol.ids import now_ms
from protocol.topics import Kind
from tests.fleet_service.control_support import Responder, silent
from tests.support.services import wait_for


def config(fleet, device_id: str) -> dict:
    r = fleet.api.get(f"/api/devices/{device_id}/config")
    assert r.status_code == 200, r.text
    return r.json()


def report(unit: Responder, version: int, status: str, cfg: dict, error: str | None = None) -> None:
    unit.unit.publish(
        Kind.CONFIG_REPORTED,
        {"v": 1, "version": version, "status": status, "error": error, "config": cfg, "ts": now_ms()},
        retain=True,
    )


def received(unit: Responder, version: int) -> dict:
    """The config/desired message of `version` at the unit (waits for it)."""
    return wait_for(
        lambda: next((c for c in unit.configs if c["version"] == version), None),
        what=f"{unit.device_id} receiving desired v{version} (got {[c['version'] for c in unit.configs]})",
    )


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-postgres"], indirect=True)
def test_put_publishes_retained_get_compares_and_if_match_guards(fleet):
    secret = fleet.enroll("cfg-1")
    unit = Responder(fleet.mqtt_port, "cfg-1", secret, policy=silent, config=True).start()
    wait_for(lambda: fleet.status("cfg-1")["online"], what="online")
    empty = config(fleet, "cfg-1")
    assert (empty["desired"], empty["desired_version"], empty["reported_version"]) == ({}, 0, 0)

    wanted = {"video_bitrate_kbps": 6000, "resolution": "1080p", "site": {"room": "A1"}}
    r = fleet.api.put("/api/devices/cfg-1/config", json=wanted)
    assert r.status_code == 200, r.text
    assert r.json()["desired_version"] == 1 and r.headers["etag"] == '"1"'
    assert received(unit, 1) == {"v": 1, "version": 1, "config": wanted}
    assert config(fleet, "cfg-1")["in_sync"] is False

    report(unit, 1, "applied", wanted)
    synced = wait_for(lambda: (c := config(fleet, "cfg-1"))["in_sync"] and c, what="in sync")
    assert synced["reported"] == wanted and synced["reported_version"] == 1 and synced["status"] == "applied"

    second = {**wanted, "video_bitrate_kbps": 8000}
    ok = fleet.api.put("/api/devices/cfg-1/config", json=second, headers={"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json()["desired_version"] == 2
    stale = fleet.api.put("/api/devices/cfg-1/config", json={"video_bitrate_kbps": 1000}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and "version 2" in stale.json()["detail"]
    assert received(unit, 2)["config"] == second

    report(unit, 2, "failed", second, "camera 2 does not support 8000 kbit/s")
    failed = wait_for(lambda: (c := config(fleet, "cfg-1"))["status"] == "failed" and c, what="failure reported")
    assert failed["in_sync"] is False and failed["error"] == "camera 2 does not support 8000 kbit/s"
    assert failed["desired"] == second and failed["desired_version"] == 2
    unit.stop()

    # Retained: a unit that connects now still gets the newest desired config, and only that one.
    again = Responder(fleet.mqtt_port, "cfg-1", secret, policy=silent, config=True).start()
    assert received(again, 2)["config"] == second
    time.sleep(0.3)
    assert [c["version"] for c in again.configs] == [2] and [c["version"] for c in unit.configs] == [1, 2]
    again.stop()


@pytest.mark.parametrize("fleet", ["mosquitto-sqlite"], indirect=True)
def test_invalid_config_is_refused_and_nothing_is_published(fleet):
    secret = fleet.enroll("cfg-2")
    unit = Responder(fleet.mqtt_port, "cfg-2", secret, policy=silent, config=True).start()
    wait_for(lambda: fleet.status("cfg-2")["online"], what="online")
    assert fleet.api.put("/api/devices/cfg-2/config", json={"log_level": "info"}).status_code == 200
    received(unit, 1)

    bad_bodies = [
        ([1, 2], "JSON object"),
        ("recorder", "JSON object"),
        ({"filler": "x" * 70_000}, "bytes"),
        ({"video_bitrate_kbps": "high"}, "video_bitrate_kbps"),
        ({"video_bitrate_kbps": True}, "video_bitrate_kbps"),
        ({"recording_enabled": 1}, "recording_enabled"),
        ({"resolution": "8k"}, "resolution"),
        ({"framerate": 500}, "framerate"),
        ({"upload_url": "ftp://x"}, "upload_url"),
        ({"camera_inputs": ["cam1", 2]}, "camera_inputs"),
    ]
    for body, needle in bad_bodies:
        r = fleet.api.put("/api/devices/cfg-2/config", json=body)
        assert r.status_code == 422, (body, r.text)
        assert needle in r.json()["detail"], (body, r.json())
    nan = fleet.api.put(
        "/api/devices/cfg-2/config", content=b'{"framerate": NaN}', headers={"content-type": "application/json"}
    )
    assert nan.status_code == 422 and "NaN" in nan.json()["detail"]
    assert (
        fleet.api.put("/api/devices/cfg-2/config", json={"x": 1}, headers={"If-Match": "yesterday"}).status_code == 422
    )
    assert fleet.api.put("/api/devices/nope/config", json={"x": 1}).status_code == 404
    assert fleet.api.get("/api/devices/nope/config").status_code == 404
    assert fleet.api.put("/api/config/groups/hall", json={"log_level": "loud"}).status_code == 422
    assert fleet.api.put("/api/config/groups/bad%20tag", json={}).status_code == 422

    assert config(fleet, "cfg-2")["desired_version"] == 1
    # A valid change after all that arrives as the very next version: nothing was published in between.
    assert fleet.api.put("/api/devices/cfg-2/config", json={"log_level": "debug", "extra": [1]}).status_code == 200
    assert received(unit, 2)["config"] == {"log_level": "debug", "extra": [1]}
    assert [c["version"] for c in unit.configs] == [1, 2]
    assert fleet.api.get("/api/config/groups").json()["items"] == []
    schema = fleet.api.get("/api/config/schema").json()
    assert schema["known"]["video_bitrate_kbps"]["type"] == "integer"
    unit.stop()


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-postgres"], indirect=True)
def test_group_defaults_merge_with_a_units_own_config_and_follow_its_tags(fleet):
    units = {}
    for device_id, tags in (("hall-a", ["hall"]), ("hall-b", ["hall", "stage"]), ("plain", [])):
        secret = fleet.enroll(device_id, tags=tags)
        units[device_id] = Responder(fleet.mqtt_port, device_id, secret, policy=silent, config=True).start()
    a, b, plain = units["hall-a"], units["hall-b"], units["plain"]
    # Online first: a birth re-publishes a desired config the unit has not reported, which would blur the counts.
    wait_for(lambda: all(fleet.status(d)["online"] for d in units), what="units online")

    assert fleet.api.put("/api/devices/hall-b/config", json={"video_bitrate_kbps": 8000}).status_code == 200
    assert received(b, 1)["config"] == {"video_bitrate_kbps": 8000}

    hall = {"video_bitrate_kbps": 4000, "log_level": "info", "recorder": {"audio": "mic1", "codec": "h264"}}
    r = fleet.api.put("/api/config/groups/hall", json=hall)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["units"] == 2 and r.json()["changed_units"] == 2
    assert received(a, 1)["config"] == hall
    assert received(b, 2)["config"] == {**hall, "video_bitrate_kbps": 8000}  # the unit's own setting wins

    stage = {"log_level": "debug", "recorder": {"codec": "h265"}}
    assert fleet.api.put("/api/config/groups/stage", json=stage, params={"priority": 10}).status_code == 200
    expected_b = {"video_bitrate_kbps": 8000, "log_level": "debug", "recorder": {"audio": "mic1", "codec": "h265"}}
    assert received(b, 3)["config"] == expected_b  # stage (priority 10) over hall, merged key by key
    view = config(fleet, "hall-b")
    assert view["desired"] == expected_b and view["own"] == {"video_bitrate_kbps": 8000}
    assert [g["tag"] for g in view["groups"]] == ["hall", "stage"]

    # A change for the whole tag: every hall unit whose effective config moves gets a new version.
    hall2 = {**hall, "video_bitrate_kbps": 5000, "retention_days": 7}
    changed = fleet.api.put("/api/config/groups/hall", json=hall2, headers={"If-Match": '"1"'}).json()
    assert changed["version"] == 2 and changed["changed_units"] == 2
    assert received(a, 2)["config"] == hall2
    assert received(b, 4)["config"] == {**expected_b, "retention_days": 7}
    conflict = fleet.api.put("/api/config/groups/hall", json=hall, headers={"If-Match": '"1"'})
    assert conflict.status_code == 412

    # Retagging a unit brings it under the group; a newly enrolled tagged unit starts with the defaults.
    assert fleet.api.patch("/api/devices/plain", json={"tags": ["hall"]}).status_code == 200
    assert received(plain, 1)["config"] == hall2
    fleet.enroll("hall-new", tags=["hall"])
    fresh = wait_for(lambda: (c := config(fleet, "hall-new"))["desired_version"] == 1 and c, what="new unit config")
    assert fresh["desired"] == hall2

    deleted = fleet.api.delete("/api/config/groups/stage")
    assert deleted.status_code == 200 and deleted.json()["changed_units"] == 1
    assert received(b, 5)["config"] == {**hall2, "video_bitrate_kbps": 8000}
    assert fleet.api.get("/api/config/groups/stage").status_code == 404
    assert [g["tag"] for g in fleet.api.get("/api/config/groups").json()["items"]] == ["hall"]
    time.sleep(0.3)
    assert [c["version"] for c in a.configs] == [1, 2] and [c["version"] for c in b.configs] == [1, 2, 3, 4, 5]
    for unit in units.values():
        unit.stop()
    assert json.dumps(config(fleet, "hall-a")["desired"]) == json.dumps(hall2)


def test_merge_order_and_the_known_keys():
    groups = [
        ConfigGroup(tag="zone-b", config={"log_level": "warning", "site": {"floor": 2}}, priority=0),
        ConfigGroup(tag="zone-a", config={"log_level": "info", "site": {"room": "A"}}, priority=0),
        ConfigGroup(tag="vip", config={"log_level": "debug"}, priority=5),
        ConfigGroup(tag="other", config={"retention_days": 1}, priority=9),
    ]
    merged = effective_config(groups, ["zone-a", "zone-b", "vip"], {"site": {"room": "B"}})
    # vip (priority 5) over zone-b over zone-a (same priority: by tag); the unit's own values over all of them.
    assert merged == {"log_level": "debug", "site": {"room": "B", "floor": 2}}
    assert deep_merge({"a": {"b": 1}, "c": [1]}, {"a": 2, "c": [2]}) == {"a": 2, "c": [2]}

    assert validate_config({"framerate": 29.97, "camera_inputs": ["cam1"], "anything": {"goes": None}})
    for bad in (
        {"framerate": "30"},
        {"retention_days": 1.5},
        {"retention_days": False},
        {"log_level": "INFO"},
        {"timezone": "Europe/Oslo; rm -rf"},
        {"camera_inputs": "cam1"},
    ):
        with pytest.raises(ConfigInvalid, match=next(iter(bad))):
            validate_config(bad)


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_a_unit_enrolled_outside_the_api_gets_its_tag_defaults_when_it_comes_online(fleet):
    assert fleet.api.put("/api/config/groups/hall", json={"log_level": "notice"}).status_code == 200
    # `fleet device add` writes the database directly: no API call, no event the service could react to.
    _, secret = enroll(fleet.stack.ctx.engine, "cli-1", tags=["hall"])
    assert config(fleet, "cli-1")["desired_version"] == 0
    unit = Responder(fleet.mqtt_port, "cli-1", secret, policy=silent, config=True).start()
    assert received(unit, 1)["config"] == {"log_level": "notice"}
    unit.stop()


@pytest.mark.parametrize("fleet", ["mosquitto-postgres"], indirect=True)
def test_racing_group_and_unit_changes_end_merged_and_published_at_the_newest_version(fleet):
    secret = fleet.enroll("race-cfg", tags=["hall"])

    def change(i: int) -> int:
        with fleet.stack.client() as api:
            if i % 2:
                return api.put("/api/config/groups/hall", json={"group_value": i}).status_code
            return api.put("/api/devices/race-cfg/config", json={"own_value": i}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(change, range(16))) == {200}
    view = config(fleet, "race-cfg")
    group = fleet.api.get("/api/config/groups/hall").json()
    assert view["desired"] == {**group["config"], **view["own"]}  # neither change was lost to the other
    unit = Responder(fleet.mqtt_port, "race-cfg", secret, policy=silent, config=True).start()
    assert received(unit, view["desired_version"])["config"] == view["desired"]  # the retained one is the newest
    time.sleep(0.3)
    # Retained on connect, and again after its birth since it has not reported it: never an older version.
    assert {c["version"] for c in unit.configs} == {view["desired_version"]}
    unit.stop()
