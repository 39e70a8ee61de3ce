"""The dispatcher: reads `alert_event` after its cursor and turns fired and resolved alerts into outbox rows, one
group per channel, rule and status. One replica at a time (the `notification_cursor` row is also the lease).

The cursor moves in the same transaction as the outbox rows it made, with a conditional UPDATE on the cursor's
old value: a restart neither loses nor repeats an event, and a replica that lost the lease writes nothing.

Event ids come from a sequence: on PostgreSQL a transaction that took id 10 may commit after one that took 11.
The cursor therefore only moves over contiguous ids; a gap is passed once the event after it is `GAP_WAIT_MS`
old (a rolled-back transaction leaves a gap forever, a slow one closes it within moments)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.alerts.models import Alert, AlertEvent
from fleet_service.devices.models import Device
from fleet_service.notify.models import Notification, NotificationAlert, NotificationChannel, NotificationCursor
from protocol.ids import now_ms

LEASE = "dispatcher"
GAP_WAIT_MS = 5000
BATCH = 500
_EVENT_COLUMNS: tuple[Any, ...] = (
    AlertEvent.id,
    AlertEvent.alert_id,
    AlertEvent.type,
    AlertEvent.ts,
    AlertEvent.silenced,
)


def take_lease(s: Session, holder: str, now: int, lease_ms: int) -> bool:
    result = s.exec(
        update(NotificationCursor)
        .where(
            col(NotificationCursor.name) == LEASE,
            or_(col(NotificationCursor.holder) == holder, col(NotificationCursor.expires_at) < now),
        )
        .values(holder=holder, expires_at=now + lease_ms)
    )
    return result.rowcount == 1


@dataclass(frozen=True)
class _Event:
    id: int
    alert_id: int
    type: str
    ts: int
    silenced: bool


def readable(events: Sequence[_Event], cursor: int, now: int) -> list[_Event]:
    """The events the cursor may pass now: contiguous ids, or past a gap whose next event is old enough."""
    taken: list[_Event] = []
    expected = cursor + 1
    for e in events:
        if e.id != expected and now - e.ts < GAP_WAIT_MS:
            break
        taken.append(e)
        expected = e.id + 1
    return taken


def matches(channel: NotificationChannel, alert: Alert, unit_tags: list[str]) -> bool:
    if alert.severity not in channel.severities:
        return False
    return not channel.tags or bool(set(channel.tags) & set(unit_tags))


def _touch_open(s: Session, notification_id: int | None, now: int) -> bool:
    """Lock a group that is still gathering (not due, not claimed): True when the caller may change it."""
    result = s.exec(
        update(Notification)
        .where(
            col(Notification.id) == notification_id,
            col(Notification.state) == "grouping",
            col(Notification.claimed_by).is_(None),
            col(Notification.due_at) > now,
        )
        .values(state="grouping")
    )
    return result.rowcount == 1


def _new(s: Session, channel: NotificationChannel, rule_id: str, status: str, now: int, **kw) -> Notification:
    due = now + int(channel.group_wait_s * 1000)
    row = Notification(
        channel_id=channel.id, rule_id=rule_id, status=status, due_at=due, next_attempt_at=due, created_at=now, **kw
    )
    s.add(row)
    s.flush()
    return row


def add_to_group(s: Session, channel: NotificationChannel, alert: Alert, status: str, now: int) -> None:
    """Into the channel's group for this rule and status that is still gathering, or a new one."""
    open_group = s.exec(
        select(Notification)
        .where(
            col(Notification.channel_id) == channel.id,
            col(Notification.rule_id) == alert.rule_id,
            col(Notification.status) == status,
            col(Notification.state) == "grouping",
            col(Notification.due_at) > now,
        )
        .order_by(col(Notification.id).desc())
    ).first()
    if open_group is None or not _touch_open(s, open_group.id, now):
        open_group = _new(s, channel, alert.rule_id, status, now)
    assert open_group.id is not None and alert.id is not None
    s.add(NotificationAlert(notification_id=open_group.id, alert_id=alert.id))


def _suppress(s: Session, channel: NotificationChannel, alert: Alert, now: int, reason: str) -> None:
    row = _new(s, channel, alert.rule_id, "firing", now, state="suppressed", reason=reason[:500])
    assert row.id is not None and alert.id is not None
    s.add(NotificationAlert(notification_id=row.id, alert_id=alert.id))


def _resolved(s: Session, channel: NotificationChannel, alert: Alert, now: int) -> None:
    """A resolved notification follows only a firing one that was sent or is being sent to this channel; an
    alert that resolved while its firing group was still gathering leaves that group instead."""
    firing = s.exec(
        select(Notification)
        .join(NotificationAlert, col(NotificationAlert.notification_id) == col(Notification.id))
        .where(
            col(NotificationAlert.alert_id) == alert.id,
            col(Notification.channel_id) == channel.id,
            col(Notification.status) == "firing",
        )
        .order_by(col(Notification.id).desc())
    ).first()
    if firing is None or firing.state in ("failed", "suppressed"):
        return
    if firing.state == "grouping" and _touch_open(s, firing.id, now):
        link = s.get(NotificationAlert, (firing.id, alert.id))
        if link is not None:
            s.delete(link)
            s.flush()
        left = s.exec(
            select(func.count())
            .select_from(NotificationAlert)
            .where(col(NotificationAlert.notification_id) == firing.id)
        ).one()
        if left == 0:
            firing.state, firing.reason = "suppressed", "every alert resolved before it was sent"
            s.add(firing)
        return
    add_to_group(s, channel, alert, "resolved", now)


def _route(s: Session, event: _Event, alert: Alert, tags: list[str], channels: list[NotificationChannel], now: int):
    for channel in channels:
        if event.type == "resolved":
            _resolved(s, channel, alert, now)
        elif matches(channel, alert, tags):
            if event.silenced:
                _suppress(s, channel, alert, now, f"silenced when it fired (silence {alert.silence_id})")
            else:
                add_to_group(s, channel, alert, "firing", now)


def dispatch(engine: Engine, holder: str, lease_ms: int) -> int | None:
    """Read the events after the cursor into the outbox; the number of events passed, None without the lease."""
    now = now_ms()
    with Session(engine) as s:
        held = take_lease(s, holder, now, lease_ms)
        s.commit()
    if not held:
        return None
    with Session(engine) as s:
        cursor_row = s.get(NotificationCursor, LEASE)
        assert cursor_row is not None
        cursor = cursor_row.last_event_id
        rows = s.execute(
            sa_select(*_EVENT_COLUMNS).where(col(AlertEvent.id) > cursor).order_by(col(AlertEvent.id)).limit(BATCH)
        ).all()
    events = readable([_Event(*r) for r in rows], cursor, now)
    if not events:
        return 0
    with Session(engine) as s:
        moved = s.exec(  # first: the row lock orders dispatchers; a moved cursor or a lost lease writes nothing
            update(NotificationCursor)
            .where(
                col(NotificationCursor.name) == LEASE,
                col(NotificationCursor.holder) == holder,
                col(NotificationCursor.last_event_id) == cursor,
            )
            .values(last_event_id=events[-1].id, expires_at=now_ms() + lease_ms)
        )
        if moved.rowcount != 1:
            s.rollback()
            return None
        wanted = [e for e in events if e.type in ("fired", "resolved")]
        if wanted:
            channels = list(s.exec(select(NotificationChannel).where(col(NotificationChannel.enabled) == True)).all())  # noqa: E712
            alert_ids = sorted({e.alert_id for e in wanted})
            alerts = {a.id: a for a in s.exec(select(Alert).where(col(Alert.id).in_(alert_ids))).all()}
            units = {a.device_id for a in alerts.values()}
            tags = dict(s.exec(select(Device.id, Device.tags).where(col(Device.id).in_(units))).all()) if units else {}
            if channels:
                for e in wanted:
                    alert = alerts.get(e.alert_id)
                    if alert is not None:  # gone: removed by retention meanwhile
                        _route(s, e, alert, list(tags.get(alert.device_id) or []), channels, now)
        s.commit()
    return len(events)
