"""Commands to units (fleet_service/commands/models.py command_public)."""

from __future__ import annotations

from typing import Any

from fleet_service.api.schemas.common import Public

__all__ = ["CommandDetail", "CommandEventPublic", "CommandPublic"]


class CommandPublic(Public):
    id: str
    device_id: str
    name: str
    args: dict[str, Any]
    status: str
    created_at: str
    updated_at: str
    expires_at: str
    started_at: str | None
    finished_at: str | None
    timeout_s: int
    exit_code: int | None
    output: str
    created_by: str
    rollout_id: str | None


class CommandEventPublic(Public):
    status: str
    time: str


class CommandDetail(CommandPublic):
    history: list[CommandEventPublic]
