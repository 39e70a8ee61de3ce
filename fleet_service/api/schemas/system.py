"""Health, the relay's health and TURN credentials."""

from __future__ import annotations

from typing import Any

from fleet_service.api.schemas.common import Public

__all__ = ["Health", "LegacyIceServer", "LegacyTurnCredentials", "RelayHealth", "TurnCredentials"]


class Health(Public):
    status: str  # ok | degraded (the latter with 503)
    service: str
    broker: str
    database: str


class RelayHealth(Public):
    status: str
    units: int
    controllers: int


class TurnCredentials(Public):
    iceServers: list[dict[str, Any]]  # noqa: N815 (the WebRTC RTCConfiguration's own name)
    expiresAt: str  # noqa: N815
    ttl: int


class LegacyIceServer(Public):
    urls: list[str]
    username: str
    credential: str


class LegacyTurnCredentials(Public):
    iceServers: LegacyIceServer  # noqa: N815
    expiresAt: str  # noqa: N815
