"""A tour of every page of the dashboard (every route in dashboard/router.js, every Alerts tab) as an admin, who sees
the most: in light and dark, each page passes axe-core with nothing serious or critical, shows no "null", logs no
console error and breaks no rule of the Content-Security-Policy; on a 390x844 phone no page scrolls sideways, and
neither do the dialogs and forms a person opens there."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import USERS, screenshot
from tests.dashboard.test_accessibility import PHONE, axe_problems, horizontal_overflow
from tests.dashboard.test_csp import WATCH
from tests.support.services import wait_for

pytestmark = pytest.mark.browser

ROUTER = Path(__file__).resolve().parents[2] / "dashboard" / "router.js"
TOUR_UNIT = "sim-00013"  # a simulated unit (online, live metrics) with an open alert on it
NULL_WORD = re.compile(r"\bnull\b|\bundefined\b|\bNaN\b")


@dataclass
class Stop:
    name: str
    route: str  # the route's name in router.js
    path: str  # after the '#'
    ready: str  # a selector that shows the page has what it should (its data, not a loading state)
    console_ok: bool = True  # a page about a missing thing: the browser itself logs the 404 of its read


@pytest.fixture(scope="module")
def tour(fleet, sim, enroll, shell_unit) -> list[Stop]:
    """Something on every page: an open alert and a resolved one, a silence, a channel, a rollout, config defaults,
    a command, a recorded terminal session."""
    from tests.dashboard.test_terminal import _recorded_session

    for i in range(3):
        enroll(f"tour-{i}", ["tour"])  # never online: the rollout over them stays running, its commands queued
    with fleet.api() as api:
        r = api.post(
            "/api/rollouts",
            json={"name": "v9 → tour", "command": "update", "args": {"ref": "v9"}, "tag": "tour", "batch_size": 2},
        )
        assert r.status_code == 201, r.text
        rollout_id = r.json()["id"]
        rule = {"name": "Tour: CPU reported", "kind": "metric", "field": "cpu_percent", "op": ">", "threshold": -1}
        r = api.post("/api/alert-rules", json={**rule, "severity": "info", "device_id": TOUR_UNIT, "for_s": 0})
        assert r.status_code == 201, r.text
        rule_id = r.json()["id"]
        r = api.post("/api/silences", json={"tag": "tour", "duration_s": 3600, "comment": "the tour's silence"})
        assert r.status_code == 201, r.text
        r = api.post(f"/api/devices/{TOUR_UNIT}/commands", json={"name": "restart", "args": {}})
        assert r.status_code in (200, 201, 202), r.text
        defaults = {"log_level": "info", "upload_url": "https://uploads.example.net/venues/tour/recordings/incoming"}
        assert api.put("/api/config/groups/tour", json=defaults).status_code == 200
        body = {"name": "Tour hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}}
        assert api.post("/api/notification-channels", json=body).status_code == 201
        # a second alert, acknowledged (the unit's row counts 2 open, 1 firing); and one in the history: a rule that
        # fired, deleted (which resolves its alert)
        more = {}
        for name in ("Tour: acknowledged", "Tour: gone"):
            r = api.post("/api/alert-rules", json={**rule, "name": name, "device_id": TOUR_UNIT, "for_s": 0})
            assert r.status_code == 201, r.text
            more[name] = r.json()["id"]
        acked, gone = more.values()

        def alert_of(rule: str, state: str) -> list:
            found = api.get("/api/alerts", params={"unit": TOUR_UNIT, "state": state}).json()["items"]
            return [a for a in found if a["rule_id"] == rule]

        wait_for(lambda: all(alert_of(r, "open") for r in (rule_id, acked, gone)), timeout=90, what="the alerts")
        assert api.post(f"/api/alerts/{alert_of(acked, 'open')[0]['id']}/ack").status_code == 200
        assert api.delete(f"/api/alert-rules/{gone}").status_code in (200, 204)
        wait_for(lambda: alert_of(gone, "resolved"), timeout=30, what="the deleted rule's alert resolved")
        alert_id = alert_of(rule_id, "open")[0]["id"]
    session_id = _recorded_session(fleet, shell_unit, "tour")
    yield [
        Stop("overview", "overview", "/", "#units-body tr"),
        Stop("units-alerted", "overview", f"/?q={TOUR_UNIT}", f'#units-body tr[data-unit="{TOUR_UNIT}"] .alert-badge'),
        Stop("unit", "unit", f"/units/{TOUR_UNIT}", "#unit-alerts tr"),
        Stop("unit-missing", "unit", "/units/no-such-unit", "text=Unit not found", console_ok=False),
        Stop("terminal", "terminal", f"/units/{shell_unit}/terminal", "#term-status >> text=Connected"),
        Stop("sessions", "sessions", "/terminal-sessions", f'#sessions-body tr[data-session="{session_id}"]'),
        Stop("replay", "session", f"/terminal-sessions/{session_id}", "#replay-play:enabled"),
        Stop("rollouts", "rollouts", "/rollouts", "#rollouts-body tr"),
        Stop("rollout", "rollout", f"/rollouts/{rollout_id}", "#rollout-units tr"),
        Stop("config", "config", "/config", '#groups-body tr[data-tag="tour"]'),
        Stop("alerts", "alerts", "/alerts", f'#alerts-body tr[data-alert="{alert_id}"]'),
        Stop("alert-history", "alerts", "/alerts/history", "#alerts-body tr"),
        Stop("silences", "alerts", "/alerts/silences", "#silences-active tr[data-silence]"),
        Stop("alert-rules", "alerts", "/alerts/rules", f'#rules-body tr[data-rule="{rule_id}"]'),
        Stop("channels", "alerts", "/alerts/channels", "#channels-body tr"),
        Stop("alert", "alert", f"/alerts/{alert_id}", "#alert-events tr"),
        Stop("alert-missing", "alert", "/alerts/999999999", "#alert-title >> text=Alert not found", console_ok=False),
        Stop("not-found", "notfound", "/no/such/page", "text=Page not found"),
    ]
    with fleet.api() as api:
        for rule in (rule_id, acked):
            api.delete(f"/api/alert-rules/{rule}")


def test_the_tour_visits_every_route_and_every_alerts_tab(tour):
    source = ROUTER.read_text()
    routes = set(re.findall(r'^\s*\[/.*/, "(\w+)"\],$', source, re.M)) | {"notfound"}
    tabs = set(re.search(r"\^\\/alerts\\/\(([\w|]+)\)\$", source).group(1).split("|"))
    assert len(routes) >= 10, routes
    assert routes <= {s.route for s in tour}, routes - {s.route for s in tour}
    assert {f"/alerts/{t}" for t in tabs} <= {s.path for s in tour}


def watched_page(browser, fleet, contexts: list, scheme: str, size: dict, problems: list[str], role: str = "admin"):
    """A signed-in page (an admin's, unless told) whose console errors, page errors and CSP violations land in
    `problems`."""
    context = browser.new_context(viewport=size, color_scheme=scheme)
    context.add_init_script(WATCH)
    contexts.append(context)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.goto(fleet.url + "/")
    name, password = USERS[role]
    page.fill("#login-user", name)
    page.fill("#login-password", password)
    page.click(".login-form button[type=submit]")
    expect(page.locator("#who")).to_contain_text(name)
    return page


def visit(page, fleet, stop: Stop) -> None:
    page.goto(f"{fleet.url}/#{stop.path}")
    expect(page.locator(stop.ready).first).to_be_visible()
    page.wait_for_timeout(400)  # late reads and live events land


def scrolled_sideways(page) -> list[str]:
    """Boxes on the page whose content is wider than they are (a table to swipe sideways on a phone), but for a
    terminal's screen: a recording replays at the width it was made."""
    return page.evaluate("""() => [...document.querySelectorAll("main *")].filter((el) =>
        el.scrollWidth > el.clientWidth + 1 && ["auto", "scroll"].includes(getComputedStyle(el).overflowX) &&
        !el.closest(".replay-screen, .xterm"))
        .map((el) => `${el.tagName.toLowerCase()}.${[...el.classList].join(".")}` +
        ` (${el.querySelector("table")?.className || el.closest("section")?.className || ""}):` +
        ` ${el.scrollWidth - el.clientWidth} px`)""")


def unnamed_values(page) -> list[str]:
    """On a phone, tables show their rows as cards with the header row hidden: a card's bare number, duration, time
    or yes/no means nothing unless the cell names its column."""
    return page.evaluate("""() => {
        const UNITS = new Set(["yes", "no", "ms", "s", "min", "h", "d", "B", "kB", "KB", "MB", "GB", "UTC", "ago"]);
        const bare = (text) => /\\d|^(yes|no)$/.test(text) &&
          text.replace(/[\\d.,:+%–\\-\\/()]/g, " ").split(/\\s+/).filter(Boolean).every((w) => UNITS.has(w));
        return [...document.querySelectorAll("main table")].filter((t) => t.tHead &&
          getComputedStyle(t.tHead).display === "none").flatMap((t) => [...t.querySelectorAll("tbody td")]
          .filter((td) => td.offsetParent !== null && bare(td.textContent.trim()) &&
            ["none", "normal", ""].includes(getComputedStyle(td, "::before").content))
          .map((td) => `${t.className}: "${td.textContent.trim()}"`));
    }""")


def null_text(page) -> list[str]:
    """Lines of the page that show a JavaScript non-value as if it were data."""
    return [line for line in page.locator("body").inner_text().splitlines() if NULL_WORD.search(line)]


@pytest.fixture
def contexts(browser):
    made: list = []
    yield made
    for context in made:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_on_a_desktop_is_accessible_and_clean(browser, fleet, tour, contexts, scheme):
    console: list[str] = []
    page = watched_page(browser, fleet, contexts, scheme, {"width": 1400, "height": 900}, console)
    found: dict[str, list[str]] = {}
    for stop in tour:
        console.clear()
        visit(page, fleet, stop)
        problems = axe_problems(page) + [f'shows "{line}"' for line in null_text(page)]
        problems += [f"CSP: {v}" for v in page.evaluate("window.__csp.splice(0)")]
        if stop.console_ok:
            problems += console
        else:
            problems += [c for c in console if "404" not in c]
        if problems:
            found[stop.name] = problems
        screenshot(page, f"tour-desktop-{stop.name}-{scheme}", full_page=False)
    assert not found, "\n".join(f"{scheme} {k}: {p}" for k, v in found.items() for p in v)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_page_on_a_phone_scrolls_sideways(browser, fleet, tour, contexts, scheme):
    console: list[str] = []
    page = watched_page(browser, fleet, contexts, scheme, PHONE, console)
    wide: dict[str, object] = {}
    nulls: dict[str, list[str]] = {}
    unnamed: dict[str, list[str]] = {}
    for stop in tour:
        visit(page, fleet, stop)
        if (extra := horizontal_overflow(page)) > 0:
            wide[stop.name] = extra
        if boxes := scrolled_sideways(page):
            wide[stop.name] = boxes
        if bare := unnamed_values(page):
            unnamed[stop.name] = bare
        if lines := null_text(page):
            nulls[stop.name] = lines
        screenshot(page, f"tour-phone-{stop.name}-{scheme}", full_page=False)
    assert not wide, f"{scheme}: pages or tables wider than the phone: {wide}"
    assert not unnamed, f"{scheme}: values on cards with no name: {unnamed}"
    assert not nulls, nulls


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_every_page_as_a_viewer_or_operator_on_a_phone(browser, fleet, tour, contexts, role):
    """What a viewer or an operator sees differs (no buttons, no selection, no sessions): on a phone in dark mode
    every page still fits, passes axe-core, shows no "null" and logs no error (no refused read either)."""
    console: list[str] = []
    page = watched_page(browser, fleet, contexts, "dark", PHONE, console, role=role)
    found: dict[str, list] = {}
    for stop in tour:
        console.clear()
        page.goto(f"{fleet.url}/#{stop.path}")
        if stop.route in ("sessions", "session"):
            expect(page.locator("main")).to_contain_text("Only admins")
        elif stop.route == "terminal" and role == "viewer":
            expect(page.locator("#term-status")).to_be_visible()
        else:
            expect(page.locator(stop.ready).first).to_be_visible()
        page.wait_for_timeout(400)
        problems = axe_problems(page) + scrolled_sideways(page) + unnamed_values(page)
        problems += [f'shows "{line}"' for line in null_text(page)]
        if (extra := horizontal_overflow(page)) > 0:
            problems.append(f"the page is {extra} px wider than the phone")
        problems += [c for c in console if stop.console_ok or "404" not in c]
        if problems:
            found[stop.name] = problems
        screenshot(page, f"tour-{role}-phone-{stop.name}", full_page=False)
    assert not found, "\n".join(f"{role} {k}: {p}" for k, v in found.items() for p in v)


def open_dialog(page, button: str) -> None:
    page.click(button)
    expect(page.locator("dialog[open]")).to_be_visible()


def close_dialog(page) -> None:
    page.keyboard.press("Escape")
    expect(page.locator("dialog[open]")).to_have_count(0)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_dialogs_and_forms_fit_a_phone_and_pass_axe(browser, fleet, tour, contexts, scheme):
    """What a person opens on a page, on a phone: each confirmation dialog and each form fits the screen and passes
    axe-core."""
    console: list[str] = []
    page = watched_page(browser, fleet, contexts, scheme, PHONE, console)
    stops = {s.name: s for s in tour}
    seen: dict[str, list] = {}

    def check(name: str) -> None:
        page.wait_for_timeout(200)
        problems = axe_problems(page) + scrolled_sideways(page)
        if (extra := horizontal_overflow(page)) > 0:
            problems.append(f"the page is {extra} px wider than the phone")
        seen[name] = problems
        screenshot(page, f"tour-phone-{name}-{scheme}", full_page=False)

    visit(page, fleet, stops["overview"])
    page.fill("#filter-q", "sim-0002")
    expect(page.locator("#units-body tr")).to_have_count(10)
    for device_id in ("sim-00021", "sim-00022", "sim-00023"):
        page.locator(f'#units-body tr[data-unit="{device_id}"] input.row-select').check()
    for button in ("#bulk-restart", "#bulk-rollout"):
        open_dialog(page, button)
        check(f"bulk {button[6:]}")
        close_dialog(page)

    visit(page, fleet, stops["unit"])
    for button in ("#act-update", "#act-reboot"):
        open_dialog(page, button)
        check(f"unit {button[5:]}")
        close_dialog(page)
    page.click("#unit-edit")
    expect(page.locator("#unit-name-input")).to_be_visible()
    check("unit edit")
    page.click("#config-mode-json")
    check("unit config JSON")
    page.locator("#unit-alerts .act-silence").first.click()
    expect(page.locator("dialog[open]")).to_be_visible()
    check("silence from the unit")
    close_dialog(page)

    visit(page, fleet, stops["config"])
    page.click("#group-new")
    expect(page.locator("#group-form")).to_be_visible()
    check("new config defaults")

    visit(page, fleet, stops["rollouts"])
    page.fill("#ro-tag", "tour")
    page.fill("#ro-ref", "v10")
    open_dialog(page, "#ro-create")
    check("rollout confirmation")
    close_dialog(page)

    visit(page, fleet, stops["alert-rules"])
    page.click("#rule-new")
    expect(page.locator("#rule-form")).to_be_visible()
    check("new rule")

    visit(page, fleet, stops["channels"])
    page.locator("#channels-body .ch-log").first.click()
    page.click("#ch-new")
    expect(page.locator("#ch-form")).to_be_visible()
    check("new channel and deliveries")

    found = {k: v for k, v in seen.items() if v}
    assert not found, "\n".join(f"{scheme} {k}: {p}" for k, v in found.items() for p in v)
    assert console == [], console


def test_the_skip_link_moves_focus_and_keeps_the_page(browser, fleet, tour, contexts):
    """A keyboard user's first Tab on a page just opened reaches "Skip to content"; following it lands in the page's
    content, on the same page (the link's #main is not a route)."""
    page = watched_page(browser, fleet, contexts, "light", {"width": 1400, "height": 900}, [])
    stop = next(s for s in tour if s.name == "alerts")
    visit(page, fleet, stop)
    page.reload()  # as it is opened: nothing focused yet
    expect(page.locator(stop.ready)).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    expect(page.locator(stop.ready)).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("Page not found")
    assert page.evaluate("document.activeElement.closest('main') !== null")


def test_a_new_page_opens_at_its_top(browser, fleet, tour, contexts):
    """On a phone, following a link from far down a long list opens the next page at its top, not as far down."""
    page = watched_page(browser, fleet, contexts, "light", PHONE, [])
    visit(page, fleet, tour[0])
    link = page.locator("#units-body tr .unit-link").nth(20)
    link.scroll_into_view_if_needed()
    assert page.evaluate("window.scrollY") > 1000
    unit = link.inner_text()
    link.click()
    expect(page.locator("#unit-title")).to_have_text(unit)
    assert page.evaluate("window.scrollY") == 0
    expect(page.locator("#unit-title")).to_be_in_viewport()
    page.go_back()
    expect(page.locator("#units-body tr").first).to_be_visible()
