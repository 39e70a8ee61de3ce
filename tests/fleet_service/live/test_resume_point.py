"""A stream whose filters pass nothing for a while still moves its resume point on (an `id:` line without data),
so its reconnect replays from there instead of from an event the buffer has dropped since."""

from __future__ import annotations

import time

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.fleet_service.control_support import SseReader, later
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for
from tests.support.unit import RawUnit

BUFFER = 40


def logs(unit: RawUnit, first: int, count: int) -> None:
    records = [
        {"id": f"r{i}", "ts": now_ms(), "level": "info", "source": "t", "msg": f"line {i}"}
        for i in range(first, first + count)
    ]
    unit.publish(Kind.LOGS, {"v": 1, "records": records})


def test_a_quiet_filtered_stream_keeps_a_resume_point_the_buffer_still_holds(tmp_path):
    with StackThread(settings_for(tmp_path, events_buffer=BUFFER)) as stack, stack.client() as api:
        api.post("/api/devices", json={"id": "quiet-1"})
        secret = api.post("/api/devices", json={"id": "busy-1"}).json()["secret"]
        busy = RawUnit(stack.mqtt_port, "busy-1", secret).connect()
        try:
            with SseReader(stack.url, ADMIN_TOKEN, params={"device_id": "quiet-1"}) as quiet:
                wait_for(lambda: quiet.last_id is not None, what="the stream's opening id")
                opening = quiet.last_id
                for n in range(12):  # 96 events over 6 s: far past the buffer, a note about every second
                    logs(busy, 8 * n, 8)
                    time.sleep(0.5)
                wait_for(lambda: quiet.last_id != opening, timeout=5, what="a resume point moved on")
                assert quiet.snapshot() == []  # nothing passed the filter
                moved = quiet.last_id
            assert later(moved, opening)

            with SseReader(stack.url, ADMIN_TOKEN, params={"device_id": "quiet-1"}, last_event_id=moved) as again:
                again.connected.wait(5)
                time.sleep(0.5)
                assert not any(e["event"] == "reset" for e in again.snapshot())
            with SseReader(stack.url, ADMIN_TOKEN, params={"device_id": "quiet-1"}, last_event_id=opening) as stale:
                head = stale.wait_for(lambda e: True, what="the reset")
            assert head["event"] == "reset" and head["data"]["reason"] == "expired"  # what the note spared it
        finally:
            busy.stop_clean()
