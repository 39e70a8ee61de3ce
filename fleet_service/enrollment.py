"""Enrolling, re-keying and revoking units. Secrets are random, shown once, stored as a salted slow hash.

The secret is also stored in Mosquitto's password-file format (see mosquitto_admin) because this is the
only moment it exists in plain text; a managed Mosquitto is rebuilt from those rows.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_service.models import BrokerCredential, Command, CommandEvent, Device, LogRecord, MetricSample
from fleet_service.mosquitto_admin import password_hash
from protocol.ids import check_device_id, new_secret, now_ms
from protocol.secrets import hash_secret


def new_unit(device_id: str, name: str = "", tags: list[str] | None = None) -> tuple[Device, BrokerCredential, str]:
    """The rows of a new unit and its plain secret, not yet stored."""
    check_device_id(device_id)
    secret = new_secret()
    now = now_ms()
    device = Device(id=device_id, name=name, tags=tags or [], secret_hash=hash_secret(secret), created_at=now)
    return device, BrokerCredential(device_id=device_id, password_hash=password_hash(secret), updated_at=now), secret


def enroll(engine: Engine, device_id: str, name: str = "", tags: list[str] | None = None) -> tuple[Device, str]:
    """Create a unit; raises IntegrityError when the id exists."""
    device, credential, secret = new_unit(device_id, name, tags)
    with Session(engine, expire_on_commit=False) as s:
        s.add(device)
        s.merge(credential)  # a stale row of an earlier unit with this id is replaced
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
        s.merge(BrokerCredential(device_id=device_id, password_hash=password_hash(secret), updated_at=now_ms()))
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
        s.exec(delete(BrokerCredential).where(BrokerCredential.device_id == device_id))
        s.exec(delete(Device).where(Device.id == device_id))
        s.commit()
    return True
