"""Finding units: `q` matches a unit's id, name, host name and addresses (the JSON list in `device.ips`), with LIKE's
wildcards taken literally; `GET /api/tags` counts every tag in use over the whole fleet, for suggestions."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from fleet_service.devices.models import Device

pytestmark = pytest.mark.parametrize("fleet", ["embedded-sqlite", "embedded-postgres"], indirect=True)


def found(fleet, q: str) -> set[str]:
    r = fleet.api.get("/api/devices", params={"q": q})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["items"])
    return {d["id"] for d in body["items"]}


def reported(fleet, device_id: str, *, ips: list[str], hostname: str = "") -> None:
    """What a heartbeat stores: the unit's host name and addresses."""
    with Session(fleet.stack.ctx.engine) as s:
        device = s.get(Device, device_id)
        assert device is not None
        device.ips = ips
        device.hostname = hostname
        s.add(device)
        s.commit()


def test_q_finds_a_unit_by_its_address(fleet):
    fleet.enroll("cam-a", name="Front door")
    fleet.enroll("cam-b", name="Stage")
    fleet.enroll("cam-c", name="Back")
    reported(fleet, "cam-a", ips=["10.64.0.12", "fe80::1a2b"], hostname="rec-a")
    reported(fleet, "cam-b", ips=["10.64.0.120"], hostname="rec-b")
    reported(fleet, "cam-c", ips=[], hostname="rec-c")

    assert found(fleet, "10.64.0.12") == {"cam-a", "cam-b"}  # a prefix of 10.64.0.120 too, as text search does
    assert found(fleet, "10.64.0.120") == {"cam-b"}
    assert found(fleet, "0.12") == {"cam-a", "cam-b"}
    assert found(fleet, "FE80::1A2B") == {"cam-a"}
    assert found(fleet, "192.168") == set()
    # id, name and host name as before
    assert found(fleet, "cam-c") == {"cam-c"}
    assert found(fleet, "front") == {"cam-a"}
    assert found(fleet, "rec-b") == {"cam-b"}
    # the JSON around the addresses is not searched: a quote or a comma finds nothing
    assert found(fleet, '"') == set()
    assert found(fleet, '", "') == set()
    # with the other filters
    r = fleet.api.get("/api/devices", params={"q": "10.64", "status": "offline", "sort": "-id"})
    assert [d["id"] for d in r.json()["items"]] == ["cam-b", "cam-a"]


def test_like_wildcards_in_q_are_plain_characters(fleet):
    fleet.enroll("wild-1", name="plain")
    fleet.enroll("wild-2", name="50% off")
    fleet.enroll("wild-3", name="back\\slash")
    fleet.enroll("wild_4")
    reported(fleet, "wild-1", ips=["10.0.0.1"])

    assert found(fleet, "%") == {"wild-2"}
    assert found(fleet, "_") == {"wild_4"}
    assert found(fleet, "\\") == {"wild-3"}
    assert found(fleet, "50%") == {"wild-2"}
    assert found(fleet, "wild_") == {"wild_4"}
    assert found(fleet, "%%") == set()
    assert found(fleet, "10.0.0.%") == set()
    assert found(fleet, "wild") == {"wild-1", "wild-2", "wild-3", "wild_4"}


def test_tags_lists_every_tag_in_use_with_its_unit_count(fleet):
    assert fleet.api.get("/api/tags").json() == {"items": []}
    fleet.enroll("t-1", tags=["venue_b", "hall"])
    fleet.enroll("t-2", tags=["venue_b"])
    fleet.enroll("t-3", tags=["venueA", "Hall-2"])
    fleet.enroll("t-4")

    r = fleet.api.get("/api/tags")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "items": [
            {"tag": "Hall-2", "units": 1},
            {"tag": "hall", "units": 1},
            {"tag": "venueA", "units": 1},
            {"tag": "venue_b", "units": 2},
        ]
    }
    tags = lambda **params: [(i["tag"], i["units"]) for i in fleet.api.get("/api/tags", params=params).json()["items"]]  # noqa: E731
    assert tags(prefix="venue") == [("venueA", 1), ("venue_b", 2)]
    assert tags(prefix="venue_") == [("venue_b", 2)]  # `_` is not a wildcard
    assert tags(prefix="HALL") == [("Hall-2", 1), ("hall", 1)]  # a suggestion ignores case
    assert tags(prefix="%") == []
    assert tags(limit=2) == [("Hall-2", 1), ("hall", 1)]

    # retagging and revoking change the counts
    assert fleet.api.patch("/api/devices/t-2", json={"tags": ["hall"]}).status_code == 200
    assert fleet.api.delete("/api/devices/t-1").status_code == 204
    assert tags() == [("Hall-2", 1), ("hall", 1), ("venueA", 1)]

    for bad in ({"limit": 0}, {"limit": 100_000}, {"prefix": "x" * 65}):
        r = fleet.api.get("/api/tags", params=bad)
        assert r.status_code == 422, (bad, r.text)
