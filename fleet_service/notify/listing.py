"""What the API lists: the outbox (with each row's alerts and attempts) and a channel's delivery log."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.db.columns import iso
from fleet_service.errors import NotFound
from fleet_service.notify.models import Notification, NotificationAlert, NotificationAttempt, NotificationChannel


def attempt_public(a: NotificationAttempt) -> dict[str, Any]:
    return {
        "id": a.id,
        "notification_id": a.notification_id,
        "channel_id": a.channel_id,
        "purpose": a.purpose,
        "attempt": a.attempt,
        "time": iso(a.ts),
        "ok": a.ok,
        "status_code": a.status_code,
        "error": a.error,
        "duration_ms": a.duration_ms,
    }


def notification_public(n: Notification, alert_ids: list[int], attempts: list[NotificationAttempt]) -> dict[str, Any]:
    return {
        "id": n.id,
        "channel_id": n.channel_id,
        "rule_id": n.rule_id,
        "status": n.status,
        "alert_ids": alert_ids,
        "state": n.state,
        "reason": n.reason,
        "due_at": iso(n.due_at),
        "attempts": n.attempts,
        "next_attempt_at": iso(n.next_attempt_at) if n.state in ("grouping", "pending") else None,
        "created_at": iso(n.created_at),
        "delivered_at": iso(n.delivered_at),
        "last_error": n.last_error,
        "attempt_log": [attempt_public(a) for a in attempts],
    }


def deliveries(engine: Engine, channel_id: str, limit: int, offset: int) -> dict[str, Any]:
    with Session(engine) as s:
        if s.get(NotificationChannel, channel_id) is None:
            raise NotFound(f"no notification channel with id {channel_id!r}")
        where = col(NotificationAttempt.channel_id) == channel_id
        total = s.exec(select(func.count()).select_from(NotificationAttempt).where(where)).one()
        rows = s.exec(
            select(NotificationAttempt)
            .where(where)
            .order_by(col(NotificationAttempt.id).desc())
            .offset(offset)
            .limit(limit)
        ).all()
        return {"items": [attempt_public(a) for a in rows], "total": total, "limit": limit, "offset": offset}


def notifications(
    engine: Engine, state: str | None, channel: str | None, alert: int | None, limit: int, offset: int
) -> dict[str, Any]:
    """Outbox rows, newest first, with their alerts and attempts."""
    query = select(Notification)
    counted = select(func.count()).select_from(Notification)
    conditions = []
    if state is not None:
        conditions.append(col(Notification.state) == state)
    if channel is not None:
        conditions.append(col(Notification.channel_id) == channel)
    if alert is not None:
        holding = select(NotificationAlert.notification_id).where(col(NotificationAlert.alert_id) == alert)
        conditions.append(col(Notification.id).in_(holding))
    if conditions:
        query, counted = query.where(*conditions), counted.where(*conditions)
    with Session(engine) as s:
        total = s.exec(counted).one()
        rows = list(s.exec(query.order_by(col(Notification.id).desc()).offset(offset).limit(limit)).all())
        ids = [n.id for n in rows]
        alerts: dict[int, list[int]] = defaultdict(list)
        attempts: dict[int, list[NotificationAttempt]] = defaultdict(list)
        if ids:
            links = s.exec(
                select(NotificationAlert)
                .where(col(NotificationAlert.notification_id).in_(ids))
                .order_by(col(NotificationAlert.alert_id))
            ).all()
            for link in links:
                alerts[link.notification_id].append(link.alert_id)
            logged = s.exec(
                select(NotificationAttempt)
                .where(col(NotificationAttempt.notification_id).in_(ids))
                .order_by(col(NotificationAttempt.id))
            ).all()
            for a in logged:
                if a.notification_id is not None:
                    attempts[a.notification_id].append(a)
        items = [notification_public(n, alerts[n.id or 0], attempts[n.id or 0]) for n in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}
