"""Notification messages built by hand for the senders' tests (the shapes the dispatcher hands a sender)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet_service.notify.message import AlertItem, Message


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_item(alert_id: int, device_id: str, *, value: Any = None, fired_at: datetime | None = None) -> AlertItem:
    fired = fired_at or datetime.now(UTC) - timedelta(minutes=5)
    return AlertItem(
        id=alert_id,
        rule_id="r-temp",
        rule_name="Unit too hot",
        kind="metric",
        severity="warning",
        device_id=device_id,
        device_name=device_id.replace("cam-", "Camera "),
        tags=("site-a",),
        state="firing",
        value={"temp_c": 91.5} if value is None else value,
        fired_at=iso(fired),
    )


def firing(*alerts: AlertItem, notification_id: int | None = 41, dashboard_url: str | None = None) -> Message:
    first = alerts[0]
    return Message(
        notification_id=notification_id,
        status="firing",
        rule_id=first.rule_id,
        rule_name=first.rule_name,
        severity=first.severity,
        alerts=alerts,
        sent_at=iso(datetime.now(UTC)),
        dashboard_url=dashboard_url,
    )


def resolved(message: Message, *, notification_id: int | None = 42, at: datetime | None = None) -> Message:
    """The same alerts, resolved `at` (default now)."""
    when = iso(at or datetime.now(UTC))
    alerts = tuple(replace(a, state="resolved", resolved_at=when) for a in message.alerts)
    return replace(message, notification_id=notification_id, status="resolved", alerts=alerts, sent_at=when)
