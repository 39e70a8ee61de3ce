"""Credentials of simulated units: enroll the missing ones and keep their secrets in a cache file.

Units are enrolled through the fleet HTTP API (`ensure_via_api`) or in any other `UnitRegistry`, such as the
service's database, which the service side hands in (the simulator itself knows only the wire protocol and the API).
Secrets are cached per target (API URL or database) in a JSON file readable by its owner only, so later runs
reuse them instead of enrolling again. A unit that exists but whose secret is not cached gets a new secret.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import httpx

log = logging.getLogger(__name__)
SIM_TAG = "simulated"
_HASH_THREADS = max(2, os.cpu_count() or 2)  # hashlib.scrypt releases the GIL

Progress = Callable[[int], None]
# Enroll these ids (in the service's database), caching their secrets in this file; return their secrets.
EnrollIds = Callable[[list[str], Path, Progress], dict[str, str]]


class EnrollmentError(Exception):
    """Simulated units could not be enrolled; the message says why."""


class SecretCache:
    """`{"targets": {target: {device_id: secret}}}` in a file of mode 0600."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self._all: dict[str, dict[str, str]] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                self._all = {str(k): dict(v) for k, v in data.get("targets", {}).items()}
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                raise EnrollmentError(f"cannot read the secrets cache {path}: {exc}") from exc

    @property
    def secrets(self) -> dict[str, str]:
        return self._all.setdefault(self.target, {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": 1, "targets": self._all}, fh)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def unit_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(1, count + 1)]


class UnitRegistry(Protocol):
    """Where simulated units are enrolled. `fresh_secret` is called from several threads at once."""

    where: str  # for the log: "in the database", "through https://..."

    def existing(self, ids: list[str]) -> set[str]:
        """Which of these units exist already."""
        ...

    def fresh_secret(self, device_id: str, exists: bool) -> str | None:
        """Enroll the unit (or, when it exists, give it a new secret); its secret, None when it vanished."""
        ...


def ensure_units(
    registry: UnitRegistry, ids: list[str], cache: SecretCache, progress: Progress | None = None
) -> dict[str, str]:
    """Enroll the missing units and re-key those whose secret is not cached (in parallel threads, saving the cache
    as it goes); return the secrets of all `ids`."""
    existing = registry.existing(ids)
    known = cache.secrets
    todo = [i for i in ids if i not in existing or i not in known]
    if not todo:
        return {i: known[i] for i in ids}
    log.info("enrolling %d simulated units %s (%d already known)", len(todo), registry.where, len(ids) - len(todo))
    _run_parallel(
        lambda device_id: (device_id, registry.fresh_secret(device_id, device_id in existing)), todo, cache, progress
    )
    return {i: known[i] for i in ids}


def ensure_via_api(
    api_url: str, token: str, prefix: str, ids: list[str], cache: SecretCache, progress: Progress | None = None
) -> dict[str, str]:
    """Enroll the missing units through `POST /api/devices` (so a service that manages broker credentials
    sees them); an existing unit without a cached secret is re-keyed with `rotate-secret`."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=60) as api:
        return ensure_units(_ApiUnits(api, api_url, prefix), ids, cache, progress)


class _ApiUnits:
    """The fleet HTTP API as a `UnitRegistry` (an admin token is needed)."""

    def __init__(self, api: httpx.Client, api_url: str, prefix: str) -> None:
        self._api = api
        self._prefix = prefix
        self.where = f"through {api_url}"

    def existing(self, ids: list[str]) -> set[str]:  # noqa: ARG002 (the API lists by prefix, one page walk)
        return _existing_via_api(self._api, self._prefix)

    def fresh_secret(self, device_id: str, exists: bool) -> str | None:
        api = self._api
        if not exists:
            r = api.post("/api/devices", json={"id": device_id, "tags": [SIM_TAG]})
            if r.status_code == 201:
                return r.json()["secret"]
            if r.status_code != 409:
                raise EnrollmentError(f"POST /api/devices for {device_id}: {r.status_code} {r.text[:200]}")
        r = api.post(f"/api/devices/{device_id}/rotate-secret")
        if r.status_code != 200:
            raise EnrollmentError(f"rotate-secret for {device_id}: {r.status_code} {r.text[:200]}")
        return r.json()["secret"]


def _existing_via_api(api: httpx.Client, prefix: str) -> set[str]:
    found: set[str] = set()
    offset = 0
    while True:
        try:
            r = api.get("/api/devices", params={"q": prefix, "limit": 1000, "offset": offset, "sort": "id"})
        except httpx.HTTPError as exc:
            raise EnrollmentError(f"the fleet API is not reachable: {exc}") from exc
        if r.status_code in (401, 403):
            raise EnrollmentError(f"the fleet API refused the token ({r.status_code}); an admin token is needed")
        if r.status_code != 200:
            raise EnrollmentError(f"GET /api/devices: {r.status_code} {r.text[:200]}")
        items = r.json()["items"]
        found.update(d["id"] for d in items)
        if len(items) < 1000:
            return found
        offset += len(items)


def _run_parallel(
    one: Callable[[str], tuple[str, str | None]], todo: Iterable[str], cache: SecretCache, progress: Progress | None
) -> None:
    done = 0
    with ThreadPoolExecutor(_HASH_THREADS * 2, thread_name_prefix="sim-enroll") as pool:
        try:
            for device_id, secret in pool.map(one, todo):
                if secret is None:
                    raise EnrollmentError(f"unit {device_id} vanished while it was being enrolled")
                cache.secrets[device_id] = secret
                done += 1
                if done % 200 == 0:
                    cache.save()  # an interrupted run keeps what it enrolled
                    if progress:
                        progress(done)
        finally:
            cache.save()
