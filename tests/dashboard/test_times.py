"""Times say which zone they are in, the operator picks UTC or the browser's own zone, and a log line that is not
from today shows its date."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.dashboard.conftest import wait_online
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser


def test_zone_is_labelled_switchable_and_old_log_lines_show_their_date(open_page, fleet, enroll):
    unit = enroll("bench-times")
    raw = RawUnit(unit.port, unit.id, unit.secret).connect()
    try:
        raw.birth()
        with fleet.api() as api:
            wait_online(api, unit.id)
        old = f"from two days ago {uuid.uuid4().hex[:6]}"
        raw.publish(
            Kind.LOGS,
            {
                "v": 1,
                "records": [
                    {
                        "id": uuid.uuid4().hex,
                        "ts": now_ms() - 2 * 86400_000,
                        "level": "info",
                        "source": "rec",
                        "msg": old,
                    }
                ],
            },
        )
        page = open_page("operator", timezone_id="Asia/Kolkata")  # UTC+5:30: never the same as UTC
        zone = page.locator("#zone-toggle")
        expect(zone).to_have_text("Times: local (UTC+5:30)")
        page.goto(page.url.split("#")[0] + f"#/units/{unit.id}")
        changed = page.locator("#unit-title").locator("xpath=ancestor::header").locator("dd", has_text="ago (")
        expect(changed).to_contain_text("UTC+5:30")
        line = page.locator(".log-line", has_text=old)
        expect(line.locator(".log-time")).to_have_text(
            re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"), timeout=10_000
        )

        zone.click()
        expect(zone).to_have_text("Times: UTC")
        expect(changed).to_contain_text("UTC)")
        expect(changed).not_to_contain_text("UTC+5:30")
        page.reload()  # the choice is remembered
        expect(page.locator("#zone-toggle")).to_have_text("Times: UTC")
    finally:
        raw.stop_clean()
