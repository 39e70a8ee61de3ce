"""Who is calling: operator bearer tokens (roles), the bootstrap admin token, and unit Basic credentials."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as select_columns
from sqlalchemy.engine import Engine, Row
from sqlmodel import Session, select

from fleet_service.auth.models import ApiToken
from fleet_service.db.core import table_of
from fleet_service.db.on_loop import LoopDatabase, LoopStatement
from fleet_service.devices.models import Device
from protocol.ids import now_ms
from protocol.secrets import PASSWORD_COST, Cost, fingerprint, hash_secret, verify_secret

ROLES = ("viewer", "operator", "admin")
# Checked for unknown unit ids, so a miss costs as much time as a wrong secret.
DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))
TOKEN_PREFIX = "flt_"


@functools.cache
def dummy_password_hash(cost: Cost = PASSWORD_COST) -> str:
    """Checked for unknown usernames, at the cost of a password hash: a miss costs as much as a wrong password.

    Made on first use, not at import: every `fleet` command imports this module, and the hash takes 128 MiB and
    up to half a second."""
    return hash_secret(secrets.token_urlsafe(16), cost)


def role_allows(role: str, needed: str) -> bool:
    """Whether `role` is `needed` or above; a unit's identity (role "unit") holds no operator role at all."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Identity:
    kind: str  # "token" | "bootstrap" | "user" | "device"
    name: str
    role: str  # operator role; units get "unit"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


_TOKEN_ROW = select_columns(table_of(ApiToken)).where(table_of(ApiToken).c.fingerprint == bindparam("fp"))
_LOOP_TOKEN_ROW = LoopStatement(_TOKEN_ROW)


def _token_identity(row: Row[Any] | None, fp: str) -> Identity | None:
    if row is None or row.revoked or not hmac.compare_digest(row.fingerprint, fp):
        return None
    return Identity("token", row.name or row.id, row.role)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(engine: Engine, role: str, name: str = "") -> tuple[ApiToken, str]:
    """Store a new API token (hashed) and return it with the plaintext, which is shown once."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    plain = new_token()
    row = ApiToken(id=secrets.token_hex(8), name=name, role=role, fingerprint=fingerprint(plain), created_at=now_ms())
    with Session(engine) as s:
        s.add(row)
        s.commit()
        s.refresh(row)
    return row, plain


def revoke_token(engine: Engine, token_id: str) -> bool:
    """Mark an API token revoked; False when no token has that id."""
    with Session(engine) as s:
        row = s.get(ApiToken, token_id)
        if row is None:
            return False
        row.revoked = True
        s.add(row)
        s.commit()
    return True


class Authenticator:
    """Checks credentials. Unit secrets use a slow hash, so a verified secret is cached briefly — together with the
    stored hash it matched, which every request reads again (one primary-key lookup): a unit deleted or re-keyed
    on any replica is refused on every replica at once, and the slow hash still runs once per secret."""

    def __init__(
        self,
        engine: Engine,
        bootstrap_admin_token: str | None,
        cache_s: float = 300.0,
        loop_db: LoopDatabase | None = None,
    ) -> None:
        self._engine = engine
        self._loop_db = loop_db  # PostgreSQL: a token is looked up by the event loop, not a worker thread
        self._bootstrap = fingerprint(bootstrap_admin_token) if bootstrap_admin_token else None
        self._cache_s = cache_s
        # device id -> (sha256 of the secret, the stored secret_hash it was verified against, expiry)
        self._device_cache: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()

    def bearer(self, token: str) -> Identity | None:
        fp = fingerprint(token)
        if not self._needs_lookup(token, fp):
            return self._without_lookup(fp)
        with self._engine.connect() as conn:
            return _token_identity(conn.execute(_TOKEN_ROW, {"fp": fp}).first(), fp)

    async def bearer_on_loop(self, token: str) -> Identity | None:
        """`bearer` for a request: on PostgreSQL the token's row is read by the event loop."""
        if self._loop_db is None:
            return await asyncio.to_thread(self.bearer, token)
        fp = fingerprint(token)
        if not self._needs_lookup(token, fp):
            return self._without_lookup(fp)
        rows = (await self._loop_db.run(_LOOP_TOKEN_ROW, {"fp": fp})).rows
        return _token_identity(rows[0] if rows else None, fp)

    def _needs_lookup(self, token: str, fp: str) -> bool:
        """False for the bootstrap token and for what is no API token at all (no database read for either)."""
        return token.startswith(TOKEN_PREFIX) and not self._is_bootstrap(fp)

    def _without_lookup(self, fp: str) -> Identity | None:
        return Identity("bootstrap", "admin", "admin") if self._is_bootstrap(fp) else None

    def _is_bootstrap(self, fp: str) -> bool:
        return self._bootstrap is not None and hmac.compare_digest(fp, self._bootstrap)

    def device(self, device_id: str, secret: str, *, verify: bool = True) -> Identity | None:
        """The unit for these credentials, or None. With `verify=False` only a cached verification counts: no slow
        hash runs (for a caller past its budget of failures)."""
        key = hashlib.sha256(secret.encode()).hexdigest()
        with Session(self._engine) as s:
            stored = s.exec(select(Device.secret_hash).where(Device.id == device_id)).first()
        with self._lock:
            cached = self._device_cache.get(device_id)
        if (
            stored is not None
            and cached is not None
            and cached[2] > time.monotonic()
            and hmac.compare_digest(cached[0], key)
            and hmac.compare_digest(cached[1], stored)
        ):
            return Identity("device", device_id, "unit")
        if not verify:
            return None
        # An unknown unit costs the same slow hash as a wrong secret: timing does not tell which ids exist.
        if not verify_secret(secret, stored if stored is not None else DUMMY_HASH) or stored is None:
            return None
        with self._lock:
            self._device_cache[device_id] = (key, stored, time.monotonic() + self._cache_s)
        return Identity("device", device_id, "unit")

    def forget_device(self, device_id: str) -> None:
        with self._lock:
            self._device_cache.pop(device_id, None)
