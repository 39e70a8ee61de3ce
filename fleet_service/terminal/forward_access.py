"""Who may reach which port of a unit (the port forward's WebSocket and the HTTP proxy ask the same questions).

Operators and admins may; viewers and units never. The unit's desired config may narrow it: `remote_ports` lists
the ports (an empty list turns forwarding off; without the key the unit's agent decides with its
`allow_remote_port`), and `remote_ports_admin_only: true` keeps operators out. The unit checks again itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_service.auth.credentials import Identity, role_allows
from fleet_service.devices.models import Device
from fleet_service.refusals import (
    CLOSE_BAD_REQUEST,
    CLOSE_DISABLED,
    CLOSE_FORBIDDEN,
    CLOSE_UNIT_OFFLINE,
    CLOSE_UNKNOWN_UNIT,
    refused,
)
from protocol.ids import is_device_id


def parse_port(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 5 or not 1 <= int(raw) <= 65535:
        raise refused(CLOSE_BAD_REQUEST, f"port must be a number from 1 to 65535, got {raw[:20]!r}")
    return int(raw)


def check_role(identity: Identity) -> None:
    if not role_allows(identity.role, "operator"):
        raise refused(CLOSE_FORBIDDEN, "port forwarding needs the operator role")


def check_unit(engine: Engine, identity: Identity, device_id: str, port: int) -> Device:
    """The unit, when this caller may forward `port` on it now; Refused saying why not."""
    if not is_device_id(device_id):
        raise refused(CLOSE_UNKNOWN_UNIT, "not a unit id")
    with Session(engine) as s:
        device = s.get(Device, device_id)
    if device is None:
        raise refused(CLOSE_UNKNOWN_UNIT, f"no unit with id {device_id!r}")
    config: dict[str, Any] = device.desired_config or {}
    if config.get("remote_ports_admin_only") is True and not role_allows(identity.role, "admin"):
        raise refused(CLOSE_FORBIDDEN, "this unit's ports are for admins only (remote_ports_admin_only)")
    ports = config.get("remote_ports")
    if isinstance(ports, list):
        if not ports:
            raise refused(CLOSE_DISABLED, "port forwarding is disabled on this unit (its config sets remote_ports: [])")
        if port not in ports:
            listed = ", ".join(str(p) for p in sorted(ports))
            raise refused(CLOSE_FORBIDDEN, f"port {port} is not allowed on this unit (remote_ports: {listed})")
    if not device.online:
        raise refused(CLOSE_UNIT_OFFLINE, f"unit {device_id} is offline")
    return device
