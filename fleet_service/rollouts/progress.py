"""Where a rollout stands: each unit's state, the totals, the next decision, and the rollout as the API shows it.

Pure reads and arithmetic over the `rollout_unit` rows and their commands; the runner (rollouts/runner.py) acts
on what they say.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, literal
from sqlmodel import Session, col, select

from fleet_service.commands.models import Command
from fleet_service.db.columns import iso
from fleet_service.rollouts.models import Rollout, RolloutUnit

ACTIVE = ("running", "paused")
FAILED = ("failed", "rejected", "expired", "timed_out")
IN_FLIGHT = ("queued", "sent", "accepted", "running")


def unit_state():
    """A unit's state: its command's status, or its own (`pending`, `canceled`); a deleted command = canceled."""
    return case(
        (col(Command.id).is_not(None), Command.status),
        (col(RolloutUnit.state) == "dispatched", literal("canceled")),
        else_=RolloutUnit.state,
    )


def count_states(s: Session, rollout_id: str) -> dict[str, int]:
    state = unit_state().label("st")
    q = (
        select(state, func.count())
        .select_from(RolloutUnit)
        .outerjoin(Command, col(Command.id) == RolloutUnit.command_id)
        .where(RolloutUnit.rollout_id == rollout_id)
        .group_by("st")
    )
    return {st: n for st, n in s.exec(q).all()}


def totals(counts: dict[str, int]) -> dict[str, Any]:
    return {
        "total": sum(counts.values()),
        "pending": counts.get("pending", 0),
        "in_progress": sum(counts.get(s, 0) for s in IN_FLIGHT),
        "succeeded": counts.get("succeeded", 0),
        "failed": sum(counts.get(s, 0) for s in FAILED),
        "canceled": counts.get("canceled", 0),
        "by_state": dict(sorted(counts.items())),
    }


def decide(r: Rollout, counts: dict[str, int], now: int) -> str | None:
    """The next decision for an active rollout: abort, complete, wait (start the pause), dispatch, or None."""
    t = totals(counts)
    failed, in_flight, pending = t["failed"], t["in_progress"], t["pending"]
    decided = t["succeeded"] + failed
    if failed and failed > r.abort_threshold * (decided + in_flight):
        return "abort"
    if in_flight == 0 and pending == 0:
        return "complete"
    if r.state != "running" or in_flight or not pending:
        return None
    if r.next_batch_at is None:
        return "wait" if r.pause_s > 0 and r.dispatched_batches > 0 else "dispatch"
    return "dispatch" if now >= r.next_batch_at else None


def target_public(target: dict[str, Any], shown: int = 20) -> dict[str, Any]:
    """A long id list is cut short (every unit is in the detail view's `units`): events stay small."""
    ids = target.get("device_ids")
    if isinstance(ids, list) and len(ids) > shown:
        return {**target, "device_ids": ids[:shown], "more": len(ids) - shown}
    return target


def rollout_public(r: Rollout, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "command": r.command,
        "args": r.args,
        "target": target_public(r.target),
        "state": r.state,
        "reason": r.reason,
        "batch_size": r.batch_size,
        "batches": r.batches,
        "batch": r.dispatched_batches,
        "pause_s": r.pause_s,
        "abort_threshold": r.abort_threshold,
        "ttl_s": r.ttl_s,
        "timeout_s": r.timeout_s,
        "next_batch_at": iso(r.next_batch_at),
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
        "finished_at": iso(r.finished_at),
        "created_by": r.created_by,
        "totals": totals(counts),
    }
