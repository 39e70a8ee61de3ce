"""What the unit page and the overview show must be true: every chart moves live, no "null", no false "offline"
while loading, stale values of offline units look stale, and confirmations name the unit and warn when it is
offline."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.dashboard.conftest import wait_online
from tests.support.services import wait_for
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser

METRICS_INTERVAL = 4  # the simulator's (conftest.py)


def open_unit(page, device_id: str) -> None:
    page.goto(page.url.split("#")[0] + f"#/units/{device_id}")
    expect(page.locator("#unit-title")).to_have_text(device_id)


def chart_labels(page) -> list[str]:
    return page.locator(".chart-svg").evaluate_all("els => els.map(e => e.getAttribute('aria-label') || '')")


def test_all_six_charts_follow_live_samples(open_page, fleet, sim):
    page = open_page("operator")
    open_unit(page, "sim-00007")
    expect(page.locator(".chart-svg")).to_have_count(6)
    expect(page.locator(".metrics .hint")).to_contain_text("points")
    expect(page.locator("#stream-state")).to_have_text("live")
    before = chart_labels(page)

    def all_moved() -> bool:
        now = chart_labels(page)
        return all(a != b for a, b in zip(before, now, strict=True))

    wait_for(
        all_moved,
        timeout=2 * METRICS_INTERVAL + 4,
        interval=0.25,
        what=f"all six charts to take a live sample (before: {before}, now: {chart_labels(page)})",
    )


def test_no_null_text_under_queued_running_and_canceled_commands(open_page, fleet, enroll):
    unit = enroll("bench-quiet")
    raw = RawUnit(unit.port, unit.id, unit.secret).connect()
    try:
        raw.subscribe(Kind.CMD)
        raw.birth()
        with fleet.api() as api:
            wait_online(api, unit.id)
        page = open_page("operator")
        open_unit(page, unit.id)
        main = page.locator("main")

        # running: the unit takes the command and says it started, no output yet
        page.click("#act-restart")
        page.locator("dialog button[type=submit]").click()
        msg = raw.received.get(timeout=10)
        cmd_id = json.loads(msg.payload)["id"]
        raw.publish(Kind.CMD_RESULT, {"v": 1, "id": cmd_id, "status": "running", "ts": now_ms()})
        expect(page.locator("#cmd-live .cmd-status")).to_have_text("running", timeout=10_000)
        expect(main).not_to_contain_text("null")

        # queued: the unit is gone, the next command waits for it; then it is canceled
        raw.kill()
        with fleet.api() as api:
            wait_online(api, unit.id, online=False, timeout=30)
        page.click("#act-restart")
        page.locator("dialog button[type=submit]").click()
        expect(page.locator("#cmd-live .cmd-status")).to_have_text(re.compile("^(queued|sent)$"), timeout=10_000)
        expect(main).not_to_contain_text("null")
        page.locator("#cmd-history tr[data-command]").first.locator("button", has_text="Cancel").click()
        expect(page.locator("#cmd-live .cmd-status")).to_have_text("canceled", timeout=10_000)
        expect(main).not_to_contain_text("null")
        page.reload()
        expect(page.locator("#cmd-history tr[data-command]")).to_have_count(2)
        expect(main).not_to_contain_text("null")
    finally:
        raw.client.loop_stop()


# What a unit page could only know after reading it: none of it may show before the read is answered.
FALSE_WHILE_LOADING = (
    "offline",
    "no data in this range",
    "No open alerts",
    "No services reported",
    "No commands sent",
    "No log lines",
    "No terminal sessions",
)


def test_a_loading_unit_page_never_claims_offline_or_no_data(open_page, fleet, sim):
    """Every read of the page is held: first all of them, then all but the unit's own; the page says it is loading
    and claims nothing it has not read (no "offline", no "no data", no "no alerts", no empty lists)."""
    page = open_page("admin")
    held: list = []
    release = {"unit": False, "rest": False}

    def slow(route):
        own = route.request.url.split("?")[0].endswith("/api/devices/sim-00009")
        if release["unit" if own else "rest"]:
            route.continue_()
        else:
            held.append((own, route))  # answered below, after the page was looked at

    page.route(re.compile(r".*/api/.*sim-00009.*"), slow)
    page.goto(page.url.split("#")[0] + "#/units/sim-00009")
    expect(page.locator("#unit-title")).to_have_text("sim-00009")
    wait_for(lambda: len(held) >= 1, timeout=10, what="the unit read to be held")
    page.wait_for_timeout(300)
    expect(page.locator(".unit-head")).to_contain_text("loading")
    text = page.locator("main").inner_text()
    assert not [claim for claim in FALSE_WHILE_LOADING if claim in text], text

    release["unit"] = True
    for route in [r for own, r in held if own]:
        route.continue_()
    expect(page.locator(".unit-head .badge")).to_have_text("online")
    wait_for(lambda: len(held) >= 5, timeout=10, what="the page's other reads to be held")
    page.wait_for_timeout(300)
    text = page.locator("main").inner_text()
    assert not [claim for claim in FALSE_WHILE_LOADING[1:] if claim in text], text

    release["rest"] = True
    for route in [r for own, r in held if not own]:
        route.continue_()
    expect(page.locator("#unit-alerts-empty")).to_be_visible()  # sim-00009 has none: now the page may say so
    expect(page.locator(".metrics .hint")).to_contain_text("points")


def test_offline_units_show_their_last_values_as_stale(open_page, fleet, enroll):
    unit = enroll("bench-stale", ["stale"])
    raw = RawUnit(unit.port, unit.id, unit.secret).connect()
    raw.birth()
    raw.publish(
        Kind.METRICS,
        {
            "v": 1,
            "ts": now_ms(),
            "cpu_percent": 55.0,
            "mem_percent": 40.0,
            "disk_percent": 30.0,
            "services": {"recorder.service": "active"},
        },
    )
    with fleet.api() as api:
        wait_online(api, unit.id)
        wait_for(
            lambda: (api.get(f"/api/devices/{unit.id}").json().get("metrics") or {}).get("cpu_percent"),
            timeout=10,
            what="the metrics stored",
        )
    raw.kill()
    with fleet.api() as api:
        wait_online(api, unit.id, online=False, timeout=30)
    page = open_page("operator")
    page.fill("#filter-tag", "stale")
    page.press("#filter-tag", "Enter")
    row = page.locator(f'#units-body tr[data-unit="{unit.id}"]')
    expect(row.locator(".badge")).to_have_text("offline")
    cpu = row.locator(".col-cpu .gauge")
    expect(cpu).to_have_attribute("data-stale", "true")
    expect(row.locator(".col-cpu")).to_contain_text("55 %")
    expect(row.locator(".col-cpu")).to_contain_text("ago")  # how old the value is, in words
    grey = cpu.locator(".gauge-bar").evaluate("el => getComputedStyle(el).backgroundColor")
    green = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--ok-line')")
    assert grey != green
    open_unit(page, unit.id)
    expect(page.locator("#unit-glance")).to_contain_text("last reported")
    expect(page.locator(".panel.services")).to_contain_text("As last reported: the unit is offline.")


def test_confirmations_name_the_unit_id_and_warn_when_it_is_offline(open_page, fleet, enroll):
    unit = enroll("bench-confirm")
    with fleet.api() as api:
        api.patch(f"/api/devices/{unit.id}", json={"name": "Hall camera"})
    page = open_page("operator")
    open_unit(page, unit.id)
    dialog = page.locator("dialog")
    for button in ("#act-restart", "#act-update", "#act-reboot"):
        page.click(button)
        expect(dialog).to_contain_text(unit.id)
        expect(dialog).to_contain_text("offline")
        expect(dialog).to_contain_text("queue")
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)
