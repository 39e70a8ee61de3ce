"""A session's output as an asciinema v2 recording, stored in the database in chunks so every replica can serve it.

Line 1 is the header (`{"version": 2, "width", "height", "timestamp", ...}`); each later line is an event
`[seconds since the start, "o", text]` for output or `[t, "r", "COLSxROWS"]` for a resize. Output bytes are decoded
as UTF-8 across frame boundaries (a character split between two frames is kept whole). The operator's input is
not recorded: it would hold every password typed at a prompt. A recording stops growing at its size limit (the
session goes on; the row says the recording was cut).
"""

from __future__ import annotations

import codecs
import json
import logging
import time
from collections.abc import Iterator

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_service.db.core import table_of
from fleet_service.terminal.models import TerminalRecordingChunk, TerminalSession

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024  # flushed to the database at this size ...
FLUSH_S = 2.0  # ... or this long after the oldest unflushed event
MEDIA_TYPE = "application/x-asciicast"


class Recorder:
    """Collects event lines; `due()` says when `take()` should be written (by the caller, off the event loop)."""

    def __init__(self, session_id: str, cols: int, rows: int, title: str, term: str, max_bytes: int) -> None:
        self.session_id = session_id
        self._start = time.monotonic()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lines: list[str] = []
        self._pending = 0
        self._oldest: float | None = None
        self._seq = 0
        self.max_bytes = max_bytes
        self.size = 0
        self.truncated = False
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(time.time()),
            "title": title,
            "env": {"TERM": term},
        }
        self._add(json.dumps(header, ensure_ascii=False))

    def output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._event("o", text)

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{cols}x{rows}")

    def _event(self, code: str, text: str) -> None:
        if self.truncated:
            return
        line = json.dumps([round(time.monotonic() - self._start, 6), code, text], ensure_ascii=False)
        if self.size + len(line) + 1 > self.max_bytes:
            self.truncated = True
            return
        self._add(line)

    def _add(self, line: str) -> None:
        self._lines.append(line)
        self._pending += len(line) + 1
        self.size += len(line) + 1
        if self._oldest is None:
            self._oldest = time.monotonic()

    def due(self) -> bool:
        return self._pending >= CHUNK_BYTES or (self._oldest is not None and time.monotonic() - self._oldest >= FLUSH_S)

    def take(self) -> TerminalRecordingChunk | None:
        """The lines gathered since the last take, as the next chunk; None when there are none."""
        if not self._lines:
            return None
        chunk = TerminalRecordingChunk(session_id=self.session_id, seq=self._seq, data="\n".join(self._lines) + "\n")
        self._seq += 1
        self._lines = []
        self._pending = 0
        self._oldest = None
        return chunk

    def finish(self) -> TerminalRecordingChunk | None:
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._event("o", tail)
        return self.take()


def store_chunk(engine: Engine, chunk: TerminalRecordingChunk) -> None:
    with Session(engine) as s:
        s.add(chunk)
        s.commit()


def read_cast(engine: Engine, session_id: str, batch: int = 64) -> Iterator[bytes]:
    """The recording's bytes, a few chunks per database round trip."""
    chunks = table_of(TerminalRecordingChunk)
    after = -1
    while True:
        with Session(engine) as s:
            rows = s.execute(
                select(chunks.c.seq, chunks.c.data)
                .where(chunks.c.session_id == session_id, chunks.c.seq > after)
                .order_by(chunks.c.seq)
                .limit(batch)
            ).all()
        if not rows:
            return
        for seq, data in rows:
            after = seq
            yield data.encode("utf-8")


def delete_recordings(engine: Engine, before_ms: int, batch: int = 100) -> int:
    """Delete the recordings of sessions that ended before `before_ms` (their rows stay); how many were deleted."""
    sessions = table_of(TerminalSession)
    chunks = table_of(TerminalRecordingChunk)
    done = 0
    while True:
        with Session(engine) as s:
            ids = list(
                s.execute(
                    select(sessions.c.id)
                    .where(
                        sessions.c.ended_at.is_not(None),
                        sessions.c.ended_at < before_ms,
                        sessions.c.recording_deleted.is_(False),
                    )
                    .limit(batch)
                ).scalars()
            )
            if not ids:
                return done
            s.execute(delete(chunks).where(chunks.c.session_id.in_(ids)))
            s.execute(update(sessions).where(sessions.c.id.in_(ids)).values(recording_deleted=True))
            s.commit()
        done += len(ids)
