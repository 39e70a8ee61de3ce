"""The presence timeout: silent units go offline once; a second sweep (another replica) changes nothing."""

from __future__ import annotations

from sqlalchemy import update

from fleet_service.devices.enrollment import enroll
from fleet_service.devices.models import Device
from fleet_service.devices.presence import mark_silent_offline
from protocol.ids import now_ms


def _set(engine, device_id: str, **values) -> None:
    with engine.begin() as conn:
        conn.execute(update(Device).where(Device.id == device_id).values(**values))


def test_silent_units_go_offline_once_and_fresh_ones_stay(engine):
    for device_id in ("quiet-1", "alive-1", "gone-1"):
        enroll(engine, device_id)
    now = now_ms()
    _set(engine, "quiet-1", online=True, last_seen=now - 200_000)
    _set(engine, "alive-1", online=True, last_seen=now - 1_000)
    _set(engine, "gone-1", online=False, last_seen=now - 900_000)

    changed = mark_silent_offline(engine, timeout_s=100)
    assert [r.id for r in changed] == ["quiet-1"]
    assert mark_silent_offline(engine, timeout_s=100) == []  # a second sweep (another replica) changes nothing
    with engine.connect() as conn:
        rows = {r.id: (r.online, r.offline_reason) for r in conn.execute(Device.__table__.select())}
    assert rows == {"quiet-1": (False, "timeout"), "alive-1": (True, None), "gone-1": (False, None)}
