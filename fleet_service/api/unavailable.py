"""A database that cannot be reached answers 503 with Retry-After on every route, as `/health` says, not a bare 500.

What counts as unavailable: SQLAlchemy's pool timing out, a connection the database dropped, any PostgreSQL
OperationalError (refused or lost connections, shutdown, statement cancelled, out of disk), and the SQLite errors
of a file that is locked, read-only, unreadable or gone. Anything else (a constraint, a programming error) stays
a 500, so real bugs are not hidden behind "try again".
"""

from __future__ import annotations

import logging
import sqlite3

import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

__all__ = ["RETRY_AFTER_S", "database_unavailable", "install"]

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
# Primary result codes: BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL
_SQLITE_CODES = {5, 6, 8, 10, 13, 14, 15}
_SQLITE_MESSAGES = ("database is locked", "unable to open", "disk i/o error", "readonly database", "database or disk")
_TRY_AGAIN_LATER = 1013  # WebSocket close code


def database_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    if isinstance(exc, psycopg.OperationalError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _SQLITE_CODES
        return any(m in str(exc).lower() for m in _SQLITE_MESSAGES)
    return False


async def _answer(conn: HTTPConnection, exc: Exception) -> Response | None:
    if not database_unavailable(exc):
        raise exc  # a 500 from the server error middleware, logged with its traceback as before
    log.warning("database unavailable for %s: %s", conn.url.path, str(exc).splitlines()[0][:200])
    if isinstance(conn, WebSocket):
        await conn.close(_TRY_AGAIN_LATER, "the database is unavailable")
        return None
    return JSONResponse(
        {"detail": "the database is unavailable; try again shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def install(app: FastAPI) -> None:
    for kind in (DBAPIError, PoolTimeout, psycopg.OperationalError, sqlite3.OperationalError):
        app.add_exception_handler(kind, _answer)
