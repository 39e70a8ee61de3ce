"""The remote terminal in the dashboard: a real agent's shell in xterm.js through the fleet, who sees the button and
why it is off, the admins' list of sessions with the recording's download and its replay in the browser.

The pictures of these views land in test-artifacts/ as `dashboard-docs-*terminal*.png`, like test_screenshots.py's."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import ADMIN_TOKEN, screenshot, wait_online
from tests.dashboard.test_accessibility import axe_problems, horizontal_overflow
from tests.fleet_service.terminal.support import Term
from tests.support.services import wait_for

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
SIZE_LINE = re.compile(r"size:(\d+) (\d+)")


def screen_text(page, scope: str = "#terminal") -> str:
    """What the terminal shows now (xterm's rows as rendered, one line per row)."""
    return page.evaluate(
        """(scope) => [...document.querySelectorAll(`${scope} .xterm-rows > div`)]
            .map((row) => row.textContent.replace(/\\u00a0/g, " ").trimEnd()).join("\\n")""",
        scope,
    )


def wait_screen(page, needle: str, scope: str = "#terminal", timeout: float = 15_000) -> None:
    page.wait_for_function(
        """([scope, needle]) => [...document.querySelectorAll(`${scope} .xterm-rows > div`)]
            .some((row) => row.textContent.replace(/\\u00a0/g, " ").includes(needle))""",
        arg=[scope, needle],
        timeout=timeout,
    )


def type_line(page, text: str) -> None:
    page.locator("#terminal .xterm-helper-textarea").focus()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def open_terminal(page, unit: str):
    page.goto(page.url.split("#")[0] + f"#/units/{unit}")
    button = page.locator("#unit-terminal")
    expect(button).to_be_enabled()
    button.click()
    expect(page).to_have_url(re.compile(rf"#/units/{unit}/terminal$"))
    expect(page.locator("#term-status")).to_contain_text("Connected")


def stty_size(page, marker: str) -> tuple[int, int]:
    """Ask the shell for its terminal's size (rows, cols); `marker` tells this answer from earlier ones."""
    type_line(page, f"printf '%s:%s\\n' {marker} \"$(stty size)\"")  # the command line itself has no `marker:`
    wait_screen(page, f"{marker}:")
    found = re.findall(rf"{marker}:(\d+) (\d+)", screen_text(page))
    assert found, screen_text(page)
    return int(found[-1][0]), int(found[-1][1])


def test_an_operator_runs_commands_resizes_and_sees_the_exit_status(open_page, shell_unit):
    page = open_page("operator", width=1400, height=900)
    open_terminal(page, shell_unit)
    type_line(page, "echo hello-$((6*7))")
    wait_screen(page, "hello-42")
    # UTF-8 and colours come through as the shell wrote them
    type_line(page, "printf '\\033[31mred-\\342\\234\\223\\033[0m\\n'")
    wait_screen(page, "red-✓")
    red = page.locator("#terminal .xterm-rows span", has_text="red-✓").last
    r, g, b = map(int, re.findall(r"\d+", red.evaluate("(el) => getComputedStyle(el).color")))
    assert r > 2 * g and r > 2 * b, (r, g, b)

    before = stty_size(page, "size1")
    screenshot(page, "docs-desktop-terminal-light", full_page=False)
    page.set_viewport_size({"width": 800, "height": 560})
    page.wait_for_timeout(500)  # the fit addon measures again and sends the new size
    after = stty_size(page, "size2")
    assert after != before and after[1] < before[1], (before, after)

    type_line(page, "exit 3")
    expect(page.locator("#term-status")).to_contain_text("exited with status 3")
    expect(page.locator("#term-close")).to_be_hidden()


def test_closing_the_terminal_ends_the_session(open_page, fleet, shell_unit):
    page = open_page("operator")
    open_terminal(page, shell_unit)
    type_line(page, "echo still-$((1+1))")
    wait_screen(page, "still-2")
    page.click("#term-close")
    expect(page.locator("#term-status")).to_contain_text("You ended the session")
    with fleet.api() as api:
        rows = api.get("/api/terminal-sessions", params={"device_id": shell_unit}).json()["items"]
    assert rows[0]["close_reason"] == "operator" and rows[0]["actor"].endswith("olga"), rows[0]


def test_a_viewer_has_no_terminal_button(open_page, shell_unit):
    page = open_page("viewer")
    page.goto(page.url.split("#")[0] + f"#/units/{shell_unit}")
    expect(page.locator(".unit-head .badge.online")).to_be_visible()
    expect(page.locator("#act-terminal-wrap, #unit-terminal")).to_have_count(0)


def test_the_button_says_why_a_shell_is_off_or_the_unit_offline(open_page, fleet, enroll):
    off = enroll("term-ui-off")
    gone = enroll("term-ui-gone")
    with fleet.api() as api:
        r = api.put(f"/api/devices/{off.id}/config", json={"remote_shell": False})
        assert r.status_code == 200, r.text
    page = open_page("operator")
    base = page.url.split("#")[0]
    page.goto(base + f"#/units/{off.id}")
    expect(page.locator("#unit-terminal")).to_be_disabled()
    expect(page.locator("#unit-terminal-why")).to_contain_text("remote_shell: false")
    page.goto(base + f"#/units/{gone.id}")
    expect(page.locator("#unit-terminal")).to_be_disabled()
    expect(page.locator("#unit-terminal-why")).to_contain_text("offline")
    # Going to the terminal's address anyway shows the service's refusal
    page.goto(base + f"#/units/{off.id}/terminal")
    expect(page.locator("#term-status")).to_contain_text("remote shell is disabled on this unit")


def test_an_admin_only_unit_shows_the_button_to_admins_only(open_page, fleet, enroll):
    unit = enroll("term-ui-admins")
    with fleet.api() as api:
        r = api.put(f"/api/devices/{unit.id}/config", json={"remote_shell_admin_only": True})
        assert r.status_code == 200, r.text
    operator = open_page("operator")
    operator.goto(operator.url.split("#")[0] + f"#/units/{unit.id}")
    expect(operator.locator("#unit-title")).to_contain_text(unit.id)
    expect(operator.locator("#unit-config-status, #config-title").first).to_be_attached()
    operator.wait_for_timeout(500)
    expect(operator.locator("#unit-terminal")).to_have_count(0)
    admin = open_page("admin")
    admin.goto(admin.url.split("#")[0] + f"#/units/{unit.id}")
    expect(admin.locator("#unit-terminal")).to_be_visible()


def _recorded_session(fleet, unit: str, word: str) -> str:
    """A finished session (through the API, as `fleet shell` would) whose output has `word`: its id."""
    term = Term.open(fleet.url, unit, token=ADMIN_TOKEN, cols=80, rows=24)
    try:
        opened = term.wait_event("opened")
        term.send(f"echo {word}-$((5*5))\n".encode())
        term.wait_output(f"{word}-25".encode())
        term.send(b"exit 0\n")
        assert term.wait_event("exit")["status"] == 0
    finally:
        term.close()
    return opened["session"]


def test_an_admin_replays_and_downloads_a_recording(open_page, fleet, shell_unit):
    session_id = _recorded_session(fleet, shell_unit, "replay")
    page = open_page("admin")
    base = page.url.split("#")[0]
    page.goto(base + "#/terminal-sessions")
    row = page.locator(f'#sessions-body tr[data-session="{session_id}"]')
    expect(row).to_contain_text(shell_unit)
    expect(row).to_contain_text("exited with status 0")
    screenshot(page, "docs-desktop-terminal-sessions-light", full_page=False)

    with page.expect_download() as download:
        row.locator("a.cast-download").click()
    cast = download.value.path().read_text().splitlines()
    assert json.loads(cast[0])["version"] == 2
    assert download.value.suggested_filename.endswith(".cast")

    row.locator("a.cast-replay").click()
    expect(page).to_have_url(re.compile(rf"#/terminal-sessions/{session_id}$"))
    page.click("#replay-speed-8")
    page.click("#replay-play")
    wait_screen(page, "replay-25", scope="#replay-screen")
    expect(page.locator("#replay-state")).to_contain_text("Finished", timeout=20_000)
    screenshot(page, "docs-desktop-terminal-replay-light", full_page=False)

    # the unit page lists its sessions for admins
    page.goto(base + f"#/units/{shell_unit}")
    expect(page.locator(f'#unit-sessions tr[data-session="{session_id}"]')).to_be_visible()


def test_a_viewer_or_operator_has_no_sessions_list(open_page):
    page = open_page("operator")
    expect(page.locator("#sessions-link")).to_be_hidden()
    page.goto(page.url.split("#")[0] + "#/terminal-sessions")
    expect(page.locator("#main")).to_contain_text("admins")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_terminal_and_sessions_views_pass_axe_and_fit_a_phone(open_page, fleet, shell_unit, scheme):
    session_id = _recorded_session(fleet, shell_unit, f"axe{scheme}")
    page = open_page("admin", color_scheme=scheme)
    open_terminal(page, shell_unit)
    type_line(page, "echo axe-$((2*3))")
    wait_screen(page, "axe-6")
    problems = {"terminal": axe_problems(page)}
    page.click("#term-close")
    expect(page.locator("#term-status")).to_contain_text("You ended the session")
    base = page.url.split("#")[0]
    page.goto(base + "#/terminal-sessions")
    expect(page.locator(f'#sessions-body tr[data-session="{session_id}"]')).to_be_visible()
    problems["sessions"] = axe_problems(page)
    page.goto(base + f"#/terminal-sessions/{session_id}")
    expect(page.locator("#replay-play")).to_be_enabled()
    problems["replay"] = axe_problems(page)
    found = {k: v for k, v in problems.items() if v}
    assert not found, "\n".join(f"{k}: {p}" for k, v in found.items() for p in v)

    phone = open_page("operator", color_scheme=scheme, **PHONE)
    open_terminal(phone, shell_unit)
    type_line(phone, "echo phone-$((3*3))")
    wait_screen(phone, "phone-9")
    rows, cols = stty_size(phone, "psize")
    assert 20 <= cols <= 60, cols  # fitted to the phone's width, not the desktop's 80
    assert horizontal_overflow(phone) <= 0
    screenshot(phone, f"docs-phone-terminal-{scheme}", full_page=False)
    phone.click("#term-close")
    admin_phone = open_page("admin", color_scheme=scheme, **PHONE)
    admin_phone.goto(admin_phone.url.split("#")[0] + "#/terminal-sessions")
    expect(admin_phone.locator(f'#sessions-body tr[data-session="{session_id}"]')).to_be_visible()
    assert horizontal_overflow(admin_phone) <= 0
    admin_phone.goto(admin_phone.url.split("#")[0] + f"#/terminal-sessions/{session_id}")
    expect(admin_phone.locator("#replay-play")).to_be_enabled()
    assert horizontal_overflow(admin_phone) <= 0


def test_the_unit_page_reflects_going_offline(open_page, fleet, enroll):
    """The button follows presence: a unit that drops off disables it without a reload."""
    from tests.support.unit import RawUnit

    unit = enroll("term-ui-flaky")
    raw = RawUnit(unit.port, unit.id, unit.secret).connect()
    raw.birth("1.0")
    try:
        with fleet.api() as api:
            wait_online(api, unit.id)
        page = open_page("operator")
        page.goto(page.url.split("#")[0] + f"#/units/{unit.id}")
        expect(page.locator("#unit-terminal")).to_be_enabled()
    finally:
        raw.stop_clean()
    expect(page.locator("#unit-terminal")).to_be_disabled()
    expect(page.locator("#unit-terminal-why")).to_contain_text("offline")


def test_copy_and_paste_go_through_the_clipboard(open_page, fleet, shell_unit):
    page = open_page("operator")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=fleet.url)
    open_terminal(page, shell_unit)
    type_line(page, "echo copyme-$((7*8))")
    wait_screen(page, "copyme-56")
    word = page.locator("#terminal .xterm-rows span", has_text="copyme-56").last
    box = word.bounding_box()
    page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # xterm selects the word
    page.keyboard.press("Control+Shift+KeyC")
    wait_for(lambda: "copyme-56" in page.evaluate("navigator.clipboard.readText()"), timeout=10, what="the copy")
    page.evaluate("navigator.clipboard.writeText('echo pasted-$((4*4))')")
    page.click("#term-paste")
    wait_screen(page, "$ echo pasted-")  # the shell echoes what was pasted; the terminal has the focus again
    page.keyboard.press("Enter")
    wait_screen(page, "pasted-16")
    page.click("#term-close")
