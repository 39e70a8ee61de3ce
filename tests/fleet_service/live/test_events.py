"""`GET /api/events` read by a real streaming HTTP client: live events, filters, resume with Last-Event-ID."""

from __future__ import annotations

import time

import httpx
import pytest

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.fleet_service.control_support import Responder, SseReader, increasing, later, succeed
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN


def log_line(rec_id: str, msg: str) -> dict:
    return {"v": 1, "records": [{"id": rec_id, "ts": now_ms(), "level": "info", "source": "recorder", "msg": msg}]}


def is_log(msg: str):
    return lambda e: e["event"] == "log" and e["data"].get("msg") == msg


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_live_events_and_resume_with_last_event_id(fleet):
    secret = fleet.enroll("ev-1")
    with SseReader(fleet.stack.url, ADMIN_TOKEN) as sse:
        assert sse.status == 200
        unit = Responder(fleet.mqtt_port, "ev-1", secret, succeed).start()
        sse.wait_for(
            lambda e: e["event"] == "presence" and e["data"]["device_id"] == "ev-1" and e["data"]["online"],
            what="presence online",
        )
        unit.unit.publish(Kind.HEARTBEAT, {"v": 1, "ts": now_ms(), "seq": 1, "uptime_s": 5.0}, qos=1)
        sse.wait_for(lambda e: e["event"] == "heartbeat" and e["data"]["seq"] == 1, what="heartbeat")
        unit.unit.publish(Kind.METRICS, {"v": 1, "ts": now_ms(), "cpu_percent": 42.0}, qos=1)
        sse.wait_for(lambda e: e["event"] == "metrics" and e["data"]["cpu_percent"] == 42.0, what="metrics")
        unit.unit.publish(Kind.LOGS, log_line("l1", "camera 1 up"))
        sse.wait_for(is_log("camera 1 up"), what="log line")
        cmd = fleet.api.post("/api/devices/ev-1/restart").json()
        sse.wait_for(
            lambda e: e["event"] == "command" and e["data"]["id"] == cmd["id"] and e["data"]["status"] == "succeeded",
            what="command succeeded",
        )
        assert fleet.api.put("/api/devices/ev-1/config", json={"log_level": "info"}).status_code == 200
        sse.wait_for(lambda e: e["event"] == "config" and e["data"]["desired_version"] == 1, what="config")
        rollout = fleet.api.post("/api/rollouts", json={"command": "ping", "device_ids": ["ev-1"]}).json()
        sse.wait_for(
            lambda e: (
                e["event"] == "rollout" and e["data"]["id"] == rollout["id"] and e["data"]["state"] == "completed"
            ),
            what="rollout completed",
        )
        seen = sse.snapshot()

    ids = [e["id"] for e in seen]
    assert increasing(ids)  # each event once (no relay echo), each id a position past the one before
    statuses = [e["data"]["status"] for e in seen if e["event"] == "command" and e["data"]["id"] == cmd["id"]]
    order = ["queued", "sent", "accepted", "running", "succeeded"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"  # each change once, in order (the unit may
    assert statuses == [s for s in order if s in statuses]  # answer before `sent` is stored: then no sent event)

    # Disconnected: what happens now is replayed on reconnect from the last id seen, and nothing older.
    unit.unit.publish(Kind.LOGS, log_line("l2", "while nobody watched"))
    wait_for(
        lambda: any(
            r["msg"] == "while nobody watched" for r in fleet.api.get("/api/devices/ev-1/logs").json()["items"]
        ),
        what="log stored",
    )
    with SseReader(fleet.stack.url, ADMIN_TOKEN, last_event_id=ids[-1]) as resumed:
        resumed.wait_for(is_log("while nobody watched"), what="the missed log line")
        unit.unit.publish(Kind.LOGS, log_line("l3", "live again"))
        resumed.wait_for(is_log("live again"), what="a live line after the replay")
        replayed = resumed.snapshot()
    assert all(later(e["id"], ids[-1]) for e in replayed)
    assert not any(is_log("camera 1 up")(e) for e in replayed)

    # Filters: one unit's log lines only.
    other = fleet.enroll("ev-2")
    with SseReader(fleet.stack.url, ADMIN_TOKEN, params={"device_id": "ev-1", "types": "log"}) as only:
        second = Responder(fleet.mqtt_port, "ev-2", other, succeed).start()
        second.unit.publish(Kind.LOGS, log_line("o1", "other unit"))
        unit.unit.publish(Kind.LOGS, log_line("l4", "filtered in"))
        only.wait_for(is_log("filtered in"), what="the filtered line")
        time.sleep(0.3)
        assert {(e["event"], e["data"]["device_id"]) for e in only.snapshot()} == {("log", "ev-1")}
    second.stop()
    unit.stop()

    no_auth = httpx.get(f"{fleet.stack.url}/api/events", timeout=5)
    assert no_auth.status_code == 401
