"""Database engine, sessions and migrations (Alembic, SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

# Alembic announces its plugins and context at INFO on every start (some at import); only problems matter.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.exc import DBAPIError, DisconnectionError  # noqa: E402
from sqlmodel import Session, create_engine  # noqa: E402

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
PING_AFTER_IDLE_S = 2.0  # a pooled connection unused this long is pinged before use
T = TypeVar("T")


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and "?" not in path:
            _create_private(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pool_pre_ping: a ping on every checkout is one more round trip (and, under load, one more wait for
    # the GIL) on every request. A connection is pinged only after it sat idle in the pool; a dead one that
    # was in use moments ago fails its statement, which invalidates the pool (see once_more_on_disconnect).
    engine = create_engine(url, pool_size=10, max_overflow=10, pool_recycle=1800)
    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", _idle_pinger(engine))
    return engine


def _create_private(path: Path) -> None:
    """A new SQLite file is made 0600 (in a new 0700 directory) before SQLite opens it; SQLite gives its -wal and
    -shm files the database file's mode. Users' password hashes and all logs are in it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def _note_checkin(_dbapi_conn, record) -> None:
    record.info["checked_in"] = time.monotonic()


def _idle_pinger(engine: Engine) -> Callable[..., None]:
    """A checkout hook that pings a connection idle for a while; a dead one is replaced (the pool retries)."""
    dialect = engine.dialect

    def ping_if_idle(dbapi_conn, record, _proxy) -> None:
        idle = time.monotonic() - record.info.get("checked_in", time.monotonic())
        if idle < PING_AFTER_IDLE_S:
            return
        try:
            alive = dialect.do_ping(dbapi_conn)
        except Exception as exc:  # whatever the driver raises, this connection is not usable
            log.info("database connection idle for %.0f s is gone (%s); reconnecting", idle, exc.__class__.__name__)
            raise DisconnectionError() from exc
        if alive is False:
            raise DisconnectionError()

    return ping_if_idle


def once_more_on_disconnect(work: Callable[[], T]) -> T:
    """Run `work`; when the database connection turned out dead (restarted server), run it once more on a new one.

    Only for work that changed nothing when it failed (one transaction, rolled back with the connection).
    """
    try:
        return work()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("database connection lost (%s); retrying once", exc.__class__.__name__)
        return work()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (safe with several replicas starting at once)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
