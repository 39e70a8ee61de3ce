"""A Mosquitto 2.x managed by the service through files (FLEET_MOSQUITTO_AUTH=files, the default): its password
and ACL files, rendered from the database, and the dynamic security plugin that limits what units may subscribe
to. (With FLEET_MOSQUITTO_AUTH=dynsec the plugin holds the passwords instead: plugin_auth.py.)

Every enrollment stores the unit's secret also in Mosquitto's own hash format (`$7$`: PBKDF2-SHA512, the
`mosquitto_passwd` default), the only moment the plain secret exists. So any replica (or `fleet mosquitto
sync`) can rewrite the files from the database alone, under a file lock, then SIGHUP the broker: a new unit
may connect, a rotated secret replaces the old one, and a revoked unit is cut off, all without a restart.

Two listeners (deploy/mosquitto/mosquitto.conf, `per_listener_settings true`): the units' one reads `passwd` and
`acl` and loads the dynamic security plugin; the service's one reads `service-passwd` and `service-acl`, which
hold the service account only, so no unit credential is accepted there.

The dynamic security plugin (mosquitto.dynsec) limits what units may subscribe to: with FLEET_MOSQUITTO_DYNSEC_URL
set, fail closed: a unit enters `passwd` only once the plugin knows it; a revoked unit leaves `passwd` (SIGHUP)
before it is disabled in the plugin, and is deleted there on a later pass. Without it only the files are kept
(the fallback: units may then join `$share` groups).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.devices.models import Device
from fleet_service.mosquitto.acl import acl_text, dynsec_config, service_acl_text
from fleet_service.mosquitto.dynsec import (
    DYNSEC_FILE,
    DynsecAdmin,
    DynsecState,
    dynsec_target,
    grant_commands,
    revoke_commands,
    service_account,
)
from fleet_service.mosquitto.errors import MosquittoError
from fleet_service.mosquitto.models import BrokerCredential
from fleet_service.settings import BrokerTarget, ServiceSettings
from protocol.ids import is_device_id

__all__ = ["MosquittoError", "MosquittoFiles", "MosquittoManager", "password_hash", "password_matches"]

log = logging.getLogger(__name__)

ITERATIONS = 101  # what mosquitto_passwd writes; the secrets are 256-bit random, so this is not the defence
SALT_BYTES = 12
RESYNC_S = 300.0  # a safety net: repair the files if a write was lost or made by hand


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
        actual = hashlib.pbkdf2_hmac("sha512", secret.encode(), base64.b64decode(salt), int(iterations), len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


class MosquittoFiles:
    """Writes the files (atomically, only when they change), keeps the plugin's units and sends SIGHUP."""

    def __init__(
        self,
        engine: Engine,
        password_file: Path,
        acl_file: Path,
        pid_file: Path | None,
        service_username: str,
        service_password: str,
        dynsec: BrokerTarget | None = None,
    ) -> None:
        self.engine = engine
        self.password_file = Path(password_file)
        self.acl_file = Path(acl_file)
        self.service_password_file = self.password_file.with_name("service-" + self.password_file.name)
        self.service_acl_file = self.acl_file.with_name("service-" + self.acl_file.name)
        self.dynsec_file = self.password_file.with_name(DYNSEC_FILE)
        self.pid_file = Path(pid_file) if pid_file else None
        self.service_username = service_username
        self._service_password = service_password
        self.dynsec = DynsecAdmin(dynsec, service_username, service_password) if dynsec else None
        self.reloads = 0
        self.failures = 0
        self._warned_files_only = False

    @classmethod
    def from_settings(cls, settings: ServiceSettings, engine: Engine) -> MosquittoFiles:
        username, password = service_account(settings, "a managed Mosquitto")
        password_file, acl_file = settings.mosquitto_password_file, settings.mosquitto_acl_file
        if password_file is None or acl_file is None:  # callers check mosquitto_managed first
            raise MosquittoError("a managed Mosquitto needs FLEET_MOSQUITTO_PASSWORD_FILE and FLEET_MOSQUITTO_ACL_FILE")
        return cls(
            engine,
            password_file,
            acl_file,
            settings.mosquitto_pid_file,
            username,
            password,
            dynsec_target(settings),
        )

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

    def _existing_entries(self, path: Path) -> dict[str, str]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return {}
        entries = {}
        for line in text.splitlines():
            user, sep, stored = line.partition(":")
            if sep:
                entries[user] = stored
        return entries

    def _units(self) -> list[tuple[str, str]]:
        with Session(self.engine) as s:
            rows = s.exec(
                select(BrokerCredential.device_id, BrokerCredential.password_hash)
                .join(Device, col(Device.id) == col(BrokerCredential.device_id))
                .order_by(col(BrokerCredential.device_id))
            ).all()
        return [(device_id, stored) for device_id, stored in rows if is_device_id(device_id)]

    def _service_line(self, path: Path) -> str:
        service_hash = self._existing_entries(path).get(self.service_username, "")
        if not password_matches(self._service_password, service_hash):
            service_hash = password_hash(self._service_password)  # keep the old line when it is still right
        return f"{self.service_username}:{service_hash}"

    def render_passwords(self, units: list[tuple[str, str]] | None = None, allowed: set[str] | None = None) -> str:
        """The units' listener: the service account (it manages the plugin there) and the units (only those in
        `allowed` when given)."""
        units = self._units() if units is None else units
        lines = [self._service_line(self.password_file)]
        lines += [f"{device_id}:{stored}" for device_id, stored in units if allowed is None or device_id in allowed]
        return "\n".join(lines) + "\n"

    def sync(self, force_reload: bool = False) -> bool:
        """Bring the files and the plugin up to date with the database; reload the broker when a file changed."""
        try:
            with self._locked():
                units = self._units()
                device_ids = [d for d, _ in units]
                state = self._dynsec_state() if self.dynsec else None
                allowed = self._grant(state, device_ids) if self.dynsec else None
                if self.dynsec is None and not self._warned_files_only:
                    self._warned_files_only = True
                    log.warning(
                        "managed Mosquitto without the dynamic security plugin (no "
                        "FLEET_MOSQUITTO_DYNSEC_URL): Mosquitto cannot refuse a unit's subscriptions, "
                        "`$share` ones included"
                    )
                changed = write_if_changed(self.password_file, self.render_passwords(units, allowed))
                changed = (
                    write_if_changed(self.acl_file, acl_text(self.service_username, dynsec=self.dynsec is not None))
                    or changed
                )
                changed = (
                    write_if_changed(self.service_password_file, self._service_line(self.service_password_file) + "\n")
                    or changed
                )
                changed = write_if_changed(self.service_acl_file, service_acl_text(self.service_username)) or changed
                if changed or force_reload:
                    self.reload()
                if state is not None:
                    self._revoke(state, device_ids)
        except OSError as exc:
            self.failures += 1
            raise MosquittoError(f"cannot write the Mosquitto files: {exc}") from exc
        return changed

    def _dynsec_state(self) -> DynsecState | None:
        try:
            return DynsecState.parse(self.dynsec_file.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, AttributeError, TypeError) as exc:
            self.failures += 1
            raise MosquittoError(f"cannot read {self.dynsec_file}: {exc}") from exc

    def _broker_stopped(self) -> bool:
        """Not started yet (the PID file is written when it starts): its plugin will read the file."""
        return self.pid_file is not None and not self.pid_file.exists()

    def _grant(self, state: DynsecState | None, device_ids: list[str]) -> set[str]:
        """Make the plugin know every enrolled unit; answer the units it does know (the only ones let in)."""
        assert self.dynsec is not None
        groups = grant_commands(state or DynsecState(), device_ids)
        if not groups:
            return (state or DynsecState()).grants(device_ids)
        try:
            self._run(groups)
        except MosquittoError as exc:
            if state is None or self._broker_stopped():
                write_if_changed(self.dynsec_file, json.dumps(dynsec_config(device_ids), indent=1) + "\n")
                return set(device_ids)
            self.failures += 1
            log.error("units not added to the dynamic security plugin (they cannot log in yet): %s", exc)
            return state.grants(device_ids)
        after = self._dynsec_state() or DynsecState()
        missing = sorted(set(device_ids) - after.grants(device_ids))
        if missing:
            self.failures += 1
            log.error(
                "the dynamic security plugin did not take %d unit(s), e.g. %s: they cannot log in yet",
                len(missing),
                missing[:5],
            )
        return after.grants(device_ids)

    def _revoke(self, state: DynsecState, device_ids: list[str]) -> None:
        groups = revoke_commands(state, device_ids)
        if not groups or self._broker_stopped():
            return  # a stopped broker got the whole file from _grant
        try:
            self._run(groups)
        except MosquittoError as exc:
            self.failures += 1  # the units are out of passwd already: they cannot log in
            log.error("revoked units not yet removed from the dynamic security plugin: %s", exc)

    def _run(self, groups: list[list[dict[str, Any]]]) -> None:
        assert self.dynsec is not None
        commands = [c for group in groups for c in group]
        for command, answer in zip(commands, self.dynsec.run(groups), strict=True):
            if answer.get("error"):
                log.warning(
                    "dynamic security %s %s: %s",
                    command["command"],
                    command.get("username") or command.get("rolename") or "",
                    answer["error"],
                )

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


def write_if_changed(path: Path, text: str) -> bool:
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
