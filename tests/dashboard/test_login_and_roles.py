"""Signing in and out (session cookie or a pasted API token), and what each role is shown."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import ADMIN_TOKEN, USERS

pytestmark = pytest.mark.browser


def test_login_shows_user_and_role_and_logout_ends_the_session(open_page, fleet):
    page = open_page(role=None)
    expect(page.locator("#login-title")).to_have_text("Sign in to Fleet")
    expect(page.locator("#topbar")).to_be_hidden()

    page.fill("#login-user", "olga")
    page.fill("#login-password", "not the password")
    page.click(".login-form button[type=submit]")
    expect(page.locator("#login-message")).to_have_text("Wrong user name or password.")

    page.fill("#login-password", USERS["operator"][1])
    page.click(".login-form button[type=submit]")
    expect(page.locator("#who")).to_have_text("olga operator")
    expect(page.locator("#stream-state")).to_have_text("live")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["fleet_session"]["httpOnly"]

    page.reload()  # the session survives a reload: /api/me answers with the same user
    expect(page.locator("#who")).to_have_text("olga operator")

    page.click("#logout")
    expect(page.locator("#login-message")).to_have_text("You are signed out.")
    page.reload()
    expect(page.locator("#login-title")).to_be_visible()


def test_api_token_fallback_is_kept_for_the_tab_only(open_page, fleet):
    page = open_page(role=None)
    page.click(".token-login summary")
    page.fill("#login-token", "flt_wrong")
    page.locator("#login-token").press("Enter")
    expect(page.locator("#login-message")).to_have_text("That API token was not accepted.")

    page.fill("#login-token", ADMIN_TOKEN)
    page.locator("#login-token").press("Enter")
    expect(page.locator("#who")).to_have_text("admin admin")
    expect(page.locator("#stream-state")).to_have_text("live")  # the event stream carries the bearer token too
    assert "fleet_session" not in {c["name"] for c in page.context.cookies()}
    page.click("#logout")
    expect(page.locator("#login-title")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('fleet.token')") is None


def test_viewer_sees_no_action_buttons(open_page, fleet, sim):
    page = open_page("viewer")
    expect(page.locator("#who")).to_have_text("vera viewer")
    page.goto(page.url.split("#")[0] + "#/units/sim-00002")
    expect(page.locator("#unit-title")).to_have_text("sim-00002")
    expect(page.locator("#config-editor")).to_have_attribute("readonly", "")
    expect(page.locator("#log-view")).to_be_visible()
    for selector in (
        "#act-restart",
        "#act-update",
        "#act-reboot",
        "#act-turn",
        "#config-save",
        ".head-actions",
        "#cmd-history button",
    ):
        expect(page.locator(selector)).to_have_count(0)

    page.click('nav a[data-nav="rollouts"]')
    expect(page.locator("#rollouts-title")).to_be_visible()
    expect(page.locator("#ro-create")).to_have_count(0)
    expect(page.locator(".rollouts")).to_contain_text("Your role may watch rollouts")
    expect(page.locator("#rollouts-body button")).to_have_count(0)


def test_operator_sees_the_actions(open_page, fleet, sim):
    page = open_page("operator")
    page.goto(page.url.split("#")[0] + "#/units/sim-00002")
    for selector in ("#act-restart", "#act-update", "#act-reboot", "#act-turn", "#config-save"):
        expect(page.locator(selector)).to_be_visible()
    expect(page.locator("#config-editor")).not_to_have_attribute("readonly", "")
