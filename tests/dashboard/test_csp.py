"""The dashboard under its Content-Security-Policy: every view works with no inline script or
style allowed, the browser reports no violation and logs no error, and /docs runs under its own policy."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import USERS

pytestmark = pytest.mark.browser

# Runs before any page script (injected by the browser's DevTools protocol, which the page's CSP does not govern).
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`);
});
"""


def _signed_in(context, fleet, role: str):
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    response = page.goto(fleet.url + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    name, password = USERS[role]
    page.fill("#login-user", name)
    page.fill("#login-password", password)
    page.click(".login-form button[type=submit]")
    expect(page.locator("#who")).to_contain_text(name)
    assert _violations(page) == []
    page.problems = problems
    return page


@pytest.fixture
def watched_as(browser, fleet):
    """`watched_as(role)`: a signed-in page whose CSP violations, console errors and page errors are collected."""
    contexts = []

    def do(role: str):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_init_script(WATCH)
        contexts.append(context)
        return _signed_in(context, fleet, role)

    yield do
    for context in contexts:
        context.close()


@pytest.fixture
def watched(watched_as):
    """A signed-in operator page whose CSP violations, console errors and page errors are collected."""
    return watched_as("operator")


def _violations(page) -> list[str]:
    return page.evaluate("window.__csp")


def test_every_view_runs_under_the_policy_without_a_violation_or_console_error(watched, fleet, enroll):
    page = watched
    unit = enroll("csp-unit-1", tags=["csp"])
    expect(page.locator("#stream-state")).to_have_text("live")
    page.goto(fleet.url + f"/#/units/{unit.id}")
    expect(page.locator("#unit-title")).to_contain_text(unit.id)
    page.goto(fleet.url + "/#/rollouts")
    expect(page.locator("#rollouts-title")).to_have_text("Rollouts")
    page.goto(fleet.url + "/#/config")
    expect(page.locator("#groups-title")).to_have_text("Config defaults")
    for section, ready in [
        ("", "#alerts-body"),
        ("/history", "#alerts-body"),
        ("/silences", "#silences-active"),
        ("/rules", "#rules-body tr"),
    ]:
        page.goto(fleet.url + f"/#/alerts{section}")
        expect(page.locator(ready).first).to_be_attached()
    page.goto(fleet.url + "/#/")
    expect(page.locator("#stream-state")).to_have_text("live")
    page.wait_for_timeout(500)  # let late reports arrive
    assert _violations(page) == []
    assert page.problems == []


def test_an_inline_script_is_refused_and_reported(watched):
    """The watch above sees violations: an injected inline script does not run and is reported."""
    page = watched
    page.evaluate("""() => { const s = document.createElement("script");
                             s.textContent = "window.__inlineRan = true"; document.head.appendChild(s); }""")
    page.wait_for_timeout(200)
    assert page.evaluate("window.__inlineRan") is None
    assert any("script-src" in v for v in _violations(page)), _violations(page)


def test_the_docs_page_starts_swagger_under_its_own_policy(watched, fleet):
    """The CDN is not reachable from tests: a stand-in bundle records how the page's inline script called it."""
    page = watched
    stub = """window.SwaggerUIBundle = function (options) { window.__swagger = options.url; };
              window.SwaggerUIBundle.presets = {apis: {}}; window.SwaggerUIBundle.SwaggerUIStandalonePreset = {};"""
    page.route(
        "https://cdn.jsdelivr.net/**/*.js",
        lambda route: route.fulfill(status=200, content_type="application/javascript", body=stub),
    )
    page.route(
        "https://cdn.jsdelivr.net/**/*.css",
        lambda route: route.fulfill(status=200, content_type="text/css", body="body { margin: 0 }"),
    )
    page.route("https://fastapi.tiangolo.com/**", lambda route: route.fulfill(status=204, body=""))
    response = page.goto(fleet.url + "/docs")  # the session cookie is the credential
    assert response.status == 200
    page.wait_for_function("window.__swagger !== undefined")
    assert page.evaluate("window.__swagger") == "/openapi.json"
    assert _violations(page) == []


def test_a_fresh_load_checks_the_session_without_an_error(browser, fleet):
    """Not signed in is an answer, not a failure: the first look at the session logs nothing (no 401 for /api/me)."""
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(fleet.url + "/")
        expect(page.locator("#login-user")).to_be_visible()
        page.wait_for_timeout(300)
        assert problems == []
        page.reload()  # and once more, now with a session cookie
        name, password = USERS["viewer"]
        page.fill("#login-user", name)
        page.fill("#login-password", password)
        page.click(".login-form button[type=submit]")
        expect(page.locator("#who")).to_contain_text(name)
        page.reload()
        expect(page.locator("#who")).to_contain_text(name)
        page.wait_for_timeout(300)
        assert problems == []
        # a deep link opened fresh, signed in and signed out: the same
        for signed_in in (True, False):
            if not signed_in:
                page.click("#logout")
                expect(page.locator("#login-user")).to_be_visible()
            for path in DEEP_LINKS:
                page.goto(f"{fleet.url}/#{path}")
                page.reload()
                expect(page.locator("#who" if signed_in else "#login-user")).to_be_visible()
                page.wait_for_timeout(300)
                assert problems == [], (path, signed_in)
    finally:
        context.close()


DEEP_LINKS = ("/alerts", "/alerts/rules", "/alerts/channels", "/rollouts", "/config", "/terminal-sessions")


def test_the_terminal_its_sessions_and_a_replay_run_under_the_policy(watched_as, fleet, shell_unit):
    """xterm.js writes its cell sizes and colours as <style> elements and truecolour cells as style attributes: the
    policy lets those through (styles only), and nothing else is reported."""
    from tests.dashboard.test_terminal import type_line, wait_screen

    page = watched_as("operator")
    page.goto(fleet.url + f"/#/units/{shell_unit}/terminal")
    expect(page.locator("#term-status")).to_contain_text("Connected")
    type_line(page, "printf '\\033[32mgreen-%s \\033[38;2;255;128;0mtrue-%s\\033[0m\\n' 1 2")
    wait_screen(page, "true-2")
    green = page.locator("#terminal .xterm-rows span", has_text="green-1").last
    r, g, b = map(int, re.findall(r"\d+", green.evaluate("(el) => getComputedStyle(el).color")))
    assert g > r + 50 and g > b + 50, (r, g, b)  # the palette's green, not the page's text colour
    orange = page.locator("#terminal .xterm-rows span", has_text="true-2").last
    assert orange.evaluate("(el) => getComputedStyle(el).color") == "rgb(255, 128, 0)"
    page.click("#term-close")
    expect(page.locator("#term-status")).to_contain_text("You ended the session")
    page.wait_for_timeout(300)
    assert _violations(page) == []
    assert page.problems == []

    admin = watched_as("admin")
    admin.goto(fleet.url + "/#/terminal-sessions")
    row = admin.locator("#sessions-body tr").first
    expect(row).to_contain_text(shell_unit)
    row.locator("a.cast-replay").click()
    admin.click("#replay-speed-8")
    admin.click("#replay-play")
    wait_screen(admin, "true-2", scope="#replay-screen")
    expect(admin.locator("#replay-state")).to_contain_text("Finished", timeout=20_000)
    admin.wait_for_timeout(300)
    assert _violations(admin) == []
    assert admin.problems == []
