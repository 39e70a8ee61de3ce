"""The dashboard's live stream across a dropped connection: a gap the server can replay is filled from the replay
alone (the view is not re-read), and a gap it cannot replay makes the server send `reset`, on which the view
re-reads its data and says so. The connection is cut by a TCP proxy between the browser and `fleet up`."""

from __future__ import annotations

import time
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.dashboard.conftest import start_fleet, wait_online
from tests.support.services import wait_for
from tests.support.tcp_proxy import CuttableProxy
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser
BUFFER = 60  # the service's replay buffer, in events


def is_page_load(url: str) -> bool:
    """The unit list's own read (the totals' re-read asks for one row only)."""
    parsed = urlparse(url)
    return parsed.path == "/api/devices" and parse_qs(parsed.query).get("limit") != ["1"]


def test_the_view_is_reloaded_only_when_the_server_says_the_gap_cannot_be_replayed(open_page, tmp_path):
    fleet = start_fleet(tmp_path / "fleet", {"FLEET_EVENTS_BUFFER": str(BUFFER)})
    proxy = CuttableProxy(fleet.http_port)
    door = chatty = None
    try:
        with fleet.api() as api:
            door_secret = api.post("/api/devices", json={"id": "door-1"}).json()["secret"]
            chatty_secret = api.post("/api/devices", json={"id": "chatty-1"}).json()["secret"]
        page = open_page("operator", base=SimpleNamespace(url=proxy.url))
        loads: list[str] = []
        page.on("request", lambda r: loads.append(r.url) if is_page_load(r.url) else None)
        expect(page.locator("#stream-state")).to_have_text("live")
        badge = page.locator('#units-body tr[data-unit="door-1"] .badge')
        expect(badge).to_have_text("offline")
        loads_before = len(loads)

        # 1. A short drop: the unit comes online meanwhile; the replay alone brings the page up to date.
        proxy.cut()
        expect(page.locator("#stream-state")).to_have_text("reconnecting…", timeout=10_000)
        door = RawUnit(fleet.mqtt_port, "door-1", door_secret).connect()
        door.birth()
        with fleet.api() as api:
            wait_online(api, "door-1")
        proxy.restore()
        expect(page.locator("#stream-state")).to_have_text("live", timeout=20_000)
        expect(badge).to_have_text("online", timeout=5_000)
        time.sleep(1.5)  # room for a reload the page should not make
        assert len(loads) == loads_before, f"the page re-read the unit list after an exact replay: {loads}"
        expect(page.locator(".toast", has_text="missed")).to_have_count(0)

        # 2. A long drop: the unit goes offline, then far more events than the buffer holds push that one out.
        proxy.cut()
        expect(page.locator("#stream-state")).to_have_text("reconnecting…", timeout=10_000)
        door.stop_clean()
        door = None
        with fleet.api() as api:
            wait_online(api, "door-1", online=False)
            chatty = RawUnit(fleet.mqtt_port, "chatty-1", chatty_secret).connect()
            chatty.birth()
            records = [
                {"id": f"r{i}", "ts": now_ms(), "level": "info", "source": "test", "msg": f"noise {i}"}
                for i in range(2 * BUFFER)
            ]
            chatty.publish(Kind.LOGS, {"v": 1, "records": records})
            wait_for(
                lambda: len(api.get("/api/devices/chatty-1/logs", params={"limit": 500}).json()["items"]) == 2 * BUFFER,
                what="the flood stored",
            )
        loads_before = len(loads)
        proxy.restore()
        expect(page.locator("#stream-state")).to_have_text("live", timeout=20_000)
        expect(page.locator(".toast", has_text="missed")).to_have_count(1, timeout=5_000)
        expect(badge).to_have_text("offline", timeout=5_000)
        assert len(loads) > loads_before, "the reset did not make the page re-read the unit list"
        expect(page.locator("#stream-banner")).to_have_count(0)
    finally:
        for unit in (door, chatty):
            if unit is not None:
                unit.stop_clean()
        proxy.close()
        fleet.stop()
