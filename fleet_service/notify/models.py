"""The notification tables: channels (where to send), the outbox (what to send, one row per group of alerts and
channel), the alerts of each outbox row, the per-attempt delivery log, and the dispatcher's lease and cursor."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from fleet_service.db.columns import BIG_ID, json_field, ms_field

STATES = ("grouping", "pending", "delivered", "failed", "suppressed")
PURPOSES = ("notification", "test", "refresh")


class NotificationChannel(SQLModel, table=True):
    """A receiver and what it wants: `severities` (any of them), `tags` (empty: every unit; else a unit carrying
    any of them). `config` is public; `secrets` is write-only (the webhook's HMAC key under "secret", an SMTP
    password, a Slack URL): never logged, never returned by the API after creation."""

    __tablename__ = "notification_channel"

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=16)  # webhook | slack | email | alertmanager
    enabled: bool = True
    severities: list[str] = json_field(list)
    tags: list[str] = json_field(list)
    group_wait_s: float = 30.0
    config: dict[str, Any] = json_field(dict)
    secrets: dict[str, str] = json_field(dict)
    created_at: int = ms_field()
    created_by: str = Field(default="", max_length=200)
    updated_at: int = ms_field()
    updated_by: str = Field(default="", max_length=200)


class Notification(SQLModel, table=True):
    """One message to one channel: the alerts of one rule that fired (or resolved) within the channel's grouping
    window. `grouping` until `due_at`, then claimed by one replica (`claimed_by` until `claim_expires_at`) and
    sent, retried from `pending` at `next_attempt_at`, until `delivered` or `failed`; `suppressed` when a
    silence (or a resolution before sending) left nobody to tell, with the `reason`."""

    __table_args__ = (
        Index("ix_notification_due", "state", "next_attempt_at"),
        Index("ix_notification_group", "channel_id", "rule_id", "status", "state"),
        Index("ix_notification_created", "created_at"),
    )

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    channel_id: str = Field(max_length=32)
    rule_id: str = Field(max_length=32)
    status: str = Field(max_length=16)  # firing | resolved
    state: str = Field(default="grouping", max_length=16)
    reason: str = Field(default="", max_length=500)  # why suppressed
    due_at: int = ms_field()
    attempts: int = 0
    next_attempt_at: int = ms_field()
    claimed_by: str | None = Field(default=None, max_length=128)
    claim_expires_at: int | None = ms_field(default=None, nullable=True)
    created_at: int = ms_field()
    delivered_at: int | None = ms_field(default=None, nullable=True)
    last_error: str | None = Field(default=None, max_length=500)


class NotificationAlert(SQLModel, table=True):
    """The alerts one notification carries."""

    __tablename__ = "notification_alert"
    __table_args__ = (Index("ix_notification_alert_alert", "alert_id"),)

    notification_id: int = Field(sa_type=BIG_ID, primary_key=True)
    alert_id: int = Field(sa_type=BIG_ID, primary_key=True)


class NotificationAttempt(SQLModel, table=True):
    """One try to reach a channel: for an outbox row, a test send (`notification_id` None) or a refresh."""

    __tablename__ = "notification_attempt"
    __table_args__ = (
        Index("ix_notification_attempt_channel", "channel_id", "id"),
        Index("ix_notification_attempt_notification", "notification_id"),
    )

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    notification_id: int | None = Field(default=None, sa_type=BIG_ID, nullable=True)
    channel_id: str = Field(max_length=32)
    purpose: str = Field(default="notification", max_length=16)  # notification | test | refresh
    attempt: int = 1
    ts: int = ms_field()
    ok: bool = False
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: int = 0


class NotificationCursor(SQLModel, table=True):
    """Who dispatches (the lease, as `alert_lease`) and how far `alert_event` has been read (`last_event_id`):
    both change only with conditional UPDATEs, the cursor in the same transaction as the outbox rows it made."""

    __tablename__ = "notification_cursor"

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(default="", max_length=128)
    expires_at: int = ms_field(default=0)
    last_event_id: int = ms_field(default=0)
