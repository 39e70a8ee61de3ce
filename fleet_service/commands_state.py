"""The command state machine: which transitions are allowed, and recording each with its time.

A transition is a compare-and-set on the stored status (`UPDATE ... WHERE status = <what we read>`): when two
writers race (a result arriving while the sweeper times the command out, two replicas sweeping at once), exactly
one wins and the other changes nothing, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from fleet_service.models import Command, CommandEvent, command_public
from protocol.payloads import CommandResult

FINAL = frozenset({"succeeded", "failed", "rejected", "expired", "timed_out", "canceled"})
PENDING = frozenset({"queued", "sent"})
TAKEN = frozenset({"accepted", "running"})
STATES = ("queued", "sent", "accepted", "running", "succeeded", "failed", "rejected", "expired", "timed_out",
          "canceled")
_RANK = {"queued": 0, "sent": 1, "accepted": 2, "running": 3}


def rank(status: str) -> int:
    return 4 if status in FINAL else _RANK[status]


def allowed(current: str, status: str) -> bool:
    """Forward only; nothing leaves a final state; a repeated non-final status is a duplicate."""
    return current not in FINAL and rank(status) > rank(current)


def transition(session: Session, cmd: Command, status: str, now: int) -> bool:
    """Move `cmd` forward to `status`; False (and no change) when not allowed or another writer got there first."""
    if not allowed(cmd.status, status):
        return False
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status in TAKEN and cmd.started_at is None:
        values["started_at"] = now
    if status in FINAL:
        values["finished_at"] = now
    table = Command.__table__
    result = session.connection().execute(
        update(table).where(table.c.id == cmd.id, table.c.status == cmd.status).values(**values))
    if result.rowcount != 1:
        session.refresh(cmd)
        return False
    for key, value in values.items():
        set_committed_value(cmd, key, value)
    session.add(CommandEvent(command_id=cmd.id, status=status, ts=now))
    return True


def apply_result(session: Session, cmd: Command, res: CommandResult, now: int) -> dict[str, Any] | None:
    """Record a unit's report; duplicates and reports after a final state are ignored."""
    if not allowed(cmd.status, res.status):
        return None
    if cmd.status == "queued":  # the unit answered before we marked it sent: it evidently got it
        transition(session, cmd, "sent", now)
    if not transition(session, cmd, res.status, now):
        return None
    if res.exit_code is not None:
        cmd.exit_code = res.exit_code
    if res.output:
        cmd.output = res.output
    session.add(cmd)
    return command_public(cmd)
