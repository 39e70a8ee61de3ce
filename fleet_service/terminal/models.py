"""A remote terminal session's audit row, and its recording in chunks (every replica reads them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Text
from sqlmodel import Field, SQLModel

from fleet_service.db.columns import ms_field


class TerminalSession(SQLModel, table=True):
    """Who opened a shell (or forwarded a port) on which unit, when, for how long, how much went each way, and how
    it ended."""

    __tablename__ = "terminal_session"
    __table_args__ = (
        Index("ix_terminal_session_started_at", "started_at"),
        Index("ix_terminal_session_device", "device_id", "started_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    device_id: str = Field(max_length=63)
    actor: str = Field(max_length=200)  # the credential's label, e.g. user:alice or token:ci
    role: str = Field(max_length=16)
    source_ip: str = Field(default="", max_length=64)
    replica: str = Field(default="", max_length=80)  # the service replica that held the WebSocket
    kind: str = Field(default="shell", max_length=16)  # shell, forward (a port forward's WebSocket), proxy (HTTP)
    port: int | None = None  # the unit's loopback port, for forward and proxy
    command: str | None = Field(default=None, max_length=4096)  # None: the login shell
    remote_user: str | None = Field(default=None, max_length=200)
    cols: int = 80
    rows: int = 24
    started_at: int = ms_field()
    ended_at: int | None = ms_field(default=None, nullable=True)
    bytes_in: int = Field(default=0, sa_type=BigInteger)  # the operator's input delivered to the unit
    bytes_out: int = Field(default=0, sa_type=BigInteger)  # the unit's output delivered to the operator
    exit_status: int | None = None
    close_reason: str | None = Field(default=None, max_length=32)  # protocol.terminal.CloseReason name, lowercase
    close_message: str | None = Field(default=None, max_length=1000)
    recording_bytes: int = 0
    recording_truncated: bool = False
    recording_deleted: bool = False  # removed by retention; the row stays


class TerminalRecordingChunk(SQLModel, table=True):
    """Consecutive pieces of a session's asciinema v2 file: chunk 0 is the header line, then event lines."""

    __tablename__ = "terminal_recording_chunk"

    session_id: str = Field(primary_key=True, max_length=32)
    seq: int = Field(primary_key=True)
    data: str = Field(sa_column=Column(Text, nullable=False))


class UnitUiGrant(SQLModel, table=True):
    """A browser's way into one unit port's web UI on that port's own origin: first a one-time ticket (a minute),
    then the cookie it was exchanged for, good while the dashboard session it came from lasts. Stored by hash."""

    __tablename__ = "unit_ui_grant"
    __table_args__ = (Index("ix_unit_ui_grant_expires_at", "expires_at"),)

    id: str = Field(primary_key=True, max_length=64)  # sha256 of the ticket or cookie value
    kind: str = Field(max_length=8)  # ticket or cookie
    web_session_id: str = Field(max_length=64)  # the dashboard session it came from (web_session.id)
    device_id: str = Field(max_length=63)
    port: int
    label: str = Field(max_length=63)  # the host label of the unit origin it is good for
    created_at: int = ms_field()
    expires_at: int = ms_field()
    used_at: int | None = ms_field(default=None, nullable=True)  # a ticket's redemption
