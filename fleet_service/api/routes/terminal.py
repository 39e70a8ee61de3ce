"""`WS /api/devices/{id}/terminal`: a remote shell on a unit; the sessions' audit rows and recordings (admin)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from fleet_service.api.deps import Admin, Ctx, authenticate, source_ip
from fleet_service.api.schemas.common import Page
from fleet_service.api.schemas.terminal import TerminalSessionPublic
from fleet_service.auth.credentials import role_allows
from fleet_service.auth.web_sessions import same_origin
from fleet_service.db.columns import iso
from fleet_service.devices.models import Device
from fleet_service.errors import NotFound
from fleet_service.refusals import (
    CLOSE_BAD_REQUEST,
    CLOSE_DISABLED,
    CLOSE_FORBIDDEN,
    CLOSE_LIMIT,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNIT_OFFLINE,
    CLOSE_UNKNOWN_UNIT,
    Refused,
    refused,
)
from fleet_service.terminal import bridge
from fleet_service.terminal.audit import count_rows, get_row, has_recording, list_rows
from fleet_service.terminal.models import TerminalSession
from fleet_service.terminal.recording import MEDIA_TYPE, read_cast
from protocol.ids import is_device_id
from protocol.terminal import MAX_SIZE, MAX_TARGET, MAX_TERM
from protocol.topics import is_session_id

router = APIRouter(tags=["terminal"])


def _size(ws: WebSocket, name: str, default: int) -> int:
    raw = ws.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_SIZE:
        raise refused(CLOSE_BAD_REQUEST, f"{name} must be an integer between 1 and {MAX_SIZE}")
    return int(raw)


def _params(ws: WebSocket) -> tuple[int, int, str | None, str]:
    cols, rows = _size(ws, "cols", 80), _size(ws, "rows", 24)
    command = ws.query_params.get("command") or None
    if command is not None and len(command) > MAX_TARGET:
        raise refused(CLOSE_BAD_REQUEST, f"command is longer than {MAX_TARGET} characters")
    term = ws.query_params.get("term") or "xterm-256color"
    if len(term) > MAX_TERM or not term.isascii() or not term.isprintable():
        raise refused(CLOSE_BAD_REQUEST, f"term must be printable ASCII of at most {MAX_TERM} characters")
    return cols, rows, command, term


@router.websocket("/api/devices/{device_id}/terminal")
async def terminal(ws: WebSocket, device_id: str) -> None:
    ctx = ws.app.state.ctx
    await ws.accept()
    identity = await authenticate(ws, ctx)
    if identity is None:
        await ws.close(CLOSE_UNAUTHENTICATED, "missing or invalid credentials")
        return
    sockets = ws.app.state.terminal_sockets
    try:
        if not role_allows(identity.role, "operator"):
            raise refused(CLOSE_FORBIDDEN, "remote shells need the operator role")
        if "authorization" not in ws.headers and not same_origin(ws):
            raise refused(CLOSE_FORBIDDEN, "cross-origin terminal connection refused")
        cols, rows, command, term = _params(ws)
        device = await asyncio.to_thread(_device, ctx.engine, device_id)
        config = device.desired_config or {}
        if config.get("remote_shell_admin_only") is True and not role_allows(identity.role, "admin"):
            raise refused(CLOSE_FORBIDDEN, "this unit's remote shell is for admins only (remote_shell_admin_only)")
        if config.get("remote_shell") is False:
            raise refused(CLOSE_DISABLED, "remote shell is disabled on this unit (its config sets remote_shell: false)")
        if not device.online:
            raise refused(CLOSE_UNIT_OFFLINE, f"unit {device_id} is offline")
        if not sockets.acquire(identity.label):
            raise refused(CLOSE_LIMIT, f"at most {sockets.limit} terminal connections at a time per credential")
    except Refused as refusal:
        await ws.close(refusal.code, str(refusal))
        return
    s = ctx.settings
    request = bridge.Request(
        device_id=device_id,
        actor=identity.label,
        role=identity.role,
        source_ip=source_ip(ws),
        replica=s.replica_id,
        cols=cols,
        rows=rows,
        command=command,
        term=term,
    )
    try:
        await bridge.run_session(
            ws,
            ctx.terminals,
            ctx.engine,
            request,
            bridge.Limits(s.terminal_open_timeout_s, s.terminal_recording_max_bytes),
        )
    finally:
        sockets.release(identity.label)


def _device(engine: Any, device_id: str) -> Device:
    if not is_device_id(device_id):
        raise refused(CLOSE_UNKNOWN_UNIT, "not a unit id")
    with Session(engine) as s:
        device = s.get(Device, device_id)
    if device is None:
        raise refused(CLOSE_UNKNOWN_UNIT, f"no unit with id {device_id!r}")
    return device


def _public(row: TerminalSession, recording: bool) -> dict[str, Any]:
    return {
        "id": row.id,
        "device_id": row.device_id,
        "actor": row.actor,
        "role": row.role,
        "source_ip": row.source_ip,
        "replica": row.replica,
        "kind": row.kind,
        "port": row.port,
        "command": row.command,
        "remote_user": row.remote_user,
        "cols": row.cols,
        "rows": row.rows,
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
        "bytes_in": row.bytes_in,
        "bytes_out": row.bytes_out,
        "exit_status": row.exit_status,
        "close_reason": row.close_reason,
        "close_message": row.close_message,
        "recording_bytes": row.recording_bytes,
        "recording_truncated": row.recording_truncated,
        "recording_available": recording,
    }


@router.get("/api/terminal-sessions", response_model=Page[TerminalSessionPublic])
def list_terminal_sessions(
    ctx: Ctx,
    _: Admin,
    device_id: Annotated[str | None, Query(max_length=63, description="only this unit's sessions")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    rows = list_rows(ctx.engine, device_id, limit, offset)
    items = [_public(r, r.recording_bytes > 0 and not r.recording_deleted) for r in rows]
    return {"items": items, "total": count_rows(ctx.engine, device_id), "limit": limit, "offset": offset}


def _session_row(ctx: Any, session_id: str) -> TerminalSession:
    if not is_session_id(session_id):
        raise NotFound(f"no terminal session with id {session_id!r}")
    return get_row(ctx.engine, session_id)


@router.get("/api/terminal-sessions/{session_id}", response_model=TerminalSessionPublic)
def get_terminal_session(session_id: str, ctx: Ctx, _: Admin) -> dict[str, Any]:
    row = _session_row(ctx, session_id)
    return _public(row, has_recording(ctx.engine, session_id))


@router.get(
    "/api/terminal-sessions/{session_id}/recording",
    response_class=StreamingResponse,
    responses={200: {"description": "the session's output as an asciinema v2 file", "content": {MEDIA_TYPE: {}}}},
)
def get_terminal_recording(session_id: str, ctx: Ctx, _: Admin) -> StreamingResponse:
    row = _session_row(ctx, session_id)
    if row.recording_deleted or not has_recording(ctx.engine, session_id):
        raise NotFound(f"terminal session {session_id} has no recording (none was made, or retention deleted it)")
    return StreamingResponse(
        read_cast(ctx.engine, session_id),
        media_type=MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{row.device_id}-{session_id}.cast"'},
    )
