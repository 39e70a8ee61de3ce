"""Log sources: systemd units via `journalctl -f -o json` and plain files (rotation-safe), batched to the outbox."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agent.config import split_command
from agent.outbox import Outbox
from protocol.ids import new_id, now_ms
from protocol.payloads import LogRecord

log = logging.getLogger(__name__)

JOURNAL_CURSOR_KEY = "journal.cursor"
_PRIORITY_LEVELS = ("critical", "critical", "critical", "error", "warning", "notice", "info", "debug")
_LEVEL_WORD = re.compile(r"\b(critical|crit|fatal|error|err|warning|warn|notice|info|debug|trace)\b", re.IGNORECASE)
_MAX_LINE = 64 * 1024


def record(msg: str, source: str, level: str = "info", ts: int | None = None, rid: str | None = None) -> dict:
    """One validated log record as a plain dict (level aliases normalised, message capped)."""
    try:
        rec = LogRecord(id=rid or new_id(), ts=ts or now_ms(), level=level, source=source[:128], msg=msg)
    except ValueError:
        rec = LogRecord(id=rid or new_id(), ts=now_ms(), level="info", source=source[:128], msg=msg)
    return rec.model_dump()


def guess_level(line: str) -> str:
    match = _LEVEL_WORD.search(line[:120])
    return match.group(1).lower() if match else "info"


class LogPump:
    """Collects records from the followers and writes them to the outbox in batches (count or time limit)."""

    def __init__(self, outbox: Outbox, batch_records: int, batch_interval: float) -> None:
        self.outbox = outbox
        self.batch_records = batch_records
        self.batch_interval = batch_interval
        self._queue: queue.Queue[tuple[dict, tuple[str, str] | None]] = queue.Queue(maxsize=10_000)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agent-logpump", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, rec: dict, position: tuple[str, str] | None = None) -> bool:
        """Queue a record; blocks briefly when the agent is behind (back-pressure on the source)."""
        while not self._stopping.is_set():
            try:
                self._queue.put((rec, position), timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        batch: list[dict] = []
        positions: dict[str, str] = {}
        deadline = 0.0
        while True:
            stopping = self._stopping.is_set()
            timeout = max(0.0, deadline - time.monotonic()) if batch else 0.5
            try:
                rec, position = self._queue.get(timeout=timeout if not stopping else 0)
                if not batch:
                    deadline = time.monotonic() + self.batch_interval
                batch.append(rec)
                if position:
                    positions[position[0]] = position[1]
            except queue.Empty:
                if stopping:
                    self._flush(batch, positions)
                    return
            if batch and (len(batch) >= self.batch_records or time.monotonic() >= deadline):
                self._flush(batch, positions)
                batch, positions = [], {}

    def _flush(self, batch: list[dict], positions: dict[str, str]) -> None:
        """Store a batch with the readers' positions, retrying until it is stored: the followers wait meanwhile
        (the queue fills), so no line is read past without being kept. On stop, an unstored batch is left to
        be read again from the last stored position at the next start."""
        if not batch and not positions:
            return
        delay, failures = 0.5, 0
        while True:
            try:
                self.outbox.add_logs(batch, positions)
                if failures:
                    log.warning("stored %s log records after %s failed attempts", len(batch), failures)
                return
            except Exception as exc:  # noqa: BLE001 - whatever the store raises, the batch is held and retried
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.error("could not store %s log records (%s); holding them and retrying", len(batch), exc)
            if self._stopping.wait(delay):
                log.warning("stopping with %s log records unstored; they are read again at the next start", len(batch))
                return
            delay = min(delay * 2, 10.0)


class JournalFollower:
    """Runs the journal command for the configured units and turns its JSON lines into records; restarts it."""

    def __init__(self, command: str, units: list[str], pump: LogPump, outbox: Outbox) -> None:
        self.command = command
        self.units = units
        self.pump = pump
        self.outbox = outbox
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def argv(self) -> list[str]:
        argv = split_command(self.command)
        for unit in self.units:
            argv += ["--unit", unit]
        cursor = self.outbox.position(JOURNAL_CURSOR_KEY)
        # Resume after the last stored entry; on the very first start, only what comes from now on.
        argv += [f"--after-cursor={cursor}"] if cursor else ["--lines=0"]
        return argv

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agent-journal", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            argv = self.argv()
            started = time.monotonic()
            try:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            except OSError as exc:
                log.warning("cannot run %s: %s; retrying in %.0f s", argv[0], exc.strerror or exc, delay)
            else:
                self._read(self._proc)
                code = self._proc.wait()
                err = self._proc.stderr.read(2000).decode("utf-8", "replace").strip() if self._proc.stderr else ""
                self._proc.stderr and self._proc.stderr.close()
                if self._stopping.is_set():
                    return
                log.warning("%s exited with %s %s; restarting in %.0f s", argv[0], code, err, delay)
            if time.monotonic() - started > 60:
                delay = 1.0
            self._stopping.wait(delay)
            delay = min(delay * 2, 60.0)

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                if self._stopping.is_set():
                    return
                parsed = parse_journal_line(raw)
                if parsed is not None:
                    rec, cursor = parsed
                    self.pump.submit(rec, (JOURNAL_CURSOR_KEY, cursor) if cursor else None)


def parse_journal_line(raw: bytes) -> tuple[dict, str | None] | None:
    """A `journalctl -o json` line -> (record, cursor); None for lines without a message."""
    try:
        entry = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict):
        return None
    msg = _journal_text(entry.get("MESSAGE"))
    if msg is None:
        return None
    cursor = entry.get("__CURSOR") if isinstance(entry.get("__CURSOR"), str) else None
    try:
        ts = int(entry.get("__REALTIME_TIMESTAMP", 0)) // 1000 or None
    except (TypeError, ValueError):
        ts = None
    try:
        level = _PRIORITY_LEVELS[int(entry.get("PRIORITY", 6))]
    except (TypeError, ValueError, IndexError):
        level = "info"
    source = entry.get("_SYSTEMD_UNIT") or entry.get("SYSLOG_IDENTIFIER") or "journal"
    # The id is derived from the cursor, so an entry read twice (after a crash) dedupes at the service.
    rid = hashlib.sha256(cursor.encode()).hexdigest()[:32] if cursor else None
    return record(msg, str(source), level, ts, rid), cursor


def _journal_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", "replace")  # journald sends non-UTF-8 messages as byte arrays
    return None


@dataclass
class _Tail:
    path: Path
    fh: IO[bytes] | None = None
    inode: int | None = None
    offset: int = 0
    partial: bytes = b""


class FileFollower:
    """Polls plain log files; follows rename rotation (finish the old file, open the new one) and copytruncate."""

    def __init__(self, paths: list[str], pump: LogPump, outbox: Outbox, interval: float) -> None:
        self.pump = pump
        self.outbox = outbox
        self.interval = interval
        self._tails = [_Tail(Path(p)) for p in paths]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for tail in self._tails:
            self._open(tail, initial=True)
        self._thread = threading.Thread(target=self._run, name="agent-files", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for tail in self._tails:
            if tail.fh:
                tail.fh.close()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            for tail in self._tails:
                try:
                    self._poll(tail)
                except OSError as exc:
                    log.debug("reading %s failed: %s", tail.path, exc)

    def _key(self, tail: _Tail) -> str:
        return f"file:{tail.path}"

    def _open(self, tail: _Tail, initial: bool = False) -> None:
        try:
            fh = open(tail.path, "rb")
        except OSError:
            return
        st = os.fstat(fh.fileno())
        tail.fh, tail.inode, tail.partial = fh, st.st_ino, b""
        tail.offset = 0
        if initial:
            saved = self.outbox.position(self._key(tail))
            inode, _, offset = (saved or "").partition(":")
            if saved and inode == str(st.st_ino) and int(offset or 0) <= st.st_size:
                tail.offset = int(offset)
            elif not saved:
                tail.offset = st.st_size  # first start: only new lines, not the file's whole history
        fh.seek(tail.offset)

    def _poll(self, tail: _Tail) -> None:
        if tail.fh is None:
            self._open(tail)
            if tail.fh is None:
                return
        self._read(tail)
        try:
            st = os.stat(tail.path)
        except FileNotFoundError:
            return  # rotated away, the new file is not there yet: keep the old handle
        if st.st_ino != tail.inode:
            self._read(tail)  # whatever was written to the old file before the rename
            self._emit_partial(tail)
            tail.fh.close()
            tail.fh = None
            self._open(tail)
            if tail.fh is not None:
                self._read(tail)
        elif st.st_size < tail.offset:
            self._emit_partial(tail)
            tail.fh.seek(0)
            tail.offset = 0
            self._read(tail)

    def _read(self, tail: _Tail) -> None:
        assert tail.fh is not None
        while True:
            chunk = tail.fh.read(256 * 1024)
            if not chunk:
                return
            consumed = tail.offset - len(tail.partial)  # file offset where `data` starts
            data = tail.partial + chunk
            tail.offset += len(chunk)
            lines = data.split(b"\n")
            tail.partial = lines.pop()
            for line in lines:
                consumed += len(line) + 1
                self._emit(tail, line, consumed)
            if len(tail.partial) > _MAX_LINE:  # a runaway line without newline: emit what we have
                consumed += len(tail.partial)
                self._emit(tail, tail.partial, consumed)
                tail.partial = b""

    def _emit(self, tail: _Tail, line: bytes, offset: int) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text.strip():
            position = (self._key(tail), f"{tail.inode}:{offset}")
            self.pump.submit(record(text, str(tail.path), guess_level(text)), position)

    def _emit_partial(self, tail: _Tail) -> None:
        if tail.partial:
            self._emit(tail, tail.partial, tail.offset)
            tail.partial = b""
