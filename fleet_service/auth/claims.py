"""One-time claim tokens: a unit enrolls itself at install time without an admin token on the unit."""

from __future__ import annotations

import secrets

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from fleet_service.auth.models import ClaimToken
from fleet_service.devices.enrollment import BrokerCredentials, UnitExists, new_unit
from fleet_service.devices.models import Device
from fleet_service.devices.tags import set_tags
from fleet_service.errors import Unauthorized
from protocol.ids import now_ms
from protocol.secrets import fingerprint

__all__ = ["CLAIM_PREFIX", "ClaimRefused", "MAX_TTL_S", "create_claim_token", "redeem"]

CLAIM_PREFIX = "flc_"
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 30 * 24 * 3600


class ClaimRefused(Unauthorized):
    """The claim token is unknown, used or expired (deliberately not saying which)."""

    def __init__(self) -> None:
        super().__init__("the claim token is unknown, already used or expired")


def create_claim_token(
    engine: Engine, tags: list[str] | None = None, ttl_s: int = DEFAULT_TTL_S, created_by: str = ""
) -> tuple[ClaimToken, str]:
    """Store a new claim token (hashed); the plain token is returned to be shown once."""
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL_S} seconds")
    plain = CLAIM_PREFIX + secrets.token_urlsafe(24)
    now = now_ms()
    row = ClaimToken(
        id=secrets.token_hex(8),
        fingerprint=fingerprint(plain),
        tags=sorted(set(tags or [])),
        created_at=now,
        expires_at=now + ttl_s * 1000,
        created_by=created_by[:120],
    )
    with Session(engine, expire_on_commit=False) as s:
        s.add(row)
        s.commit()
    return row, plain


def redeem(
    engine: Engine, token: str, device_id: str, name: str = "", broker: BrokerCredentials | None = None
) -> tuple[Device, str, str]:
    """Use the token once to enroll `device_id` -> (unit, its secret, the claim token's id).

    ClaimRefused for a bad token, UnitExists for a taken id.

    The token is spent and the unit created in one transaction: a taken id leaves the token usable, and two
    units racing with the same token cannot both win (the conditional UPDATE matches one row at most).
    """
    if not isinstance(token, str) or not token.startswith(CLAIM_PREFIX) or len(token) > 100:
        raise ClaimRefused
    now = now_ms()
    fp = fingerprint(token)
    with Session(engine, expire_on_commit=False) as s:
        row = s.exec(
            update(ClaimToken)
            .where(
                col(ClaimToken.fingerprint) == fp, col(ClaimToken.used_at).is_(None), col(ClaimToken.expires_at) > now
            )
            .values(used_at=now, device_id=device_id)
            .returning(col(ClaimToken.id), col(ClaimToken.tags))
        ).first()
        if row is None:
            s.rollback()
            raise ClaimRefused
        device, credential, secret = new_unit(device_id, name)
        try:
            set_tags(s, device, list(row[1] or []))
            s.merge(credential)
            s.flush()
        except IntegrityError:
            s.rollback()
            raise UnitExists(device_id) from None
        if broker is not None:  # refused: nothing is committed, the token stays usable
            broker.put(device_id, secret, credential.password_hash, new=True)
        s.commit()
    return device, secret, row[0]
