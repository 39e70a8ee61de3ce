"""`GET /api/events` narrowed to some units: a list of `device_id`s, fleet-wide `fleet_types`, resume, bounds."""

from __future__ import annotations

import time

import httpx
import pytest

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.fleet_service.control_support import Responder, SseReader, later, succeed
from tests.support.stack import ADMIN_TOKEN

HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def metrics(cpu: float) -> dict:
    return {"v": 1, "ts": now_ms(), "cpu_percent": cpu}


def is_metric(device_id: str, cpu: float):
    return lambda e: e["event"] == "metrics" and e["data"]["device_id"] == device_id and e["data"]["cpu_percent"] == cpu


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_a_list_of_units_with_fleet_wide_presence_and_resume(fleet):
    secrets = {i: fleet.enroll(i) for i in ("fl-a", "fl-b", "fl-c")}
    units = {i: Responder(fleet.mqtt_port, i, s, succeed).start() for i, s in secrets.items()}
    try:
        shown = {"device_id": "fl-a,fl-c", "types": "presence,metrics", "fleet_types": "presence"}
        with SseReader(fleet.stack.url, ADMIN_TOKEN, params=shown) as sse:
            for n, unit in enumerate(units.values()):
                unit.unit.publish(Kind.METRICS, metrics(10.0 + n), qos=1)
            sse.wait_for(is_metric("fl-a", 10.0), what="fl-a's metrics")
            sse.wait_for(is_metric("fl-c", 12.0), what="fl-c's metrics")
            units["fl-b"].stop()  # a unit not shown going offline still reaches the stream: it changes the totals
            sse.wait_for(
                lambda e: e["event"] == "presence" and e["data"]["device_id"] == "fl-b" and not e["data"]["online"],
                what="fl-b offline",
            )
            units["fl-b"] = Responder(fleet.mqtt_port, "fl-b", secrets["fl-b"], succeed).start()
            units["fl-b"].unit.publish(Kind.METRICS, metrics(51.0), qos=1)
            units["fl-a"].unit.publish(Kind.METRICS, metrics(52.0), qos=1)
            sse.wait_for(is_metric("fl-a", 52.0), what="fl-a's second metrics")
            time.sleep(0.3)
            seen = sse.snapshot()
        assert {e["data"]["device_id"] for e in seen if e["event"] == "metrics"} == {"fl-a", "fl-c"}
        assert {e["event"] for e in seen} == {"presence", "metrics"}  # `types` still applies
        last_id = seen[-1]["id"]

        # Repeated parameters work as well as commas; a resume replays only what passes the filters.
        units["fl-b"].unit.publish(Kind.METRICS, metrics(61.0), qos=1)
        units["fl-c"].unit.publish(Kind.METRICS, metrics(62.0), qos=1)
        time.sleep(1.0)
        params = [("device_id", "fl-c"), ("device_id", "fl-a"), ("types", "metrics")]
        with SseReader(fleet.stack.url, ADMIN_TOKEN, params=params, last_event_id=last_id) as resumed:  # type: ignore[arg-type]
            resumed.wait_for(is_metric("fl-c", 62.0), what="fl-c's missed metrics")
            time.sleep(0.3)
            replayed = resumed.snapshot()
        assert all(later(e["id"], last_id) for e in replayed)
        assert {e["data"]["device_id"] for e in replayed} == {"fl-c"}
    finally:
        for unit in units.values():
            unit.stop()


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_bounds_are_422s(fleet):
    url = f"{fleet.stack.url}/api/events"
    too_many = ",".join(f"u-{n}" for n in range(1001))
    for params, words in [
        ({"device_id": too_many}, "at most 1000"),
        ({"device_id": "fl-a,Not An Id"}, "is not a unit id"),
        ({"fleet_types": "presence,<script>"}, "fleet_types"),
        ({"types": "metrics,DROP"}, "types"),
    ]:
        r = httpx.get(url, params=params, headers=HEADERS, timeout=10)
        assert r.status_code == 422, (params, r.text)
        assert words in r.json()["detail"], r.text
    # At the bound it is accepted (the stream opens).
    exactly = ",".join(f"u-{n}" for n in range(1000))
    with httpx.stream("GET", url, params={"device_id": exactly}, headers=HEADERS, timeout=10) as r:
        assert r.status_code == 200
