"""The pictures in docs/screenshots: every main view on a desktop and a phone, light and dark.

Each view is reached the way a person does and checked to show what the picture is meant to show, so a broken view
fails here instead of being photographed. The files land in test-artifacts/ as `dashboard-docs-*.png`; copy them to
docs/screenshots/ (without the `dashboard-docs-` prefix) when the dashboard's look changes.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.dashboard.conftest import screenshot, wait_online
from tests.support.services import wait_for
from tests.support.unit import RawUnit

pytestmark = pytest.mark.browser

SIZES = {"desktop": {"width": 1400, "height": 900}, "phone": {"width": 390, "height": 844}}
FAILURE = "health check failed: recorder.service is not active after 30 s"


@pytest.fixture(scope="module")
def scene(fleet, enroll, sim):
    """A tag-wide config default with a unit using it, and a rollout that aborted on failures."""
    cam = enroll("shots-cam-1", ["shots-venue"])
    rollout_units = [enroll(f"shots-r-{i}", ["shots-rollout"]) for i in range(4)]
    raws = [RawUnit(u.port, u.id, u.secret).connect() for u in [cam, *rollout_units]]
    try:
        for raw in raws:
            raw.subscribe(Kind.CMD)
            raw.birth("2.4.1")
        with fleet.api() as api:
            for raw in raws:
                wait_online(api, raw.device_id)
            for tag, config in [
                ("shots-venue", {"video_bitrate_kbps": 3000, "resolution": "1080p"}),
                ("shots-rollout", {"log_level": "info", "recording_enabled": True}),
            ]:
                r = api.put(f"/api/config/groups/{tag}", json=config)
                assert r.status_code == 200, r.text
            r = api.put("/api/devices/shots-cam-1/config", json={"video_bitrate_kbps": 4500, "fps_note": "lobby"})
            assert r.status_code == 200, r.text
            r = api.post(
                "/api/rollouts",
                json={
                    "name": "v2.5 → shots",
                    "command": "update",
                    "args": {"ref": "v2.5"},
                    "tag": "shots-rollout",
                    "batch_size": 4,
                    "abort_threshold": 0.3,
                },
            )
            assert r.status_code == 201, r.text
            rollout_id = r.json()["id"]
        alerts = scene_alerts(fleet, raws[0])
        for n, raw in enumerate(raws[1:]):
            cmd_id = json.loads(raw.received.get(timeout=10).payload)["id"]
            status, code, output = (
                ("succeeded", 0, "checked out v2.5\nhealth check: ok")
                if n == 0
                else (
                    "failed",
                    1 if n < 3 else 2,
                    f"checked out v2.5\n{FAILURE}" if n < 3 else "post-update hook: exit 2",
                )
            )
            for st, extra in [("running", {}), (status, {"exit_code": code, "output": output})]:
                raw.publish(Kind.CMD_RESULT, {"v": 1, "id": cmd_id, "status": st, "ts": now_ms(), **extra})
        yield {"rollout": rollout_id, "alerts": alerts}
    finally:
        for raw in raws:
            raw.stop_clean()


def scene_alerts(fleet, cam: RawUnit) -> int:
    """Two alerts on the venue's camera: a critical one firing, a warning someone acknowledged."""
    with fleet.api() as api:
        for name, field, threshold, severity in [
            ("Recording disk almost full", "disk_percent", 90, "critical"),
            ("Camera hot", "temp_c", 80, "warning"),
        ]:
            rule = {"name": name, "kind": "metric", "field": field, "op": ">", "threshold": threshold}
            r = api.post("/api/alert-rules", json={**rule, "severity": severity, "tag": "shots-venue", "for_s": 0})
            assert r.status_code == 201, r.text
        cam.publish(Kind.METRICS, {"v": 1, "ts": now_ms(), "disk_percent": 94.2, "temp_c": 83.5, "cpu_percent": 35.0})
        query = {"tag": "shots-venue", "state": "open"}
        wait_for(lambda: len(api.get("/api/alerts", params=query).json()["items"]) == 2, timeout=20, what="two alerts")
        hot = next(a for a in api.get("/api/alerts", params=query).json()["items"] if a["rule_name"] == "Camera hot")
        token = api.post("/api/tokens", json={"role": "operator", "name": "night-shift"}).json()["token"]
        r = api.post(f"/api/alerts/{hot['id']}/ack", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
    return 2


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_docs_screenshots(open_page, fleet, scene, device, scheme):
    page = open_page("operator", color_scheme=scheme, **SIZES[device])
    base = page.url.split("#")[0]

    def scroll_to(element_id: str) -> None:
        """Bring a section to the top, below the top bar (sticky on a phone)."""
        page.evaluate(
            """(id) => { document.getElementById(id).scrollIntoView({ block: "start" });
                window.scrollBy(0, -document.getElementById("topbar").offsetHeight - 8); }""",
            element_id,
        )

    def shot(name: str) -> None:
        page.wait_for_timeout(400)
        screenshot(page, f"docs-{device}-{name}-{scheme}", full_page=False)

    # The unit list with three units selected: the bulk bar.
    page.fill("#filter-q", "sim-0004")
    expect(page.locator("#units-body tr")).to_have_count(10)
    for device_id in ("sim-00042", "sim-00045", "sim-00047"):
        page.locator(f'#units-body tr[data-unit="{device_id}"] input.row-select').check()
    expect(page.locator("#bulk-count")).to_have_text("3 units selected")
    expect(page.locator('#units-body tr[data-unit="sim-00041"] .col-cpu')).to_contain_text("%")
    if device == "phone":
        scroll_to("bulk-bar")
    else:
        page.evaluate("window.scrollTo(0, 0)")
    shot("overview-bulk")

    page.goto(base + "#/units/sim-00011")
    expect(page.locator(".unit-head .badge.online")).to_be_visible()
    page.wait_for_timeout(1500)  # the charts draw
    shot("unit")

    page.goto(base + "#/units/shots-cam-1")
    expect(page.locator("#cfg-video_bitrate_kbps")).to_have_value("4500")
    expect(page.locator('[data-key="resolution"] .cfg-source')).to_contain_text("default from tag shots-venue")
    scroll_to("config-title")
    shot("unit-config")

    page.goto(base + "#/config")
    expect(page.locator('#groups-body tr[data-tag="shots-venue"]')).to_be_visible()
    shot("config-defaults")

    page.goto(base + "#/alerts?tag=shots-venue")
    expect(page.locator("#alerts-body tr")).to_have_count(scene["alerts"])
    expect(page.locator('#alerts-body tr[data-state="acknowledged"] .col-state')).to_contain_text("by night-shift")
    expect(page.locator('#alerts-body tr[data-severity="critical"] .col-value')).to_have_text("disk 94.2 % (over 90 %)")
    expect(page.locator("#alert-count")).not_to_have_text("0")
    shot("alerts")

    page.goto(base + f"#/rollouts/{scene['rollout']}")
    expect(page.locator("#rollout-head .rollout-state")).to_have_text("aborted", timeout=15_000)
    expect(page.locator("#triage .failure-group")).to_have_count(2)
    if device == "phone":
        scroll_to("triage")
    shot("rollout-triage")
