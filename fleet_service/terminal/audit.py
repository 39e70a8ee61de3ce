"""The audit rows of remote sessions: written at the start and at the end, listed and read by admins, kept for the
audit retention, their recordings for the recording retention."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from fleet_service.db.core import table_of
from fleet_service.errors import NotFound
from fleet_service.terminal.models import TerminalRecordingChunk, TerminalSession
from fleet_service.terminal.recording import delete_recordings
from fleet_service.terminal.unit_ui_grants import delete_expired
from protocol.ids import now_ms

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0


def start_row(engine: Engine, row: TerminalSession) -> None:
    with Session(engine) as s:
        s.add(row)
        s.commit()


def update_row(engine: Engine, session_id: str, **values: Any) -> None:
    sessions = table_of(TerminalSession)
    with Session(engine) as s:
        s.execute(update(sessions).where(sessions.c.id == session_id).values(**values))
        s.commit()


def end_row(engine: Engine, session_id: str, **values: Any) -> None:
    update_row(engine, session_id, ended_at=now_ms(), **values)


def get_row(engine: Engine, session_id: str) -> TerminalSession:
    with Session(engine) as s:
        row = s.get(TerminalSession, session_id)
    if row is None:
        raise NotFound(f"no terminal session with id {session_id!r}")
    return row


def _filtered(query: Any, device_id: str | None) -> Any:
    return query if device_id is None else query.where(TerminalSession.device_id == device_id)


def list_rows(engine: Engine, device_id: str | None, limit: int, offset: int) -> list[TerminalSession]:
    """Newest first."""
    query = _filtered(select(TerminalSession), device_id)
    order = (col(TerminalSession.started_at).desc(), col(TerminalSession.id))
    with Session(engine) as s:
        return list(s.execute(query.order_by(*order).offset(offset).limit(limit)).scalars())


def count_rows(engine: Engine, device_id: str | None) -> int:
    with Session(engine) as s:
        return int(s.execute(_filtered(select(func.count()).select_from(TerminalSession), device_id)).scalar() or 0)


def has_recording(engine: Engine, session_id: str) -> bool:
    chunks = table_of(TerminalRecordingChunk)
    with Session(engine) as s:
        return bool(s.execute(select(func.count()).where(chunks.c.session_id == session_id)).scalar())


def end_orphans(engine: Engine, replica: str) -> int:
    """Rows this replica left open when it stopped without ending them: their sessions are over."""
    sessions = table_of(TerminalSession)
    with Session(engine) as s:
        result = s.execute(
            update(sessions)
            .where(sessions.c.replica == replica, sessions.c.ended_at.is_(None))
            .values(
                ended_at=now_ms(),
                close_reason="service_stopping",
                close_message="the service replica stopped before the session ended",
            )
        )
        s.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def delete_old_rows(engine: Engine, before_ms: int) -> int:
    sessions = table_of(TerminalSession)
    chunks = table_of(TerminalRecordingChunk)
    with Session(engine) as s:
        ids = select(sessions.c.id).where(sessions.c.ended_at.is_not(None), sessions.c.ended_at < before_ms)
        s.execute(delete(chunks).where(chunks.c.session_id.in_(ids)))
        result = s.execute(delete(sessions).where(sessions.c.ended_at.is_not(None), sessions.c.ended_at < before_ms))
        s.commit()
    return int(getattr(result, "rowcount", 0) or 0)


async def run_retention(engine: Engine, replica: str, recording_days: int, row_days: int) -> None:
    """At start: end this replica's orphaned rows. Then hourly: delete recordings and rows past their retention,
    and the unit web UI tickets and cookies that have expired."""
    try:
        if ended := await asyncio.to_thread(end_orphans, engine, replica):
            log.info("ended %d terminal session rows left open by this replica's last run", ended)
    except Exception:
        log.exception("ending orphaned terminal session rows failed")
    while True:
        try:
            now = now_ms()
            if recording_days:
                await asyncio.to_thread(delete_recordings, engine, now - recording_days * 86_400_000)
            if row_days:
                await asyncio.to_thread(delete_old_rows, engine, now - row_days * 86_400_000)
            await asyncio.to_thread(delete_expired, engine, now)
        except Exception:
            log.exception("terminal session retention failed")
        await asyncio.sleep(RETENTION_EVERY_S)
