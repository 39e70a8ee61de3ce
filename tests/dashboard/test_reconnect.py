"""A lost event stream says so and comes back by itself: the service restarts under an open dashboard, which
re-reads its view when the new process cannot replay what the stream missed."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import start_fleet
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser


def test_stream_reconnects_after_a_service_restart(open_page, tmp_path, chromium_path):
    fleet = start_fleet(tmp_path / "fleet")
    try:
        with fleet.api() as api:
            secret = api.post("/api/devices", json={"id": "door-1"}).json()["secret"]
        page = open_page("operator", base=fleet)
        expect(page.locator("#stream-state")).to_have_text("live")
        badge = page.locator('#units-body tr[data-unit="door-1"] .badge')
        expect(badge).to_have_text("offline")

        fleet.stop()
        expect(page.locator("#stream-state")).to_have_text("reconnecting…", timeout=10_000)
        expect(page.locator("#stream-banner")).to_contain_text("Live updates interrupted")

        fleet.start()  # same ports, same data: the page's session is still valid
        expect(page.locator("#stream-state")).to_have_text("live", timeout=20_000)
        expect(page.locator("#stream-banner")).to_have_count(0)
        # The restarted service lost its replay buffer and says so: the page re-read the units and tells why.
        expect(page.locator(".toast", has_text="the server restarted")).to_have_count(1)

        unit = RawUnit(fleet.mqtt_port, "door-1", secret).connect()
        try:
            unit.birth()
            expect(badge).to_have_text("online", timeout=5_000)  # events flow again on the new stream
        finally:
            unit.stop_clean()
    finally:
        fleet.stop()
