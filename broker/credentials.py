"""Who may connect: the service account and enrolled units, checked against stored secret hashes."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from protocol.ids import SERVICE_USERNAME, is_device_id
from protocol.secrets import hash_secret, verify_secret

log = logging.getLogger(__name__)

CACHE_TTL_S = 60.0
CACHE_MAX_ENTRIES = 50_000


@dataclass(frozen=True)
class Principal:
    """An authenticated MQTT identity: the fleet service, or one unit by its device id."""

    kind: Literal["service", "unit"]
    name: str


SERVICE = Principal("service", SERVICE_USERNAME)


@runtime_checkable
class CredentialStore(Protocol):
    async def authenticate(self, username: str | None, password: str | None) -> Principal | None:
        """The principal for these credentials, or None when they are wrong, unknown or revoked."""
        ...


class _SecretStore(ABC):
    """Service-account check, unit-secret check in a worker thread, and a short positive cache."""

    def __init__(self, service_secret: str | None) -> None:
        self._service_secret = service_secret.encode() if service_secret else None
        self._cache: dict[tuple[str, bytes], float] = {}
        self._epoch = 0

    async def authenticate(self, username: str | None, password: str | None) -> Principal | None:
        if username is None or password is None:
            return None
        if username == SERVICE_USERNAME:
            if self._service_secret and hmac.compare_digest(password.encode(), self._service_secret):
                return SERVICE
            return None
        if not is_device_id(username):
            return None
        key = (username, hashlib.sha256(password.encode()).digest())
        expires = self._cache.get(key)
        if expires is not None and expires > time.monotonic():
            return Principal("unit", username)
        epoch = self._epoch
        if not await asyncio.to_thread(self._check_unit, username, password):
            return None
        if epoch == self._epoch:  # no forget() ran meanwhile, so the answer is still current
            self._remember(key)
        return Principal("unit", username)

    def forget(self, device_id: str) -> None:
        """Drop cached logins of a unit so a revocation or secret rotation applies to its next CONNECT."""
        self._epoch += 1
        for key in [k for k in self._cache if k[0] == device_id]:
            del self._cache[key]

    def _remember(self, key: tuple[str, bytes]) -> None:
        now = time.monotonic()
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            for stale in [k for k, exp in self._cache.items() if exp <= now]:
                del self._cache[stale]
            while len(self._cache) >= CACHE_MAX_ENTRIES:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = now + CACHE_TTL_S

    def _check_unit(self, device_id: str, password: str) -> bool:
        stored = self._secret_hash(device_id)
        # An unknown id costs the same slow hash as a known one, so timing does not tell which ids exist.
        return verify_secret(password, stored or _dummy_hash()) and stored is not None

    @abstractmethod
    def _secret_hash(self, device_id: str) -> str | None:
        """The stored hash of a unit's secret, or None for an unknown unit."""


class StaticCredentialStore(_SecretStore):
    """Units from a mapping of device id to secret hash; for tests and fixed set-ups."""

    def __init__(self, service_secret: str | None, units: Mapping[str, str] | None = None) -> None:
        super().__init__(service_secret)
        self._units: dict[str, str] = dict(units or {})
        self._lock = threading.Lock()

    def set_unit(self, device_id: str, secret_hash: str) -> None:
        with self._lock:
            self._units[device_id] = secret_hash
        self.forget(device_id)

    def remove_unit(self, device_id: str) -> None:
        with self._lock:
            self._units.pop(device_id, None)
        self.forget(device_id)

    def _secret_hash(self, device_id: str) -> str | None:
        with self._lock:
            return self._units.get(device_id)


class SqlCredentialStore(_SecretStore):
    """Units from the `device` table that fleet_service owns; a missing row means unknown or revoked."""

    _QUERY = text("SELECT secret_hash FROM device WHERE id = :id")

    def __init__(self, database_url: str, service_secret: str | None) -> None:
        super().__init__(service_secret)
        self._engine: Engine = create_engine(sync_url(database_url), pool_pre_ping=True)

    def _secret_hash(self, device_id: str) -> str | None:
        try:
            with self._engine.connect() as conn:
                value = conn.execute(self._QUERY, {"id": device_id}).scalar_one_or_none()
        except SQLAlchemyError as exc:  # e.g. the service has not created its tables yet
            log.warning("device lookup failed, refusing %s: %s", device_id, type(exc).__name__)
            return None
        return value if isinstance(value, str) else None

    def close(self) -> None:
        self._engine.dispose()


@functools.cache
def _dummy_hash() -> str:
    return hash_secret(secrets.token_urlsafe(16))


_ASYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}


def sync_url(database_url: str) -> str:
    """The same database through a synchronous driver (the service may be configured with an async one)."""
    url = make_url(database_url)
    driver = _ASYNC_DRIVERS.get(url.drivername)
    return url.set(drivername=driver).render_as_string(hide_password=False) if driver else database_url
