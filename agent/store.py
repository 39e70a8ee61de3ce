"""The agent's SQLite file in its state dir: one connection, one lock, short transactions."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL, retain INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, boot_id TEXT NOT NULL, ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_ts ON commands (ts);
"""


RESERVE_BYTES = 512 * 1024
log = logging.getLogger(__name__)


class Store:
    """Thread-safe access to `agent.db`; WAL so a power cut loses at most the last transaction.

    Beside it lies `reserve`, a file of RESERVE_BYTES that is deleted when the disk is full, so that SQLite has
    room to delete old records (deleting writes to the WAL first), and written again when there is room."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "agent.db"
        self.reserve = state_dir / "reserve"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA cache_size=-512")  # 512 KiB: the queue is read in order, a big cache buys nothing
        self._db.execute("PRAGMA journal_size_limit=4194304")  # a WAL grown by a burst shrinks back to 4 MiB
        self._db.executescript(_SCHEMA)
        self.restore_reserve()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def get(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def put(self, key: str, value: str) -> None:
        with self.transaction() as db:
            set_meta(db, key, value)

    def release_reserve(self) -> None:
        self.reserve.unlink(missing_ok=True)

    def restore_reserve(self) -> bool:
        """Write the reserve file if it is missing; False when the disk has no room for it yet."""
        if self.reserve.exists():
            return True
        partial = self.reserve.with_name("reserve.part")
        try:
            with partial.open("wb") as fh:
                fh.write(b"\0" * RESERVE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
            partial.rename(self.reserve)
            return True
        except OSError as exc:
            partial.unlink(missing_ok=True)
            log.debug("no room for the outbox reserve yet: %s", exc)
            return False

    def checkpoint(self) -> None:
        """Move the WAL into the database and truncate it (gives its space back)."""
        try:
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            log.debug("checkpoint failed: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
