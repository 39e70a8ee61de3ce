"""The overview's live stream carries the units on its page (plus fleet-wide presence for the totals), no more.

The events the page receives are recorded by a wrapper around `fetch` installed before the page's own scripts, so
the assertions are about what reached the browser, not about what the page chose to show.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.dashboard.conftest import wait_online
from tests.support.services import wait_for
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser

RECORD_EVENTS = """
(() => {
  window.__streamUrls = [];
  window.__streamEvents = [];
  const realFetch = window.fetch;
  window.fetch = async (input, init) => {
    const response = await realFetch(input, init);
    const url = typeof input === "string" ? input : input.url;
    if (!url.includes("/api/events") || !response.body) return response;
    window.__streamUrls.push(url);
    const decoder = new TextDecoder();
    let buffer = "";
    const tap = new TransformStream({
      transform(chunk, controller) {
        buffer += decoder.decode(chunk, { stream: true });
        const blocks = buffer.split("\\n\\n");
        buffer = blocks.pop();
        for (const block of blocks) {
          const data = block.split("\\n").find((l) => l.startsWith("data:"));
          if (data) {
            const e = JSON.parse(data.slice(5));
            window.__streamEvents.push({ type: e.type, device_id: e.device_id, at: Date.now() });
          }
        }
        controller.enqueue(chunk);
      },
    });
    return new Response(response.body.pipeThrough(tap),
      { status: response.status, statusText: response.statusText, headers: response.headers });
  };
})();
"""


def metrics(cpu: float, services: dict | None = None) -> dict:
    return {
        "v": 1,
        "ts": now_ms(),
        "cpu_percent": cpu,
        "mem_percent": 30.0,
        "disk_percent": 40.0,
        "temp_c": 50.0,
        "services": services or {"recorder.service": "running"},
    }


def row(page, device_id: str):
    return page.locator(f'#units-body tr[data-unit="{device_id}"]')


def total(page, name: str) -> int:
    return int(page.locator(f"#total-{name}").inner_text().replace(",", ""))


def page_total_follows_server(page, api, name: str, timeout: float) -> None:
    """The card shows what the server counts now (several reads: the count itself moves while we look)."""
    deadline = time.monotonic() + timeout
    while True:
        server = api.get("/api/devices", params={"limit": 1}).json()["summary"][name]
        shown = total(page, name)
        if shown == server:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"#total-{name} shows {shown}, the server counts {server}")
        time.sleep(0.2)


def received(page, since: int) -> list[dict]:
    return page.evaluate("(since) => window.__streamEvents.filter((e) => e.at >= since)", since)


def test_the_page_follows_its_own_units_and_the_totals_stay_live(open_page, fleet, enroll):
    shown, hidden = enroll("stream-shown", ["stream"]), enroll("stream-hidden", ["stream"])
    units = {u.id: RawUnit(u.port, u.id, u.secret).connect() for u in (shown, hidden)}
    try:
        with fleet.api() as api:
            for unit in units.values():
                unit.birth("3.0.0")
            for device_id in units:
                wait_online(api, device_id)
        page = open_page("operator")
        page.context.add_init_script(RECORD_EVENTS)
        page.reload()
        expect(page.locator("#who")).to_contain_text("olga")
        page.fill("#filter-q", "stream-shown")
        expect(page.locator("#units-body tr")).to_have_count(1)
        # The stream follows the page: the shown unit's events, every unit's presence for the totals.
        page.wait_for_function("() => window.__streamUrls.some((u) => u.includes('device_id=stream-shown&'))")
        url = page.evaluate("window.__streamUrls.at(-1)")
        assert "device_id=stream-shown&" in url and "fleet_types=presence%2Cdevice" in url, url

        # A metric change of a shown unit is on the page within a few seconds.
        start = page.evaluate("Date.now()")
        units["stream-shown"].publish(Kind.METRICS, metrics(33.0), qos=1)
        expect(row(page, "stream-shown").locator(".col-cpu")).to_contain_text("33 %", timeout=4_000)

        # A unit not on the page sends no metrics to it (and so causes no repaint).
        units["stream-hidden"].publish(Kind.METRICS, metrics(77.0), qos=1)
        units["stream-shown"].publish(Kind.METRICS, metrics(34.0), qos=1)
        expect(row(page, "stream-shown").locator(".col-cpu")).to_contain_text("34 %", timeout=4_000)
        time.sleep(0.5)
        events = received(page, start)
        assert {e["device_id"] for e in events if e["type"] in ("metrics", "heartbeat")} == {"stream-shown"}, events
        assert not any(e["device_id"] not in ("stream-shown", None) and e["type"] != "presence" for e in events)

        # Totals: a unit off the page going offline moves them at once (its presence still arrives) ...
        online_before = total(page, "online")
        units.pop("stream-hidden").stop_clean()
        expect(page.locator("#total-online")).to_have_text(str(online_before - 1), timeout=5_000)
        assert any(e["device_id"] == "stream-hidden" and e["type"] == "presence" for e in received(page, start))
        assert row(page, "stream-hidden").count() == 0

        # ... and one starting to fail is counted within the totals' re-read (every 5 s), without its metrics.
        hidden_again = RawUnit(hidden.port, hidden.id, hidden.secret).connect()
        units["stream-hidden"] = hidden_again
        hidden_again.birth("3.0.0")
        expect(page.locator("#total-online")).to_have_text(str(online_before), timeout=5_000)
        hidden_again.publish(Kind.METRICS, metrics(50.0, {"recorder.service": "failed"}), qos=1)
        # The simulated units fail and recover at random, so the fleet-wide count is compared with the server's
        # own, once the server counts this unit as failing; the page has had it since before that.
        with fleet.api() as api:
            wait_for(
                lambda: "stream-hidden" in {d["id"] for d in api.get("/api/devices?status=failing").json()["items"]},
                timeout=5,
                interval=0.1,
                what="stream-hidden failing in the API",
            )
            page_total_follows_server(page, api, "failing", timeout=8)

        # Another filter: the stream is re-opened for the new page's units.
        page.fill("#filter-q", "")
        page.fill("#filter-tag", "stream")
        page.press("#filter-tag", "Enter")
        expect(page.locator("#units-body tr")).to_have_count(2)
        page.wait_for_function("() => /device_id=stream-(hidden|shown)%2Cstream-/.test(window.__streamUrls.at(-1))")
        since = page.evaluate("Date.now()")
        hidden_again.publish(Kind.METRICS, metrics(61.0), qos=1)
        expect(row(page, "stream-hidden").locator(".col-cpu")).to_contain_text("61 %", timeout=4_000)
        assert any(e["device_id"] == "stream-hidden" and e["type"] == "metrics" for e in received(page, since))
        expect(page.locator("#stream-state")).to_have_text("live")
    finally:
        for unit in units.values():
            unit.stop_clean()
