"""Service against a real Mosquitto: enroll, presence, heartbeat, metrics, logs through the HTTP API."""

from __future__ import annotations

import time

import pytest

from fleet_service.mosquitto_acl import acl_text
from protocol.ids import SERVICE_USERNAME, now_ms
from protocol.topics import Kind
from tests.support.services import mosquitto_passwd, wait_for
from tests.support.stack import StackThread, settings_for
from tests.support.unit import RawUnit

SERVICE_SECRET = "service-secret-for-tests"


@pytest.fixture
def mosquitto_stack(tmp_path, mosquitto_factory):
    passwd = tmp_path / "passwd"
    acl = tmp_path / "acl"
    users = {SERVICE_USERNAME: SERVICE_SECRET}
    mosquitto_passwd(passwd, users)
    acl.write_text(acl_text())
    broker = mosquitto_factory(f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n")
    settings = settings_for(tmp_path, broker_url=f"mqtt://{SERVICE_SECRET and SERVICE_USERNAME}:{SERVICE_SECRET}"
                            f"@127.0.0.1:{broker.port}")

    def add_unit(device_id: str, secret: str) -> None:
        users[device_id] = secret
        mosquitto_passwd(passwd, users)
        broker.reload()
        time.sleep(0.2)

    with StackThread(settings) as stack:
        wait_for(lambda: stack.ctx.link.connected.is_set(), what="service connected to mosquitto")
        yield stack, broker, add_unit


def test_unit_flow_on_mosquitto(mosquitto_stack):
    stack, broker, add_unit = mosquitto_stack
    api = stack.client()
    r = api.post("/api/devices", json={"id": "venue-1", "name": "Main hall", "tags": ["hall"]})
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    add_unit("venue-1", secret)

    unit = RawUnit(broker.port, "venue-1", secret, keepalive=2).connect()
    unit.birth("2.4.0")
    status = wait_for(lambda: (s := api.get("/api/devices/venue-1/status").json())["online"] and s,
                      what="unit online")
    assert status["software_version"] == "2.4.0"
    unit.publish(Kind.HEARTBEAT, {"v": 1, "ts": now_ms(), "seq": 1, "uptime_s": 12.5, "hostname": "r58",
                                  "ips": ["10.0.0.5"], "software_version": "2.4.0", "agent_version": "t"}, qos=0)
    unit.publish(Kind.METRICS, {"v": 1, "ts": now_ms(), "cpu_percent": 12.5, "mem_percent": 40.0,
                                "services": {"recorder.service": "active"}, "fan_rpm": 1200}, qos=0)
    unit.publish(Kind.LOGS, {"v": 1, "records": [
        {"id": "a1", "ts": now_ms() - 1000, "level": "info", "source": "recorder", "msg": "started"},
        {"id": "a2", "ts": now_ms(), "level": "error", "source": "recorder", "msg": "camera 2 lost"}]})
    wait_for(lambda: len(api.get("/api/devices/venue-1/logs").json()["items"]) == 2, what="2 log lines")
    logs = api.get("/api/devices/venue-1/logs").json()["items"]
    assert [r["msg"] for r in logs] == ["camera 2 lost", "started"]
    assert [r["msg"] for r in api.get("/api/devices/venue-1/logs?level=error").json()["items"]] == ["camera 2 lost"]
    status = wait_for(lambda: (s := api.get("/api/devices/venue-1/status").json())["ips"] and s, what="heartbeat")
    assert status["ips"] == ["10.0.0.5"]
    points = wait_for(lambda: api.get("/api/devices/venue-1/metrics").json()["points"], what="metrics")
    assert points[-1]["cpu_percent"] == 12.5 and points[-1]["extra"] == {"fan_rpm": 1200}

    start = time.monotonic()
    unit.kill()
    wait_for(lambda: not api.get("/api/devices/venue-1/status").json()["online"], timeout=10, what="offline")
    assert time.monotonic() - start < 2 * 1.5 + 1.5
