"""The whole unit flow on every broker/database combination: enroll, presence, heartbeat, metrics, logs."""

from __future__ import annotations

import asyncio
import time

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.support.services import wait_for
from tests.support.unit import RawUnit


def heartbeat(seq: int = 1) -> dict:
    return {
        "v": 1,
        "ts": now_ms(),
        "seq": seq,
        "uptime_s": 12.5,
        "hostname": "r58",
        "ips": ["10.0.0.5"],
        "software_version": "2.4.0",
        "agent_version": "t",
    }


def test_unit_appears_reports_and_goes_offline(fleet):
    secret = fleet.enroll("venue-1", name="Main hall", tags=["hall"])
    unit = RawUnit(fleet.mqtt_port, "venue-1", secret, keepalive=2).connect()
    unit.birth("2.4.0")
    status = wait_for(lambda: (s := fleet.status("venue-1"))["online"] and s, what="unit online")
    assert status["software_version"] == "2.4.0" and status["last_seen"].endswith("Z")

    unit.publish(Kind.HEARTBEAT, heartbeat(), qos=0)
    unit.publish(
        Kind.METRICS,
        {
            "v": 1,
            "ts": now_ms(),
            "cpu_percent": 12.5,
            "mem_percent": 40.0,
            "services": {"recorder.service": "active"},
            "fan_rpm": 1200,
        },
        qos=0,
    )
    unit.publish(
        Kind.LOGS,
        {
            "v": 1,
            "records": [
                {"id": "a1", "ts": now_ms() - 1000, "level": "info", "source": "recorder", "msg": "started"},
                {"id": "a2", "ts": now_ms(), "level": "error", "source": "recorder", "msg": "camera 2 lost"},
            ],
        },
    )
    wait_for(lambda: len(fleet.api.get("/api/devices/venue-1/logs").json()["items"]) == 2, what="2 log lines")
    logs = fleet.api.get("/api/devices/venue-1/logs").json()["items"]
    assert [r["msg"] for r in logs] == ["camera 2 lost", "started"]  # newest first
    errors = fleet.api.get("/api/devices/venue-1/logs", params={"level": "warning"}).json()["items"]
    assert [r["msg"] for r in errors] == ["camera 2 lost"]
    assert fleet.api.get("/api/devices/venue-1/logs", params={"limit": 1}).json()["next_cursor"]
    status = wait_for(lambda: (s := fleet.status("venue-1"))["ips"] and s, what="heartbeat stored")
    assert status["ips"] == ["10.0.0.5"] and status["hostname"] == "r58"
    points = wait_for(lambda: fleet.api.get("/api/devices/venue-1/metrics").json()["points"], what="metrics")
    assert points[-1]["cpu_percent"] == 12.5 and points[-1]["extra"] == {"fan_rpm": 1200}
    listing = fleet.api.get("/api/devices", params={"status": "online"}).json()
    assert [d["id"] for d in listing["items"]] == ["venue-1"] and listing["total"] == 1

    start = time.monotonic()
    unit.kill()  # no DISCONNECT: the broker must notice the silence and fire the Will
    wait_for(lambda: not fleet.status("venue-1")["online"], timeout=15, what="offline after kill")
    assert time.monotonic() - start < 1.5 * 2 + 2.0


def test_clean_stop_is_offline_at_once_and_late_will_is_ignored(fleet):
    secret = fleet.enroll("venue-2")
    first = RawUnit(fleet.mqtt_port, "venue-2", secret).connect()
    first.birth()
    wait_for(lambda: fleet.status("venue-2")["online"], what="online")
    first.stop_clean()
    wait_for(lambda: not fleet.status("venue-2")["online"], timeout=3, what="offline right after clean stop")

    second = RawUnit(fleet.mqtt_port, "venue-2", secret).connect()
    second.birth()
    wait_for(lambda: fleet.status("venue-2")["online"], what="online again")
    # A Will of the older session arriving late must not mark the new session offline.
    second.publish(Kind.STATE, {"v": 1, "online": False, "session": first.session}, retain=False)
    second.publish(Kind.HEARTBEAT, heartbeat(2), qos=1)
    wait_for(lambda: fleet.status("venue-2")["uptime_s"] == 12.5, what="heartbeat after stale will")
    assert fleet.status("venue-2")["online"] is True
    second.stop_clean()


def test_logs_sent_while_the_service_is_away_arrive_when_it_returns(fleet):
    """The service's persistent session: QoS-1 logs published while it is disconnected arrive when it returns."""
    secret = fleet.enroll("venue-3")
    unit = RawUnit(fleet.mqtt_port, "venue-3", secret).connect()
    unit.birth()
    wait_for(lambda: fleet.status("venue-3")["online"], what="online")
    ctx = fleet.stack.ctx
    fleet.stack.call(_stop_link(ctx))
    unit.publish(Kind.LOGS, {"v": 1, "records": [{"id": "x1", "ts": now_ms(), "level": "info", "msg": "while away"}]})
    fleet.stack.call(_start_link(ctx))
    wait_for(lambda: fleet.api.get("/api/devices/venue-3/logs").json()["items"], timeout=15, what="queued log")
    assert fleet.api.get("/api/devices/venue-3/logs").json()["items"][0]["msg"] == "while away"


async def _stop_link(ctx) -> None:
    task = next(t for t in ctx.tasks if t.get_name() == "mqtt-link")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not ctx.link.connected.is_set()


async def _start_link(ctx) -> None:
    ctx.tasks.append(asyncio.create_task(ctx.link.run(), name="mqtt-link"))


def test_a_unit_is_failing_while_online_with_a_failed_state_in_its_latest_metrics(fleet):
    secret = fleet.enroll("venue-f")
    unit = RawUnit(fleet.mqtt_port, "venue-f", secret, keepalive=2).connect()
    unit.birth("2.4.0")
    wait_for(lambda: fleet.status("venue-f")["online"], what="unit online")

    def listing(**params) -> dict:
        return fleet.api.get("/api/devices", params=params).json()

    def failing_ids() -> list[str]:
        return [d["id"] for d in listing(status="failing")["items"]]

    def metrics(**body) -> None:
        unit.publish(Kind.METRICS, {"v": 1, "ts": now_ms(), **body})

    metrics(services={"recorder.service": "failed", "ssh.service": "active"})
    wait_for(lambda: listing()["summary"]["failing"] == 1, what="failing counted")
    page = listing(status="failing")
    assert [d["id"] for d in page["items"]] == ["venue-f"] and page["total"] == 1
    assert page["summary"] == {"units": 1, "online": 1, "offline": 0, "failing": 1}
    assert listing(status="online")["total"] == 1 and listing()["total"] == 1

    metrics(services={"recorder.service": "active"})
    wait_for(lambda: listing()["summary"]["failing"] == 0, what="recovered")
    assert failing_ids() == [] and listing(status="failing")["total"] == 0

    metrics(services={"recorder.service": "active"}, recorder={"state": "failed"})  # a recorder state in extra
    wait_for(lambda: failing_ids() == ["venue-f"], what="failing from extra")

    unit.kill()  # offline: no longer counted as failing, though its last metrics still say so
    wait_for(lambda: not fleet.status("venue-f")["online"], timeout=15, what="offline after kill")
    assert listing()["summary"] == {"units": 1, "online": 0, "offline": 1, "failing": 0}
    assert failing_ids() == [] and listing(status="offline")["total"] == 1
