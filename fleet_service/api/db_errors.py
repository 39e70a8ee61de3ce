"""Database errors answered as what they are, on every route, instead of a bare 500.

A database that cannot be reached: 503 with Retry-After, as `/health` says. What counts as unavailable:
SQLAlchemy's pool timing out, a connection the database dropped, any PostgreSQL OperationalError (refused or
lost connections, shutdown, statement cancelled, out of disk), and the SQLite errors of a file that is locked,
read-only, unreadable or gone. Anything else (a constraint, a programming error) stays a 500, so real bugs are
not hidden behind "try again".

Text with a NUL character, which PostgreSQL cannot store or compare (SQLite can): 422, whichever path, query or
body field carried it.
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

__all__ = ["RETRY_AFTER_S", "database_unavailable", "install", "nul_in_text"]

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
# Primary result codes: BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL
_SQLITE_CODES = {5, 6, 8, 10, 13, 14, 15}
_SQLITE_MESSAGES = ("database is locked", "unable to open", "disk i/o error", "readonly database", "database or disk")
_TRY_AGAIN_LATER = 1013  # WebSocket close code


def database_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    cause: BaseException | None = exc
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        cause = exc.orig
    if isinstance(cause, psycopg.OperationalError):
        return True
    if isinstance(cause, sqlite3.OperationalError):
        code = getattr(cause, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _SQLITE_CODES
        return any(m in str(cause).lower() for m in _SQLITE_MESSAGES)
    return False


def nul_in_text(exc: BaseException) -> bool:
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(cause, psycopg.DataError) and "NUL (0x00)" in str(cause)


async def _answer(conn: HTTPConnection, exc: Exception) -> Response | None:
    if nul_in_text(exc) and not isinstance(conn, WebSocket):
        return JSONResponse({"detail": "text must not contain NUL (0x00) characters"}, status_code=422)
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
    for kind in (DBAPIError, PoolTimeout, psycopg.OperationalError, psycopg.DataError, sqlite3.OperationalError):
        app.add_exception_handler(kind, _answer)  # type: ignore[arg-type]  # one handler for HTTP and WebSocket
