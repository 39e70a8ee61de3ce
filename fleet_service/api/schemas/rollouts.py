"""Rollouts (fleet_service/rollouts/runner.py rollout_public and view)."""

from __future__ import annotations

from typing import Any

from fleet_service.api.schemas.common import Public

__all__ = ["RolloutDetail", "RolloutPublic", "RolloutTotals", "RolloutUnitPublic"]


class RolloutTotals(Public):
    total: int
    pending: int
    in_progress: int
    succeeded: int
    failed: int
    canceled: int
    by_state: dict[str, int]


class RolloutPublic(Public):
    id: str
    name: str
    command: str
    args: dict[str, Any]
    target: dict[str, Any]  # {"tag": T}, {"device_ids": [...], "more": N} or {"filter": {"status", "tag", "q"}}
    state: str
    reason: str
    batch_size: int
    batches: int
    batch: int
    pause_s: int | float
    abort_threshold: int | float
    ttl_s: int
    timeout_s: int | None
    next_batch_at: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    created_by: str
    totals: RolloutTotals


class RolloutUnitPublic(Public):
    device_id: str
    batch: int
    state: str
    command_id: str | None
    exit_code: int | None
    output: str | None  # the end of the command's output (at most 2 KiB); None before a command was sent
    updated_at: str


class RolloutDetail(RolloutPublic):
    units: list[RolloutUnitPublic]
