"""Commands written straight to the database, as the dispatcher stores them, and read back: for the tests of the
state machine and of ingest's reports, which need a command in a given state without a broker."""

from __future__ import annotations

from sqlmodel import Session

from fleet_service.commands.dispatch import build, store_new
from fleet_service.commands.models import Command
from fleet_service.commands.writes import mark_sent
from protocol.ids import now_ms


def new_command(engine, device_id: str, *, sent: bool = True, timeout_s: int | None = None) -> str:
    """A stored `ping` for `device_id`, `queued` or (sent=True) marked `sent`; returns its id."""
    cmd = build(device_id, "ping", {}, timeout_s=timeout_s)
    with Session(engine, expire_on_commit=False) as s:
        store_new(s, cmd)
        s.commit()
    if sent:
        assert mark_sent(engine, cmd.id, now_ms())
    return cmd.id


def stored(engine, cmd_id: str) -> Command | None:
    """The command as stored now; None once it is gone (its unit was removed)."""
    with Session(engine, expire_on_commit=False) as s:
        return s.get(Command, cmd_id)
