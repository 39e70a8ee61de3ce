"""Embedded mode: what the broker acknowledged before a shutdown is persisted, and units end up offline."""

from __future__ import annotations

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.support.stack import StackThread, settings_for
from tests.support.unit import RawUnit


def test_acknowledged_logs_survive_a_service_shutdown(tmp_path):
    settings = settings_for(tmp_path)
    with StackThread(settings) as stack, stack.client() as api:
        secret = api.post("/api/devices", json={"id": "venue-5"}).json()["secret"]
        unit = RawUnit(stack.mqtt_port, "venue-5", secret).connect()
        unit.birth()
        for batch in range(20):  # each publish returns once the broker acknowledged it
            unit.publish(
                Kind.LOGS,
                {
                    "v": 1,
                    "records": [
                        {"id": f"{batch}-{i}", "ts": now_ms(), "level": "info", "msg": f"line {batch}-{i}"}
                        for i in range(50)
                    ],
                },
            )
    unit.client.loop_stop()

    with StackThread(settings_for(tmp_path, mqtt_port=0)) as stack, stack.client() as api:
        logs = api.get("/api/devices/venue-5/logs", params={"limit": 1000}).json()["items"]
        assert len(logs) == 1000
        assert api.get("/api/devices/venue-5/status").json()["online"] is False
