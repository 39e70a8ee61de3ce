"""Notification channels, the outbox and the delivery log (fleet_service/notify: channel_public,
notification_public, attempt_public). Channels never show their secrets: only which are set."""

from __future__ import annotations

from typing import Any

from fleet_service.api.schemas.common import Public

__all__ = ["ChannelPublic", "ChannelWithSecret", "DeliveryAttempt", "NotificationPublic", "ChannelTestResult"]


class ChannelPublic(Public):
    id: str
    name: str
    kind: str  # webhook | slack | email | alertmanager
    enabled: bool
    severities: list[str]
    tags: list[str]  # empty: every unit
    group_wait_s: float
    config: dict[str, Any]  # public settings only
    secret_set: bool  # a webhook's signing key is stored
    password_set: bool
    secrets_set: list[str]  # the names of the stored write-only values
    created_at: str
    created_by: str
    updated_at: str
    updated_by: str


class ChannelWithSecret(ChannelPublic):
    """The answer to a create or an update: the webhook's signing key once, when it was just made."""

    secret: str | None


class DeliveryAttempt(Public):
    id: int
    notification_id: int | None  # None for a test send or a refresh
    channel_id: str
    purpose: str  # notification | test | refresh
    attempt: int
    time: str
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int


class NotificationPublic(Public):
    id: int
    channel_id: str
    rule_id: str
    status: str  # firing | resolved
    alert_ids: list[int]
    state: str  # grouping | pending | delivered | failed | suppressed
    reason: str  # why suppressed
    due_at: str
    attempts: int
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None
    last_error: str | None
    attempt_log: list[DeliveryAttempt]


class ChannelTestResult(Public):
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int
