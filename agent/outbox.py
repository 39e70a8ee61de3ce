"""Durable outbox: log records and QoS-1 messages wait on disk until the broker acknowledged them.

Logs are bounded by bytes: the oldest records are dropped first and their number is reported in the
next published LogBatch.dropped. Messages (command results, config reports) are bounded by count.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

from agent.store import Store, set_meta

log = logging.getLogger(__name__)

_DROPPED = "outbox.dropped"
MAX_MESSAGES = 10_000


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

    # Writing ------------------------------------------------------------------------

    def add_logs(self, records: list[dict], positions: dict[str, str] | None = None) -> None:
        """Store records (each with its own `id`) and, in the same transaction, where the readers are."""
        bodies = [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in records]
        with self._lock, self.store.transaction() as db:
            db.executemany("INSERT INTO logs (body) VALUES (?)", [(b,) for b in bodies])
            for key, value in (positions or {}).items():
                set_meta(db, key, value)
            self._log_bytes += sum(len(b) for b in bodies)
            if self._log_bytes > self.max_bytes:
                self._trim(db)
        if records:
            self.changed.set()

    def _trim(self, db) -> None:
        # Drop oldest until 90 % full so a full outbox does not trim on every insert.
        target = int(self.max_bytes * 0.9)
        dropped = 0
        while self._log_bytes > target:
            rows = db.execute("SELECT seq, LENGTH(body) FROM logs ORDER BY seq LIMIT 500").fetchall()
            if not rows:
                self._log_bytes = 0
                break
            cut = 0
            for seq, size in rows:
                self._log_bytes -= size
                cut = seq
                dropped += 1
                if self._log_bytes <= target:
                    break
            db.execute("DELETE FROM logs WHERE seq <= ?", (cut,))
        previous = db.execute("SELECT value FROM meta WHERE key = ?", (_DROPPED,)).fetchone()
        set_meta(db, _DROPPED, str(int(previous[0]) + dropped if previous else dropped))
        log.warning("outbox full: dropped the %s oldest log records", dropped)

    def add_message(
        self, topic: str, payload: bytes, retain: bool = False, also: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        """Queue one QoS-1 message; `also` runs in the same transaction (e.g. the command ledger update)."""
        with self.store.transaction() as db:
            if also is not None:
                also(db)
            db.execute("INSERT INTO messages (topic, payload, retain) VALUES (?, ?, ?)", (topic, payload, int(retain)))
            (count,) = db.execute("SELECT COUNT(*) FROM messages").fetchone()
            if count > MAX_MESSAGES:
                db.execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)",
                           (count - MAX_MESSAGES,))
                log.warning("outbox full: dropped %s oldest messages", count - MAX_MESSAGES)
        self.changed.set()

    # Reading and acknowledging ------------------------------------------------------

    def next_logs(self, after_seq: int, max_records: int, max_bytes: int) -> PendingLogs | None:
        rows = self.store.query(
            "SELECT seq, body FROM logs WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, max_records)
        )
        if not rows:
            return None
        records, size, last = [], 0, rows[0][0]
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

    def ack_logs(self, first_seq: int, last_seq: int, dropped_reported: int = 0) -> None:
        with self._lock, self.store.transaction() as db:
            sizes = db.execute(
                "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM logs WHERE seq BETWEEN ? AND ?", (first_seq, last_seq)
            ).fetchone()
            db.execute("DELETE FROM logs WHERE seq BETWEEN ? AND ?", (first_seq, last_seq))
            self._log_bytes = max(0, self._log_bytes - int(sizes[0]))
            if dropped_reported:
                row = db.execute("SELECT value FROM meta WHERE key = ?", (_DROPPED,)).fetchone()
                set_meta(db, _DROPPED, str(max(0, int(row[0]) - dropped_reported) if row else 0))

    def ack_message(self, seq: int) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM messages WHERE seq = ?", (seq,))

    @property
    def dropped(self) -> int:
        value = self.store.get(_DROPPED)
        return int(value) if value else 0

    def pending(self) -> tuple[int, int]:
        """(log records, messages) still waiting for an acknowledgement."""
        (logs,) = self.store.query("SELECT COUNT(*) FROM logs")[0]
        (messages,) = self.store.query("SELECT COUNT(*) FROM messages")[0]
        return int(logs), int(messages)

    def position(self, key: str) -> str | None:
        return self.store.get(key)
