"""The dashboard under its Content-Security-Policy (issue 11 item 15): every view works with no inline script or
style allowed, the browser reports no violation and logs no error, and /docs runs under its own policy."""

from __future__ import annotations

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


@pytest.fixture
def watched(browser, fleet):
    """A signed-in operator page whose CSP violations, console errors and page errors are collected."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(WATCH)
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    response = page.goto(fleet.url + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    name, password = USERS["operator"]
    page.fill("#login-user", name)
    page.fill("#login-password", password)
    page.click(".login-form button[type=submit]")
    expect(page.locator("#who")).to_contain_text(name)
    assert _violations(page) == []
    # Before signing in the page asks /api/me and is told 401, which the browser logs as an error; from here on
    # every console error counts.
    problems.clear()
    page.problems = problems
    yield page
    context.close()


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
    page.route("https://cdn.jsdelivr.net/**/*.js", lambda route: route.fulfill(
        status=200, content_type="application/javascript", body=stub))
    page.route("https://cdn.jsdelivr.net/**/*.css", lambda route: route.fulfill(
        status=200, content_type="text/css", body="body { margin: 0 }"))
    page.route("https://fastapi.tiangolo.com/**", lambda route: route.fulfill(status=204, body=""))
    response = page.goto(fleet.url + "/docs")  # the session cookie is the credential
    assert response.status == 200
    page.wait_for_function("window.__swagger !== undefined")
    assert page.evaluate("window.__swagger") == "/openapi.json"
    assert _violations(page) == []
