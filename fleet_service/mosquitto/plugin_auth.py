"""The dynamic security plugin as the keeper of the units' credentials (FLEET_MOSQUITTO_AUTH=dynsec).

The plugin authenticates clients itself and is managed over MQTT (`$CONTROL/dynamic-security/v1` on the units'
listener, FLEET_MOSQUITTO_DYNSEC_URL), so any replica, wherever it runs, changes it: no shared files, no PID file,
no SIGHUP. Each unit is one plugin client with its password and its own role (acl.py); the units' listener keeps
its static `acl_file` for publishing and delivery and has no `password_file`.

Measured on Mosquitto 2.0.11 (tests/fleet_service/mosquitto/test_plugin_auth.py):
- createClient, setClientPassword and modifyClient take a plain password and hash it themselves; a `$7$` hash,
  or its digest with `salt` and `iterations` fields, is taken as a plain password (the fields are ignored). A
  unit the plugin lost cannot get its password back over the network. The plugin's file, though, stores the same
  PBKDF2-SHA512 (digest, 12-byte salt, iterations) as our `$7$` hashes: `fleet mosquitto sync --offline` writes
  it from the database while the broker is stopped (plugin_file.py).
- setClientPassword, modifyClient (whatever it changes), disableClient and deleteClient close the client's live
  connections within milliseconds.

The plain secret exists only inside the enrollment or rotation request: it goes to the plugin inside that
request's database transaction, before the commit. A plugin that cannot be reached fails the request (503) and
changes nothing; a request that answered has taken effect in the broker. Revoking too: the client is deleted
(its connection closed) before the unit's rows are committed away.

Each client's text description stamps which stored hash its password was made with (a digest of the hash) and
when. The reconcile (at start and every RESYNC_S) cannot read passwords back, but it can tell a client whose
password is not the stored one (a rotation whose commit failed): it disables it. It names every unit that cannot
log in until its secret is rotated. Stamps younger than FRESH_MS are left alone: their request may not have
committed yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.devices.models import Device
from fleet_service.mosquitto.acl import DEFAULT_ACL_ACCESS, ROLE_PREFIX, role_name, unit_acls
from fleet_service.mosquitto.dynsec import DynsecAdmin, DynsecState, service_account
from fleet_service.mosquitto.errors import MosquittoError
from fleet_service.mosquitto.models import BrokerCredential
from fleet_service.settings import BrokerTarget, ServiceSettings
from protocol.ids import is_device_id, now_ms

__all__ = ["FRESH_MS", "Plan", "PluginAuthManager", "PluginCredentials", "fingerprint", "plan", "read_stamp", "stamp"]

log = logging.getLogger(__name__)

RESYNC_S = 300.0
RETRY_S = 15.0  # after a failed reconcile (e.g. the broker not up yet)
FRESH_MS = 60_000
STAMP = "fleet-credential"
LIST_COMMANDS: list[dict[str, Any]] = [
    {"command": "listClients", "verbose": True},
    {"command": "listRoles", "verbose": True},
    {"command": "getDefaultACLAccess"},
]


def fingerprint(stored_hash: str) -> str:
    """Names a stored `$7$` hash without revealing it (the secrets are 256-bit random: nothing to guess)."""
    return hashlib.sha256(stored_hash.encode()).hexdigest()[:16]


def stamp(stored_hash: str, at_ms: int) -> str:
    return f"{STAMP} {fingerprint(stored_hash)} {at_ms}"


def read_stamp(text: Any) -> tuple[str, int] | None:
    parts = text.split() if isinstance(text, str) else []
    if len(parts) != 3 or parts[0] != STAMP:
        return None
    try:
        return parts[1], int(parts[2])
    except ValueError:
        return None


@dataclass
class Plan:
    """What a reconcile pass sends, and the enrolled units that cannot log in until their secret is rotated."""

    groups: list[list[dict[str, Any]]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # no client in the plugin
    stale: list[str] = field(default_factory=list)  # a client whose password is not the stored one (disabled)

    @property
    def need_rotate(self) -> list[str]:
        return sorted(self.lost + self.stale)


def _names(entries: Any, key: str) -> set[str]:
    return {e[key] for e in entries or [] if isinstance(e, dict) and isinstance(e.get(key), str)}


def _ours(client: dict[str, Any]) -> bool:
    """A client this service made (a stamp or a unit role); anyone else's clients are left alone."""
    return read_stamp(client.get("textdescription")) is not None or any(
        r.startswith(ROLE_PREFIX) for r in _names(client.get("roles"), "rolename")
    )


def _fresh(client: dict[str, Any], now: int) -> bool:
    mark = read_stamp(client.get("textdescription"))
    return mark is not None and now - mark[1] < FRESH_MS


def _repair(state: DynsecState, device_id: str, client: dict[str, Any]) -> list[dict[str, Any]]:
    """Commands that leave a unit's client (whose password is the stored one) with exactly its role, enabled."""
    role = role_name(device_id)
    commands: list[dict[str, Any]] = []
    rebuilt = not state.role_ok(device_id)
    if rebuilt:
        if role in state.roles:
            commands.append({"command": "deleteRole", "rolename": role})
        commands.append({"command": "createRole", "rolename": role, "acls": unit_acls(device_id)})
    roles = _names(client.get("roles"), "rolename")
    if rebuilt or role not in roles:
        commands.append({"command": "addClientRole", "username": device_id, "rolename": role})
    commands += [{"command": "removeClientRole", "username": device_id, "rolename": r} for r in sorted(roles - {role})]
    commands += [
        {"command": "removeGroupClient", "groupname": g, "username": device_id}
        for g in sorted(_names(client.get("groups"), "groupname"))
    ]
    if client.get("disabled"):
        commands.append({"command": "enableClient", "username": device_id})
    return commands


def plan(state: DynsecState, units: dict[str, str], service_username: str, now: int) -> Plan:
    """Bring the plugin in line with the database (`units`: device id -> stored `$7$` hash)."""
    out = Plan()
    if any(state.default_access.get(k) != v for k, v in DEFAULT_ACL_ACCESS.items()):
        acls = [{"acltype": k, "allow": v} for k, v in DEFAULT_ACL_ACCESS.items()]
        out.groups.append([{"command": "setDefaultACLAccess", "acls": acls}])
    for device_id, stored in sorted(units.items()):
        client = state.clients.get(device_id)
        if client is None:
            out.lost.append(device_id)
            continue
        mark = read_stamp(client.get("textdescription"))
        if mark is None or mark[0] != fingerprint(stored):
            if _fresh(client, now):
                continue  # a rotation under way: its commit decides
            out.stale.append(device_id)
            if not client.get("disabled"):
                out.groups.append([{"command": "disableClient", "username": device_id}])
            continue
        commands = _repair(state, device_id, client)
        if commands:
            out.groups.append(commands)
    kept = set(units)
    for username, client in sorted(state.clients.items()):
        if username in units or username == service_username or not is_device_id(username) or not _ours(client):
            kept.add(username)
        elif _fresh(client, now):
            kept.add(username)  # an enrollment under way
        else:
            out.groups.append([{"command": "deleteClient", "username": username}])
    for role in sorted(state.roles):
        if role.startswith(ROLE_PREFIX) and role.removeprefix(ROLE_PREFIX) not in kept:
            out.groups.append([{"command": "deleteRole", "rolename": role}])
    return out


def state_from_answers(answers: list[dict[str, Any]]) -> DynsecState:
    """listClients, listRoles and getDefaultACLAccess (verbose) as a DynsecState."""
    for answer in answers:
        if answer.get("error"):
            raise MosquittoError(f"the dynamic security plugin refused {answer.get('command')}: {answer['error']}")
    clients_data, roles_data, access_data = (a.get("data") or {} for a in answers)
    clients = {
        c["username"]: c
        for c in clients_data.get("clients") or []
        if isinstance(c, dict) and isinstance(c.get("username"), str)
    }
    roles = {
        r["rolename"]: list(r.get("acls") or [])
        for r in roles_data.get("roles") or []
        if isinstance(r, dict) and isinstance(r.get("rolename"), str)
    }
    access = {
        a["acltype"]: bool(a.get("allow"))
        for a in access_data.get("acls") or []
        if isinstance(a, dict) and isinstance(a.get("acltype"), str)
    }
    return DynsecState(clients, roles, access)


class PluginCredentials:
    """The units' credentials in the plugin: set inside enrollment transactions, reconciled in the background."""

    def __init__(self, engine: Engine, admin: DynsecAdmin) -> None:
        self.engine = engine
        self.admin = admin
        self.failures = 0
        self.need_rotate: list[str] = []
        self.repairs = 0  # commands the reconcile had to send

    @classmethod
    def from_settings(cls, settings: ServiceSettings, engine: Engine) -> PluginCredentials:
        username, password = service_account(settings, "FLEET_MOSQUITTO_AUTH=dynsec")
        units = BrokerTarget(settings.mosquitto_dynsec_url)  # required and checked by the settings
        return cls(engine, DynsecAdmin(units, username, password))

    def put(self, device_id: str, secret: str, stored_hash: str, new: bool) -> None:
        """Give the unit this password (a new client, or the existing one's replaced), its role, enabled. The
        unit's live connection, if any, is closed. MosquittoError when the plugin did not take it."""
        role = role_name(device_id)
        client = {
            "username": device_id,
            "password": secret,
            "textdescription": stamp(stored_hash, now_ms()),
            "roles": [{"rolename": role}],
        }
        create_role = {"command": "createRole", "rolename": role, "acls": unit_acls(device_id)}
        if new:  # any client of that name is a leftover: the database has no such unit
            self._send(
                [
                    {"command": "deleteClient", "username": device_id},
                    {"command": "deleteRole", "rolename": role},
                    create_role,
                    {"command": "createClient", **client},
                ],
                optional={0: "not found", 1: "not found"},
            )
            return
        answers = self._send(
            [
                create_role,
                {"command": "modifyClient", **client, "groups": []},
                {"command": "enableClient", "username": device_id},
            ],
            optional={0: "already exists", 1: "not found", 2: "not found"},
        )
        if answers[1].get("error"):  # the plugin had lost it: made again
            self._send([{"command": "createClient", **client}])

    def remove(self, device_id: str) -> None:
        """Delete the unit's client (its live connection is closed) and role."""
        self._send(
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": role_name(device_id)},
            ],
            optional={0: "not found", 1: "not found"},
        )

    def _send(self, commands: list[dict[str, Any]], optional: dict[int, str] | None = None) -> list[dict[str, Any]]:
        """One request; MosquittoError naming the first refused command (never its password) unless the error is
        the one `optional` allows for that command."""
        try:
            answers = self.admin.run([commands])
        except MosquittoError:
            self.failures += 1
            raise
        for i, (command, answer) in enumerate(zip(commands, answers, strict=True)):
            error = str(answer.get("error") or "")
            if error and (optional is None or optional.get(i, "\0") not in error.lower()):
                self.failures += 1
                what = command.get("username") or command.get("rolename") or ""
                raise MosquittoError(f"the dynamic security plugin refused {command['command']} {what}: {error}")
        return answers

    def state(self) -> DynsecState:
        return state_from_answers(self.admin.run([LIST_COMMANDS]))

    def units(self) -> dict[str, str]:
        with Session(self.engine) as s:
            rows = s.exec(
                select(BrokerCredential.device_id, BrokerCredential.password_hash).join(
                    Device, col(Device.id) == col(BrokerCredential.device_id)
                )
            ).all()
        return {device_id: stored for device_id, stored in rows if is_device_id(device_id)}

    def reconcile(self) -> Plan:
        """One pass: read the plugin, then the database, and send what differs. Logs the units that need a
        rotation (their secret is stored only hashed: nothing here can give them their password back)."""
        try:
            state = self.state()
            units = self.units()
            found = plan(state, units, self.admin.username, now_ms())
            if found.groups:
                answers = self.admin.run(found.groups)
                self.repairs += len(answers)
                commands = [c for group in found.groups for c in group]
                for command, answer in zip(commands, answers, strict=True):
                    if answer.get("error"):
                        self.failures += 1
                        log.warning(
                            "dynamic security %s %s: %s",
                            command["command"],
                            command.get("username") or command.get("rolename") or "",
                            answer["error"],
                        )
        except MosquittoError:
            self.failures += 1
            raise
        self.need_rotate = found.need_rotate
        if found.need_rotate:
            log.warning(
                "%d unit(s) cannot log in to Mosquitto: the dynamic security plugin has no client for %s and a "
                "password that is not the stored one for %s. Rotate their secrets (POST "
                "/api/devices/{id}/rotate-secret), or stop the broker and run `fleet mosquitto sync --offline`",
                len(found.need_rotate),
                _some(found.lost),
                _some(found.stale),
            )
        return found


def _some(ids: list[str], n: int = 20) -> str:
    if not ids:
        return "none"
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


class PluginAuthManager:
    """Reconciles the plugin with the database at start and every `interval_s` (sooner again after a failure)."""

    def __init__(self, credentials: PluginCredentials) -> None:
        self.credentials = credentials

    async def run(self, interval_s: float = RESYNC_S, retry_s: float = RETRY_S) -> None:
        while True:
            delay = interval_s
            try:
                await asyncio.to_thread(self.credentials.reconcile)
            except MosquittoError as exc:
                log.error("dynamic security plugin not reconciled with the database: %s", exc)
                delay = min(interval_s, retry_s)
            await asyncio.sleep(delay)
