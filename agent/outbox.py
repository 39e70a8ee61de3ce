"""Durable outbox: log records and reliable messages wait on disk until the service acknowledged them.

A record leaves the outbox only when the service says it is stored (an end-to-end ack naming its ack id), never
on the broker's PUBACK alone. Logs are bounded by bytes: when the outbox is over its size, or the disk is full,
the oldest records not yet handed to the broker are dropped first, and the running total of dropped records is
reported in every LogBatch (`dropped_total`). Messages (command results, config reports) are bounded by count.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from agent.store import Store, set_meta

log = logging.getLogger(__name__)

_DROPPED = "outbox.dropped"  # running total of log records dropped, never decreases
MAX_MESSAGES = 10_000
T = TypeVar("T")


class OutboxFullError(Exception):
    """The disk is full and nothing could be dropped to make room: keep the records in memory and retry."""


def disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower() or "No space" in str(exc)


@dataclass(frozen=True)
class PendingLogs:
    first_seq: int
    last_seq: int
    records: list[dict]


@dataclass(frozen=True)
class PendingMessage:
    seq: int
    topic: str
    payload: bytes
    retain: bool


class Outbox:
    def __init__(self, store: Store, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        rows = store.query("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM logs")
        self._log_bytes = int(rows[0][0])
        self.changed = threading.Event()
        # Log records up to this seq were handed to the broker and may be stored already: dropping them would
        # count as lost what is not. The sender moves it; trimming spares these while it can.
        self.published_upto = 0

    # Writing ------------------------------------------------------------------------

    def add_logs(self, records: list[dict], positions: dict[str, str] | None = None) -> None:
        """Store records (each with its own `id`) and, in the same transaction, where the readers are."""
        bodies = [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in records]
        size = sum(len(b) for b in bodies)

        def insert() -> None:
            trimmed = (0, 0)
            with self._lock:
                with self.store.transaction() as db:
                    db.executemany("INSERT INTO logs (body) VALUES (?)", [(b,) for b in bodies])
                    for key, value in (positions or {}).items():
                        set_meta(db, key, value)
                    if self._log_bytes + size > self.max_bytes:  # to 90 %, so a full outbox does not trim every time
                        trimmed = self._trim(db, self._log_bytes + size - int(self.max_bytes * 0.9))
                self._log_bytes += size  # committed: now the counts may change
                self._dropped_now(*trimmed)
            if records:
                self.changed.set()

        self._with_room(insert, size)

    def _with_room(self, write: Callable[[], T], size: int) -> T:
        """Run a write; when the disk is full, drop the oldest log records to make room for it, then try again.

        Deleting needs disk space too (the WAL grows before the pages are freed), so the store keeps a reserve
        file that is let go for exactly this, and taken back once there is room again."""
        try:
            return write()
        except sqlite3.OperationalError as exc:
            if not disk_full(exc):
                raise
            first = exc
        self.store.release_reserve()
        try:
            with self._lock:
                with self.store.transaction() as db:
                    trimmed = self._trim(db, max(2 * size, 64 * 1024))
                self._dropped_now(*trimmed)
            if not trimmed[0]:
                raise OutboxFullError("disk full and no log records left to drop") from first
            self.store.checkpoint()  # hand the WAL's space back to the file system
            try:
                return write()
            except sqlite3.OperationalError as exc:
                if disk_full(exc):
                    raise OutboxFullError(f"disk still full after dropping {trimmed[0]} old records") from exc
                raise
        except sqlite3.OperationalError as exc:
            if disk_full(exc):
                raise OutboxFullError(f"disk full and no room to drop old records: {exc}") from first
            raise
        finally:
            self.store.restore_reserve()

    def _trim(self, db: sqlite3.Connection, need: int) -> tuple[int, int]:
        """Delete the oldest records until `need` bytes are freed, first those never handed to the broker.

        Returns (records, bytes); the caller applies them once the transaction committed."""
        dropped = freed = 0
        for floor in (self.published_upto, 0):
            while freed < need:
                rows = db.execute(
                    "SELECT seq, LENGTH(body) FROM logs WHERE seq > ? ORDER BY seq LIMIT 500", (floor,)
                ).fetchall()
                if not rows:
                    break
                cut = []
                for seq, size in rows:
                    freed += size
                    cut.append((seq,))
                    if freed >= need:
                        break
                db.executemany("DELETE FROM logs WHERE seq = ?", cut)
                dropped += len(cut)
        if dropped:
            previous = db.execute("SELECT value FROM meta WHERE key = ?", (_DROPPED,)).fetchone()
            set_meta(db, _DROPPED, str(int(previous[0]) + dropped if previous else dropped))
        return dropped, freed

    def _dropped_now(self, dropped: int, freed: int) -> None:
        if dropped:
            self._log_bytes = max(0, self._log_bytes - freed)
            log.warning("outbox full: dropped the %s oldest log records", dropped)

    def add_message(
        self, topic: str, payload: bytes, retain: bool = False, also: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        """Queue one reliable message; `also` runs in the same transaction (e.g. the command ledger update).

        A full disk makes room by dropping old log records: a command result matters more than a log line."""

        def insert() -> None:
            with self.store.transaction() as db:
                if also is not None:
                    also(db)
                db.execute(
                    "INSERT INTO messages (topic, payload, retain) VALUES (?, ?, ?)", (topic, payload, int(retain))
                )
                (count,) = db.execute("SELECT COUNT(*) FROM messages").fetchone()
                if count > MAX_MESSAGES:
                    db.execute(
                        "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)",
                        (count - MAX_MESSAGES,),
                    )
                    log.warning("outbox full: dropped %s oldest messages", count - MAX_MESSAGES)

        self._with_room(insert, len(payload))
        self.changed.set()

    # Reading and acknowledging ------------------------------------------------------

    def next_logs(self, after_seq: int, max_records: int, max_bytes: int) -> PendingLogs | None:
        rows = self.store.query(
            "SELECT seq, body FROM logs WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, max_records)
        )
        if not rows:
            return None
        records: list[dict] = []
        size, last = 0, rows[0][0]
        for seq, body in rows:
            if records and size + len(body) > max_bytes:
                break
            records.append(json.loads(body))
            size += len(body)
            last = seq
        return PendingLogs(rows[0][0], last, records)

    def next_messages(self, after_seq: int, limit: int) -> list[PendingMessage]:
        rows = self.store.query(
            "SELECT seq, topic, payload, retain FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )
        return [PendingMessage(seq, t, bytes(p), bool(r)) for seq, t, p, r in rows]

    def ack_logs(self, first_seq: int, last_seq: int) -> None:
        """The service stored these records: forget them."""
        with self._lock, self.store.transaction() as db:
            sizes = db.execute(
                "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM logs WHERE seq BETWEEN ? AND ?", (first_seq, last_seq)
            ).fetchone()
            db.execute("DELETE FROM logs WHERE seq BETWEEN ? AND ?", (first_seq, last_seq))
            self._log_bytes = max(0, self._log_bytes - int(sizes[0]))

    def ack_message(self, seq: int) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM messages WHERE seq = ?", (seq,))

    @property
    def dropped(self) -> int:
        """Log records this outbox ever dropped (kept while the state dir lives)."""
        value = self.store.get(_DROPPED)
        return int(value) if value else 0

    def pending(self) -> tuple[int, int]:
        """(log records, messages) not yet acknowledged by the service."""
        (logs,) = self.store.query("SELECT COUNT(*) FROM logs")[0]
        (messages,) = self.store.query("SELECT COUNT(*) FROM messages")[0]
        return int(logs), int(messages)

    def position(self, key: str) -> str | None:
        return self.store.get(key)
