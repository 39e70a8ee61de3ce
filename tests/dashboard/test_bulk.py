"""Bulk actions from the unit list: select rows (or every unit the filter matches), confirm, one rollout to watch."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from tests.dashboard.conftest import screenshot
from tests.dashboard.test_accessibility import axe_problems
from tests.support.services import wait_for

pytestmark = pytest.mark.browser


def restarts_since(api, device_id: str, since_ms: int) -> list[dict]:
    items = api.get(f"/api/devices/{device_id}/commands", params={"limit": 50}).json()["items"]
    return [c for c in items if c["name"] == "restart" and c["created_at"] >= iso(since_ms)]


def iso(ms: int) -> str:
    from fleet_service.db.columns import iso as to_iso

    return to_iso(ms)


def test_the_operator_restarts_exactly_the_three_units_selected(open_page, fleet, sim):
    started = now_ms() - 1000
    page = open_page("operator")
    page.fill("#filter-q", "sim-0004")  # sim-00040 ... sim-00049
    rows = page.locator("#units-body tr")
    expect(rows).to_have_count(10)
    chosen = ["sim-00042", "sim-00045", "sim-00047"]
    for device_id in chosen:
        page.locator(f'#units-body tr[data-unit="{device_id}"] input.row-select').check()
    expect(page.locator("#bulk-count")).to_have_text("3 units selected")

    page.click("#bulk-restart")
    dialog = page.locator("dialog.bulk-dialog")
    expect(dialog.locator("h2")).to_have_text("Restart services on 3 units?")
    expect(dialog.locator("#bulk-ids")).to_have_text(", ".join(chosen))
    expect(dialog.locator("#bulk-offline")).to_have_count(0)  # all online: nothing will queue
    assert axe_problems(page) == []
    screenshot(page, "bulk-restart-confirm", full_page=False)
    dialog.locator("#bulk-go").click()
    link = dialog.locator("#bulk-link")
    expect(link).to_be_visible()
    rollout_id = link.get_attribute("href").rsplit("/", 1)[1]

    with fleet.api() as api:
        view = api.get(f"/api/rollouts/{rollout_id}").json()
        assert [u["device_id"] for u in view["units"]] == chosen
        assert view["command"] == "restart" and view["batches"] == 1 and view["abort_threshold"] == 1
        assert view["target"] == {"device_ids": chosen}
        wait_for(
            lambda: all(restarts_since(api, d, started) for d in chosen), timeout=20, what="a restart at each unit"
        )
        for device_id in chosen:
            assert len(restarts_since(api, device_id, started)) == 1
        for i in range(40, 50):
            device_id = f"sim-{i:05d}"
            if device_id not in chosen:
                assert restarts_since(api, device_id, started) == [], device_id

    link.click()
    expect(page.locator("#rollout-head .rollout-state")).to_have_text("completed", timeout=20_000)


def test_all_matching_sends_the_filter_and_reaches_every_match(open_page, fleet, sim):
    page = open_page("operator")
    page.select_option("#page-size", "50")
    page.fill("#filter-q", "sim-001")  # sim-00100 ... sim-00199: two pages of 50
    expect(page.locator("#pager-info")).to_contain_text("of 100 units")
    page.check("#select-page")
    expect(page.locator("#bulk-count")).to_have_text("50 units selected")
    page.click("#bulk-all")
    expect(page.locator("#bulk-count")).to_have_text("All 100 matching units selected")

    page.click("#bulk-rollout")
    dialog = page.locator("dialog.bulk-dialog")
    dialog.locator("#bulk-command").select_option("update")
    dialog.locator("#bulk-ref").fill("v7.7.7")
    dialog.locator("#bulk-batch").fill("25")
    dialog.locator("#bulk-threshold").fill("20")
    expect(dialog.locator("h2")).to_have_text("Update 100 units to v7.7.7?")
    first_five = ", ".join(f"sim-{i:05d}" for i in range(100, 105))
    expect(dialog.locator("#bulk-ids")).to_have_text(f"{first_five} and 95 more")
    dialog.locator("#bulk-go").click()
    link = dialog.locator("#bulk-link")
    expect(link).to_be_visible()
    rollout_id = link.get_attribute("href").rsplit("/", 1)[1]

    with fleet.api() as api:
        view = api.get(f"/api/rollouts/{rollout_id}").json()
        assert view["target"] == {"filter": {"q": "sim-001"}}  # the filter, not 100 ids
        matches = api.get("/api/devices", params={"q": "sim-001", "limit": 1000, "sort": "id"}).json()["items"]
        assert [u["device_id"] for u in view["units"]] == [d["id"] for d in matches]
        assert view["batch_size"] == 25 and view["abort_threshold"] == 0.2 and view["args"] == {"ref": "v7.7.7"}

    # a new filter starts a new selection
    page.keyboard.press("Escape")
    page.fill("#filter-q", "sim-0002")
    expect(page.locator("#bulk-bar")).to_be_hidden()
    expect(page.locator("#units-body input.row-select:checked")).to_have_count(0)


def test_offline_units_are_counted_in_the_confirmation(open_page, fleet, sim):
    page = open_page("operator", color_scheme="dark")
    sim.kill("sim-00061")
    page.fill("#filter-q", "sim-0006")
    expect(page.locator("#units-body tr")).to_have_count(10)  # the filter applied (a new filter clears the selection)
    killed = page.locator('#units-body tr[data-unit="sim-00061"]')
    expect(killed).to_have_attribute("data-status", "offline", timeout=20_000)
    for device_id in ("sim-00060", "sim-00061"):
        page.locator(f'#units-body tr[data-unit="{device_id}"] input.row-select').check()
    page.click("#bulk-reboot")
    dialog = page.locator("dialog.bulk-dialog")
    expect(dialog.locator("#bulk-offline")).to_contain_text("1 of these units is offline")
    expect(dialog.locator("h2")).to_have_text("Reboot 2 units?")
    expect(dialog.locator("#bulk-go")).to_be_disabled()  # a reboot is typed to confirm
    dialog.locator("#bulk-typed").fill("reboot 2")
    expect(dialog.locator("#bulk-go")).to_be_enabled()
    assert axe_problems(page) == []
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    page.click("#bulk-reboot")
    dialog.locator("#bulk-cancel").click()
    expect(dialog).to_have_count(0)
    sim.start_unit("sim-00061")


def test_viewers_get_no_selection(open_page, fleet, sim):
    page = open_page("viewer")
    expect(page.locator("#units-body tr").first).to_be_visible()
    expect(page.locator("#units input[type=checkbox]")).to_have_count(0)
    expect(page.locator("#bulk-bar")).to_have_count(0)
