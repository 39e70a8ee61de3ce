"""Notification history goes after the retention, like alert history; what is still to be sent never does."""

from __future__ import annotations

from sqlmodel import Session, col, select

from fleet_service.notify.models import Notification, NotificationAlert, NotificationAttempt
from fleet_service.notify.retention import prune
from protocol.ids import now_ms

DAY = 86_400_000


def _row(s: Session, state: str, age_days: float) -> int:
    ts = now_ms() - int(age_days * DAY)
    n = Notification(channel_id="c1", rule_id="r1", status="firing", state=state, due_at=ts, next_attempt_at=ts)
    n.created_at = ts
    s.add(n)
    s.flush()
    assert n.id is not None
    s.add(NotificationAlert(notification_id=n.id, alert_id=n.id * 10))
    s.add(NotificationAttempt(notification_id=n.id, channel_id="c1", ts=ts, ok=state == "delivered"))
    return n.id


def test_finished_notifications_older_than_the_retention_go_with_their_links_and_attempts(engine):
    with Session(engine) as s:
        old = {state: _row(s, state, 40) for state in ("delivered", "failed", "suppressed")}
        waiting = {state: _row(s, state, 40) for state in ("grouping", "pending")}
        recent = _row(s, "delivered", 5)
        s.add(NotificationAttempt(notification_id=None, channel_id="c1", purpose="test", ts=now_ms() - 40 * DAY))
        s.add(NotificationAttempt(notification_id=None, channel_id="c1", purpose="refresh", ts=now_ms() - DAY))
        s.commit()

    assert prune(engine, 0) == 0  # 0 keeps everything
    assert prune(engine, 30, batch=2) == 3

    with Session(engine) as s:
        kept = set(s.exec(select(Notification.id)).all())
        assert kept == {*waiting.values(), recent}
        assert set(s.exec(select(NotificationAlert.notification_id)).all()) == kept
        attempts = s.exec(select(NotificationAttempt)).all()
        assert {a.notification_id for a in attempts if a.notification_id is not None} == kept
        assert [a.purpose for a in attempts if a.notification_id is None] == ["refresh"]
        assert not s.exec(select(Notification).where(col(Notification.id).in_(list(old.values())))).all()
