"""Editing in the dashboard: a unit's name and tags, tag-wide config defaults, the config form generated from the
schema (unknown keys kept in JSON), and on the overview search by address, tag suggestions from the whole fleet
and saved filters."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from protocol.tags import TAG_RULE
from tests.dashboard.conftest import screenshot

pytestmark = pytest.mark.browser


def goto(page, fragment: str):
    page.goto(page.url.split("#")[0] + fragment)
    return page


def open_unit(open_page, device_id: str, role: str = "operator"):
    page = goto(open_page(role), f"#/units/{device_id}")
    expect(page.locator("#unit-title")).to_have_text(device_id)
    return page


def test_name_and_tag_edits_persist_and_show_live(open_page, fleet, enroll):
    enroll("edit-1", ["lobby"])
    enroll("edit-2", ["edit-known-tag"])  # another unit's tag: suggested while typing
    page = open_unit(open_page, "edit-1")
    watcher = open_unit(open_page, "edit-1", role="viewer")
    expect(watcher.locator("#unit-edit")).to_have_count(0)  # a viewer may not edit
    expect(watcher.locator("#unit-tags")).to_have_text("lobby")

    page.click("#unit-edit")
    expect(page.locator("#unit-name-input")).to_be_focused()
    page.fill("#unit-name-input", "Lobby camera")
    page.fill("#unit-tag-input", "edit-k")
    expect(page.locator('#tag-suggestions option[value="edit-known-tag"]')).to_have_count(1)
    page.fill("#unit-tag-input", "stage, hall")
    page.press("#unit-tag-input", "Enter")
    expect(page.locator("#unit-tag-chips .tag-chip")).to_have_count(3)
    page.click('#unit-tag-chips button[aria-label="Remove tag lobby"]')
    expect(page.locator("#unit-tag-chips .tag-chip")).to_have_count(2)
    page.click("#unit-edit-save")
    expect(page.locator("#unit-edit-form")).to_be_hidden()
    expect(page.locator(".unit-head .unit-name")).to_have_text("Lobby camera")
    expect(page.locator("#unit-tags")).to_have_text("hall, stage")
    # another browser on the same unit sees it without a reload
    expect(watcher.locator(".unit-head .unit-name")).to_have_text("Lobby camera")
    expect(watcher.locator("#unit-tags")).to_have_text("hall, stage")

    page.reload()
    expect(page.locator(".unit-head .unit-name")).to_have_text("Lobby camera")
    expect(page.locator("#unit-tags")).to_have_text("hall, stage")
    with fleet.api() as api:
        body = api.get("/api/devices/edit-1").json()
    assert (body["name"], body["tags"]) == ("Lobby camera", ["hall", "stage"])


def test_a_bad_tag_is_refused_and_the_servers_message_is_shown(open_page, fleet, enroll):
    enroll("edit-bad", ["keep"])
    page = open_unit(open_page, "edit-bad")
    page.click("#unit-edit")
    page.fill("#unit-tag-input", "bad tag!")
    page.press("#unit-tag-input", "Enter")
    error = page.locator("#unit-edit-error")
    expect(error).to_contain_text(TAG_RULE)  # the browser knows the rule of protocol/tags.py
    expect(page.locator("#unit-tag-input")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#unit-tag-chips .tag-chip")).to_have_count(1)

    # a rule only the server checks: its answer is shown, nothing changes
    page.fill("#unit-tag-input", " ".join(f"t{i}" for i in range(40)))
    page.press("#unit-tag-input", "Enter")
    page.fill("#unit-name-input", "should not stick")
    page.click("#unit-edit-save")
    expect(error).to_contain_text("at most 32 tags per unit")
    expect(page.locator("#unit-edit-form")).to_be_visible()  # the edits stay for the operator to fix
    expect(page.locator("#unit-tags")).to_have_text("keep")
    with fleet.api() as api:
        body = api.get("/api/devices/edit-bad").json()
        assert (body["name"], body["tags"]) == ("", ["keep"])
        r = api.patch("/api/devices/edit-bad", json={"tags": ["bad tag!"]})
        assert r.status_code == 422 and TAG_RULE in r.text  # the same words from the server
    page.keyboard.press("Escape")
    expect(page.locator("#unit-edit-form")).to_be_hidden()
    expect(page.locator("#unit-edit")).to_be_focused()


def test_config_defaults_view_creates_edits_and_deletes_defaults(open_page, fleet, enroll):
    enroll("cfgd-1", ["cfgd-venue"])
    page = open_page("operator")
    page.click('nav a[data-nav="config"]')
    expect(page.locator("#groups-title")).to_be_visible()
    page.click("#group-new")
    page.fill("#group-tag", "cfgd-venue")
    page.fill("#group-priority", "5")
    page.fill("#group-editor", '{"video_bitrate_kbps": 5}')
    expect(page.locator("#group-error")).to_contain_text("video_bitrate_kbps must be at least 100")
    expect(page.locator("#group-save")).to_be_disabled()
    page.fill("#group-editor", '{"video_bitrate_kbps": 3000, "recorder": {"fps": 12}}')
    page.click("#group-save")
    row = page.locator('#groups-body tr[data-tag="cfgd-venue"]')
    expect(row.locator(".group-units")).to_have_text("1")
    expect(row.locator(".group-priority")).to_have_text("5")
    expect(row.locator(".group-config")).to_contain_text('"video_bitrate_kbps": 3000')
    with fleet.api() as api:
        desired = api.get("/api/devices/cfgd-1/config").json()["desired"]
    assert desired == {"video_bitrate_kbps": 3000, "recorder": {"fps": 12}}

    # the unit page shows the default where the unit does not set its own value
    unit = open_unit(open_page, "cfgd-1")
    field = unit.locator("#cfg-video_bitrate_kbps")
    expect(field).to_have_attribute("placeholder", "3000")
    expect(unit.locator('[data-key="video_bitrate_kbps"] .cfg-source')).to_contain_text("default from tag cfgd-venue")

    # edit against the version it was read at: a change in between is refused, then loaded
    row.locator("button.group-edit").click()
    expect(page.locator("#group-tag")).to_have_attribute("readonly", "")
    with fleet.api() as api:
        assert api.put("/api/config/groups/cfgd-venue", json={"video_bitrate_kbps": 3500}).status_code == 200
    page.fill("#group-editor", '{"video_bitrate_kbps": 4000}')
    page.click("#group-save")
    expect(page.locator("#group-notice")).to_contain_text("Someone else changed this first")
    page.click("#group-notice button")
    expect(page.locator("#group-editor")).to_have_value(json.dumps({"video_bitrate_kbps": 3500}, indent=2))
    page.fill("#group-editor", '{"video_bitrate_kbps": 4000}')
    page.click("#group-save")
    expect(row.locator(".group-config")).to_contain_text('"video_bitrate_kbps": 4000')
    expect(unit.locator("#cfg-video_bitrate_kbps")).to_have_attribute("placeholder", "4000")  # live on the unit
    screenshot(page, "config-defaults")

    viewer = goto(open_page("viewer"), "#/config")
    expect(viewer.locator('#groups-body tr[data-tag="cfgd-venue"]')).to_be_visible()
    expect(viewer.locator("#group-new")).to_have_count(0)
    expect(viewer.locator("#groups-body button")).to_have_count(0)

    row.locator("button.group-delete").click()
    dialog = page.locator("dialog")
    expect(dialog).to_contain_text("cfgd-venue")
    expect(dialog).to_contain_text("1 unit")
    dialog.locator("button[type=submit]").click()
    expect(row).to_have_count(0)
    with fleet.api() as api:
        assert api.get("/api/config/groups/cfgd-venue").status_code == 404
        assert api.get("/api/devices/cfgd-1/config").json()["desired"] == {}


def test_the_schema_form_edits_known_keys_and_keeps_unknown_keys(open_page, fleet, enroll):
    enroll("form-1", ["form-tag"])
    custom = {"nested": [1, 2.5, {"deep": None}], "s": "x"}
    with fleet.api() as api:
        assert api.put("/api/config/groups/form-tag", json={"resolution": "720p"}).status_code == 200
        r = api.put("/api/devices/form-1/config", json={"video_bitrate_kbps": 4000, "custom": custom})
        assert r.status_code == 200, r.text
    page = open_unit(open_page, "form-1")
    bitrate = page.locator("#cfg-video_bitrate_kbps")
    expect(bitrate).to_have_value("4000")
    # v1 from the tag default, v2 from the unit's own PUT
    expect(page.locator("#config-versions")).to_contain_text("desired v2")
    expect(page.locator('[data-key="video_bitrate_kbps"]')).to_have_attribute("data-overridden", "true")
    expect(page.locator('[data-key="resolution"] .cfg-source')).to_contain_text("default from tag form-tag")
    expect(page.locator("#cfg-resolution")).to_have_value("")
    expect(page.locator("#cfg-resolution option").first).to_contain_text("720p")
    expect(bitrate).to_have_attribute("min", "100")
    expect(page.locator("#config-other")).to_have_value(re.compile('"nested"'))

    bitrate.fill("5")
    expect(page.locator("#config-error")).to_contain_text("video_bitrate_kbps must be at least 100")
    expect(page.locator("#config-save")).to_be_disabled()
    bitrate.fill("6000")
    page.check("#cfg-recording_enabled")
    page.select_option("#cfg-log_level", "debug")
    page.fill("#cfg-camera_inputs", "front\nback")
    expect(page.locator("#config-save")).to_be_enabled()

    # to JSON and back: nothing typed in either is lost
    page.click("#config-mode-json")
    editor = page.locator("#config-editor")
    expect(editor).to_be_visible()
    text = json.loads(editor.input_value())
    assert text == {
        "video_bitrate_kbps": 6000,
        "custom": custom,
        "recording_enabled": True,
        "log_level": "debug",
        "camera_inputs": ["front", "back"],
    }
    editor.fill(json.dumps({**text, "added": {"k": 1}, "log_level": "warning"}))
    page.click("#config-mode-form")
    expect(page.locator("#cfg-log_level")).to_have_value("warning")
    expect(page.locator("#config-other")).to_have_value(re.compile('"added"'))
    page.click("#config-mode-json")
    editor.fill('{"video_bitrate_kbps": "fast"}')
    page.click("#config-mode-form")  # a value the form cannot show: stays in JSON and says why
    expect(editor).to_be_visible()
    expect(page.locator("#config-error")).to_contain_text("video_bitrate_kbps must be an integer")
    editor.fill(json.dumps({**text, "added": {"k": 1}, "log_level": "warning"}))
    page.click("#config-mode-form")

    # reset to default removes the unit's own value; the tag default shows again
    page.click('[data-key="video_bitrate_kbps"] .cfg-reset')
    expect(bitrate).to_have_value("")
    expect(page.locator('[data-key="video_bitrate_kbps"]')).to_have_attribute("data-overridden", "false")
    page.select_option("#cfg-resolution", "1080p")
    page.click('[data-key="resolution"] .cfg-reset')
    expect(page.locator("#cfg-resolution")).to_have_value("")
    page.click("#config-save")
    expect(page.locator("#config-versions")).to_contain_text("desired v3")
    with fleet.api() as api:
        view = api.get("/api/devices/form-1/config").json()
    assert view["own"] == {
        "custom": custom,
        "recording_enabled": True,
        "log_level": "warning",
        "camera_inputs": ["front", "back"],
        "added": {"k": 1},
    }
    assert view["desired"]["resolution"] == "720p"
    screenshot(page, "config-form")

    viewer = open_unit(open_page, "form-1", role="viewer")
    expect(viewer.locator("#cfg-log_level")).to_be_disabled()
    expect(viewer.locator(".cfg-reset")).to_have_count(0)


def test_search_by_address_fleet_tag_suggestions_and_saved_filters(open_page, fleet, sim, enroll):
    enroll("offpage-1", ["only-offpage-tag"])
    with fleet.api() as api:
        ip = api.get("/api/devices/sim-00042").json()["ips"][0]
    page = open_page("operator")
    page.fill("#filter-q", ip)
    expect(page.locator('#units-body tr[data-unit="sim-00042"]')).to_be_visible()
    expect(page.locator("#pager-info")).to_contain_text("of 1 units")
    page.fill("#filter-q", "%")
    expect(page.locator(".empty-state")).to_contain_text("No units match")
    page.fill("#filter-q", "")

    # suggestions come from the whole fleet, not from the units on this page
    page.select_option("#filter-status", "online")
    page.fill("#filter-tag", "only")
    expect(page.locator('#known-tags option[value="only-offpage-tag"]')).to_have_count(1)
    page.fill("#filter-tag", "simulated")
    page.press("#filter-tag", "Enter")
    page.fill("#filter-q", "sim-0001")
    expect(page.locator("#units-body tr")).to_have_count(10)

    page.click("#saved-filter-save")
    page.fill("#dialog-input", "my sims")
    page.locator("dialog button[type=submit]").click()
    expect(page.locator("#saved-filter")).to_have_value("my sims")
    page.click("text=Clear filters")
    page.select_option("#filter-status", "")
    expect(page.locator("#units-body tr")).not_to_have_count(10)

    page.reload()  # kept in this browser
    page.select_option("#saved-filter", "my sims")
    expect(page.locator("#units-body tr")).to_have_count(10)
    expect(page.locator("#filter-q")).to_have_value("sim-0001")
    expect(page.locator("#filter-tag")).to_have_value("simulated")
    expect(page.locator("#filter-status")).to_have_value("online")
    assert "tag=simulated" in page.url

    page.click("#saved-filter-delete")
    expect(page.locator('#saved-filter option[value="my sims"]')).to_have_count(0)
    page.reload()
    expect(page.locator('#saved-filter option[value="my sims"]')).to_have_count(0)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_editing_forms_pass_axe(open_page, fleet, enroll, scheme):
    from tests.dashboard.test_accessibility import axe_problems

    enroll(f"axe-edit-{scheme}", ["axe-edit"])
    with fleet.api() as api:
        assert api.put("/api/config/groups/axe-edit", json={"log_level": "info", "x": 1}).status_code == 200
    page = open_unit(open_page, f"axe-edit-{scheme}")
    page.emulate_media(color_scheme=scheme)
    page.click("#unit-edit")
    page.fill("#unit-tag-input", "bad tag!")
    page.press("#unit-tag-input", "Enter")
    expect(page.locator("#unit-edit-error")).not_to_be_empty()
    expect(page.locator("#cfg-log_level")).to_be_visible()
    problems = {"unit edit and config form": axe_problems(page)}
    page.click("#config-mode-json")
    problems["config JSON"] = axe_problems(page)
    goto(page, "#/config")
    page.click("#group-new")
    expect(page.locator('#groups-body tr[data-tag="axe-edit"]')).to_be_visible()
    problems["config defaults"] = axe_problems(page)
    goto(page, "#/")
    expect(page.locator("#saved-filter")).to_be_visible()
    problems["saved filters"] = axe_problems(page)
    found = {k: v for k, v in problems.items() if v}
    assert not found, "\n".join(f"{k}: {p}" for k, v in found.items() for p in v)
