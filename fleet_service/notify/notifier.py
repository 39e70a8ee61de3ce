"""The notifier as it runs in every replica: the dispatcher (only where the lease is held) turns alert events into
outbox rows; delivery (in every replica) claims due rows and sends them; the leaseholder also re-sends open alerts
to channels whose kind asks for it (`REFRESH_S`). It wakes on the live bus's `alert` events (every replica's) and
on a short timer."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.alerts.models import OPEN, Alert
from fleet_service.alerts.silences import active_silences
from fleet_service.live.bus import EventBus
from fleet_service.notify import compose, delivery, retention
from fleet_service.notify.channels import as_channel, get_channel
from fleet_service.notify.dispatch import BATCH as EVENTS_PER_READ
from fleet_service.notify.dispatch import dispatch, matches
from fleet_service.notify.message import Channel, Message
from fleet_service.notify.models import NotificationChannel
from fleet_service.notify.senders import sender
from protocol.ids import now_ms

log = logging.getLogger(__name__)

BATCH = 20  # due rows claimed per round, sent concurrently


def refresh_interval(kind: str) -> float | None:
    """The kind's REFRESH_S, or None (also when its sender module is not part of this version)."""
    try:
        return getattr(sender(kind), "REFRESH_S", None)
    except (KeyError, ImportError):
        return None


def open_messages(engine: Engine, channel_id: str, dashboard_url: str | None) -> tuple[Channel, list[Message]]:
    """The channel's open, non-silenced alerts as one firing message per rule (what a refresh re-sends)."""
    with Session(engine) as s:
        row = s.get(NotificationChannel, channel_id)
        if row is None:
            raise LookupError(channel_id)
        alerts = list(s.exec(select(Alert).where(col(Alert.state).in_(OPEN), col(Alert.silenced) == False)).all())  # noqa: E712
        found = compose.units(s, (a.device_id for a in alerts))
        silences = active_silences(s, now_ms())
        by_rule: dict[str, list[Alert]] = defaultdict(list)
        for a in alerts:
            tags = found.get(a.device_id, ("", []))[1]
            if matches(row, a, tags) and compose.silenced_now(a, tags, silences) is None:
                by_rule[a.rule_id].append(a)
        messages = [compose.message(None, "firing", group, found, dashboard_url) for group in by_rule.values()]
        return as_channel(row), messages


async def send_test(engine: Engine, channel_id: str, timeout_s: float, dashboard_url: str | None) -> dict[str, Any]:
    """Send a test message now and log it as an attempt; what happened, for the button that asked."""
    channel = as_channel(await asyncio.to_thread(get_channel, engine, channel_id))
    result, ms = await delivery.attempt(channel, compose.sample_message(dashboard_url), timeout_s)

    def store() -> None:
        with Session(engine) as s:
            delivery.log_attempt(s, channel.id, None, 1, result, ms, purpose="test")
            s.commit()

    await asyncio.to_thread(store)
    return {"ok": result.ok, "status_code": result.status_code, "error": result.error, "duration_ms": ms}


class Notifier:
    def __init__(
        self,
        engine: Engine,
        bus: EventBus,
        replica: str,
        *,
        interval_s: float,
        lease_s: float,
        timeout_s: float,
        retry: delivery.Retry,
        dashboard_url: str = "",
        retention_days: int = 0,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.holder = f"{replica}-{secrets.token_hex(4)}"
        self.interval_s = interval_s
        self.lease_ms = int(lease_s * 1000)
        self.timeout_s = timeout_s
        self.claim_ms = int((2 * timeout_s + 5) * 1000)
        self.retry = retry
        self.dashboard_url = dashboard_url or None
        self.retention_days = retention_days
        self.next_prune = 0.0  # loop time; the first round that holds the lease prunes
        self.holding = False
        self.refreshed: dict[str, float] = {}  # channel id -> loop time of its last refresh
        self._wake = asyncio.Event()

    async def follow(self) -> None:
        while True:
            async for _ in self.bus.subscribe(types=frozenset({"alert"})):
                self._wake.set()
            await asyncio.sleep(0.1)  # dropped as a slow subscriber: follow again

    async def run(self) -> None:
        while True:
            self._wake.clear()
            await self.round()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    async def round(self) -> None:
        try:
            while True:  # a backlog is read in batches
                passed = await asyncio.to_thread(dispatch, self.engine, self.holder, self.lease_ms)
                self.holding = passed is not None
                if not passed or passed < EVENTS_PER_READ:
                    break
        except Exception:
            log.exception("notification dispatch failed")
        try:
            await self.deliver_due()
        except Exception:
            log.exception("notification delivery failed")
        if self.holding:
            try:
                await self.refresh()
            except Exception:
                log.exception("notification refresh failed")
            await self.prune_hourly()

    async def prune_hourly(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self.next_prune:
            return
        self.next_prune = loop.time() + 3600
        try:
            await asyncio.to_thread(retention.prune, self.engine, self.retention_days)
        except Exception:
            log.exception("notification retention failed")

    async def deliver_due(self) -> None:
        ids = await asyncio.to_thread(delivery.due, self.engine, now_ms(), BATCH)
        if ids:
            await asyncio.gather(*(self.deliver(i) for i in ids))

    async def deliver(self, notification_id: int) -> None:
        if not await asyncio.to_thread(delivery.claim, self.engine, notification_id, self.holder, self.claim_ms):
            return  # another replica has it
        prepared = await asyncio.to_thread(
            delivery.prepare, self.engine, notification_id, self.holder, self.dashboard_url
        )
        if prepared is None:
            return
        result, ms = await delivery.attempt(prepared.channel, prepared.message, self.timeout_s)
        state = await asyncio.to_thread(
            delivery.finish, self.engine, notification_id, self.holder, prepared, result, ms, self.retry
        )
        if state == "failed":
            log.warning("notification %s to channel %s failed: %s", notification_id, prepared.channel.id, result.error)

    async def refresh(self) -> None:
        loop = asyncio.get_running_loop()
        channels = await asyncio.to_thread(self._enabled_channels)
        for channel_id, kind in channels:
            every = refresh_interval(kind)
            if every is None or loop.time() - self.refreshed.get(channel_id, -1e18) < every:
                continue
            self.refreshed[channel_id] = loop.time()
            channel, messages = await asyncio.to_thread(open_messages, self.engine, channel_id, self.dashboard_url)
            for message in messages:
                result, ms = await delivery.attempt(channel, message, self.timeout_s)
                await asyncio.to_thread(self._log_refresh, channel_id, result, ms)

    def _enabled_channels(self) -> list[tuple[str, str]]:
        with Session(self.engine) as s:
            query = select(NotificationChannel.id, NotificationChannel.kind).where(
                col(NotificationChannel.enabled) == True  # noqa: E712
            )
            return [(r[0], r[1]) for r in s.exec(query).all()]

    def _log_refresh(self, channel_id: str, result: Any, ms: int) -> None:
        with Session(self.engine) as s:
            delivery.log_attempt(s, channel_id, None, 1, result, ms, purpose="refresh")
            s.commit()
