"""Remote terminal sessions (fleet_service/terminal/models.py)."""

from __future__ import annotations

from fleet_service.api.schemas.common import Public

__all__ = ["TerminalSessionPublic"]


class TerminalSessionPublic(Public):
    id: str
    device_id: str
    actor: str
    role: str
    source_ip: str
    replica: str
    kind: str  # shell, forward (the port forward socket) or proxy (the HTTP proxy)
    port: int | None  # the unit's loopback port (forward and proxy)
    command: str | None
    remote_user: str | None
    cols: int
    rows: int
    started_at: str
    ended_at: str | None
    bytes_in: int
    bytes_out: int
    exit_status: int | None
    close_reason: str | None
    close_message: str | None
    recording_bytes: int
    recording_truncated: bool
    recording_available: bool
