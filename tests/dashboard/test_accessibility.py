"""Every page, light and dark, desktop and phone: axe-core finds nothing serious or critical, and a 390 px wide
phone never has to scroll the page sideways."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import screenshot

pytestmark = pytest.mark.browser

AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def rollout_id(fleet, enroll) -> str:
    """A rollout to look at: three offline units, so it stays running with its commands queued."""
    for i in range(3):
        enroll(f"a11y-{i}", ["a11y"])
    with fleet.api() as api:
        r = api.post(
            "/api/rollouts",
            json={
                "name": "v9 → a11y",
                "command": "update",
                "args": {"ref": "v9"},
                "tag": "a11y",
                "batch_size": 2,
                "abort_threshold": 0.5,
            },
        )
        assert r.status_code in (200, 201), r.text
        return r.json()["id"]


def pages(page, rollout_id: str):
    """(name, how to get there, what shows it arrived) for every page of the dashboard."""
    base = page.url.split("#")[0]
    return [
        ("overview", base + "#/", "#units-body tr"),
        ("unit", base + "#/units/sim-00011", ".unit-head .badge.online"),
        ("rollouts", base + "#/rollouts", "#rollouts-body tr"),
        ("rollout", base + f"#/rollouts/{rollout_id}", "#rollout-units tr"),
        ("config", base + "#/config", "#groups-title"),
    ]


def axe_problems(page) -> list[str]:
    """Serious and critical axe-core violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE)  # evaluated through DevTools, which the page's CSP does not govern
    result = page.evaluate("""async () => {
        const r = await axe.run(document, { resultTypes: ["violations"] });
        return r.violations.filter((v) => ["serious", "critical"].includes(v.impact)).map((v) =>
          `${v.impact} ${v.id}: ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(" ") + " (" +
            (n.failureSummary || "").replace(/\\s+/g, " ").slice(0, 160) + ")").join("; ")}`);
    }""")
    # Rules axe leaves to people (best practice / not computed): table headers with no name, and the focus
    # ring's contrast with what is around it (WCAG 1.4.11 non-text contrast, 3:1).
    result += page.evaluate("""() => [...document.querySelectorAll("th")].filter((th) => !th.textContent.trim() &&
        !th.getAttribute("aria-label")).map((th) => `serious empty-table-header: ${th.closest("table").className}`)""")
    ratio = page.evaluate("""() => {
        const lum = (rgb) => { const c = rgb.match(/\\d+/g).slice(0, 3).map((v) => v / 255)
          .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
          return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]; };
        const probe = document.createElement("span");
        document.body.append(probe);
        const color = (v) => { probe.style.color = `var(${v})`; return getComputedStyle(probe).color; };
        const focus = lum(color("--focus"));
        const worst = Math.min(...["--panel", "--bg"].map((v) => lum(color(v))).concat([lum("rgb(17, 24, 39)")])
          .map((l) => (Math.max(l, focus) + 0.05) / (Math.min(l, focus) + 0.05)));
        probe.remove();
        return worst;
    }""")
    if ratio < 3:
        result.append(f"serious focus-ring-contrast: {ratio:.2f}:1 < 3:1")
    return result


def horizontal_overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_nothing_serious_on_any_page(open_page, fleet, sim, rollout_id, scheme):
    login = open_page(None, color_scheme=scheme)
    expect(login.locator("#login-user")).to_be_visible()
    problems = {"login": axe_problems(login)}
    page = open_page("operator", color_scheme=scheme)
    for name, url, ready in pages(page, rollout_id):
        page.goto(url)
        expect(page.locator(ready).first).to_be_visible()
        page.wait_for_timeout(300)
        problems[name] = axe_problems(page)
        screenshot(page, f"desktop-{name}-{scheme}", full_page=False)
    page.goto(pages(page, rollout_id)[1][1])
    expect(page.locator(".unit-head .badge.online")).to_be_visible()
    page.click("#act-reboot")
    expect(page.locator("dialog")).to_be_visible()
    problems["reboot dialog"] = axe_problems(page)
    found = {k: v for k, v in problems.items() if v}
    assert not found, "\n".join(f"{k}: {p}" for k, v in found.items() for p in v)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_phone_never_scrolls_sideways(open_page, fleet, sim, rollout_id, scheme):
    login = open_page(None, color_scheme=scheme, **PHONE)
    expect(login.locator("#login-user")).to_be_visible()
    assert horizontal_overflow(login) <= 0
    page = open_page("operator", color_scheme=scheme, **PHONE)
    wide = {}
    for name, url, ready in pages(page, rollout_id):
        page.goto(url)
        expect(page.locator(ready).first).to_be_visible()
        page.wait_for_timeout(300)
        if (extra := horizontal_overflow(page)) > 0:
            wide[name] = extra
        if name in ("overview", "unit"):
            screenshot(page, f"phone-{name}-{scheme}", full_page=False)
    assert not wide, f"pages wider than the phone (px): {wide}"
    # the top bar still shows who is signed in and how to sign out, inside the screen
    page.goto(pages(page, rollout_id)[0][1])
    box = page.locator("#logout").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    # the unit column stays readable: every row shows its unit id inside the screen
    link = page.locator("#units-body tr .unit-link").first
    lb = link.bounding_box()
    assert lb and lb["x"] >= 0 and lb["x"] + lb["width"] <= PHONE["width"], lb
