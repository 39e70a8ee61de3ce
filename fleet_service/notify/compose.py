"""From stored alerts to the `Message` a sender gets: the alerts as they stand now, with their units' names and
tags, and which of them a silence active now covers."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from fleet_service.alerts.models import Alert, Silence
from fleet_service.alerts.silences import matching
from fleet_service.db.columns import iso
from fleet_service.devices.models import Device
from fleet_service.notify.message import AlertItem, Message, Status
from protocol.ids import now_ms


def units(s: Session, device_ids: Iterable[str]) -> dict[str, tuple[str, list[str]]]:
    """device id -> (name, tags) of the units that still exist."""
    ids = sorted(set(device_ids))
    if not ids:
        return {}
    rows = s.exec(select(Device.id, Device.name, Device.tags).where(col(Device.id).in_(ids))).all()
    return {r[0]: (r[1], list(r[2] or [])) for r in rows}


def silenced_now(alert: Alert, tags: list[str], silences: list[Silence]) -> str | None:
    """The silence that keeps this alert quiet now: the one it fired under, or one active now that matches."""
    return matching(silences, alert.rule_id, alert.severity, alert.device_id, tags)


def item(alert: Alert, name: str, tags: list[str]) -> AlertItem:
    assert alert.id is not None
    return AlertItem(
        id=alert.id,
        rule_id=alert.rule_id,
        rule_name=alert.rule_name,
        kind=alert.kind,
        severity=alert.severity,
        device_id=alert.device_id,
        device_name=name or alert.device_id,
        tags=tuple(tags),
        state=alert.state,
        value=alert.value,
        fired_at=iso(alert.fired_at) or "",
        resolved_at=iso(alert.resolved_at),
    )


def message(
    notification_id: int | None,
    status: Status,
    alerts: list[Alert],
    found: dict[str, tuple[str, list[str]]],
    dashboard_url: str | None,
) -> Message:
    """One message for alerts of one rule (the worst severity among them names it)."""
    ordered = sorted(alerts, key=lambda a: (a.device_id, a.id or 0))
    items = tuple(item(a, *found.get(a.device_id, ("", []))) for a in ordered)
    order = ("info", "warning", "critical")
    severity = max((a.severity for a in ordered), key=lambda v: order.index(v) if v in order else -1)
    return Message(
        notification_id=notification_id,
        status=status,
        rule_id=ordered[0].rule_id,
        rule_name=ordered[0].rule_name,
        severity=severity,
        alerts=items,
        sent_at=iso(now_ms()) or "",
        dashboard_url=dashboard_url or None,
    )


def sample_message(dashboard_url: str | None) -> Message:
    """What "send a test notification" sends: one made-up alert, marked `test`."""
    now = iso(now_ms()) or ""
    sample = AlertItem(
        id=0,
        rule_id="test",
        rule_name="Test notification",
        kind="test",
        severity="info",
        device_id="example-unit",
        device_name="example-unit",
        tags=(),
        state="firing",
        value=None,
        fired_at=now,
    )
    return Message(None, "firing", "test", "Test notification", "info", (sample,), now, True, dashboard_url or None)
