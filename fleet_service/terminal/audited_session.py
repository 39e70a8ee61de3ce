"""The two ends every operator-facing remote session shares (a remote shell's bridge, a TCP stream).

Opening: the unit is asked through the hub (a Refused when the broker is away) and the session gets its row
in `terminal_session`: who asked, with which role, from where, on which replica. Ending: the unit is told (unless
it ended the session itself), the session is released from the hub once that CLOSE went out, and the row gets the
bytes each way and how the session ended. The frames in between are ServiceSession's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from fleet_service.broker_link.base import BrokerUnavailable
from fleet_service.refusals import CLOSE_BROKER_DOWN, refused
from fleet_service.terminal.audit import end_row
from fleet_service.terminal.hub import TerminalHub
from fleet_service.terminal.models import TerminalSession
from fleet_service.terminal.session import ServiceSession
from protocol.ids import now_ms
from protocol.terminal import Close, CloseReason, Open

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who opens a session, as its audit row records them."""

    device_id: str
    actor: str
    role: str
    source_ip: str
    replica: str


async def open_on_unit(hub: TerminalHub, caller: Caller, opening: Open) -> ServiceSession:
    """Send OPEN to the caller's unit; a Refused (CLOSE_BROKER_DOWN) when the broker is unavailable."""
    try:
        return await hub.open(caller.device_id, opening)
    except BrokerUnavailable:
        raise refused(CLOSE_BROKER_DOWN, "the broker is unavailable") from None


def audit_row(session: ServiceSession, caller: Caller, **fields: Any) -> TerminalSession:
    """The session's row as it starts; `fields` are what its kind adds (kind, port, command, size)."""
    return TerminalSession(
        id=session.sid,
        device_id=caller.device_id,
        actor=caller.actor,
        role=caller.role,
        source_ip=caller.source_ip[:64],
        replica=caller.replica[:80],
        started_at=now_ms(),
        **fields,
    )


async def close_and_release(hub: TerminalHub, session: ServiceSession, close: Close | None = None) -> Close:
    """End the session from this side unless it has ended (the unit is told `close`, by default that the operator
    closed it), wait for that CLOSE to go out and release the session from the hub; how the session ended."""
    await session.close(close or Close(CloseReason.OPERATOR, None, "closed by the operator"))
    final = session.ended
    assert final is not None
    await session.flush()
    await hub.release(session)
    return final


async def end_audit(
    engine: Engine, session: ServiceSession, final: Close, name: str, where: str, **values: Any
) -> None:
    """Write the session's end to its row (a failure is logged, not raised) and log it. `name` and `where` say in
    the log what it was ("terminal session", "on UNIT"); `values` are what its kind adds (exit status, recording)."""
    try:
        await asyncio.to_thread(
            end_row,
            engine,
            session.sid,
            bytes_in=session.bytes_in,
            bytes_out=session.consumed,
            close_reason=final.reason.name.lower(),
            close_message=final.message[:1000],
            **values,
        )
    except Exception:
        log.exception("ending the audit row of %s %s failed", name, session.sid[:8])
    log.info(
        "%s %s %s ended: %s (in %d B, out %d B)",
        name,
        session.sid[:8],
        where,
        final.message or final.reason.name,
        session.bytes_in,
        session.consumed,
    )
