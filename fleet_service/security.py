"""Who is calling: operator bearer tokens (roles), the bootstrap admin token, and unit Basic credentials."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_service.models import ApiToken, Device
from protocol.ids import now_ms
from protocol.secrets import fingerprint, hash_secret, verify_secret

ROLES = ("viewer", "operator", "admin")
# Checked for unknown names, so a miss costs as much time as a wrong secret.
DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))
TOKEN_PREFIX = "flt_"


def role_allows(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Identity:
    kind: str  # "token" | "bootstrap" | "user" | "device"
    name: str
    role: str  # operator role; units get "unit"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


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
    """Checks credentials; unit secrets use a slow hash, so verified pairs are cached briefly."""

    def __init__(self, engine: Engine, bootstrap_admin_token: str | None, cache_s: float = 300.0) -> None:
        self._engine = engine
        self._bootstrap = fingerprint(bootstrap_admin_token) if bootstrap_admin_token else None
        self._cache_s = cache_s
        self._device_cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def bearer(self, token: str) -> Identity | None:
        fp = fingerprint(token)
        if self._bootstrap and hmac.compare_digest(fp, self._bootstrap):
            return Identity("bootstrap", "admin", "admin")
        if not token.startswith(TOKEN_PREFIX):
            return None
        with Session(self._engine) as s:
            row = s.exec(select(ApiToken).where(ApiToken.fingerprint == fp)).first()
            if row is None or row.revoked or not hmac.compare_digest(row.fingerprint, fp):
                return None
            return Identity("token", row.name or row.id, row.role)

    def device(self, device_id: str, secret: str) -> Identity | None:
        key = hashlib.sha256(secret.encode()).hexdigest()
        with self._lock:
            cached = self._device_cache.get(device_id)
        if cached and cached[1] > time.monotonic() and hmac.compare_digest(cached[0], key):
            return Identity("device", device_id, "unit")
        with Session(self._engine) as s:
            row = s.get(Device, device_id)
            stored = row.secret_hash if row else DUMMY_HASH
        # An unknown unit costs the same slow hash as a wrong secret: timing does not tell which ids exist.
        if not verify_secret(secret, stored) or row is None:
            return None
        with self._lock:
            self._device_cache[device_id] = (key, time.monotonic() + self._cache_s)
        return Identity("device", device_id, "unit")

    def forget_device(self, device_id: str) -> None:
        with self._lock:
            self._device_cache.pop(device_id, None)
