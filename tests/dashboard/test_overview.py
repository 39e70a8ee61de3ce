"""The fleet overview: totals, paging/search/sort over a few hundred units, presence changes live."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.dashboard.conftest import SIM_UNITS, screenshot, wait_online
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser


def row(page, device_id: str):
    return page.locator(f'#units-body tr[data-unit="{device_id}"]')


def total(page, name: str) -> int:
    return int(page.locator(f"#total-{name}").inner_text().replace(",", ""))


def test_totals_paging_search_and_sort(open_page, fleet, sim):
    page = open_page("operator")
    page.fill("#filter-tag", "simulated")
    page.press("#filter-tag", "Enter")
    page.select_option("#page-size", "50")
    expect(page.locator("#pager-info")).to_contain_text(f"1–50 of {SIM_UNITS} units", timeout=10_000)
    assert total(page, "units") >= SIM_UNITS and total(page, "online") >= SIM_UNITS
    assert total(page, "units") == total(page, "online") + total(page, "offline")
    expect(page.locator("#units-body tr")).to_have_count(50)
    expect(row(page, "sim-00001").locator(".badge")).to_have_text("online")
    expect(row(page, "sim-00001").locator(".col-cpu")).to_contain_text("%")  # metrics at a glance

    page.click('button[data-page="next"]')
    expect(page.locator("#pager-info")).to_contain_text(f"51–100 of {SIM_UNITS} units · page 2 of 4")
    expect(page.locator("#units-body tr").first).to_have_attribute("data-unit", "sim-00051")
    page.click('button[data-page="last"]')
    expect(page.locator("#pager-info")).to_contain_text("page 4 of 4")
    expect(page.locator('button[data-page="next"]')).to_be_disabled()
    assert "page=4" in page.url and "size=50" in page.url  # the view is in the address: reload or share it
    page.reload()
    expect(page.locator("#units-body tr").first).to_have_attribute("data-unit", "sim-00151")

    page.select_option("#page-size", "500")
    expect(page.locator("#units-body tr")).to_have_count(SIM_UNITS)

    page.click('th[data-col="id"] button')  # ascending already: the click turns it around
    expect(page.locator("#units-body tr").first).to_have_attribute("data-unit", f"sim-{SIM_UNITS:05d}")
    expect(page.locator('th[data-col="id"]')).to_have_attribute("aria-sort", "descending")

    page.fill("#filter-q", "sim-00042")
    expect(page.locator("#units-body tr")).to_have_count(1)
    expect(page.locator("#pager-info")).to_contain_text("1–1 of 1 units")

    page.fill("#filter-q", "")
    page.select_option("#filter-status", "offline")
    expect(page.locator("#units-body tr")).to_have_count(0)
    expect(page.locator(".empty-state")).to_contain_text("No units match")


def test_unit_going_offline_turns_its_badge_within_2_s(open_page, fleet, sim):
    page = open_page("operator")
    page.fill("#filter-q", "sim-0000")
    target = row(page, "sim-00007")
    expect(target.locator(".badge")).to_have_text("online")
    online_before, offline_before = total(page, "online"), total(page, "offline")

    sim.kill("sim-00007")  # the connection drops without DISCONNECT: the broker publishes the unit's Will
    killed = time.monotonic()
    expect(target.locator(".badge")).to_have_text("offline", timeout=2_000)
    assert time.monotonic() - killed < 2.0
    expect(page.locator("#total-online")).to_have_text(str(online_before - 1), timeout=5_000)
    expect(page.locator("#total-offline")).to_have_text(str(offline_before + 1))

    sim.start_unit("sim-00007")  # back on a new connection: online again, without a reload
    expect(target.locator(".badge")).to_have_text("online", timeout=10_000)
    expect(page.locator("#total-online")).to_have_text(str(online_before), timeout=5_000)


def test_failing_service_and_last_seen_are_live(open_page, fleet, enroll):
    unit = enroll("bench-overview", ["bench"])
    raw = RawUnit(unit.port, unit.id, unit.secret).connect()
    try:
        raw.birth("2.1.0")
        with fleet.api() as api:
            wait_online(api, unit.id)
        page = open_page("operator")
        page.fill("#filter-tag", "bench")
        page.press("#filter-tag", "Enter")
        target = row(page, unit.id)
        expect(page.locator("#units-body tr")).to_have_count(1)
        expect(target.locator(".badge")).to_have_text("online")
        expect(target.locator(".col-software_version")).to_have_text("2.1.0")
        failing_before = total(page, "failing")

        raw.publish(
            Kind.METRICS,
            {
                "v": 1,
                "ts": now_ms(),
                "cpu_percent": 97.0,
                "mem_percent": 40.0,
                "disk_percent": 93.0,
                "temp_c": 88.0,
                "services": {"recorder.service": "failed"},
            },
            qos=0,
        )
        expect(target.locator(".badge")).to_have_text("failing", timeout=5_000)
        expect(target.locator(".col-cpu")).to_contain_text("97 %")
        expect(target.locator(".col-cpu .gauge")).to_have_attribute("data-level", "crit")
        expect(page.locator("#total-failing")).to_have_text(str(failing_before + 1), timeout=5_000)

        page.click(".card-failing")  # the card filters the list
        expect(page.locator("#filter-status")).to_have_value("failing")
        expect(target.locator(".badge")).to_have_text("failing")

        expect(target.locator(".ago")).to_have_text("4 s ago", timeout=8_000)  # ticks with no new data
        page.click("text=Clear filters")
        expect(target.locator(".badge")).to_have_text("failing")
        screenshot(page, "overview", full_page=False)
    finally:
        raw.stop_clean()
