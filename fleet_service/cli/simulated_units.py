"""The database path of `fleet simulate`: enroll simulated units directly in the service's database (when no
--api-url is given), for the simulator, which knows only the wire protocol and the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, col

from fleet_service.devices.enrollment import UnitExists, enroll, rotate_secret
from fleet_service.devices.models import Device
from simulator.enroll import SIM_TAG, EnrollIds, Progress, SecretCache, ensure_units


def enroll_in_database(open_engine: Callable[[], Engine]) -> EnrollIds:
    """The simulator's "enroll these ids in the database, return their secrets": opens the database only when
    called (with --api-url it never is) and caches the secrets under the database's URL (password hidden)."""

    def run(ids: list[str], cache_path: Path, progress: Progress) -> dict[str, str]:
        engine = open_engine()
        cache = SecretCache(cache_path, database_target(engine))
        secrets = ensure_in_database(engine, ids, cache, progress)
        engine.dispose()
        return secrets

    return run


def database_target(engine: Engine) -> str:
    return make_url(str(engine.url)).render_as_string(hide_password=True)


def ensure_in_database(
    engine: Engine, ids: list[str], cache: SecretCache, progress: Progress | None = None
) -> dict[str, str]:
    """Enroll the missing units directly in the database (hashing in parallel threads); return all secrets."""
    return ensure_units(_DatabaseUnits(engine), ids, cache, progress)


class _DatabaseUnits:
    """The service's database as the simulator's `UnitRegistry`."""

    where = "in the database"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def existing(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        with Session(self._engine) as s:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                found.update(s.execute(select(col(Device.id)).where(col(Device.id).in_(chunk))).scalars())
        return found

    def fresh_secret(self, device_id: str, exists: bool) -> str | None:
        if not exists:
            try:
                return enroll(self._engine, device_id, "", [SIM_TAG])[1]
            except UnitExists:
                pass  # created meanwhile by someone else: take it over with a new secret
        return rotate_secret(self._engine, device_id)
