"""The way from the dashboard to a unit's web UI on the unit's own origin, in the database so any replica honours it.

The dashboard's origin answers `/api/devices/{id}/proxy/{port}/...` for a signed-in browser with a one-time ticket
(good for a minute, for one unit port's origin) and a redirect there. The unit origin exchanges the ticket for a
cookie of its own host. That cookie names the dashboard session it came from: signing out, the session expiring
or the user losing the role ends it too. Tickets and cookies are random and stored only as their SHA-256.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_service.db.core import table_of
from fleet_service.terminal.models import UnitUiGrant
from protocol.ids import now_ms
from protocol.secrets import fingerprint

__all__ = [
    "COOKIE_MS",
    "COOKIE_NAME",
    "SECURE_COOKIE_NAME",
    "TICKET_MS",
    "Grant",
    "delete_expired",
    "mint_ticket",
    "redeem_ticket",
    "resolve_cookie",
]

COOKIE_NAME = "fleet_unit_ui"
SECURE_COOKIE_NAME = "__Host-fleet_unit_ui"  # over HTTPS: no other host can set or shadow it
TICKET_MS = 60_000
COOKIE_MS = 12 * 3600 * 1000  # at most; the dashboard session it came from may end sooner
_MAX_TOKEN = 200


@dataclass(frozen=True)
class Grant:
    web_session_id: str
    device_id: str
    port: int
    label: str


def mint_ticket(engine: Engine, web_session_id: str, device_id: str, port: int, label: str) -> str:
    ticket, row = _new("ticket", Grant(web_session_id, device_id, port, label), TICKET_MS)
    with Session(engine) as s:
        s.add(row)
        s.commit()
    return ticket


def _new(kind: str, grant: Grant, lifetime_ms: int) -> tuple[str, UnitUiGrant]:
    token, now = secrets.token_urlsafe(32), now_ms()
    row = UnitUiGrant(
        id=fingerprint(token),
        kind=kind,
        web_session_id=grant.web_session_id,
        device_id=grant.device_id,
        port=grant.port,
        label=grant.label,
        created_at=now,
        expires_at=now + lifetime_ms,
    )
    return token, row


def redeem_ticket(engine: Engine, ticket: str, label: str) -> str | None:
    """The cookie value for `ticket` on the origin `label`, once; None for a used, expired, foreign or made-up one."""
    if not ticket or len(ticket) > _MAX_TOKEN:
        return None
    key, now = fingerprint(ticket), now_ms()
    grants = table_of(UnitUiGrant)
    with Session(engine) as s:
        taken = s.execute(  # one replica wins a race for the same ticket
            update(grants)
            .where(
                grants.c.id == key,
                grants.c.kind == "ticket",
                grants.c.used_at.is_(None),
                grants.c.expires_at > now,
                grants.c.label == label,
            )
            .values(used_at=now)
        )
        if not getattr(taken, "rowcount", 0):
            s.rollback()
            return None
        row = s.get(UnitUiGrant, key)
        assert row is not None
        cookie, cookie_row = _new("cookie", Grant(row.web_session_id, row.device_id, row.port, label), COOKIE_MS)
        s.add(cookie_row)
        s.commit()
    return cookie


def resolve_cookie(engine: Engine, cookie: str, label: str) -> Grant | None:
    """What the unit origin `label`'s cookie grants, or None (unknown, expired, or another origin's)."""
    if not cookie or len(cookie) > _MAX_TOKEN:
        return None
    key = fingerprint(cookie)
    with Session(engine) as s:
        row = s.get(UnitUiGrant, key)
    if row is None or row.kind != "cookie" or row.expires_at <= now_ms():
        return None
    if not hmac.compare_digest(row.label.encode(), label.encode()):
        return None
    return Grant(row.web_session_id, row.device_id, row.port, row.label)


def delete_expired(engine: Engine, before_ms: int) -> int:
    grants = table_of(UnitUiGrant)
    with Session(engine) as s:
        result = s.execute(delete(grants).where(grants.c.expires_at < before_ms))
        s.commit()
    return int(getattr(result, "rowcount", 0) or 0)
