"""Terminal recordings are deleted after their retention (the row stays, saying so); rows after the audit retention;
rows a replica left open when it died are ended at its next start. On SQLite and PostgreSQL."""

from __future__ import annotations

from fleet_service.terminal.audit import delete_old_rows, end_orphans, get_row, has_recording, start_row, update_row
from fleet_service.terminal.models import TerminalSession
from fleet_service.terminal.recording import Recorder, delete_recordings, read_cast, store_chunk
from protocol.ids import new_id, now_ms

DAY = 86_400_000


def _session(engine, ended_days_ago: float | None, replica: str = "r1") -> str:
    sid = new_id()
    now = now_ms()
    start_row(
        engine,
        TerminalSession(
            id=sid, device_id="u1", actor="token:t", role="admin", replica=replica, started_at=now - DAY * 400
        ),
    )
    recorder = Recorder(sid, 80, 24, "t", "xterm", 1 << 20)
    recorder.output("héllo wörld ".encode() * 10)
    store_chunk(engine, recorder.finish())
    if ended_days_ago is not None:
        update_row(engine, sid, ended_at=now - int(ended_days_ago * DAY), recording_bytes=recorder.size)
    return sid


def test_old_recordings_then_old_rows_go(engine):
    old, recent, open_ = _session(engine, 100), _session(engine, 10), _session(engine, None)
    assert delete_recordings(engine, now_ms() - 90 * DAY) == 1
    assert not has_recording(engine, old) and get_row(engine, old).recording_deleted
    assert has_recording(engine, recent) and has_recording(engine, open_)
    assert "héllo wörld" in b"".join(read_cast(engine, recent)).decode()

    assert delete_old_rows(engine, now_ms() - 50 * DAY) == 1
    remaining = {r for r in (old, recent, open_) if _exists(engine, r)}
    assert remaining == {recent, open_}


def test_rows_a_dead_replica_left_open_are_ended_at_its_start(engine):
    mine, other = _session(engine, None, "r1"), _session(engine, None, "r2")
    assert end_orphans(engine, "r1") == 1
    row = get_row(engine, mine)
    assert row.ended_at and row.close_reason == "service_stopping"
    assert get_row(engine, other).ended_at is None


def _exists(engine, sid: str) -> bool:
    try:
        get_row(engine, sid)
    except LookupError:
        return False
    return True
