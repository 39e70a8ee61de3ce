"""The command state machine: which transitions are allowed, and recording each with its time."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from fleet_service.models import Command, CommandEvent, command_public
from protocol.payloads import CommandResult

FINAL = frozenset({"succeeded", "failed", "rejected", "expired", "timed_out", "canceled"})
PENDING = frozenset({"queued", "sent"})
_RANK = {"queued": 0, "sent": 1, "accepted": 2, "running": 3}


def rank(status: str) -> int:
    return 4 if status in FINAL else _RANK[status]


def transition(session: Session, cmd: Command, status: str, now: int) -> bool:
    """Move `cmd` forward to `status`; False (and no change) when that would go backwards or leave a final state."""
    if cmd.status in FINAL or rank(status) < rank(cmd.status) or (status == cmd.status and status not in FINAL):
        return False
    cmd.status = status
    cmd.updated_at = now
    if status in ("accepted", "running") and cmd.started_at is None:
        cmd.started_at = now
    if status in FINAL:
        cmd.finished_at = now
    session.add(cmd)
    session.add(CommandEvent(command_id=cmd.id, status=status, ts=now))
    return True


def apply_result(session: Session, cmd: Command, res: CommandResult, now: int) -> dict[str, Any] | None:
    """Record a unit's report; duplicates and reports after a final state are ignored."""
    if not transition(session, cmd, res.status, now):
        return None
    if res.exit_code is not None:
        cmd.exit_code = res.exit_code
    if res.output:
        cmd.output = res.output
    return command_public(cmd)
