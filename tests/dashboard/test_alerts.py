"""Alerts in the dashboard: a unit crosses a rule and the alert shows up live on the Alerts page, in the header's
count, on its row of the unit list and on its page; an operator acknowledges and silences it; it resolves when the
unit recovers and stays in the history with its events. Viewers only watch; admins edit the rules.

These run on a `fleet up` of their own (evaluating every 0.5 s), so the alerts and counts are only their own.
"""

from __future__ import annotations

import re
from datetime import datetime

import httpx
import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.dashboard.conftest import screenshot, start_fleet, wait_online
from tests.dashboard.test_accessibility import PHONE, axe_problems, horizontal_overflow
from tests.support.services import wait_for
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser

EDITABLE = ("name", "kind", "severity", "enabled", "tag", "device_id", "field", "op", "threshold", "clear_threshold")


@pytest.fixture(scope="module")
def alert_fleet(tmp_path_factory, chromium_path):
    fleet = start_fleet(tmp_path_factory.mktemp("alerts-fleet"), {"FLEET_ALERT_EVAL_INTERVAL_S": "0.5"})
    with fleet.api() as api:
        # the built-in disk rule fires at once (it waits 300 s by default) and resolves as soon as the disk is back
        rule = next(r for r in api.get("/api/alert-rules").json()["items"] if r["builtin"] == "disk")
        body = {**{k: rule[k] for k in (*EDITABLE, "value")}, "for_s": 0.5, "clear_for_s": 0}
        assert api.put(f"/api/alert-rules/{rule['id']}", json=body).status_code == 200
    yield fleet
    fleet.stop()


def unit_on(fleet, device_id: str, tags: list[str]) -> RawUnit:
    with fleet.api() as api:
        r = api.post("/api/devices", json={"id": device_id, "tags": tags})
        assert r.status_code == 201, r.text
        unit = RawUnit(fleet.mqtt_port, device_id, r.json()["secret"]).connect()
        unit.secret = r.json()["secret"]
        unit.birth()
        wait_online(api, device_id)
    return unit


def disk(unit: RawUnit, percent: float) -> None:
    unit.publish(Kind.METRICS, {"v": 1, "ts": now_ms(), "disk_percent": percent, "temp_c": 50.0, "cpu_percent": 20.0})


def rule_id(api: httpx.Client, builtin: str = "disk") -> str:
    return next(r["id"] for r in api.get("/api/alert-rules").json()["items"] if r["builtin"] == builtin)


def iso_s(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def open_alerts(api: httpx.Client, device_id: str) -> list[dict]:
    return api.get("/api/alerts", params={"unit": device_id, "state": "open"}).json()["items"]


def test_an_alert_live_from_firing_to_history(open_page, alert_fleet):
    unit = unit_on(alert_fleet, "lobby-cam-1", ["lobby"])
    try:
        disk(unit, 40.0)
        page = open_page("operator", base=alert_fleet)
        expect(page.locator("#alert-count")).to_have_text("0")
        page.click('nav a[data-nav="alerts"]')
        expect(page.locator("#alerts-title")).to_have_text("Alerts")
        expect(page.locator("#alerts-empty")).to_have_text("No open alerts: nothing needs attention.")

        disk(unit, 96.5)  # the unit crosses the rule: the row appears without a reload
        row = page.locator('#alerts-body tr[data-unit="lobby-cam-1"]')
        expect(row).to_have_count(1, timeout=15_000)
        expect(row.locator(".sev")).to_have_text("warning")
        expect(row.locator(".col-value")).to_have_text("disk 96.5 % (over 90 %)")
        expect(row.locator(".alert-state")).to_have_text("firing")
        expect(row.locator(".unit-link")).to_have_attribute("href", "#/units/lobby-cam-1")
        fired_title = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")  # date and zone in the title
        expect(row.locator(".col-fired time")).to_have_attribute("title", fired_title)
        count = page.locator("#alert-count")
        expect(count).to_have_text("1")
        expect(count).to_have_attribute("data-severity", "warning")
        colours = page.evaluate(
            """() => [document.getElementById('alert-count'), document.querySelector('.topbar .tab, .topbar nav a')]
                .map((el) => getComputedStyle(el).backgroundColor)"""
        )
        assert colours[0] != colours[1], colours  # amber for a warning, not the bar's own colour
        screenshot(page, "alerts-firing", full_page=False)

        # the unit list's row and the unit's page say so too
        page.click('nav a[data-nav="units"]')
        badge = page.locator('#units-body tr[data-unit="lobby-cam-1"] .alert-badge')
        expect(badge).to_have_text("warning ×1")
        expect(badge).to_have_attribute("aria-label", "warning ×1: 1 open alert, the worst warning, 1 firing")
        page.click('#units-body tr[data-unit="lobby-cam-1"] .unit-link')
        panel = page.locator(".unit-alerts")
        expect(panel.locator("#unit-alert-badge")).to_have_text("1 open · warning")
        expect(panel.locator('#unit-alerts tr[data-state="firing"] .col-value')).to_have_text("disk 96.5 % (over 90 %)")
        expect(panel.locator(".act-ack")).to_be_visible()

        # acknowledge from the Alerts page: the state changes live and the count goes down
        page.click('nav a[data-nav="alerts"]')
        row.locator(".act-ack").click()
        expect(row.locator(".alert-state")).to_have_text("acknowledged")
        expect(row.locator(".col-state")).to_contain_text("by olga")
        expect(count).to_have_text("0")
        expect(count).to_have_attribute("data-severity", "none")

        # silence its rule on this unit for an hour, with a comment
        row.locator(".act-silence").click()
        dialog = page.locator("dialog")
        expect(dialog.locator("h2")).to_have_text("Silence Disk almost full on lobby-cam-1")
        expect(page.locator("#silence-for-1h")).to_be_checked()
        expect(page.locator("#silence-submit")).to_be_disabled()  # a comment first
        page.fill("#silence-comment", "disk swap booked for Tuesday")
        page.click("#silence-submit")
        expect(dialog).to_have_count(0)
        expect(row.locator(".silenced")).to_have_text("silenced")
        page.click('.tabs a[data-tab="silences"]')
        silence = page.locator("#silences-active tr").first
        expect(silence.locator('[data-matcher="rule"]')).to_have_text("rule = Disk almost full")
        expect(silence.locator('[data-matcher="unit"]')).to_have_text("unit = lobby-cam-1")
        expect(silence.locator(".silence-comment")).to_have_text("disk swap booked for Tuesday")
        expect(silence).to_contain_text("olga")
        with alert_fleet.api() as api:
            made = api.get("/api/silences", params={"active": "true"}).json()["items"][0]
            assert (made["device_id"], made["rule_id"]) == ("lobby-cam-1", rule_id(api))
            assert made["created_by"] == "user:olga"
            assert iso_s(made["ends_at"]) - iso_s(made["starts_at"]) == pytest.approx(3600, abs=1)

        # the unit recovers: the alert leaves the open list and shows in the history with its events
        page.click('.tabs a[data-tab="open"]')
        expect(row).to_have_count(1)
        disk(unit, 41.0)
        expect(row).to_have_count(0, timeout=15_000)
        expect(page.locator("#alerts-empty")).to_be_visible()
        page.click('.tabs a[data-tab="history"]')
        done = page.locator('#alerts-body tr[data-unit="lobby-cam-1"]')
        expect(done.locator(".col-resolved")).to_contain_text("recovered")
        done.locator(".alert-link").click()
        events = page.locator("#alert-events tr")
        expect(events).to_have_count(3)
        expect(events.nth(0)).to_contain_text("fired")
        expect(events.nth(0)).to_contain_text("disk 96.5 %")
        expect(events.nth(1)).to_contain_text("acknowledged")
        expect(events.nth(1)).to_contain_text("olga")
        expect(events.nth(2)).to_contain_text("resolved")
        expect(events.nth(2)).to_contain_text("recovered (auto)")
        expect(page.locator("#alert-head .alert-state")).to_have_text("resolved")
        expect(page.locator("#alert-head .act-ack, #alert-head .act-silence")).to_have_count(0)
    finally:
        unit.stop_clean()


def test_a_viewer_watches_but_cannot_acknowledge_or_silence(open_page, alert_fleet):
    unit = unit_on(alert_fleet, "hall-cam-2", ["hall"])
    try:
        disk(unit, 97.0)
        with alert_fleet.api() as api:
            wait_for(lambda: open_alerts(api, "hall-cam-2"), timeout=15, what="the alert")
            alert = open_alerts(api, "hall-cam-2")[0]
        page = open_page("viewer", base=alert_fleet)
        page.click('nav a[data-nav="alerts"]')
        row = page.locator('#alerts-body tr[data-unit="hall-cam-2"]')
        expect(row.locator(".alert-state")).to_have_text("firing")
        expect(page.locator(".alerts-page")).to_contain_text("Your role may watch them")
        expect(page.locator("#alerts-body button")).to_have_count(0)
        page.goto(page.url.split("#")[0] + "#/units/hall-cam-2")
        expect(page.locator("#unit-alerts tr")).to_have_count(1)
        expect(page.locator("#unit-alerts button")).to_have_count(0)
        # the API refuses the viewer's session anyway
        statuses = page.evaluate(
            """async (id) => { const api = await import('/api.js');
                 const tries = [() => api.post(`/api/alerts/${id}/ack`),
                   () => api.post('/api/silences', {device_id: 'hall-cam-2', duration_s: 60, comment: 'x'})];
                 const out = [];
                 for (const t of tries) { try { await t(); out.push(200); } catch (e) { out.push(e.status); } }
                 return out; }""",
            alert["id"],
        )
        assert statuses == [403, 403]
        with alert_fleet.api() as api:
            assert open_alerts(api, "hall-cam-2")[0]["state"] == "firing"
            assert api.get("/api/silences").json()["items"] == [] or all(
                s["device_id"] != "hall-cam-2" for s in api.get("/api/silences").json()["items"]
            )
        page.goto(page.url.split("#")[0] + "#/alerts/rules")
        expect(page.locator("#rules-body tr").first).to_be_visible()
        expect(page.locator("#rule-new, .rule-edit, .rule-delete")).to_have_count(0)
        disk(unit, 40.0)
    finally:
        unit.stop_clean()


def test_silencing_from_the_unit_page_takes_the_alert_out_of_the_count(open_page, alert_fleet):
    unit = unit_on(alert_fleet, "stage-cam-4", ["stage"])
    try:
        disk(unit, 95.0)
        with alert_fleet.api() as api:
            wait_for(lambda: open_alerts(api, "stage-cam-4"), timeout=15, what="the alert")
        page = open_page("operator", base=alert_fleet)
        page.goto(page.url.split("#")[0] + "#/units/stage-cam-4")
        with alert_fleet.api() as api:
            firing = api.get("/api/alerts/summary").json()["firing"]
        count = page.locator("#alert-count")
        expect(count).to_have_text(str(firing))
        page.locator("#unit-alerts .act-silence").click()
        page.check("#silence-for-until")
        expect(page.locator("#silence-until")).to_be_enabled()
        page.fill("#silence-until", "2001-01-01T10:00")
        page.fill("#silence-comment", "stage rebuild")
        expect(page.locator("#silence-error")).to_contain_text("is in the past")
        expect(page.locator("#silence-submit")).to_be_disabled()
        page.check("#silence-for-8h")
        page.click("#silence-submit")
        expect(page.locator('#unit-alerts tr[data-state="firing"] .silenced')).to_have_text("silenced")
        expect(count).to_have_text(str(firing - 1))  # no event says so: the page tells the count itself
        with alert_fleet.api() as api:
            made = next(x for x in api.get("/api/silences").json()["items"] if x["device_id"] == "stage-cam-4")
            assert iso_s(made["ends_at"]) - iso_s(made["starts_at"]) == pytest.approx(8 * 3600, abs=1)
            assert made["comment"] == "stage rebuild"
        disk(unit, 40.0)
    finally:
        unit.stop_clean()


def test_an_admin_creates_edits_and_deletes_a_rule(open_page, alert_fleet):
    page = open_page("admin", base=alert_fleet)
    page.goto(page.url.split("#")[0] + "#/alerts/rules")
    builtins = page.locator("#rules-body tr")
    expect(builtins).to_have_count(5)
    page.click("#rule-new")
    page.fill("#rule-name", "Hot lobby")
    page.select_option("#rule-kind", "metric")
    expect(page.locator('.rule-param[data-param="value"]')).to_be_hidden()
    page.fill("#rule-field", "temp_c")
    page.select_option("#rule-op", ">")
    page.fill("#rule-threshold", "70")
    page.fill("#rule-clear-threshold", "75")  # above a ">" threshold: the server says the clear line is wrong
    page.select_option("#rule-severity", "critical")
    page.select_option("#rule-scope", "tag")
    page.fill("#rule-scope-value", "lobby")
    page.fill("#rule-for-s", "30")
    page.click("#rule-save")
    expect(page.locator("#rule-error")).to_contain_text("clear_threshold must lie on the clear side of the threshold")
    expect(page.locator("#rule-clear-threshold")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#rule-clear-threshold-error")).to_contain_text("clear_threshold must lie")
    expect(builtins).to_have_count(5)  # nothing stored
    page.fill("#rule-clear-threshold", "65")
    page.click("#rule-save")
    expect(page.locator("#rule-form")).to_be_hidden()
    made = page.locator("#rules-body tr", has_text="Hot lobby")
    expect(made.locator(".rule-condition")).to_have_text("temperature > 70 (clear at 65)")
    expect(made).to_contain_text("tag lobby")
    expect(made.locator(".sev")).to_have_text("critical")

    # edit: another kind asks for its own parameters only
    made.locator(".rule-edit").click()
    expect(page.locator("#rule-name")).to_have_value("Hot lobby")
    expect(page.locator("#rule-threshold")).to_have_value("70")
    page.select_option("#rule-kind", "extra")
    expect(page.locator('.rule-param[data-param="threshold"]')).to_be_hidden()
    page.fill("#rule-field", "recording")
    page.select_option("#rule-op", "==")
    page.fill("#rule-value", "false")
    page.fill("#rule-name", "Lobby not recording")
    page.click("#rule-save")
    edited = page.locator("#rules-body tr", has_text="Lobby not recording")
    expect(edited.locator(".rule-condition")).to_have_text("extra recording == false")
    with alert_fleet.api() as api:
        stored = next(r for r in api.get("/api/alert-rules").json()["items"] if r["name"] == "Lobby not recording")
        assert (stored["kind"], stored["value"], stored["threshold"], stored["tag"]) == ("extra", False, None, "lobby")

    # a kind added later is one more entry of the form's table: a log rule asks for its own parameters
    page.click("#rule-new")
    page.select_option("#rule-kind", "log")
    for shown in ("level", "pattern", "regex", "threshold", "window_s"):
        expect(page.locator(f'.rule-param[data-param="{shown}"]')).to_be_visible()
    for hidden in ("field", "op", "clear_threshold", "value"):
        expect(page.locator(f'.rule-param[data-param="{hidden}"]')).to_be_hidden()
    expect(page.locator('label[for="rule-threshold"]')).to_have_text("More than this many lines")
    page.fill("#rule-name", "ICE failures")
    page.select_option("#rule-level", "warning")
    page.fill("#rule-pattern", "ICE failed")
    page.fill("#rule-threshold", "3")
    page.click("#rule-save")  # no window given
    expect(page.locator("#rule-window-s")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#rule-window-s-error")).to_contain_text("window")
    page.fill("#rule-window-s", "300")
    screenshot(page, "alert-rule-form", full_page=True)
    page.click("#rule-save")
    expect(page.locator("#rules-body tr", has_text="ICE failures").locator(".rule-condition")).to_have_text(
        "more than 3 warning+ lines with “ICE failed” in 5 min"
    )

    edited.locator(".rule-delete").click()
    page.locator("dialog button", has_text="Delete rule").click()
    expect(page.locator("#rules-body tr", has_text="Lobby not recording")).to_have_count(0)
    expect(builtins).to_have_count(6)  # the built-ins and the log rule
    with alert_fleet.api() as api:
        assert all(r["name"] != "Lobby not recording" for r in api.get("/api/alert-rules").json()["items"])


def test_the_alert_pages_pass_axe_and_fit_a_phone(open_page, alert_fleet):
    unit = unit_on(alert_fleet, "a11y-cam-3", ["a11y"])
    try:
        disk(unit, 98.0)
        with alert_fleet.api() as api:
            wait_for(lambda: open_alerts(api, "a11y-cam-3"), timeout=15, what="the alert")
            alert_id = open_alerts(api, "a11y-cam-3")[0]["id"]
        pages = [
            ("alerts", "#/alerts", "#alerts-body tr"),
            ("alert-history", "#/alerts/history", "#alerts-title"),
            ("alert", f"#/alerts/{alert_id}", "#alert-events tr"),
            ("silences", "#/alerts/silences", "#silences-active-title"),
            ("alert-rules", "#/alerts/rules", "#rules-body tr"),
        ]
        for scheme in ("light", "dark"):
            problems, wide = {}, {}
            for device, size in (("desktop", {}), ("phone", PHONE)):
                page = open_page("admin", base=alert_fleet, color_scheme=scheme, **size)
                base = page.url.split("#")[0]
                for name, url, ready in pages:
                    page.goto(base + url)
                    expect(page.locator(ready).first).to_be_visible()
                    page.wait_for_timeout(300)
                    if device == "desktop":
                        problems[name] = axe_problems(page)
                    elif (extra := horizontal_overflow(page)) > 0:
                        wide[name] = extra
                page.goto(base + "#/alerts")
                page.locator("#alerts-body .act-silence").first.click()
                expect(page.locator("dialog")).to_be_visible()
                if device == "desktop":
                    problems["silence dialog"] = axe_problems(page)
                    page.keyboard.press("Escape")
                    page.goto(base + "#/alerts/rules")
                    page.click("#rule-new")
                    problems["rule form"] = axe_problems(page)
                else:
                    assert horizontal_overflow(page) <= 0
                    page.keyboard.press("Escape")
                    screenshot(page, f"phone-alerts-{scheme}", full_page=False)
            found = {k: v for k, v in problems.items() if v}
            assert not found, "\n".join(f"{scheme} {k}: {p}" for k, v in found.items() for p in v)
            assert not wide, f"{scheme}: pages wider than the phone (px): {wide}"
        disk(unit, 40.0)
    finally:
        unit.stop_clean()


def test_the_header_count_is_right_again_after_a_reconnect(open_page, tmp_path, chromium_path):
    """An alert that fires while the page's stream is down is counted once the stream is back."""
    # the restarted process takes the evaluator's lease over from the stopped one within 2 s
    fleet = start_fleet(tmp_path / "fleet", {"FLEET_ALERT_EVAL_INTERVAL_S": "0.5", "FLEET_ALERT_LEASE_S": "2"})
    unit = None
    try:
        with fleet.api() as api:
            rule = next(r for r in api.get("/api/alert-rules").json()["items"] if r["builtin"] == "disk")
            body = {**{k: rule[k] for k in (*EDITABLE, "value")}, "for_s": 0, "clear_for_s": 0, "severity": "critical"}
            assert api.put(f"/api/alert-rules/{rule['id']}", json=body).status_code == 200
        unit = unit_on(fleet, "gap-cam-1", [])
        disk(unit, 40.0)
        page = open_page("operator", base=fleet)
        count = page.locator("#alert-count")
        expect(count).to_have_text("0")
        expect(page.locator("#stream-state")).to_have_text("live")
        page.route("**/api/events*", lambda route: route.abort())  # the next connection fails ...
        unit.stop_clean()
        fleet.restart()  # ... and this one ends
        expect(page.locator("#stream-state")).to_have_text("reconnecting…", timeout=10_000)
        unit = RawUnit(fleet.mqtt_port, "gap-cam-1", unit.secret).connect()
        unit.birth()
        with fleet.api() as api:
            wait_online(api, "gap-cam-1")
            disk(unit, 97.0)
            wait_for(lambda: open_alerts(api, "gap-cam-1"), timeout=15, what="the alert")
        page.wait_for_timeout(1000)
        expect(count).to_have_text("0")  # nothing told the page yet
        page.unroute("**/api/events*")
        expect(page.locator("#stream-state")).to_have_text("live", timeout=20_000)
        expect(count).to_have_text("1")
        expect(count).to_have_attribute("data-severity", "critical")
    finally:
        if unit is not None:
            unit.stop_clean()
        fleet.stop()
