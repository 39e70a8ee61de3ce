"""Bad MQTT input is counted, logged and dropped; ingest goes on and nothing stored changes."""

from __future__ import annotations

import json
import logging

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.support.services import wait_for
from tests.support.unit import RawUnit


def _log(i: str, msg: str) -> dict:
    return {"v": 1, "records": [{"id": i, "ts": now_ms(), "level": "info", "source": "t", "msg": msg}]}


def _dropped(fleet) -> dict[str, float]:
    text = fleet.api.get("/metrics").text
    out = {}
    for line in text.splitlines():
        if line.startswith("fleet_ingest_dropped_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def test_bad_messages_are_dropped_and_ingest_continues(fleet, caplog):
    caplog.set_level(logging.WARNING, logger="fleet_service.ingest")
    secret_a = fleet.enroll("unit-a")
    secret_b = fleet.enroll("unit-b")
    a = RawUnit(fleet.mqtt_port, "unit-a", secret_a).connect()
    b = RawUnit(fleet.mqtt_port, "unit-b", secret_b).connect()
    a.publish(Kind.LOGS, _log("good-1", "before"))
    b.publish(Kind.LOGS, _log("b-1", "unit b's own line"))
    wait_for(lambda: len(fleet.api.get("/api/devices/unit-a/logs").json()["items"]) == 1, what="first line")
    before_b = wait_for(lambda: fleet.api.get("/api/devices/unit-b/logs").json()["items"], what="unit b's line")
    before_status = fleet.status("unit-a")

    a.publish(Kind.LOGS, b"{not json")  # malformed JSON
    a.publish(Kind.LOGS, b'"a string"')  # not an object
    a.publish(Kind.LOGS, {"v": 1, "records": [{"id": 5, "ts": "yesterday", "msg": None}]})  # wrong types
    a.publish(Kind.METRICS, {"v": 1, "ts": now_ms(), "cpu_percent": "high"}, qos=1)  # wrong type
    a.publish(Kind.HEARTBEAT, {"v": 2, "ts": now_ms()}, qos=1)  # unknown version
    a.publish(Kind.LOGS, {"v": 1, "records": [{"id": "big", "ts": now_ms(), "msg": "x" * 300_000}]})  # oversized
    a.publish(Kind.STATE, b"\xff\xfe\x00", retain=False)  # not UTF-8
    a.publish_raw("fleet/unit-b/logs", json.dumps(_log("forged", "from unit a")).encode())  # another unit's topic
    a.publish(Kind.LOGS, _log("good-2", "after"))  # ingest must still work

    wait_for(lambda: len(fleet.api.get("/api/devices/unit-a/logs").json()["items"]) == 2, what="line after bad input")
    fleet.stack.drain()
    assert [r["msg"] for r in fleet.api.get("/api/devices/unit-a/logs").json()["items"]] == ["after", "before"]
    assert fleet.api.get("/api/devices/unit-b/logs").json()["items"] == before_b  # the forged line never landed
    after_status = fleet.status("unit-a")
    assert after_status["metrics"] == before_status["metrics"] and after_status["online"] == before_status["online"]
    dropped = _dropped(fleet)
    assert dropped.get("malformed", 0) >= 5, dropped
    # The broker may refuse the oversized message itself (Mosquitto message_size_limit); otherwise ingest drops it.
    assert "x" * 1000 not in json.dumps(fleet.api.get("/api/devices/unit-a/logs").json())
    assert "unit-a" in caplog.text and "malformed" in caplog.text


def test_duplicate_log_ids_are_stored_once(fleet):
    secret = fleet.enroll("unit-c")
    c = RawUnit(fleet.mqtt_port, "unit-c", secret).connect()
    record = _log("same-id", "only once")
    for _ in range(3):  # an outbox flushed twice after a reconnect: the same stored record, its ts included
        c.publish(Kind.LOGS, record)
    c.publish(Kind.LOGS, _log("next", "marker"))
    wait_for(lambda: len(fleet.api.get("/api/devices/unit-c/logs").json()["items"]) >= 2, what="logs")
    fleet.stack.drain()
    assert [r["msg"] for r in fleet.api.get("/api/devices/unit-c/logs").json()["items"]] == ["marker", "only once"]


def test_messages_from_units_that_are_not_enrolled_are_dropped(fleet):
    # Only the service account can publish for a unit that is not enrolled; simulate a stale retained message.
    fleet.stack.call(fleet.stack.ctx.link.publish("fleet/ghost-1/logs", json.dumps(_log("g", "boo")).encode()))
    wait_for(lambda: _dropped(fleet).get("unknown_device", 0) >= 1, what="unknown device counted")
    assert fleet.api.get("/api/devices/ghost-1/logs").status_code == 404
