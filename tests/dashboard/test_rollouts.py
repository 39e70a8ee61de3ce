"""Rollouts from the dashboard: create with confirmation, watch progress live, pause, resume."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.dashboard.conftest import SIM_UNITS, screenshot, wait_online
from tests.dashboard.test_accessibility import axe_problems
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser


def test_create_pause_resume_and_watch_a_rollout(open_page, fleet, sim):
    page = open_page("operator")
    page.click('nav a[data-nav="rollouts"]')
    page.fill("#ro-tag", "simulated")
    page.fill("#ro-ref", "v3.0.0")
    page.fill("#ro-batch", "100")
    page.fill("#ro-threshold", "10")
    page.fill("#ro-pause", "4")
    page.click("#ro-create")

    dialog = page.locator("dialog")
    expect(dialog).to_contain_text(f"Update {SIM_UNITS} units to v3.0.0?")
    expect(dialog.locator("button[type=submit]")).to_be_disabled()
    page.fill("#dialog-typed", "simulated")
    dialog.locator("button[type=submit]").click()

    head = page.locator("#rollout-head")
    expect(head.locator("h1")).to_have_text("v3.0.0 → simulated")
    expect(page.locator("#rollout-units tr")).to_have_count(SIM_UNITS)
    head.locator('button[data-action="pause"]').click()
    expect(head.locator(".rollout-state")).to_have_text("paused")
    # The first batch finishes while paused; nothing more starts.
    expect(head.locator(".progress-text")).to_contain_text("100 succeeded", timeout=15_000)
    expect(page.locator('#rollout-units tr[data-unit="sim-00101"]')).to_contain_text("waiting")  # as in the header

    head.locator('button[data-action="resume"]').click()
    expect(head.locator(".rollout-state")).to_have_text("completed", timeout=30_000)
    expect(head.locator(".progress-text")).to_contain_text(f"{SIM_UNITS} succeeded · 0 failed")
    expect(page.locator(f'#rollout-units tr[data-unit="sim-{SIM_UNITS:05d}"] .cmd-status')).to_have_text("succeeded")
    expect(head.locator("button")).to_have_count(0)  # nothing to pause or cancel any more

    page.click("text=← All rollouts")
    listed = page.locator("#rollouts-body tr").first
    expect(listed).to_contain_text("v3.0.0 → simulated")
    expect(listed.locator(".rollout-state")).to_have_text("completed")


def test_cancel_needs_confirmation(open_page, fleet, sim):
    page = open_page("operator")
    page.click('nav a[data-nav="rollouts"]')
    page.fill("#ro-tag", "simulated")
    page.fill("#ro-ref", "v3.0.1")
    page.fill("#ro-batch", "50")
    page.fill("#ro-pause", "60")
    page.click("#ro-create")
    page.fill("#dialog-typed", "simulated")
    page.locator("dialog button[type=submit]").click()
    head = page.locator("#rollout-head")
    # The first batch done (the rollout then waits 60 s): what the cancel leaves is exactly the other units.
    expect(head.locator(".progress-text")).to_contain_text("50 succeeded", timeout=30_000)
    head.locator('button[data-action="cancel"]').click()
    page.locator("dialog button", has_text="Cancel rollout").click()
    expect(head.locator(".rollout-state")).to_have_text("canceled")
    # never sent anything: "skipped", in the header and in every row alike (no longer "pending" there)
    expect(head.locator(".progress-text")).to_contain_text(f"{SIM_UNITS - 50} skipped", timeout=15_000)
    expect(page.locator("#rollout-units tr", has_text="skipped")).to_have_count(SIM_UNITS - 50)


def test_rollout_form_explains_bad_input(open_page, fleet):
    page = open_page("operator")
    page.click('nav a[data-nav="rollouts"]')
    page.fill("#ro-tag", "no-unit-has-this")
    page.fill("#ro-ref", "v1")
    page.click("#ro-create")
    expect(page.locator("#ro-error")).to_have_text("No unit carries the tag no-unit-has-this.")
    page.fill("#ro-ref", "bad..ref")
    page.click("#ro-create")
    expect(page.locator("#ro-error")).to_contain_text("The ref must be a branch, tag or commit name")


def test_an_aborted_rollout_tells_one_story(open_page, fleet, enroll):
    """Units never reached are "skipped" in the table and in the header alike; the abort reason speaks percent,
    like the header, and says why the failures went on after it."""
    units = [enroll(f"abort-{i}", ["abort-me"]) for i in range(6)]
    raws = [RawUnit(u.port, u.id, u.secret).connect() for u in units]
    try:
        for raw in raws:
            raw.subscribe(Kind.CMD)
            raw.birth()
        with fleet.api() as api:
            for u in units:
                wait_online(api, u.id)
            r = api.post(
                "/api/rollouts",
                json={
                    "name": "doomed",
                    "command": "update",
                    "args": {"ref": "v6"},
                    "tag": "abort-me",
                    "batch_size": 4,
                    "abort_threshold": 0.3,
                },
            )
            assert r.status_code in (200, 201), r.text
            rollout_id = r.json()["id"]
        page = open_page("operator")
        page.goto(page.url.split("#")[0] + f"#/rollouts/{rollout_id}")
        expect(page.locator("#rollout-units tr")).to_have_count(6)

        def result(raw, status: str, **extra) -> None:
            raw.publish(Kind.CMD_RESULT, {"v": 1, "id": ids[raw.device_id], "status": status, "ts": now_ms(), **extra})

        ids = {raw.device_id: json.loads(raw.received.get(timeout=10).payload)["id"] for raw in raws[:4]}
        for raw in raws[:4]:
            result(raw, "running")
        for raw in raws[:2]:  # 1 of 4 could still end below 30 %; the second failure decides it
            result(raw, "failed", exit_code=1, output="post-update hook failed")
        head = page.locator("#rollout-head")
        expect(head.locator(".rollout-state")).to_have_text("aborted", timeout=15_000)
        page.wait_for_timeout(1000)  # well after the rollout's last announcement
        for raw in raws[2:4]:  # already running when the rollout stopped: they end afterwards, and fail too
            result(raw, "failed", exit_code=2, output="health check failed")
        expect(head.locator(".progress-text")).to_contain_text("4 failed", timeout=15_000)
        expect(head.locator(".progress-text")).to_contain_text("2 skipped")
        rows = page.locator("#rollout-units tr")
        expect(rows.filter(has_text="skipped")).to_have_count(2)
        expect(rows.filter(has_text="failed")).to_have_count(4)
        expect(rows.filter(has_text="pending")).to_have_count(0)
        reason = page.locator("#rollout-reason")
        expect(reason).to_contain_text("2 of 4 units had failed (50 %)")
        expect(reason).to_contain_text("30 %")
        expect(reason).not_to_contain_text("0.3")
        expect(head).to_contain_text("aborts above 30 % failed")
        expect(head.locator(".progress-text")).to_contain_text("4 failed (100 %)")
        screenshot(page, "rollout-aborted")
        page.click("text=← All rollouts")
        listed = page.locator(f'#rollouts-body tr[data-rollout="{rollout_id}"]')
        expect(listed).to_contain_text("4 failed (100 %)")
        expect(listed).to_contain_text("2 skipped or canceled")
    finally:
        for raw in raws:
            raw.client.disconnect()
            raw.client.loop_stop()


def test_failure_triage_shows_each_output_groups_them_and_retries_exactly_the_failed(open_page, fleet, enroll):
    """Failed units' outputs inline, grouped by exit code and last line, and a retry over exactly those units."""
    units = [enroll(f"triage-{i}", ["triage"]) for i in range(6)]
    raws = [RawUnit(u.port, u.id, u.secret).connect() for u in units]
    health = "health check failed: recorder.service is not active after 30 s"
    outcomes = {  # device -> (status, exit code, output)
        "triage-0": ("succeeded", 0, "checked out v8\nhealth check: ok"),
        "triage-1": ("failed", 1, f"checked out v8\n{health}"),
        "triage-2": ("failed", 1, f"git fetch origin: ok\nchecked out v8 (was v7)\n{health}\n"),
        "triage-3": ("failed", 2, "post-update hook: exit 2\npost-update hook failed"),
        "triage-4": ("failed", 1, f"checked out v8\n{health}"),
        "triage-5": ("succeeded", 0, "checked out v8\nhealth check: ok"),
    }
    try:
        for raw in raws:
            raw.subscribe(Kind.CMD)
            raw.birth()
        with fleet.api() as api:
            for u in units:
                wait_online(api, u.id)
            r = api.post(
                "/api/rollouts",
                json={
                    "name": "v8 → triage",
                    "command": "update",
                    "args": {"ref": "v8"},
                    "tag": "triage",
                    "batch_size": 6,
                    "abort_threshold": 0.3,
                },
            )
            assert r.status_code == 201, r.text
            rollout_id = r.json()["id"]
        for raw in raws:
            cmd_id = json.loads(raw.received.get(timeout=10).payload)["id"]
            status, code, output = outcomes[raw.device_id]
            for st, extra in [("running", {}), (status, {"exit_code": code, "output": output})]:
                raw.publish(Kind.CMD_RESULT, {"v": 1, "id": cmd_id, "status": st, "ts": now_ms(), **extra})

        page = open_page("operator")
        page.goto(page.url.split("#")[0] + f"#/rollouts/{rollout_id}")
        head = page.locator("#rollout-head")
        expect(head.locator(".rollout-state")).to_have_text("aborted", timeout=15_000)
        expect(head.locator(".progress-text")).to_contain_text("4 failed", timeout=15_000)
        triage = page.locator("#triage")
        groups = triage.locator(".failure-group")
        expect(groups).to_have_count(2)
        # the biggest group first: same exit code and last line, whatever came before
        expect(groups.nth(0).locator(".group-title")).to_contain_text(health)
        expect(groups.nth(0).locator(".group-title")).to_contain_text("exit 1")
        expect(groups.nth(0).locator(".group-count")).to_have_text("3 units")
        expect(groups.nth(1).locator(".group-title")).to_contain_text("post-update hook failed")
        expect(groups.nth(1).locator(".group-count")).to_have_text("1 unit")
        for device_id, (status, code, output) in outcomes.items():
            unit = triage.locator(f'.failed-unit[data-unit="{device_id}"]')
            if status == "succeeded":
                expect(unit).to_have_count(0)
                continue
            expect(unit.locator(".failed-exit")).to_have_text(f"exit {code}")
            expect(unit.locator("pre")).to_have_text(output.strip())
        assert axe_problems(page) == []
        screenshot(page, "rollout-triage")

        triage.locator("#retry-failed").click()
        dialog = page.locator("dialog")
        expect(dialog).to_contain_text("4 failed units")
        expect(dialog).to_contain_text("triage-1, triage-2, triage-3, triage-4")
        dialog.locator("button[type=submit]").click()
        expect(page).not_to_have_url(re.compile(f"{rollout_id}$"))
        expect(page.locator("#rollout-head h1")).to_have_text("retry: v8 → triage")
        retry_id = page.url.rsplit("/", 1)[1]
        with fleet.api() as api:
            retry = api.get(f"/api/rollouts/{retry_id}").json()
            assert sorted(u["device_id"] for u in retry["units"]) == ["triage-1", "triage-2", "triage-3", "triage-4"]
            assert retry["command"] == "update" and retry["args"] == {"ref": "v8"}
            assert retry["abort_threshold"] == 0.3

        # a viewer sees the same failures, and no way to retry them
        viewer = open_page("viewer")
        viewer.goto(viewer.url.split("#")[0] + f"#/rollouts/{rollout_id}")
        expect(viewer.locator("#triage .failure-group")).to_have_count(2)
        expect(viewer.locator("#retry-failed")).to_have_count(0)
    finally:
        for raw in raws:
            raw.client.disconnect()
            raw.client.loop_stop()
