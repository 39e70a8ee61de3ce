"""An alert's life: fired -> acknowledged -> resolved. Every transition is one conditional change of the alert
row plus one `alert_event` row in the same transaction: that history is what the API shows and what a notifier
reads, so nothing else needs to know how an alert changed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.alerts.evaluate import Rule
from fleet_service.alerts.models import OPEN, Alert, AlertEvent
from fleet_service.alerts.summary import covering_silence
from fleet_service.db.columns import iso
from fleet_service.errors import Conflict, NotFound
from protocol.ids import now_ms


def alert_public(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "rule_id": a.rule_id,
        "rule_name": a.rule_name,
        "kind": a.kind,
        "severity": a.severity,
        "device_id": a.device_id,
        "state": a.state,
        "value": a.value,
        "fired_at": iso(a.fired_at),
        "acknowledged_at": iso(a.acknowledged_at),
        "acknowledged_by": a.acknowledged_by,
        "resolved_at": iso(a.resolved_at),
        "resolved_by": a.resolved_by,
        "silenced": a.silenced,
        "silence_id": a.silence_id,
    }


def event_public(e: AlertEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.type,
        "time": iso(e.ts),
        "actor": e.actor,
        "value": e.value,
        "silenced": e.silenced,
    }


def _record(s: Session, alert: Alert, type: str, ts: int, actor: str, value: Any = None) -> None:
    assert alert.id is not None
    s.add(AlertEvent(alert_id=alert.id, ts=ts, type=type, actor=actor, value=value, silenced=alert.silenced))


def fire(s: Session, rule: Rule, device_id: str, value: Any, now: int, silence_id: str | None) -> Alert:
    """Open an alert for this rule and unit (the caller knows none is open; the unique index makes sure)."""
    alert = Alert(
        rule_id=rule.id,
        rule_name=rule.name,
        kind=rule.kind,
        severity=rule.severity,
        device_id=device_id,
        value=value,
        fired_at=now,
        silenced=silence_id is not None,
        silence_id=silence_id,
    )
    s.add(alert)
    s.flush()
    _record(s, alert, "fired", now, "", value)
    return alert


def resolve(s: Session, alert_id: int, now: int, by: str, value: Any = None) -> Alert | None:
    """Resolve the alert if it is still open; None when it was not (resolved meanwhile, or gone)."""
    changed = s.exec(
        update(Alert)
        .where(col(Alert.id) == alert_id, col(Alert.state).in_(OPEN))
        .values(state="resolved", resolved_at=now, resolved_by=by)
    )
    if changed.rowcount != 1:
        return None
    alert = s.get(Alert, alert_id, populate_existing=True)
    assert alert is not None
    _record(s, alert, "resolved", now, by, value)
    return alert


def resolve_open(s: Session, rule_id: str, device_id: str | None, now: int, by: str) -> list[dict[str, Any]]:
    """Resolve the open alerts of a rule (for one unit, or all); returns their public shapes."""
    query = select(Alert.id).where(col(Alert.rule_id) == rule_id, col(Alert.state).in_(OPEN))
    if device_id is not None:
        query = query.where(col(Alert.device_id) == device_id)
    done = []
    for alert_id in s.exec(query).all():
        alert = resolve(s, alert_id, now, by) if alert_id is not None else None
        if alert is not None:
            done.append(alert_public(alert))
    return done


def acknowledge(engine: Engine, alert_id: int, who: str) -> dict[str, Any]:
    """firing -> acknowledged, by `who`; an alert already acknowledged or resolved is a Conflict."""
    now = now_ms()
    with Session(engine) as s:
        changed = s.exec(
            update(Alert)
            .where(col(Alert.id) == alert_id, col(Alert.state) == "firing")
            .values(state="acknowledged", acknowledged_at=now, acknowledged_by=who)
        )
        alert = s.get(Alert, alert_id, populate_existing=True)
        if alert is None:
            raise NotFound(f"no alert with id {alert_id}")
        if changed.rowcount != 1:
            raise Conflict(f"alert {alert_id} is {alert.state}: only a firing alert can be acknowledged")
        _record(s, alert, "acknowledged", now, who)
        s.commit()
        return alert_public(alert)


def alert_detail(engine: Engine, alert_id: int) -> dict[str, Any]:
    with Session(engine) as s:
        found = s.exec(select(Alert, covering_silence(now_ms())).where(col(Alert.id) == alert_id)).first()
        if found is None:
            raise NotFound(f"no alert with id {alert_id}")
        alert, silenced_by = found
        events = s.exec(
            select(AlertEvent).where(col(AlertEvent.alert_id) == alert_id).order_by(col(AlertEvent.id))
        ).all()
        return {**alert_public(alert), "silenced_by": silenced_by, "events": [event_public(e) for e in events]}
