"""Second line of presence: a unit silent for longer than the timeout is marked offline."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, update
from sqlalchemy.engine import Engine, Row
from sqlmodel import Session, col, select

from fleet_service.devices.models import Device
from fleet_service.live.bus import EventBus
from protocol.ids import now_ms

log = logging.getLogger(__name__)


def mark_all_offline(engine: Engine, reason: str) -> int:
    """A freshly started embedded broker has no connections yet: no unit can be online."""
    with Session(engine) as s:
        result = s.exec(
            update(Device)
            .where(col(Device.online) == True)  # noqa: E712
            .values(online=False, online_changed_at=now_ms(), offline_reason=reason)
        )
        s.commit()
        return result.rowcount or 0


def mark_silent_offline(engine: Engine, timeout_s: float) -> list[Row]:
    """Mark units silent past the timeout offline; returns (id, last_seen, software_version) of those changed.

    Each update re-checks its condition, so a heartbeat committed meanwhile wins, and of several replicas
    sweeping at once only one changes (and announces) a unit.
    """
    now = now_ms()
    cutoff = now - int(timeout_s * 1000)
    silent = (col(Device.online) == True, col(Device.last_seen) < cutoff)  # noqa: E712
    with engine.connect() as conn:
        stale = conn.execute(select(Device.id, Device.last_seen, Device.software_version).where(*silent)).all()
    changed: list[Row] = []
    with engine.begin() as conn:
        for row in stale:
            result = conn.execute(
                update(Device)
                .where(col(Device.id) == row.id, *silent)
                .values(online=False, online_changed_at=now, offline_reason="timeout")
            )
            if result.rowcount == 1:
                changed.append(row)
    return changed


def count_online(engine: Engine) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(Device).where(Device.online == True)).one()  # noqa: E712


async def run_presence_sweeper(engine: Engine, bus: EventBus, timeout_s: float, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            for d in await asyncio.to_thread(mark_silent_offline, engine, timeout_s):
                log.info("unit %s silent for more than %.0fs: offline", d.id, timeout_s)
                bus.publish(
                    "presence",
                    {
                        "device_id": d.id,
                        "online": False,
                        "reason": "timeout",
                        "last_seen": d.last_seen,
                        "software_version": d.software_version,
                    },
                    d.id,
                )
        except Exception:
            log.exception("presence sweep failed")
