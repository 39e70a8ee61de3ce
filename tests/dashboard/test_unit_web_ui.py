"""A unit's own web UI in a browser tab, opened from the unit page: it runs on an origin of its own, so a page a
compromised unit serves cannot read the dashboard or act as the operator who opened it.

The unit's server is on this machine's loopback (which is the agent's); its /probe page's script tries the
dashboard's /api/me on its own origin and on the dashboard's, and writes what it got into the page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import run_agent
from tests.fleet_service.terminal.unit_web import UnitWeb

UNIT = "web-ui-1"


@pytest.fixture(scope="module")
def unit_web(fleet, enroll, tmp_path_factory) -> Iterator[UnitWeb]:
    server = UnitWeb()
    unit = enroll(UNIT, ["web-ui"])
    procs = run_agent(
        fleet, unit, tmp_path_factory.mktemp("web-ui-agent"), "--allow-remote-port", str(server.http_port)
    )
    with fleet.api() as api:
        r = api.put(f"/api/devices/{UNIT}/config", json={"remote_ports": [server.http_port]})
        assert r.status_code == 200, r.text
    yield server
    procs.stop_all()
    server.close()


def _probe(page) -> dict:
    expect(page).to_have_title("probed", timeout=15_000)
    return json.loads(page.locator("#probe").inner_text())


def test_the_units_page_runs_on_its_own_origin_and_cannot_use_the_operators_session(open_page, fleet, unit_web):
    page = open_page("operator")
    dashboard = urlsplit(fleet.url)
    page.goto(f"{fleet.url}/api/devices/{UNIT}/proxy/{unit_web.http_port}/probe?dash={fleet.url}")
    found = _probe(page)
    origin = urlsplit(found["origin"])
    assert origin.netloc != dashboard.netloc and origin.hostname and origin.hostname.endswith(".localhost"), found
    assert origin.port == dashboard.port
    assert found["relative"] == {"status": 404, "body": "not here"}, found  # answered by the unit, not the fleet
    assert "error" in found["dashboard"], found  # the dashboard's answers are not readable from there
    assert found["cookie"] == "", found  # the unit origin's cookie is HttpOnly


def test_the_unit_page_links_its_web_ui_and_it_opens_in_a_new_tab(open_page, fleet, unit_web):
    page = open_page("operator")
    page.goto(f"{fleet.url}/#/units/{UNIT}")
    link = page.locator(f"#unit-web-ui a[data-port='{unit_web.http_port}']")
    expect(link).to_be_visible()
    expect(link).to_have_attribute("target", "_blank")
    assert "noopener" in (link.get_attribute("rel") or "")
    with page.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    expect(tab.locator("h1")).to_have_text("recorder web ui")
    assert re.match(rf"http://{UNIT}--{unit_web.http_port}--[0-9a-f]+\.localhost:\d+/$", tab.url), tab.url


def test_a_viewer_sees_no_web_ui_link(open_page, fleet, unit_web):
    page = open_page("viewer")
    page.goto(f"{fleet.url}/#/units/{UNIT}")
    expect(page.locator("#unit-title, h1").first).to_contain_text(UNIT)
    expect(page.locator("#unit-web-ui a")).to_have_count(0)
