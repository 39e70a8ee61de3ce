"""The unit page: commands with confirmation and live status, the log tail, the config editor, charts, TURN."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.dashboard.conftest import screenshot, wait_online
from tests.support.services import wait_for
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser


def open_unit(open_page, device_id: str, role: str = "operator"):
    page = open_page(role)
    page.goto(page.url.split("#")[0] + f"#/units/{device_id}")
    expect(page.locator("#unit-title")).to_have_text(device_id)
    return page


def test_restart_click_reaches_succeeded_and_reboot_needs_the_unit_id(open_page, fleet, sim):
    page = open_unit(open_page, "sim-00003")
    expect(page.locator(".unit-head .badge")).to_have_text("online")
    expect(page.locator("#services [data-service]").first).to_be_visible()

    page.click("#act-restart")
    dialog = page.locator("dialog")
    expect(dialog).to_contain_text("Restart services on sim-00003?")
    dialog.locator("button[type=submit]").click()
    expect(page.locator("#cmd-live .cmd-status")).to_have_text("succeeded", timeout=15_000)
    expect(page.locator("#cmd-live-output")).not_to_be_empty()
    newest = page.locator("#cmd-history tr[data-command]").first
    expect(newest.locator(".cmd-name")).to_have_text("restart")
    expect(newest.locator(".cmd-status")).to_have_text("succeeded")
    expect(newest.locator(".cmd-by")).to_have_text("olga")

    page.click("#act-reboot")
    confirm = dialog.locator("button[type=submit]")
    expect(confirm).to_be_disabled()
    expect(page.locator("#dialog-typed")).to_be_focused()
    page.keyboard.press("Enter")  # a stray Enter does nothing
    expect(dialog).to_be_visible()
    page.fill("#dialog-typed", "sim-00004")
    expect(confirm).to_be_disabled()
    page.fill("#dialog-typed", "sim-00003")
    expect(confirm).to_be_enabled()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    page.click("#act-update")
    page.fill("#dialog-input", "--upload-pack=evil")
    expect(dialog.locator(".field-error")).to_contain_text("not starting with -")
    expect(dialog.locator("button[type=submit]")).to_be_disabled()
    page.fill("#dialog-input", "v2.3.0")
    dialog.locator("button[type=submit]").click()
    expect(page.locator("#cmd-live")).to_contain_text("update to v2.3.0")
    expect(page.locator("#cmd-live .cmd-status")).to_have_text("succeeded", timeout=15_000)
    expect(page.locator("#unit-version")).to_have_text("v2.3.0", timeout=15_000)  # live from the unit's birth

    expect(page.locator(".chart-svg path.line").first).to_be_visible(timeout=15_000)  # metric charts drew data
    page.click('button[data-range="1h"]')
    expect(page.locator('button[data-range="1h"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".metrics .hint")).to_contain_text("30 s each (raw samples)")
    page.click('button[data-range="7d"]')  # a week: the hourly rollups, not a week of raw samples
    expect(page.locator(".metrics .hint")).to_contain_text("3600 s each (hourly rollups)")
    screenshot(page, "unit")


def test_log_tail_shows_new_lines_with_pause_and_level_filter(open_page, fleet, enroll):
    unit = enroll("bench-logs", ["bench"])
    raw = RawUnit(unit.port, unit.id, unit.secret).connect()
    try:
        raw.birth()
        with fleet.api() as api:
            wait_online(api, unit.id)
        page = open_unit(open_page, unit.id)
        view = page.locator("#log-view")
        expect(view).to_contain_text("No log lines yet.")

        def log(level: str, msg: str) -> None:
            raw.publish(
                Kind.LOGS,
                {
                    "v": 1,
                    "records": [
                        {"id": uuid.uuid4().hex, "ts": now_ms(), "level": level, "source": "recorder", "msg": msg}
                    ],
                },
            )

        first = f"camera 1 started {uuid.uuid4().hex[:8]}"
        log("info", first)
        expect(view.locator(".log-line", has_text=first)).to_have_count(1, timeout=5_000)

        page.click("#log-pause")
        held = f"segment written while paused {uuid.uuid4().hex[:8]}"
        log("info", held)
        expect(page.locator("#log-held")).to_have_text("paused · 1 new line waiting", timeout=5_000)
        expect(view.locator(".log-line", has_text=held)).to_have_count(0)
        page.click("#log-pause")
        expect(view.locator(".log-line", has_text=held)).to_have_count(1)

        page.select_option("#log-level", "error")
        expect(view.locator(".log-line", has_text=first)).to_have_count(0)
        log("info", "an info line the filter hides")
        bad = f"disk write failed {uuid.uuid4().hex[:8]}"
        log("error", bad)
        expect(view.locator(".log-line", has_text=bad)).to_have_count(1, timeout=5_000)
        expect(view.locator(".log-line")).to_have_count(1)

        page.select_option("#log-level", "debug")
        expect(view.locator(".log-line")).to_have_count(4)
        page.fill("#log-q", "camera 1")  # searched on the server, like the level
        expect(view.locator(".log-line")).to_have_count(1)
        expect(view.locator(".log-line").first).to_contain_text(first)
    finally:
        raw.stop_clean()


def test_config_editor_rejects_invalid_json_and_saves_valid_config(open_page, fleet, sim):
    page = open_unit(open_page, "sim-00005")
    editor = page.locator("#config-editor")
    save = page.locator("#config-save")
    expect(page.locator("#config-sync")).to_have_text("in sync")
    page.click("#config-mode-json")  # the whole document as JSON (the form is the default view)

    editor.fill('{"video_bitrate_kbps": 4000,')
    expect(page.locator("#config-error")).to_contain_text("Not valid JSON")
    expect(editor).to_have_attribute("aria-invalid", "true")
    expect(save).to_be_disabled()

    editor.fill("[1, 2]")
    expect(page.locator("#config-error")).to_contain_text("must be a JSON object")
    expect(save).to_be_disabled()

    editor.fill('{"video_bitrate_kbps": 5}')  # a known key out of range, caught before sending
    expect(page.locator("#config-error")).to_contain_text("video_bitrate_kbps must be at least 100")
    expect(save).to_be_disabled()

    editor.fill('{"timezone": "not a zone!"}')  # only the server knows this rule: its 422 is shown
    expect(save).to_be_enabled()
    save.click()
    expect(page.locator("#config-error")).to_contain_text("Not saved. Invalid input: timezone must look like")
    expect(page.locator("#config-versions")).to_have_text("desired v0 · reported v0")

    editor.fill('{"video_bitrate_kbps": 6000, "resolution": "1080p"}')
    save.click()
    expect(page.locator("#config-versions")).to_have_text("desired v1 · reported v1", timeout=10_000)
    expect(page.locator("#config-sync")).to_have_text("in sync")
    expect(page.locator("#config-reported")).to_contain_text('"video_bitrate_kbps": 6000')
    expect(page.locator("#config-error")).to_be_empty()


def test_turn_test_shows_why_turn_is_off(open_page, fleet):
    with fleet.api() as api:
        api.post("/api/devices", json={"id": "bench-turn"})
    page = open_unit(open_page, "bench-turn")
    page.click("#act-turn")
    expect(page.locator("#turn-result")).to_contain_text("TURN test failed")
    expect(page.locator("#turn-result")).to_contain_text("FLEET_TURN_URLS")


def test_unknown_unit_says_so(open_page, fleet):
    page = open_page("operator")
    page.goto(page.url.split("#")[0] + "#/units/no-such-unit")
    expect(page.locator("main h1")).to_have_text("Unit not found")
    expect(page.locator("main")).to_contain_text("no unit with id 'no-such-unit'")


def test_a_unit_over_its_ingest_budget_says_so(open_page, fleet, enroll):
    unit = enroll("bench-flood", ["bench"])
    raw = RawUnit(unit.port, unit.id, unit.secret).connect()
    try:
        raw.birth()
        hb = {"v": 1, "ts": now_ms(), "seq": 1, "uptime_s": 1, "hostname": "h"}
        for _ in range(1200):  # far past the default burst of 500 messages
            raw.publish(Kind.HEARTBEAT, hb, qos=0)
        with fleet.api() as api:
            wait_online(api, unit.id)
            wait_for(
                lambda: api.get(f"/api/devices/{unit.id}").json()["ingest_throttled"] > 0,
                timeout=15,
                what="refusals recorded",
            )
        page = open_unit(open_page, unit.id)
        expect(page.locator("#unit-glance")).to_contain_text("messages over its ingest budget")
    finally:
        raw.stop_clean()
