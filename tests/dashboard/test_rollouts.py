"""Rollouts from the dashboard: create with confirmation, watch progress live, pause, resume."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import SIM_UNITS

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
    expect(page.locator('#rollout-units tr[data-unit="sim-00101"]')).to_contain_text("pending")

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
    expect(head.locator(".progress-text")).to_contain_text(f"{SIM_UNITS - 50} canceled", timeout=15_000)


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
