"""Enrolling, re-keying and revoking units. Secrets are random, shown once, stored as a salted slow hash."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_service.models import Command, CommandEvent, Device, LogRecord, MetricSample
from protocol.ids import check_device_id, new_secret, now_ms
from protocol.secrets import hash_secret


def enroll(engine: Engine, device_id: str, name: str = "", tags: list[str] | None = None) -> tuple[Device, str]:
    """Create a unit; raises IntegrityError when the id exists."""
    check_device_id(device_id)
    secret = new_secret()
    device = Device(id=device_id, name=name, tags=tags or [], secret_hash=hash_secret(secret), created_at=now_ms())
    with Session(engine, expire_on_commit=False) as s:
        s.add(device)
        s.commit()
    return device, secret


def rotate_secret(engine: Engine, device_id: str) -> str | None:
    secret = new_secret()
    with Session(engine) as s:
        device = s.get(Device, device_id)
        if device is None:
            return None
        device.secret_hash = hash_secret(secret)
        s.add(device)
        s.commit()
    return secret


def revoke(engine: Engine, device_id: str) -> bool:
    """Remove a unit and its history; its credentials stop working at once."""
    with Session(engine) as s:
        if s.get(Device, device_id) is None:
            return False
        command_ids = [c for c in s.exec(Command.__table__.select().with_only_columns(Command.id)
                                         .where(Command.device_id == device_id)).scalars()]
        if command_ids:
            s.exec(delete(CommandEvent).where(CommandEvent.command_id.in_(command_ids)))
        for table in (Command, LogRecord, MetricSample):
            s.exec(delete(table).where(table.device_id == device_id))
        s.exec(delete(Device).where(Device.id == device_id))
        s.commit()
    return True
