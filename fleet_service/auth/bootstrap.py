"""First start: make sure an operator can get in (FLEET_ADMIN_TOKEN, or a generated admin token shown once)."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_service.auth.credentials import create_token
from fleet_service.auth.models import ApiToken


def ensure_admin_token(engine: Engine, configured: str | None) -> str | None:
    """Return a newly generated admin token when none exists yet (to print once), else None."""
    if configured:
        return None
    with Session(engine) as s:
        exists = s.exec(select(ApiToken).where(ApiToken.role == "admin", ApiToken.revoked == False)).first()  # noqa: E712
    if exists:
        return None
    _, plain = create_token(engine, "admin", "bootstrap")
    return plain
