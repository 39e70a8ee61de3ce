"""Moving around the dashboard: every view opens its own event stream and closes the last one, cleanly."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_switching_views_leaves_no_errors_in_the_service_log(open_page, fleet, sim):
    page = open_page("operator")
    for _ in range(3):
        page.click('nav a[data-nav="rollouts"]')
        expect(page.locator("#rollouts-title")).to_be_visible()
        expect(page.locator("#stream-state")).to_have_text("live")
        page.click('nav a[data-nav="units"]')
        page.locator("#units-body a.unit-link").first.click()
        expect(page.locator("#unit-title")).to_be_visible()
        expect(page.locator("#stream-state")).to_have_text("live")
        page.go_back()
        expect(page.locator("#units-body tr").first).to_be_visible()
    page.context.close()
    time.sleep(1)  # the service notices the last closed stream
    problems = [
        line
        for line in fleet.log_text().splitlines()
        if "Traceback" in line or re.search(r"\b(ERROR|CRITICAL)\b", line)
    ]
    assert not problems, "\n".join(problems[:20])
