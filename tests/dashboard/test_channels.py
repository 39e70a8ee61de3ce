"""Notification channels in the dashboard: an admin makes a webhook channel (its signing key shown once, with a
copy button), sends a test to a real HTTP receiver that checks the signature, reads the delivery log, rotates the
key, sees a bad e-mail setting refused on its field, keeps a stored password by leaving it empty, and deletes a
channel. Viewers read the channels without their secrets and get no buttons."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import screenshot, start_fleet
from tests.dashboard.test_accessibility import PHONE, axe_problems, horizontal_overflow
from tests.support.receiver import Receiver

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def channel_fleet(tmp_path_factory, chromium_path):
    fleet = start_fleet(tmp_path_factory.mktemp("channels-fleet"))
    yield fleet
    fleet.stop()


def channels(fleet) -> dict[str, dict]:
    with fleet.api() as api:
        return {c["name"]: c for c in api.get("/api/notification-channels").json()["items"]}


def test_an_admin_makes_tests_and_edits_channels(open_page, channel_fleet):
    with Receiver() as receiver:
        page = open_page("admin", base=channel_fleet)
        page.click('nav a[data-nav="alerts"]')
        page.click('.tabs a[data-tab="channels"]')
        expect(page.locator("#alerts-title")).to_have_text("Notification channels")
        page.click("#ch-new")
        page.fill("#ch-name", "Ops hook")
        page.select_option("#ch-kind", "webhook")
        expect(page.locator("#ch-email-host")).to_be_hidden()
        page.fill("#ch-webhook-url", receiver.url)
        page.uncheck("#ch-sev-info")
        page.fill("#ch-group-wait", "0")
        page.click("#ch-save")

        # the signing key, once
        box = page.locator("#ch-secret")
        expect(box).to_contain_text("it will not be shown again")
        key = page.locator("#ch-secret-value").input_value()
        assert len(key) >= 32
        expect(page.locator("#ch-secret-copy")).to_be_visible()
        stored = channels(channel_fleet)["Ops hook"]
        assert stored["secret_set"] and "secret" not in stored and key not in str(stored)
        assert stored["severities"] == ["warning", "critical"] and stored["config"] == {"url": receiver.url}
        box.get_by_role("button", name="I have stored it").click()
        expect(box).to_be_hidden()

        # a test message reaches the receiver, signed with that key, and is in the delivery log
        row = page.locator(f'#channels-body tr[data-channel="{stored["id"]}"]')
        row.locator(".ch-test").click()
        extra = page.locator(f'#channels-body tr[data-channel-extra="{stored["id"]}"]')
        expect(extra.locator(".ch-test-result")).to_contain_text("delivered · HTTP 200")
        assert len(receiver.accepted()) == 1 and receiver.accepted()[0].signed_by(key)
        row.locator(".ch-log").click()
        expect(extra.locator(".ch-log-table tbody tr")).to_have_count(1)
        expect(extra.locator(".ch-log-table tbody tr")).to_contain_text("delivered")

        # a new key replaces the old one (shown once again)
        row.locator(".rule-edit").click()
        expect(page.locator("#ch-kind")).to_be_disabled()
        page.click("#ch-rotate")
        page.locator("dialog button", has_text="Make a new key").click()
        expect(page.locator("#ch-secret-value")).not_to_have_value(key)
        new_key = page.locator("#ch-secret-value").input_value()
        row.locator(".ch-test").click()
        expect(extra.locator(".ch-test-result")).to_contain_text("delivered")
        assert receiver.accepted()[-1].signed_by(new_key) and not receiver.accepted()[-1].signed_by(key)

        # e-mail: a bad port is refused on its field; a stored password is kept when left empty
        page.click("#ch-new")
        page.fill("#ch-name", "On-call mail")
        page.select_option("#ch-kind", "email")
        page.fill("#ch-email-host", "smtp.example.com")
        page.fill("#ch-email-port", "70000")
        page.fill("#ch-email-username", "fleet")
        page.fill("#ch-email-secret-password", "smtp-pass-1")
        page.fill("#ch-email-from", "Fleet <fleet@example.com>")
        page.fill("#ch-email-to", "oncall@example.com, lead@example.com")
        page.click("#ch-save")
        expect(page.locator("#ch-error")).to_contain_text("port")
        expect(page.locator("#ch-email-port")).to_have_attribute("aria-invalid", "true")
        assert "On-call mail" not in channels(channel_fleet)
        page.fill("#ch-email-port", "587")
        page.click("#ch-save")
        expect(page.locator("#ch-form")).to_be_hidden()
        mail = channels(channel_fleet)["On-call mail"]
        assert mail["password_set"] and mail["config"]["to"] == ["oncall@example.com", "lead@example.com"]
        page.locator(f'#channels-body tr[data-channel="{mail["id"]}"] .rule-edit').click()
        expect(page.locator("#ch-email-secret-password")).to_have_value("")
        expect(page.locator("#ch-email-secret-password-hint")).to_contain_text("Leave empty to keep it")
        page.fill("#ch-name", "On-call e-mail")
        page.click("#ch-save")
        expect(page.locator("#ch-form")).to_be_hidden()
        assert channels(channel_fleet)["On-call e-mail"]["password_set"]

        page.locator(f'#channels-body tr[data-channel="{mail["id"]}"] .rule-delete').click()
        page.locator("dialog button", has_text="Delete channel").click()
        expect(page.locator(f'#channels-body tr[data-channel="{mail["id"]}"]')).to_have_count(0)
        assert "On-call e-mail" not in channels(channel_fleet)


def test_a_viewer_reads_channels_without_secrets_or_buttons(open_page, channel_fleet):
    with channel_fleet.api() as api:
        r = api.post(
            "/api/notification-channels",
            json={"name": "Read-only hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}},
        )
        assert r.status_code == 201, r.text
        key = r.json()["secret"]
    page = open_page("viewer", base=channel_fleet)
    page.goto(page.url.split("#")[0] + "#/alerts/channels")
    row = page.locator("#channels-body tr", has_text="Read-only hook")
    expect(row).to_contain_text("signed (key stored)")
    expect(page.locator("#channels-body button, #ch-new")).to_have_count(0)
    assert key not in page.content()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_channels_page_passes_axe_and_fits_a_phone(open_page, channel_fleet, scheme):
    with channel_fleet.api() as api:
        if "Axe hook" not in channels(channel_fleet):
            body = {"name": "Axe hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}}
            assert api.post("/api/notification-channels", json=body).status_code == 201
    page = open_page("admin", base=channel_fleet, color_scheme=scheme)
    page.goto(page.url.split("#")[0] + "#/alerts/channels")
    row = page.locator("#channels-body tr", has_text="Axe hook")
    row.locator(".ch-test").click()  # nothing listens there: a failed test, shown under the row
    expect(page.locator(".ch-test-result").first).to_contain_text("failed")
    page.click("#ch-new")
    page.select_option("#ch-kind", "email")
    problems = axe_problems(page)
    screenshot(page, f"alert-channels-{scheme}")
    assert not problems, "\n".join(problems)
    phone = open_page("admin", base=channel_fleet, color_scheme=scheme, **PHONE)
    phone.goto(phone.url.split("#")[0] + "#/alerts/channels")
    expect(phone.locator("#channels-body tr").first).to_be_visible()
    phone.click("#ch-new")
    assert horizontal_overflow(phone) <= 0
