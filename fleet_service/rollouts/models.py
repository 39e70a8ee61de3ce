"""Rollouts: all their state is stored, so a restarted service (or another replica) continues one;
per-unit progress is the state of the command sent to the unit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from fleet_service.db.columns import json_field, ms_field


class Rollout(SQLModel, table=True):
    __table_args__ = (Index("ix_rollout_finished", "finished_at"),)  # the rollouts that ended lately (alert rules)

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(default="", max_length=200)
    command: str = Field(max_length=32)
    args: dict[str, Any] = json_field(dict)
    ttl_s: int = 3600
    timeout_s: int | None = None
    target: dict[str, Any] = json_field(dict)  # {"tag": T}, {"device_ids": [...]} or {"filter": {...}}, as asked
    batch_size: int
    batches: int
    pause_s: float = 0.0
    abort_threshold: float = 1.0  # abort when failed / decided exceeds it
    state: str = Field(default="running", max_length=16, index=True)  # running|paused|completed|aborted|canceled
    dispatched_batches: int = 0
    next_batch_at: int | None = ms_field(default=None, nullable=True)  # earliest start of the next batch
    reason: str = ""
    revision: int = 0  # bumped by every decision: two replicas never both act on the same state
    created_at: int = ms_field()
    updated_at: int = ms_field()
    finished_at: int | None = ms_field(default=None, nullable=True)
    created_by: str = Field(default="", max_length=120)


class RolloutUnit(SQLModel, table=True):
    __tablename__ = "rollout_unit"
    __table_args__ = (Index("ix_rollout_unit_batch", "rollout_id", "batch"),)

    rollout_id: str = Field(primary_key=True, max_length=32)
    device_id: str = Field(primary_key=True, max_length=63)
    position: int
    batch: int
    state: str = Field(default="pending", max_length=16)  # pending | dispatched (see the command) | canceled
    command_id: str | None = Field(default=None, max_length=64)
    updated_at: int = ms_field()
