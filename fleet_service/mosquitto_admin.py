"""A Mosquitto 2.x managed by the service: its password and ACL files, rendered from the database, and the
dynamic security plugin that limits what units may subscribe to.

Every enrollment stores the unit's secret also in Mosquitto's own hash format (`$7$`: PBKDF2-SHA512, the
`mosquitto_passwd` default), the only moment the plain secret exists. So any replica (or `fleet mosquitto
sync`) can rewrite the files from the database alone, under a file lock, then SIGHUP the broker: a new unit
may connect, a rotated secret replaces the old one, and a revoked unit is cut off, all without a restart.

Two listeners (deploy/mosquitto/mosquitto.conf, `per_listener_settings true`): the units' one reads `passwd` and
`acl` and loads the dynamic security plugin; the service's one reads `service-passwd` and `service-acl`, which
hold the service account only, so no unit credential is accepted there.

Mosquitto 2.0 never checks SUBSCRIBE against `acl_file` (see mosquitto_acl), so with `?dynsec=URL` on the broker
URL (the units' listener, e.g. `mqtt://_fleet_service:PW@mosquitto:1884?dynsec=mqtts://example.org:8883`) the
service also keeps one dynamic security client and role per unit, over `$CONTROL/dynamic-security/v1` on that
listener (the plugin reads its file only at start; while the broker is stopped the file is written directly).
Fail closed: a unit enters `passwd` only once the plugin knows it; a revoked unit leaves `passwd` (SIGHUP) before
it is disabled in the plugin, and is deleted there on a later pass. Without `?dynsec=` only the files are kept
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
import queue
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.config import BrokerTarget, ServiceSettings
from fleet_service.models import BrokerCredential, Device
from fleet_service.mosquitto_acl import (
    DEFAULT_ACL_ACCESS,
    ROLE_PREFIX,
    acl_key,
    acl_text,
    dynsec_config,
    role_name,
    service_acl_text,
    unit_acls,
    unit_client,
)
from protocol.ids import is_device_id

__all__ = ["DYNSEC_FILE", "DYNSEC_TOPIC", "MosquittoError", "MosquittoFiles", "MosquittoManager", "dynsec_target",
           "password_hash", "password_matches"]

log = logging.getLogger(__name__)

ITERATIONS = 101  # what mosquitto_passwd writes; the secrets are 256-bit random, so this is not the defence
SALT_BYTES = 12
RESYNC_S = 300.0  # a safety net: repair the files if a write was lost or made by hand
DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"
DYNSEC_RESPONSE_TOPIC = DYNSEC_TOPIC + "/response"
DYNSEC_FILE = "dynamic-security.json"
DYNSEC_BATCH = 100  # commands per request (the plugin saves its file after each change)
DYNSEC_TIMEOUT_S = 10.0


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


def dynsec_target(broker_url: str) -> BrokerTarget | None:
    """The units' listener named by `?dynsec=` on the service's broker URL, or None (files only)."""
    values = parse_qs(urlsplit(broker_url).query).get("dynsec")
    if not values:
        return None
    try:
        return BrokerTarget(values[-1])
    except ValueError:
        raise MosquittoError("the dynsec= option of FLEET_BROKER_URL must look like mqtt[s]://host:port") from None


@dataclass
class DynsecState:
    """What the plugin's file says: its clients (username -> entry) and roles (rolename -> rules)."""

    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    default_access: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> DynsecState:
        data = json.loads(text) if text.strip() else {}
        clients = {c["username"]: c for c in data.get("clients") or [] if isinstance(c.get("username"), str)}
        roles = {r["rolename"]: list(r.get("acls") or []) for r in data.get("roles") or []
                 if isinstance(r.get("rolename"), str)}
        access = {k: bool(v) for k, v in (data.get("defaultACLAccess") or {}).items()}
        return cls(clients, roles, access)

    def role_ok(self, device_id: str) -> bool:
        acls = self.roles.get(role_name(device_id))
        return acls is not None and acl_key(acls) == acl_key(unit_acls(device_id))

    def client_ok(self, device_id: str) -> bool:
        client = self.clients.get(device_id)
        return (client is not None and not client.get("disabled") and not client.get("password")
                and _role_names(client) == {role_name(device_id)} and not _group_names(client))

    def grants(self, device_ids: list[str]) -> set[str]:
        """The units whose subscriptions the plugin limits as it should: only these may log in."""
        return {d for d in device_ids if self.client_ok(d) and self.role_ok(d)}


def _role_names(client: dict[str, Any]) -> set[str]:
    return {r.get("rolename") for r in client.get("roles") or [] if isinstance(r, dict)}


def _group_names(client: dict[str, Any]) -> set[str]:
    return {g.get("groupname") for g in client.get("groups") or [] if isinstance(g, dict)}


def grant_commands(state: DynsecState, device_ids: list[str]) -> list[list[dict[str, Any]]]:
    """Commands that make the plugin know every unit in `device_ids`, with its own role and nothing more.

    One group per unit, sent in one request: the plugin runs a request's commands in one go, so no SUBSCRIBE
    is checked while a unit's role is being rebuilt (a unit it does not know would be let through)."""
    groups: list[list[dict[str, Any]]] = []
    if any(state.default_access.get(k) != v for k, v in DEFAULT_ACL_ACCESS.items()):
        groups.append([{"command": "setDefaultACLAccess",
                        "acls": [{"acltype": k, "allow": v} for k, v in DEFAULT_ACL_ACCESS.items()]}])
    for device_id in device_ids:
        role, client = role_name(device_id), state.clients.get(device_id)
        commands: list[dict[str, Any]] = []
        role_rebuilt = not state.role_ok(device_id)
        if role_rebuilt:
            if role in state.roles:
                commands.append({"command": "deleteRole", "rolename": role})
            commands.append({"command": "createRole", "rolename": role, "acls": unit_acls(device_id)})
        if client is not None and client.get("password"):  # it would authenticate there, not by passwd
            commands.append({"command": "deleteClient", "username": device_id})
            client = None
        if client is None:
            commands.append({"command": "createClient", **unit_client(device_id)})
        else:
            if role_rebuilt or role not in _role_names(client):
                commands.append({"command": "addClientRole", "username": device_id, "rolename": role})
            commands += [{"command": "removeClientRole", "username": device_id, "rolename": other}
                         for other in sorted(_role_names(client) - {role})]
            commands += [{"command": "removeGroupClient", "groupname": group, "username": device_id}
                         for group in sorted(_group_names(client))]
            if client.get("disabled"):
                commands.append({"command": "enableClient", "username": device_id})
        if commands:
            groups.append(commands)
    return groups


def revoke_commands(state: DynsecState, device_ids: list[str]) -> list[list[dict[str, Any]]]:
    """For units no longer enrolled (already out of `passwd`): disable (cuts them off at once), and delete those
    a previous pass disabled, with their roles."""
    keep = set(device_ids)
    groups: list[list[dict[str, Any]]] = []
    for username, client in sorted(state.clients.items()):
        if username in keep:
            continue
        if client.get("disabled"):
            groups.append([{"command": "deleteClient", "username": username}])
        else:
            groups.append([{"command": "disableClient", "username": username}])
    for role in sorted(state.roles):
        if role.startswith(ROLE_PREFIX) and role.removeprefix(ROLE_PREFIX) not in keep:
            if not any(role in _role_names(c) for c in state.clients.values() if not c.get("disabled")):
                groups.append([{"command": "deleteRole", "rolename": role}])
    return groups


class DynsecAdmin:
    """Sends commands to the dynamic security plugin over MQTT and waits for its answers."""

    def __init__(self, target: BrokerTarget, username: str, password: str,
                 timeout_s: float = DYNSEC_TIMEOUT_S) -> None:
        self.target = target
        self.username = username
        self._password = password
        self.timeout_s = timeout_s

    def run(self, groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Every command's response, in order; MosquittoError when the plugin could not be reached. A group of
        commands is never split between two requests."""
        commands = [c for group in groups for c in group]
        if not commands:
            return []
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        prefix = secrets.token_hex(8)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"_fleet-dynsec-{prefix}",
                             protocol=mqtt.MQTTv311)
        client.username_pw_set(self.username, self._password)
        if self.target.tls:
            client.tls_set()  # the system's CAs, host name checked: the units' listener's own certificate
        client.on_connect = lambda c, u, f, rc, p: events.put(("connack", rc.value))
        client.on_subscribe = lambda c, u, mid, codes, p: events.put(("suback", codes[0].value))
        client.on_message = lambda c, u, m: events.put(("message", m.payload))
        client.on_disconnect = lambda c, u, f, rc, p: events.put(("disconnect", rc.value))
        try:
            client.connect(self.target.host, self.target.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise MosquittoError(f"cannot reach the dynamic security plugin at {self.target!r}: {exc}") from exc
        client.loop_start()
        try:
            self._expect(events, "connack", 0)
            client.subscribe(DYNSEC_RESPONSE_TOPIC, qos=1)
            self._expect(events, "suback", 1)
            answers: dict[str, dict[str, Any]] = {}
            numbered = iter(range(len(commands)))
            for request in _requests(groups):
                batch = [{**c, "correlationData": f"{prefix}-{next(numbered)}"} for c in request]
                client.publish(DYNSEC_TOPIC, json.dumps({"commands": batch}), qos=1)
                wanted = {c["correlationData"] for c in batch}
                while not wanted <= answers.keys():
                    payload = self._expect(events, "message")
                    for answer in _responses(payload):
                        answers.setdefault(str(answer.get("correlationData")), answer)
            return [answers[f"{prefix}-{i}"] for i in range(len(commands))]
        finally:
            client.disconnect()
            client.loop_stop()

    def _expect(self, events: queue.Queue, kind: str, value: Any = None) -> Any:
        try:
            while True:
                got, data = events.get(timeout=self.timeout_s)
                if got == "disconnect":
                    raise MosquittoError(f"the dynamic security plugin's listener {self.target!r} closed the "
                                         f"connection ({data})")
                if got == kind:
                    if value is not None and data != value:
                        raise MosquittoError(f"the dynamic security plugin's listener {self.target!r} answered "
                                             f"{kind} {data} (needs the service account and `{DYNSEC_TOPIC}` "
                                             "access there)")
                    return data
        except queue.Empty:
            raise MosquittoError(f"no {kind} from the dynamic security plugin at {self.target!r} within "
                                 f"{self.timeout_s:g} s (is it loaded on that listener?)") from None


def _requests(groups: list[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """Whole groups, up to DYNSEC_BATCH commands a request (a larger group goes alone)."""
    request: list[dict[str, Any]] = []
    for group in groups:
        if request and len(request) + len(group) > DYNSEC_BATCH:
            yield request
            request = []
        request += group
    if request:
        yield request


def _responses(payload: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(payload)
    except ValueError:
        return []
    return [r for r in data.get("responses") or [] if isinstance(r, dict)] if isinstance(data, dict) else []


class MosquittoFiles:
    """Writes the files (atomically, only when they change), keeps the plugin's units and sends SIGHUP."""

    def __init__(self, engine: Engine, password_file: Path, acl_file: Path, pid_file: Path | None,
                 service_username: str, service_password: str, dynsec: BrokerTarget | None = None) -> None:
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
        target = BrokerTarget(settings.broker_url) if settings.broker_url else None
        if target is None or not target.password:
            raise MosquittoError("a managed Mosquitto needs the service's password in FLEET_BROKER_URL "
                                 "(mqtt://_fleet_service:PASSWORD@host:port)")
        return cls(engine, settings.mosquitto_password_file, settings.mosquitto_acl_file,
                   settings.mosquitto_pid_file, target.username, target.password, dynsec_target(settings.broker_url))

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
            rows = s.exec(select(BrokerCredential.device_id, BrokerCredential.password_hash)
                          .join(Device, col(Device.id) == col(BrokerCredential.device_id))
                          .order_by(col(BrokerCredential.device_id))).all()
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
                    log.warning("managed Mosquitto without the dynamic security plugin (no ?dynsec= on the broker "
                                "URL): Mosquitto cannot refuse a unit's subscriptions, `$share` ones included")
                changed = _write_if_changed(self.password_file, self.render_passwords(units, allowed))
                changed = _write_if_changed(self.acl_file, acl_text(self.service_username,
                                                                    dynsec=self.dynsec is not None)) or changed
                changed = _write_if_changed(self.service_password_file,
                                            self._service_line(self.service_password_file) + "\n") or changed
                changed = _write_if_changed(self.service_acl_file, service_acl_text(self.service_username)) or changed
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
                _write_if_changed(self.dynsec_file, json.dumps(dynsec_config(device_ids), indent=1) + "\n")
                return set(device_ids)
            self.failures += 1
            log.error("units not added to the dynamic security plugin (they cannot log in yet): %s", exc)
            return state.grants(device_ids)
        after = self._dynsec_state() or DynsecState()
        missing = sorted(set(device_ids) - after.grants(device_ids))
        if missing:
            self.failures += 1
            log.error("the dynamic security plugin did not take %d unit(s), e.g. %s: they cannot log in yet",
                      len(missing), missing[:5])
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
                log.warning("dynamic security %s %s: %s", command["command"],
                            command.get("username") or command.get("rolename") or "", answer["error"])

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
