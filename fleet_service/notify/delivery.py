"""Delivery: claim a due outbox row with a conditional UPDATE (one replica sends it), check silences once more,
send it through the channel kind's sender, log the attempt and either mark it delivered or schedule a retry
(exponential backoff with full jitter) until it fails for good.

At least once: a replica killed after the receiver took a message but before "delivered" was stored sends it
again once its claim expires. The message carries the same notification id every time, so a receiver can tell."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from sqlalchemy import delete, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.alerts.models import Alert
from fleet_service.alerts.silences import active_silences
from fleet_service.notify import compose
from fleet_service.notify.channels import as_channel
from fleet_service.notify.message import Channel, Message, SendResult, Status
from fleet_service.notify.models import Notification, NotificationAlert, NotificationAttempt, NotificationChannel
from fleet_service.notify.senders import sender
from protocol.ids import now_ms

log = logging.getLogger(__name__)

CLAIMABLE = ("grouping", "pending")


@dataclass(frozen=True)
class Retry:
    base_s: float
    cap_s: float
    max_attempts: int
    max_age_s: float

    def delay_s(self, attempt: int) -> float:
        """Full jitter: anywhere between 0 and the exponential step (capped)."""
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1)))


def due(engine: Engine, now: int, limit: int) -> list[int]:
    with Session(engine) as s:
        rows = s.exec(
            select(Notification.id)
            .where(
                col(Notification.state).in_(CLAIMABLE),
                col(Notification.next_attempt_at) <= now,
                or_(col(Notification.claimed_by).is_(None), col(Notification.claim_expires_at) < now),
            )
            .order_by(col(Notification.next_attempt_at))
            .limit(limit)
        ).all()
    return [r for r in rows if r is not None]


def claim(engine: Engine, notification_id: int, holder: str, claim_ms: int) -> bool:
    now = now_ms()
    with Session(engine) as s:
        result = s.exec(
            update(Notification)
            .where(
                col(Notification.id) == notification_id,
                col(Notification.state).in_(CLAIMABLE),
                col(Notification.next_attempt_at) <= now,
                or_(col(Notification.claimed_by).is_(None), col(Notification.claim_expires_at) < now),
            )
            .values(
                state="pending",
                claimed_by=holder,
                claim_expires_at=now + claim_ms,
                attempts=col(Notification.attempts) + 1,
            )
        )
        s.commit()
    return result.rowcount == 1


@dataclass(frozen=True)
class Prepared:
    channel: Channel
    message: Message
    attempt: int


def _release(s: Session, row: Notification, **values) -> None:
    s.exec(
        update(Notification)
        .where(col(Notification.id) == row.id, col(Notification.claimed_by) == row.claimed_by)
        .values(claimed_by=None, claim_expires_at=None, **values)
    )


def prepare(engine: Engine, notification_id: int, holder: str, dashboard_url: str | None) -> Prepared | None:
    """The message to send for a claimed row, or None when there is nothing to send: the silences active now
    cover its alerts (they move to a suppressed row of their own, so the record shows why), or the channel is off."""
    with Session(engine) as s:
        row = s.get(Notification, notification_id)
        if row is None or row.claimed_by != holder:
            return None
        channel = s.get(NotificationChannel, row.channel_id)
        if channel is None or not channel.enabled:
            _release(s, row, state="suppressed", reason="channel disabled", attempts=row.attempts - 1)
            s.commit()
            return None
        ids = s.exec(select(NotificationAlert.alert_id).where(col(NotificationAlert.notification_id) == row.id)).all()
        alerts = list(s.exec(select(Alert).where(col(Alert.id).in_(ids))).all()) if ids else []
        found = compose.units(s, (a.device_id for a in alerts))
        silences = active_silences(s, now_ms())
        quiet = {a.id: compose.silenced_now(a, found.get(a.device_id, ("", []))[1], silences) for a in alerts}
        loud = [a for a in alerts if quiet[a.id] is None]
        if not loud:
            reason = "silenced: " + ", ".join(sorted({v for v in quiet.values() if v})) if alerts else "no alerts left"
            _release(s, row, state="suppressed", reason=reason[:500], attempts=row.attempts - 1)  # none was made
            s.commit()
            return None
        if len(loud) < len(alerts):  # some of them only: those leave this row for a suppressed one
            moved = [a.id for a in alerts if quiet[a.id] is not None]
            apart = Notification(
                channel_id=row.channel_id,
                rule_id=row.rule_id,
                status=row.status,
                state="suppressed",
                reason=("silenced: " + ", ".join(sorted({v for v in quiet.values() if v})))[:500],
                due_at=row.due_at,
                next_attempt_at=row.due_at,
                created_at=now_ms(),
            )
            s.add(apart)
            s.flush()
            s.exec(
                delete(NotificationAlert).where(
                    col(NotificationAlert.notification_id) == row.id, col(NotificationAlert.alert_id).in_(moved)
                )
            )
            for alert_id in moved:
                assert apart.id is not None and alert_id is not None
                s.add(NotificationAlert(notification_id=apart.id, alert_id=alert_id))
            s.commit()
        status: Status = "resolved" if row.status == "resolved" else "firing"
        return Prepared(as_channel(channel), compose.message(row.id, status, loud, found, dashboard_url), row.attempts)


async def attempt(channel: Channel, message: Message, timeout_s: float) -> tuple[SendResult, int]:
    """One send, bounded by `timeout_s` whatever the sender does; never raises. Returns the result and its ms."""
    started = time.monotonic()
    try:
        module = sender(channel.kind)
        result = await asyncio.wait_for(module.send(channel, message, timeout_s), timeout_s + 1)
    except TimeoutError:
        result = SendResult(False, None, "timed out")
    except (KeyError, ImportError):
        result = SendResult(False, None, f"no sender for {channel.kind!r} channels in this version", retry=False)
    except Exception as exc:  # noqa: BLE001  a sender's bug: logged without the message (it may carry secrets in its args)
        log.error("the %s sender failed: %s", channel.kind, type(exc).__name__)
        result = SendResult(False, None, f"sender error: {type(exc).__name__}")
    return result, int((time.monotonic() - started) * 1000)


def log_attempt(
    s: Session,
    channel_id: str,
    notification_id: int | None,
    number: int,
    result: SendResult,
    duration_ms: int,
    purpose: str = "notification",
) -> None:
    s.add(
        NotificationAttempt(
            notification_id=notification_id,
            channel_id=channel_id,
            purpose=purpose,
            attempt=number,
            ts=now_ms(),
            ok=result.ok,
            status_code=result.status_code,
            error=(result.error or None) and (result.error or "")[:500],
            duration_ms=duration_ms,
        )
    )


def finish(
    engine: Engine, notification_id: int, holder: str, prepared: Prepared, result: SendResult, ms: int, retry: Retry
) -> str:
    """Log the attempt and move the row on: delivered, pending again (a retry is due later) or failed."""
    now = now_ms()
    with Session(engine) as s:
        log_attempt(s, prepared.channel.id, notification_id, prepared.attempt, result, ms)
        row = s.get(Notification, notification_id)
        if row is None or row.claimed_by != holder:  # taken over after our claim expired: only the log is ours
            s.commit()
            return "lost"
        if result.ok:
            _release(s, row, state="delivered", delivered_at=now, last_error=None)
            state = "delivered"
        elif not result.retry or row.attempts >= retry.max_attempts or now - row.created_at >= retry.max_age_s * 1000:
            _release(s, row, state="failed", last_error=(result.error or "failed")[:500])
            state = "failed"
        else:
            wait_ms = int(retry.delay_s(row.attempts) * 1000)
            _release(s, row, state="pending", next_attempt_at=now + wait_ms, last_error=(result.error or "")[:500])
            state = "pending"
        s.commit()
    return state
