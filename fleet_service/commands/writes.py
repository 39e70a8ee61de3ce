"""The two writes on a command's way out, in as few database round trips as each dialect allows.

Storing a new command (only when its unit exists) and marking it `sent` sit on the path of every
`POST .../commands`. On PostgreSQL each is ONE statement run in autocommit (a data-modifying CTE writes the
command row and its event together, atomically): no BEGIN, no separate existence check, no COMMIT round trip; the
service's event loop awaits it (`*_on_loop`, `db/on_loop.py`) instead of handing it to a worker thread.
SQLite runs in-process, so the plain transaction costs no network there.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_service.commands.models import Command, CommandEvent
from fleet_service.db.core import table_of
from fleet_service.db.on_loop import LoopDatabase, LoopStatement
from fleet_service.devices.models import Device

_PG_STORE = text(
    "WITH c AS (INSERT INTO command (id, device_id, name, args, status, created_at, updated_at, expires_at,"
    " timeout_s, output, created_by, rollout_id)"
    " SELECT :id, d.id, :name, CAST(:args AS JSON), :status, :created_at, :created_at, :expires_at, :timeout_s,"
    " :output, :created_by, :rollout_id FROM device d WHERE d.id = :device_id RETURNING id)"
    " INSERT INTO command_event (command_id, status, ts) SELECT id, :status, :created_at FROM c"
)
_PG_MARK_SENT = text(
    "WITH u AS (UPDATE command SET status = 'sent', updated_at = :now WHERE id = :id AND status = 'queued'"
    " RETURNING id)"
    " INSERT INTO command_event (command_id, status, ts) SELECT id, 'sent', :now FROM u"
)

_LOOP_STORE, _LOOP_MARK_SENT = LoopStatement(_PG_STORE), LoopStatement(_PG_MARK_SENT)


def store_for_unit(engine: Engine, cmd: Command) -> bool:
    """Store a new command and its first event when its unit exists; False (nothing stored) when it does not."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return conn.execute(_PG_STORE, _store_params(cmd)).rowcount == 1
    with Session(engine, expire_on_commit=False) as s:
        if s.exec(select(Device.id).where(Device.id == cmd.device_id)).first() is None:
            return False
        s.add(cmd)
        s.add(CommandEvent(command_id=cmd.id, status=cmd.status, ts=cmd.created_at))
        s.commit()
    return True


async def store_for_unit_on_loop(db: LoopDatabase, cmd: Command) -> bool:
    """`store_for_unit` on PostgreSQL, awaited by the event loop."""
    return (await db.run(_LOOP_STORE, _store_params(cmd))).rowcount == 1


def _store_params(cmd: Command) -> dict[str, Any]:
    return {
        "id": cmd.id,
        "device_id": cmd.device_id,
        "name": cmd.name,
        "args": json.dumps(cmd.args),
        "status": cmd.status,
        "created_at": cmd.created_at,
        "expires_at": cmd.expires_at,
        "timeout_s": cmd.timeout_s,
        "output": cmd.output,
        "created_by": cmd.created_by,
        "rollout_id": cmd.rollout_id,
    }


def mark_sent(engine: Engine, command_id: str, now: int) -> bool:
    """queued -> sent as one compare-and-set without reading the row first; False when another writer (the
    unit's own report, a cancel, the sweeper) moved it first and recorded its own transition."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return conn.execute(_PG_MARK_SENT, {"id": command_id, "now": now}).rowcount == 1
    table = table_of(Command)
    with engine.begin() as conn:
        changed = (
            conn.execute(
                update(table)
                .where(table.c.id == command_id, table.c.status == "queued")
                .values(status="sent", updated_at=now)
            ).rowcount
            == 1
        )
        if changed:
            conn.execute(insert(table_of(CommandEvent)).values(command_id=command_id, status="sent", ts=now))
    return changed


async def mark_sent_on_loop(db: LoopDatabase, command_id: str, now: int) -> bool:
    """`mark_sent` on PostgreSQL, awaited by the event loop."""
    return (await db.run(_LOOP_MARK_SENT, {"id": command_id, "now": now})).rowcount == 1
