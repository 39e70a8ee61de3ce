"""Commands sent to units and the history of their states."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from fleet_service.db.columns import BIG_ID, iso, json_field, ms_field


class Command(SQLModel, table=True):
    __table_args__ = (
        Index("ix_command_device_created", "device_id", "created_at"),
        # Alert rules read the commands that ended lately, of one unit or of all: never the whole history.
        Index("ix_command_device_finished", "device_id", "finished_at"),
        Index("ix_command_finished", "finished_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(max_length=63, index=True)
    name: str = Field(max_length=32)
    args: dict[str, Any] = json_field(dict)
    status: str = Field(default="queued", max_length=16, index=True)
    created_at: int = ms_field()
    updated_at: int = ms_field()
    expires_at: int = ms_field()
    timeout_s: int = 900
    started_at: int | None = ms_field(default=None, nullable=True)
    finished_at: int | None = ms_field(default=None, nullable=True)
    exit_code: int | None = None
    output: str = ""
    created_by: str = Field(default="", max_length=100)
    rollout_id: str | None = Field(default=None, max_length=64, index=True)


class CommandEvent(SQLModel, table=True):
    __tablename__ = "command_event"

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    command_id: str = Field(max_length=64, index=True)
    status: str = Field(max_length=16)
    ts: int = ms_field()


def command_public(c: Command) -> dict[str, Any]:
    return {
        "id": c.id,
        "device_id": c.device_id,
        "name": c.name,
        "args": c.args,
        "status": c.status,
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "expires_at": iso(c.expires_at),
        "started_at": iso(c.started_at),
        "finished_at": iso(c.finished_at),
        "timeout_s": c.timeout_s,
        "exit_code": c.exit_code,
        "output": c.output,
        "created_by": c.created_by,
        "rollout_id": c.rollout_id,
    }
