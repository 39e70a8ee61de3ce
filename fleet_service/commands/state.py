"""The command state machine: which transitions are allowed, and recording each with its time.

Every write is a compare-and-set on the stored status (`UPDATE ... WHERE status = <what we read>`), on SQLite and
PostgreSQL alike, and every status a command takes is recorded once as a `command_event`.

The service's own moves (`transition`: marked sent, canceled, expired or timed out by the sweeper, canceled by a
rollout) go forward only and nothing leaves a final state: when two service writers race (two replicas sweeping at
once, a cancel beside the sweeper), exactly one wins and the other changes nothing.

A unit's reports (`apply_result`) must all land, whatever their order and whichever replica the broker handed
each to: the accepted, running and succeeded of one command are often applied by two replicas at the same moment.
The rules:

- Order: queued < sent < accepted < running < final. A report that ranks above the stored status is applied; a
  duplicate or a lower one (a progress report overtaken by the final one) changes nothing.
- When its compare-and-set loses (another replica, the sweeper or a cancel committed first), the command is read
  again and the report tried again as long as it still ranks above what is now stored. Every lost round follows a
  committed move forward, so this ends after a few rounds at most.
- A final status is written together with its exit_code and output, in the same statement, also when it arrives
  before accepted/running (which then change nothing).
- The first final status the unit reports is kept: after succeeded, failed, rejected or expired a different
  final report is ignored.
- The unit's real outcome wins over the service's guess, recorded as an event of its own after the guess, with
  the report's exit_code and output replacing the guess's text:
  * `timed_out` (the sweeper: no result within timeout_s of the unit taking it) is replaced by any final report
    of the unit: it had taken the command, so its answer is what happened.
  * `canceled` (by an operator, or by a finished rollout, while the command was queued/sent) cannot stop a unit
    that had already received it. succeeded/failed prove the unit ran it and replace `canceled`;
    rejected/expired say it never ran, so it stays canceled.
  * accepted/running never replace a final state: the unit's final report follows (the agent sends one for every
    command it took, also after it restarted).
  A rollout counts its units by their commands' current status, so such a unit counts by its real outcome from
  then on; decisions already taken (an abort) stand. The sweeper only looks at queued/sent/accepted/running
  commands, so it never overrides the unit's answer in turn.
- `expired` is not treated as a guess: the sweeper writes it for a command not taken before its TTL, but the unit
  reports it too (arrived too late, or expired while waiting), and the row does not say who wrote it. Treating it
  as a guess would let a unit's second final report overwrite its first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, insert, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from fleet_service.commands.models import Command, CommandEvent, command_public
from fleet_service.db.core import table_of
from protocol.payloads import CommandResult

log = logging.getLogger(__name__)
FINAL = frozenset({"succeeded", "failed", "rejected", "expired", "timed_out", "canceled"})
PENDING = frozenset({"queued", "sent"})
TAKEN = frozenset({"accepted", "running"})
STATES = (
    "queued",
    "sent",
    "accepted",
    "running",
    "succeeded",
    "failed",
    "rejected",
    "expired",
    "timed_out",
    "canceled",
)
_RANK = {"queued": 0, "sent": 1, "accepted": 2, "running": 3}
UNIT_FINAL = frozenset({"succeeded", "failed", "rejected", "expired"})
# The service's guesses at how a command ended, and the unit's final reports that overrule each.
OVERRULED_BY = {"timed_out": UNIT_FINAL, "canceled": frozenset({"succeeded", "failed"})}
# Lost compare-and-sets in a row before a report gives up: each loss means the command moved on (at most
# queued -> sent -> accepted -> running -> a guess -> the unit's final), so this is never reached in practice.
MAX_ROUNDS = 8


def rank(status: str) -> int:
    return 4 if status in FINAL else _RANK[status]


def allowed(current: str, status: str) -> bool:
    """Forward only; nothing leaves a final state; a repeated non-final status is a duplicate."""
    return current not in FINAL and rank(status) > rank(current)


def supersedes(reported: str, stored: str) -> bool:
    """Whether a unit reporting `reported` moves a command stored as `stored` on (see the module docstring)."""
    if stored in FINAL:
        return reported in OVERRULED_BY.get(stored, ())
    return rank(reported) > rank(stored)


def _connection(db: Session | Connection) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def _move(conn: Connection, cmd: Command, status: str, now: int, extra: dict[str, Any] | None = None) -> bool:
    """One compare-and-set from the status `cmd` was read with, and its event; on success `cmd` is updated.

    On PostgreSQL the two are one statement (the event is inserted from what the UPDATE returned), a round trip
    less on every move; SQLite runs in-process, where a second statement costs nothing on the network.
    """
    values = _step_values(status, now, extra or {}, cmd.started_at is not None)
    params = {f"m_{key}": value for key, value in values.items()}
    params.update(m_id=cmd.id, m_from=cmd.status)
    dialect = conn.dialect.name
    stmt = _move_statement(dialect, tuple(sorted(values)))
    if dialect == "postgresql":
        done = conn.execute(stmt, params).first() is not None  # (no rowcount through a CTE: the driver says -1)
    else:
        done = conn.execute(stmt, params).rowcount == 1
        if done:
            conn.execute(_EVENT_INSERT, {"command_id": cmd.id, "status": status, "ts": now})
    if done:
        for key, value in values.items():
            set_committed_value(cmd, key, value)
    return done


_EVENT_INSERT = insert(table_of(CommandEvent))


@lru_cache(maxsize=64)
def _move_statement(dialect: str, columns: tuple[str, ...]) -> Any:
    """The compare-and-set of these columns (bound as m_<column>, the command as m_id, the status read as
    m_from); on PostgreSQL with its event inserted by the same statement."""
    table, events = table_of(Command), table_of(CommandEvent)
    values = {name: bindparam(f"m_{name}", type_=table.c[name].type) for name in columns}
    cas = update(table).where(table.c.id == bindparam("m_id"), table.c.status == bindparam("m_from")).values(values)
    if dialect != "postgresql":
        return cas
    moved = cas.returning(table.c.id).cte("moved")
    event = select(moved.c.id, values["status"], values["updated_at"])
    return insert(events).from_select(["command_id", "status", "ts"], event).returning(events.c.id)


def _reread(conn: Connection, cmd: Command) -> bool:
    """Load what another writer committed; False when the command is gone (its unit was removed)."""
    row = conn.execute(_READ, {"r_id": cmd.id}).mappings().first()
    if row is None:
        return False
    for key, value in row.items():
        set_committed_value(cmd, key, value)
    return True


_READ = select(table_of(Command)).where(table_of(Command).c.id == bindparam("r_id"))


def transition(db: Session | Connection, cmd: Command, status: str, now: int) -> bool:
    """Move `cmd` forward to `status`; False (and no change) when not allowed or another writer got there first."""
    if not allowed(cmd.status, status):
        return False
    conn = _connection(db)
    if _move(conn, cmd, status, now):
        return True
    _reread(conn, cmd)
    return False


def _reported(res: CommandResult) -> dict[str, Any]:
    """The columns a report sets beside the status: a final one always brings its exit code and output."""
    if res.status in FINAL:
        return {"exit_code": res.exit_code, "output": res.output}
    values: dict[str, Any] = {}
    if res.exit_code is not None:
        values["exit_code"] = res.exit_code
    if res.output:
        values["output"] = res.output
    return values


def apply_result(db: Session | Connection, cmd: Command, res: CommandResult, now: int) -> dict[str, Any] | None:
    """Record a unit's report (rules in the module docstring); the public command when it changed, else None.

    `cmd` is the command as last read: an ORM row, or one built from a plain read (ingest)."""
    return apply_results(db, cmd, [(res, now)])[0]


Report = tuple[CommandResult, int]  # a unit's report and when it was received
_Step = tuple[int | None, str, int, dict[str, Any]]  # (the report it answers, or None), status, time, columns


def apply_results(db: Session | Connection, cmd: Command, reports: Sequence[Report]) -> list[dict[str, Any] | None]:
    """Reports on one command, in the order they arrived; per report, the public command when it changed it.

    A unit sends accepted, running and its result within milliseconds, so one ingest batch often holds all of
    them. They are planned as one report after another would move the command (`supersedes`; `queued` first
    becomes `sent`: the unit evidently got it) and written as ONE compare-and-set to the last status that
    records an event for every status on the way. When another writer moved the command since it was read, it
    is read again and the rest planned afresh from there; every lost round follows a committed move forward."""
    conn = _connection(db)
    for _ in range(MAX_ROUNDS):
        steps = _plan(cmd, reports)
        if not steps:
            return [None] * len(reports)
        if _move_many(conn, cmd, steps):
            return _snapshots(cmd, steps, len(reports))
        if not _reread(conn, cmd):
            return [None] * len(reports)  # the command is gone (its unit was removed)
    log.warning("command %s: %d reports not applied after %d lost races", cmd.id, len(reports), MAX_ROUNDS)
    return [None] * len(reports)


def _plan(cmd: Command, reports: Sequence[Report]) -> list[_Step]:
    steps: list[_Step] = []
    status = cmd.status
    for index, (res, now) in enumerate(reports):
        if not supersedes(res.status, status):
            continue
        if status == "queued":  # the unit answered before we marked it sent: it evidently got it
            steps.append((None, "sent", now, {}))
        steps.append((index, res.status, now, _reported(res)))
        status = res.status
    return steps


def _step_values(status: str, now: int, extra: dict[str, Any], started: bool) -> dict[str, Any]:
    """The columns a move to `status` writes (`started`: the command has its started_at already)."""
    values: dict[str, Any] = {"status": status, "updated_at": now, **extra}
    if status in TAKEN and not started:
        values["started_at"] = now
    if status in FINAL:
        values["finished_at"] = now
    return values


def _move_many(conn: Connection, cmd: Command, steps: list[_Step]) -> bool:
    """Every step's columns in one compare-and-set (later steps win, as they would one after another), and one
    event per step, in order. `cmd` itself is updated by `_snapshots` afterwards (or by `_move` for one step)."""
    if len(steps) == 1:
        _, status, now, extra = steps[0]
        return _move(conn, cmd, status, now, extra)
    values: dict[str, Any] = {}
    started = cmd.started_at is not None
    for _, status, now, extra in steps:
        values.update(_step_values(status, now, extra, started))
        started = started or "started_at" in values
    params = {f"m_{key}": value for key, value in values.items()}
    params.update(m_id=cmd.id, m_from=cmd.status)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        params.update(m_statuses=[step[1] for step in steps], m_times=[step[2] for step in steps])
        return conn.execute(_move_many_statement(tuple(sorted(values))), params).first() is not None
    if conn.execute(_move_statement(dialect, tuple(sorted(values))), params).rowcount != 1:
        return False
    conn.execute(_EVENT_INSERT, [{"command_id": cmd.id, "status": st, "ts": now} for _, st, now, _ in steps])
    return True


@lru_cache(maxsize=64)
def _move_many_statement(columns: tuple[str, ...]) -> Any:
    """PostgreSQL: the compare-and-set of `columns`, and the events of m_statuses at m_times, in that order."""
    table, events = table_of(Command), table_of(CommandEvent)
    values = {name: bindparam(f"m_{name}", type_=table.c[name].type) for name in columns}
    cas = update(table).where(table.c.id == bindparam("m_id"), table.c.status == bindparam("m_from")).values(values)
    moved = cas.returning(table.c.id).cte("moved")
    steps = (
        func.unnest(
            bindparam("m_statuses", type_=ARRAY(events.c.status.type)),
            bindparam("m_times", type_=ARRAY(events.c.ts.type)),
        )
        .table_valued("status", "ts", with_ordinality="n")
        .render_derived(name="step")
    )
    rows = select(moved.c.id, steps.c.status, steps.c.ts).select_from(moved).join(steps, true()).order_by(steps.c.n)
    return insert(events).from_select(["command_id", "status", "ts"], rows).returning(events.c.id)


def _snapshots(cmd: Command, steps: list[_Step], count: int) -> list[dict[str, Any] | None]:
    """The public command after each report's step (its live event), with `cmd` left at the last one."""
    out: list[dict[str, Any] | None] = [None] * count
    started = cmd.started_at is not None
    for index, status, now, extra in steps:
        for key, value in _step_values(status, now, extra, started).items():
            set_committed_value(cmd, key, value)
        started = cmd.started_at is not None
        if index is not None:
            out[index] = command_public(cmd)
    return out
