"""Notification history kept as long as alert history: finished outbox rows (delivered, failed, suppressed)
with their alert links and attempts, and the attempts of test sends and refreshes, older than the retention are
deleted in batches. Rows still grouping or pending are never touched, whatever their age."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.notify.models import Notification, NotificationAlert, NotificationAttempt
from protocol.ids import now_ms

FINISHED = ("delivered", "failed", "suppressed")


def prune(engine: Engine, days: int, batch: int = 1000) -> int:
    """Delete what finished more than `days` ago (0 keeps everything); returns how many outbox rows went."""
    if days <= 0:
        return 0
    cutoff = now_ms() - days * 86_400_000
    removed = 0
    with Session(engine) as s:
        while True:
            ids = s.exec(
                select(Notification.id)
                .where(col(Notification.state).in_(FINISHED), col(Notification.created_at) < cutoff)
                .limit(batch)
            ).all()
            if not ids:
                break
            s.exec(delete(NotificationAlert).where(col(NotificationAlert.notification_id).in_(ids)))
            s.exec(delete(NotificationAttempt).where(col(NotificationAttempt.notification_id).in_(ids)))
            s.exec(delete(Notification).where(col(Notification.id).in_(ids)))
            s.commit()
            removed += len(ids)
        s.exec(
            delete(NotificationAttempt).where(
                col(NotificationAttempt.notification_id).is_(None), col(NotificationAttempt.ts) < cutoff
            )
        )
        s.commit()
    return removed
