"""Helpers for the notification tests: a service with one rule that a hand-driven unit crosses, a channel, and
the counts a test reports (sent, stored, lost, doubled)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fleet_service.alerts.support import editable, metrics, online_unit, only_rule, rules_by_builtin
from tests.support.receiver import Receiver

__all__ = ["hot_rule", "metrics", "online_unit", "webhook", "outbox", "tally"]


def hot_rule(api: httpx.Client) -> dict:
    """Only the temperature rule, firing 0.3 s after temp_c > 85, clearing below 80."""
    only_rule(api, {"temperature"})
    rule = rules_by_builtin(api)["temperature"]
    r = api.put(f"/api/alert-rules/{rule['id']}", json={**editable(rule), "for_s": 0.3, "clear_threshold": 80})
    assert r.status_code == 200, r.text
    return r.json()


def webhook(api: httpx.Client, receiver: Receiver, **body: Any) -> dict:
    r = api.post(
        "/api/notification-channels",
        json={"name": "hook", "kind": "webhook", "config": {"url": receiver.url}, **body},
    )
    assert r.status_code == 201, r.text
    return r.json()


def outbox(api: httpx.Client, **params: Any) -> list[dict]:
    r = api.get("/api/notifications", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def tally(receiver: Receiver, api: httpx.Client, expected: int) -> dict[str, int]:
    """What the receiver got against what the outbox says was delivered: printed, and returned to assert on."""
    ids = [r.headers.get("x-fleet-notification-id") for r in receiver.accepted()]
    distinct = set(ids)
    delivered = [n for n in outbox(api) if n["state"] == "delivered"]
    counts = {
        "expected": expected,
        "requests": len(receiver.received),
        "accepted": len(ids),
        "stored_delivered": len(delivered),
        "lost": max(0, expected - len(distinct)),
        "doubled": len(ids) - len(distinct),
    }
    print("notifications:", counts)
    return counts
