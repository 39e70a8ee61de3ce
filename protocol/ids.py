"""Identifier rules: device ids, the service account, fresh ids and timestamps."""

import re
import secrets
import time
import uuid

from protocol.errors import ProtocolError

DEVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)

# Never a valid device id (leading underscore), so a unit can never claim it.
SERVICE_USERNAME = "_fleet_service"


def is_device_id(value: str) -> bool:
    return isinstance(value, str) and DEVICE_ID_RE.fullmatch(value) is not None


def check_device_id(value: str) -> str:
    if not is_device_id(value):
        raise ProtocolError(
            f"invalid device id {value!r}: must match {DEVICE_ID_PATTERN} "
            "(lowercase letters, digits, '-' and '_', at most 63 characters)"
        )
    return value


def new_id() -> str:
    """A random 32-hex-digit id for commands, sessions and log records."""
    return uuid.uuid4().hex


def new_secret() -> str:
    """A random URL-safe secret with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def now_ms() -> int:
    return int(time.time() * 1000)
