"""One unit's huge metrics `extra` is bounded and never copied into every GET /api/devices."""

from __future__ import annotations

import json

from protocol.ids import now_ms
from protocol.payloads import MAX_EXTRA_BYTES
from protocol.topics import Kind
from tests.support.services import wait_for
from tests.support.unit import RawUnit


def test_a_huge_extra_is_cut_to_a_marker_and_lists_stay_light(fleet):
    secret = fleet.enroll("heavy-1")
    unit = RawUnit(fleet.mqtt_port, "heavy-1", secret).connect()
    unit.birth()
    heavy = {f"k{i}": "x" * 1000 for i in range(240)}  # ~243 KB, under the 256 KiB payload limit
    unit.publish(
        Kind.METRICS,
        {"v": 1, "ts": now_ms(), "cpu_percent": 12.5, "services": {"rec.service": "active"}, "extra": heavy},
        qos=0,
    )
    status = wait_for(lambda: (s := fleet.status("heavy-1"))["metrics"] and s, timeout=15, what="metrics stored")
    assert status["metrics"]["cpu_percent"] == 12.5  # the numbers are kept
    assert status["metrics"]["extra"] == {"_truncated_bytes": len(json.dumps(heavy, separators=(",", ":")))}
    assert status["metrics"]["services"] == {"rec.service": "active"}

    listing = fleet.api.get("/api/devices").json()
    item = next(i for i in listing["items"] if i["id"] == "heavy-1")
    assert item["metrics"]["cpu_percent"] == 12.5
    assert "extra" not in item["metrics"] and "services" not in item["metrics"]
    assert item["failed_services"] == [] and item["failing"] is False
    assert len(json.dumps(listing)) < MAX_EXTRA_BYTES  # one page of units stays small
    unit.stop_clean()
