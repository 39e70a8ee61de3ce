"""Helpers for the alert tests: a running service with a fast evaluator, a hand-driven unit, short rules."""

from __future__ import annotations

from typing import Any

import httpx

from protocol.ids import new_id, now_ms
from protocol.topics import Kind
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for
from tests.support.unit import RawUnit

FAST = {"alert_eval_interval_s": 0.2, "alert_lease_s": 3.0}


def fast_settings(tmp_path, **overrides):
    return settings_for(tmp_path, **{**FAST, **overrides})


def online_unit(stack: StackThread, api: httpx.Client, device_id: str, port: int | None = None, **body) -> RawUnit:
    secret = api.post("/api/devices", json={"id": device_id, **body}).json()["secret"]
    unit = RawUnit(port or stack.mqtt_port, device_id, secret).connect()
    unit.birth()
    wait_for(lambda: api.get(f"/api/devices/{device_id}/status").json()["online"], what=f"{device_id} online")
    return unit


def metrics(unit: RawUnit, **fields: Any) -> None:
    unit.publish(Kind.METRICS, {"v": 1, "ts": now_ms(), **fields})


def rules_by_builtin(api: httpx.Client) -> dict[str, dict]:
    return {r["builtin"]: r for r in api.get("/api/alert-rules").json()["items"] if r["builtin"]}


def alerts(api: httpx.Client, **params: Any) -> list[dict]:
    r = api.get("/api/alerts", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def wait_alert(api: httpx.Client, what: str, **params: Any) -> dict:
    found: list[dict] = []

    def check() -> bool:
        found[:] = alerts(api, **params)
        return bool(found)

    wait_for(check, timeout=15, what=what)
    return found[0]


def only_rule(api: httpx.Client, keep: set[str]) -> None:
    """Disable every rule but these built-ins, so one test sees only the alerts it provokes."""
    for rule in api.get("/api/alert-rules").json()["items"]:
        if rule["builtin"] not in keep:
            r = api.put(f"/api/alert-rules/{rule['id']}", json={**editable(rule), "enabled": False})
            assert r.status_code == 200, r.text


def editable(rule: dict) -> dict:
    keys = ("name", "kind", "severity", "enabled", "tag", "device_id", "field", "op", "threshold", "clear_threshold")
    return {k: rule[k] for k in (*keys, "value", "level", "pattern", "regex", "window_s", "for_s", "clear_for_s")}


def log_lines(unit: RawUnit, *lines: tuple[str, str]) -> None:
    """One log batch of (level, message) lines, stamped now."""
    records = [{"id": new_id(), "ts": now_ms(), "level": level, "msg": msg} for level, msg in lines]
    unit.publish(Kind.LOGS, {"v": 1, "records": records})


def create_rule(api: httpx.Client, **body: Any) -> dict:
    r = api.post("/api/alert-rules", json={"name": body.get("kind", "rule"), **body})
    assert r.status_code == 201, r.text
    return r.json()
