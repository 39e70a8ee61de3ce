"""Notification channels: what an admin may write (checked whole, by the kind's sender, before anything is
stored), their public shape without secrets, and the `Channel` a sender gets.

A webhook's signing key is made here (`secrets.token_urlsafe(32)`) and shown once: in the answer to the POST
that created it, or to a PUT with `rotate_secret`. Other write-only values (an SMTP password, a chat webhook
URL) are given by the admin and kept by a PUT that does not give them again."""

from __future__ import annotations

import secrets as random_secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.db.columns import iso
from fleet_service.errors import Invalid, NotFound
from fleet_service.notify.message import Channel
from fleet_service.notify.models import Notification, NotificationAlert, NotificationAttempt, NotificationChannel
from fleet_service.notify.senders import sender
from protocol.ids import new_id, now_ms
from protocol.tags import TAG_RULE, is_tag

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
SIGNING_KEY = "secret"  # the webhook's HMAC key, under this name in `secrets`


class ChannelSpec(BaseModel):
    """A channel as an admin writes it (whole, on create and update)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["webhook", "slack", "email", "alertmanager"]
    enabled: bool = True
    severities: list[Severity] = Field(default_factory=lambda: list(SEVERITIES), min_length=1)
    tags: list[str] = Field(default_factory=list, max_length=32, description="empty: every unit")
    group_wait_s: float = Field(default=30.0, ge=0, le=3600, description="0: each alert at once")
    config: dict[str, Any] = Field(default_factory=dict, description="the kind's public settings")
    secrets: dict[str, str] = Field(default_factory=dict, description="write-only: never returned")

    @field_validator("severities")
    @classmethod
    def _severities(cls, value: list[Severity]) -> list[Severity]:
        return sorted(set(value), key=SEVERITIES.index)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not is_tag(t)]
        if bad:
            raise ValueError(f"invalid tag {bad[0]!r}: {TAG_RULE}")
        return sorted(set(value))


class ChannelUpdate(ChannelSpec):
    """A PUT: the channel whole, but stored secrets are kept unless given again; `rotate_secret` makes a new
    webhook signing key (shown once in the answer)."""

    rotate_secret: bool = False


def checked(kind: str, config: dict[str, Any], given: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The kind's sender checks its settings; a missing sender module is a 422 too, not a 500."""
    if SIGNING_KEY in given:
        raise Invalid(f"secrets.{SIGNING_KEY}: made by the service (rotate it with rotate_secret)")
    try:
        module = sender(kind)
    except (KeyError, ImportError):
        raise Invalid(f"kind: {kind!r} channels are not available in this version") from None
    return module.check_config(config, given)


def channel_public(c: NotificationChannel) -> dict[str, Any]:
    stored = sorted(c.secrets)
    return {
        "id": c.id,
        "name": c.name,
        "kind": c.kind,
        "enabled": c.enabled,
        "severities": list(c.severities),
        "tags": list(c.tags),
        "group_wait_s": c.group_wait_s,
        "config": dict(c.config),
        "secret_set": SIGNING_KEY in stored,
        "password_set": "password" in stored,
        "secrets_set": stored,
        "created_at": iso(c.created_at),
        "created_by": c.created_by,
        "updated_at": iso(c.updated_at),
        "updated_by": c.updated_by,
    }


def as_channel(c: NotificationChannel) -> Channel:
    others = {k: v for k, v in c.secrets.items() if k != SIGNING_KEY}
    return Channel(c.id, c.name, c.kind, dict(c.config), c.secrets.get(SIGNING_KEY), others)


def create_channel(engine: Engine, spec: ChannelSpec, who: str) -> tuple[NotificationChannel, str | None]:
    """Store a new channel; returns it and the webhook's signing key (None for other kinds)."""
    config, stored = checked(spec.kind, spec.config, spec.secrets)
    key = random_secrets.token_urlsafe(32) if spec.kind == "webhook" else None
    if key is not None:
        stored = {**stored, SIGNING_KEY: key}
    now = now_ms()
    channel = NotificationChannel(
        id=new_id(),
        name=spec.name,
        kind=spec.kind,
        enabled=spec.enabled,
        severities=list[str](spec.severities),
        tags=spec.tags,
        group_wait_s=spec.group_wait_s,
        config=config,
        secrets=stored,
        created_at=now,
        created_by=who,
        updated_at=now,
        updated_by=who,
    )
    with Session(engine, expire_on_commit=False) as s:
        s.add(channel)
        s.commit()
    return channel, key


def update_channel(
    engine: Engine, channel_id: str, spec: ChannelUpdate, who: str
) -> tuple[NotificationChannel, str | None]:
    with Session(engine, expire_on_commit=False) as s:
        channel = s.get(NotificationChannel, channel_id, with_for_update=True)
        if channel is None:
            raise NotFound(f"no notification channel with id {channel_id!r}")
        if spec.kind != channel.kind:
            raise Invalid(f"kind: a {channel.kind} channel stays one (create a new channel instead)")
        if spec.rotate_secret and channel.kind != "webhook":
            raise Invalid("rotate_secret: only a webhook has a signing key")
        kept = {k: v for k, v in channel.secrets.items() if k != SIGNING_KEY}
        config, stored = checked(spec.kind, spec.config, {**kept, **spec.secrets})
        key = random_secrets.token_urlsafe(32) if spec.rotate_secret else channel.secrets.get(SIGNING_KEY)
        if key is not None:
            stored = {**stored, SIGNING_KEY: key}
        channel.name, channel.enabled, channel.group_wait_s = spec.name, spec.enabled, spec.group_wait_s
        channel.severities, channel.tags = list[str](spec.severities), spec.tags
        channel.config, channel.secrets = config, stored
        channel.updated_at, channel.updated_by = now_ms(), who
        s.add(channel)
        s.commit()
    return channel, key if spec.rotate_secret else None


def delete_channel(engine: Engine, channel_id: str) -> None:
    """Delete the channel with its outbox rows and delivery log."""
    with Session(engine) as s:
        channel = s.get(NotificationChannel, channel_id)
        if channel is None:
            raise NotFound(f"no notification channel with id {channel_id!r}")
        ids = select(Notification.id).where(col(Notification.channel_id) == channel_id)
        s.exec(delete(NotificationAlert).where(col(NotificationAlert.notification_id).in_(ids)))
        s.exec(delete(Notification).where(col(Notification.channel_id) == channel_id))
        s.exec(delete(NotificationAttempt).where(col(NotificationAttempt.channel_id) == channel_id))
        s.delete(channel)
        s.commit()


def get_channel(engine: Engine, channel_id: str) -> NotificationChannel:
    with Session(engine) as s:
        channel = s.get(NotificationChannel, channel_id)
    if channel is None:
        raise NotFound(f"no notification channel with id {channel_id!r}")
    return channel


def list_channels(engine: Engine) -> list[NotificationChannel]:
    with Session(engine) as s:
        return list(s.exec(select(NotificationChannel).order_by(col(NotificationChannel.name))).all())
