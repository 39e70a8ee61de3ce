"""Single statements the event loop awaits itself, on PostgreSQL: no worker thread on a request's path.

Every state-changing call waits for a few one-statement writes (the command row, its `sent` mark, the audit row)
and for the caller's token. Run through `asyncio.to_thread`, each is a hop to a worker thread and back, and each
hop waits for the interpreter lock while ingest (another thread) persists a batch: on a busy service a 0.7 ms
statement took 2 ms. Here the loop sends the statement and goes on with other work until the answer arrives.

The statements go straight to psycopg's asynchronous connection (SQLAlchemy's asynchronous layer costs three
times the CPU per statement: 0.6 against 0.2 ms), from a small pool of our own with the synchronous pool's rules:
a connection idle for a while is pinged before use, a dead one is replaced, and a statement that failed with its
connection runs once more on a new one. Errors come out as SQLAlchemy's exceptions, so the API maps them as it
maps the rest (an unreachable database is a 503).

Only single statements in autocommit (atomic on their own): anything needing a transaction stays on the
synchronous engine. SQLite keeps the thread hop (it has no network wait to overlap).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement

from fleet_service.db import engine as sync_engine

log = logging.getLogger(__name__)
POOL_SIZE = 8  # statements in flight at once; more callers wait for a connection


@dataclass(frozen=True)
class Outcome:
    rowcount: int
    rows: Sequence[Any]  # named tuples


class LoopStatement:
    """A SQLAlchemy statement compiled once for psycopg (`%(name)s` parameters)."""

    def __init__(self, statement: ClauseElement, column_keys: list[str] | None = None) -> None:
        self.sql = str(statement.compile(dialect=PGDialect_psycopg(), column_keys=column_keys))


class LoopDatabase:
    """A few asynchronous connections to the service's PostgreSQL database, for one-statement work."""

    def __init__(self, conninfo: str, size: int = POOL_SIZE) -> None:
        self._conninfo = conninfo
        self._idle: list[tuple[psycopg.AsyncConnection[Any], float]] = []  # (connection, when it was put back)
        self._slots = asyncio.Semaphore(size)

    @classmethod
    def beside(cls, engine: Engine, size: int = POOL_SIZE) -> LoopDatabase | None:
        """One on the same database as the service's (synchronous) engine; None on SQLite."""
        if engine.dialect.name != "postgresql":
            return None
        url = engine.url.set(drivername="postgresql")
        return cls(url.render_as_string(hide_password=False), size)

    async def run(self, statement: LoopStatement, params: Mapping[str, Any]) -> Outcome:
        """Run one statement, committed on its own. On a connection found dead (a restarted server) it runs once
        more on a new one: it failed with its connection, so it changed nothing."""
        async with self._slots:
            try:
                return await self._run(statement, params)
            except psycopg.OperationalError as exc:
                log.warning("database connection lost (%s); retrying once", exc.__class__.__name__)
                try:
                    return await self._run(statement, params)
                except psycopg.Error as again:
                    raise _as_sqlalchemy(statement, params, again) from again
            except psycopg.Error as exc:
                raise _as_sqlalchemy(statement, params, exc) from exc

    async def _run(self, statement: LoopStatement, params: Mapping[str, Any]) -> Outcome:
        conn = await self._checkout()
        try:
            cur = await conn.execute(statement.sql, params)
            rows = await cur.fetchall() if cur.description is not None else []
            outcome = Outcome(cur.rowcount, rows)
        except psycopg.Error:
            if conn.broken or conn.closed:
                await conn.close()
            else:  # the statement was refused (a constraint, a bad value): the connection itself is fine
                self._idle.append((conn, time.monotonic()))
            raise
        except BaseException:  # cancelled while the statement was in flight: the connection's state is unknown
            await conn.close()
            raise
        self._idle.append((conn, time.monotonic()))
        return outcome

    async def _checkout(self) -> psycopg.AsyncConnection[Any]:
        while self._idle:
            conn, since = self._idle.pop()  # the most recently used: the likeliest to be alive
            if conn.closed:
                continue
            if time.monotonic() - since < sync_engine.PING_AFTER_IDLE_S:
                return conn
            try:
                await conn.execute("SELECT 1")
                return conn
            except psycopg.Error as exc:
                log.info("database connection idle for a while is gone (%s); reconnecting", exc.__class__.__name__)
                await conn.close()
        return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, row_factory=namedtuple_row)

    async def dispose(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await conn.close()


def _as_sqlalchemy(statement: LoopStatement, params: Mapping[str, Any], exc: psycopg.Error) -> StatementError:
    """The exception the synchronous engine would have raised (OperationalError, IntegrityError, ...)."""
    return DBAPIError.instance(statement.sql, dict(params), exc, psycopg.Error, hide_parameters=True)
