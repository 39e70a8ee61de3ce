"""The audit log (fleet_service/auth/models.py audit_public)."""

from __future__ import annotations

from fleet_service.api.schemas.common import Public

__all__ = ["AuditEntryPublic"]


class AuditEntryPublic(Public):
    id: int
    ts: int
    time: str
    actor: str
    role: str
    method: str
    route: str
    path: str
    target: str
    status: int
    source_ip: str
