"""Enrolling, re-keying and revoking units. Secrets are random, shown once, stored as a salted slow hash.

The secret is also stored in Mosquitto's password-file format (see mosquitto_admin) because this is the
only moment it exists in plain text; a managed Mosquitto is rebuilt from those rows.

A broker that holds units' credentials itself (`BrokerCredentials`: the dynamic security plugin) is told inside
the transaction, after the rows are written and before the commit: if it refuses or cannot be reached, nothing
is committed and the caller gets its error; once the call returns, the broker has taken the change.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fleet_service.commands.models import Command, CommandEvent
from fleet_service.devices.models import Device, LogRecord, MetricSample, UnitTag
from fleet_service.devices.tags import set_tags
from fleet_service.errors import Conflict
from fleet_service.metrics.models import ROLLUPS
from fleet_service.mosquitto.admin import password_hash
from fleet_service.mosquitto.models import BrokerCredential
from protocol.ids import check_device_id, new_secret, now_ms
from protocol.secrets import hash_secret


def new_unit(device_id: str, name: str = "") -> tuple[Device, BrokerCredential, str]:
    """The rows of a new unit and its plain secret, not yet stored (its tags are stored with set_tags)."""
    check_device_id(device_id)
    secret = new_secret()
    now = now_ms()
    device = Device(id=device_id, name=name, secret_hash=hash_secret(secret), created_at=now)
    return device, BrokerCredential(device_id=device_id, password_hash=password_hash(secret), updated_at=now), secret


class BrokerCredentials(Protocol):
    """A broker that keeps the units' passwords itself; each call raises (a FleetError) when not applied."""

    def put(self, device_id: str, secret: str, stored_hash: str, new: bool) -> None:
        """Give the unit this password (a new unit when `new`), closing its live connection."""

    def remove(self, device_id: str) -> None:
        """Refuse the unit from now on, closing its live connection."""


class UnitExists(Conflict):
    """A unit with this id is already enrolled."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"a unit with id {device_id!r} already exists")


def enroll(
    engine: Engine,
    device_id: str,
    name: str = "",
    tags: list[str] | None = None,
    broker: BrokerCredentials | None = None,
) -> tuple[Device, str]:
    """Create a unit; UnitExists when the id is taken."""
    device, credential, secret = new_unit(device_id, name)
    with Session(engine, expire_on_commit=False) as s:
        try:  # written (and the id taken: a concurrent enrollment of it waits) before the broker hears of it
            set_tags(s, device, tags or [])
            s.merge(credential)  # a stale row of an earlier unit with this id is replaced
            s.flush()
        except IntegrityError:
            raise UnitExists(device_id) from None
        if broker is not None:
            broker.put(device_id, secret, credential.password_hash, new=True)
        s.commit()
    return device, secret


def rotate_secret(engine: Engine, device_id: str, broker: BrokerCredentials | None = None) -> str | None:
    secret = new_secret()
    with Session(engine) as s:
        device = s.get(Device, device_id)
        if device is None:
            return None
        device.secret_hash = hash_secret(secret)
        s.add(device)
        credential = BrokerCredential(device_id=device_id, password_hash=password_hash(secret), updated_at=now_ms())
        s.merge(credential)
        s.flush()  # the row locked: a concurrent rotation of this unit reaches the broker after this one commits
        if broker is not None:
            broker.put(device_id, secret, credential.password_hash, new=False)
        s.commit()
    return secret


def revoke(engine: Engine, device_id: str, broker: BrokerCredentials | None = None) -> bool:
    """Remove a unit and its history; its credentials stop working at once."""
    with Session(engine) as s:
        if s.get(Device, device_id) is None:
            return False
        command_ids = s.exec(select(col(Command.id)).where(col(Command.device_id) == device_id)).all()
        if command_ids:
            s.exec(delete(CommandEvent).where(col(CommandEvent.command_id).in_(command_ids)))
        for table in (Command, LogRecord, MetricSample, UnitTag):
            s.exec(delete(table).where(col(table.device_id) == device_id))
        for tier in ROLLUPS:
            s.execute(tier.table.delete().where(tier.table.c.device_id == device_id))
        s.exec(delete(BrokerCredential).where(col(BrokerCredential.device_id) == device_id))
        s.exec(delete(Device).where(col(Device.id) == device_id))
        s.flush()
        if broker is not None:
            broker.remove(device_id)
        s.commit()
    return True
