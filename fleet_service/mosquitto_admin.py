"""A Mosquitto 2.x managed by the service: its `password_file` and `acl_file`, rendered from the database.

Every enrollment stores the unit's secret also in Mosquitto's own hash format (`$7$`: PBKDF2-SHA512, the
`mosquitto_passwd` default), the only moment the plain secret exists. So any replica (or `fleet mosquitto
sync`) can rewrite both files from the database alone, under a file lock, then SIGHUP the broker: a new unit
may connect, a rotated secret replaces the old one, and a revoked unit is cut off, all without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.config import BrokerTarget, ServiceSettings
from fleet_service.models import BrokerCredential, Device
from fleet_service.mosquitto_acl import acl_text
from protocol.ids import is_device_id

__all__ = ["MosquittoError", "MosquittoFiles", "MosquittoManager", "password_hash", "password_matches"]

log = logging.getLogger(__name__)

ITERATIONS = 101  # what mosquitto_passwd writes; the secrets are 256-bit random, so this is not the defence
SALT_BYTES = 12
RESYNC_S = 300.0  # a safety net: repair the files if a write was lost or made by hand


class MosquittoError(RuntimeError):
    """The managed Mosquitto's files could not be written or the broker could not be told to reload."""


def password_hash(secret: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_matches(secret: str, stored: str) -> bool:
    try:
        _, kind, iterations, salt, digest = stored.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac("sha512", secret.encode(), base64.b64decode(salt), int(iterations),
                                     len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


class MosquittoFiles:
    """Writes the two files (atomically, only when they change) and sends SIGHUP to the broker."""

    def __init__(self, engine: Engine, password_file: Path, acl_file: Path, pid_file: Path | None,
                 service_username: str, service_password: str) -> None:
        self.engine = engine
        self.password_file = Path(password_file)
        self.acl_file = Path(acl_file)
        self.pid_file = Path(pid_file) if pid_file else None
        self.service_username = service_username
        self._service_password = service_password
        self.reloads = 0
        self.failures = 0

    @classmethod
    def from_settings(cls, settings: ServiceSettings, engine: Engine) -> MosquittoFiles:
        target = BrokerTarget(settings.broker_url) if settings.broker_url else None
        if target is None or not target.password:
            raise MosquittoError("a managed Mosquitto needs the service's password in FLEET_BROKER_URL "
                                 "(mqtt://_fleet_service:PASSWORD@host:port)")
        return cls(engine, settings.mosquitto_password_file, settings.mosquitto_acl_file,
                   settings.mosquitto_pid_file, target.username, target.password)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.password_file.with_name(self.password_file.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # replicas sharing the files take turns
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _existing_entries(self) -> dict[str, str]:
        try:
            text = self.password_file.read_text()
        except FileNotFoundError:
            return {}
        entries = {}
        for line in text.splitlines():
            user, sep, stored = line.partition(":")
            if sep:
                entries[user] = stored
        return entries

    def render_passwords(self) -> str:
        with Session(self.engine) as s:
            rows = s.exec(select(BrokerCredential.device_id, BrokerCredential.password_hash)
                          .join(Device, col(Device.id) == col(BrokerCredential.device_id))
                          .order_by(col(BrokerCredential.device_id))).all()
        service_hash = self._existing_entries().get(self.service_username, "")
        if not password_matches(self._service_password, service_hash):
            service_hash = password_hash(self._service_password)  # keep the old line when it is still right
        lines = [f"{self.service_username}:{service_hash}"]
        lines += [f"{device_id}:{stored}" for device_id, stored in rows if is_device_id(device_id)]
        return "\n".join(lines) + "\n"

    def sync(self, force_reload: bool = False) -> bool:
        """Bring both files up to date with the database; reload the broker when one changed."""
        try:
            with self._locked():
                changed = _write_if_changed(self.password_file, self.render_passwords())
                changed = _write_if_changed(self.acl_file, acl_text(self.service_username)) or changed
        except OSError as exc:
            self.failures += 1
            raise MosquittoError(f"cannot write the Mosquitto files: {exc}") from exc
        if changed or force_reload:
            self.reload()
        return changed

    def reload(self) -> None:
        if self.pid_file is None:
            return
        try:
            pid = int(self.pid_file.read_text().strip())
        except FileNotFoundError:
            # Not started yet (e.g. `fleet mosquitto sync` before the broker): it reads the files when it starts.
            log.warning("no Mosquitto PID file at %s: the broker was not told to reload", self.pid_file)
            return
        except (OSError, ValueError) as exc:
            self.failures += 1
            raise MosquittoError(f"cannot read the Mosquitto PID file {self.pid_file}: {exc}") from exc
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            self.failures += 1
            raise MosquittoError(f"cannot signal Mosquitto (pid file {self.pid_file}): {exc}") from exc
        self.reloads += 1
        log.info("managed Mosquitto told to reload its password and ACL files")


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        os.fchmod(fh.fileno(), 0o640)
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return True


class MosquittoManager:
    """Async front: concurrent changes share one rewrite; each caller returns once its change is applied."""

    def __init__(self, files: MosquittoFiles) -> None:
        self.files = files
        self._lock = asyncio.Lock()
        self._requested = 0
        self._applied = 0

    async def apply(self) -> bool:
        """Rewrite the files for every change committed before this call; False when that failed (logged)."""
        self._requested += 1
        mine = self._requested
        async with self._lock:
            if self._applied >= mine:
                return True
            upto = self._requested
            try:
                await asyncio.to_thread(self.files.sync)
            except MosquittoError as exc:
                log.error("managed Mosquitto not updated: %s", exc)
                return False
            self._applied = upto
            return True

    async def run(self, interval_s: float = RESYNC_S) -> None:
        """Initial sync (with a reload, for a broker started before us), then a periodic repair."""
        force = True
        while True:
            try:
                await asyncio.to_thread(self.files.sync, force)
                force = False
            except MosquittoError as exc:
                log.error("managed Mosquitto sync failed: %s", exc)
            await asyncio.sleep(interval_s)
