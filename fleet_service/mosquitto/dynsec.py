"""The Mosquitto dynamic security plugin, kept by the service: one client and one role per unit. This module is the
file mode's use of it (clients without passwords) and the admin connection both modes use; plugin_auth.py is the
mode where the plugin also holds the units' passwords.

Mosquitto 2.0 never checks SUBSCRIBE against `acl_file` (see mosquitto_acl), so with FLEET_MOSQUITTO_DYNSEC_URL
(the units' listener, e.g. `mqtts://example.org:8883`) the service also keeps one dynamic security client and
role per unit, over `$CONTROL/dynamic-security/v1` on that listener (the plugin reads its file only at start;
while the broker is stopped the file is written directly). The older form, `?dynsec=URL` on FLEET_BROKER_URL
(`mqtt://_fleet_service:PW@mosquitto:1884?dynsec=mqtts://example.org:8883`), is still accepted but deprecated.
"""

from __future__ import annotations

import json
import queue
import random
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt

from fleet_service.mosquitto.acl import DEFAULT_ACL_ACCESS, ROLE_PREFIX, acl_key, role_name, unit_acls, unit_client
from fleet_service.mosquitto.errors import MosquittoError
from fleet_service.settings import BrokerTarget, ServiceSettings

__all__ = [
    "ControlConnectionLost",
    "DYNSEC_FILE",
    "DYNSEC_TOPIC",
    "DynsecAdmin",
    "DynsecState",
    "dynsec_target",
    "grant_commands",
    "revoke_commands",
    "service_account",
]

DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"
DYNSEC_RESPONSE_TOPIC = DYNSEC_TOPIC + "/response"
DYNSEC_FILE = "dynamic-security.json"
DYNSEC_BATCH = 100  # commands per request (the plugin saves its file after each change)
DYNSEC_TIMEOUT_S = 10.0
DYNSEC_ATTEMPTS = 4  # the units' listener forces client id = username: two replicas' admin connections take
# each other's place, so a connection closed under a request is tried again (every command we send may run twice)


class ControlConnectionLost(MosquittoError):
    """The broker closed the admin connection before every answer came (another replica's took its place)."""


def dynsec_target(settings: ServiceSettings) -> BrokerTarget | None:
    """The units' listener: FLEET_MOSQUITTO_DYNSEC_URL, else `?dynsec=` on the broker URL (deprecated), or None
    (files only)."""
    if settings.mosquitto_dynsec_url:
        return BrokerTarget(settings.mosquitto_dynsec_url)  # checked when the settings were read
    values = parse_qs(urlsplit(settings.broker_url).query).get("dynsec")
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
        roles = {
            r["rolename"]: list(r.get("acls") or [])
            for r in data.get("roles") or []
            if isinstance(r.get("rolename"), str)
        }
        access = {k: bool(v) for k, v in (data.get("defaultACLAccess") or {}).items()}
        return cls(clients, roles, access)

    def role_ok(self, device_id: str) -> bool:
        acls = self.roles.get(role_name(device_id))
        return acls is not None and acl_key(acls) == acl_key(unit_acls(device_id))

    def client_ok(self, device_id: str) -> bool:
        client = self.clients.get(device_id)
        return (
            client is not None
            and not client.get("disabled")
            and not client.get("password")
            and _role_names(client) == {role_name(device_id)}
            and not _group_names(client)
        )

    def grants(self, device_ids: list[str]) -> set[str]:
        """The units whose subscriptions the plugin limits as it should: only these may log in."""
        return {d for d in device_ids if self.client_ok(d) and self.role_ok(d)}


def _role_names(client: dict[str, Any]) -> set[str]:
    return _names(client.get("roles"), "rolename")


def _group_names(client: dict[str, Any]) -> set[str]:
    return _names(client.get("groups"), "groupname")


def _names(entries: Any, key: str) -> set[str]:
    """The names in the plugin's list of roles or groups (it always names each entry; anything else is skipped)."""
    return {entry[key] for entry in entries or [] if isinstance(entry, dict) and isinstance(entry.get(key), str)}


def grant_commands(state: DynsecState, device_ids: list[str]) -> list[list[dict[str, Any]]]:
    """Commands that make the plugin know every unit in `device_ids`, with its own role and nothing more.

    One group per unit, sent in one request: the plugin runs a request's commands in one go, so no SUBSCRIBE
    is checked while a unit's role is being rebuilt (a unit it does not know would be let through)."""
    groups: list[list[dict[str, Any]]] = []
    if any(state.default_access.get(k) != v for k, v in DEFAULT_ACL_ACCESS.items()):
        groups.append(
            [
                {
                    "command": "setDefaultACLAccess",
                    "acls": [{"acltype": k, "allow": v} for k, v in DEFAULT_ACL_ACCESS.items()],
                }
            ]
        )
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
            commands += [
                {"command": "removeClientRole", "username": device_id, "rolename": other}
                for other in sorted(_role_names(client) - {role})
            ]
            commands += [
                {"command": "removeGroupClient", "groupname": group, "username": device_id}
                for group in sorted(_group_names(client))
            ]
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


def service_account(settings: ServiceSettings, who: str) -> tuple[str, str]:
    """The service's own broker account (username, password) from FLEET_BROKER_URL, which `who` (a managed mode)
    cannot do without."""
    target = BrokerTarget(settings.broker_url) if settings.broker_url else None
    if target is None or not target.password:
        raise MosquittoError(
            f"{who} needs the service's password in FLEET_BROKER_URL (mqtt://_fleet_service:PASSWORD@host:port)"
        )
    return target.username or "", target.password


class DynsecAdmin:
    """Sends commands to the dynamic security plugin over MQTT and waits for its answers."""

    def __init__(self, target: BrokerTarget, username: str, password: str, timeout_s: float = DYNSEC_TIMEOUT_S) -> None:
        self.target = target
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self._one_at_a_time = threading.Lock()  # this process's requests would take each other's client id too

    def run(self, groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Every command's response, in order; MosquittoError when the plugin could not be reached. A group of
        commands is never split between two requests; a request cut off by a lost connection is sent again."""
        if not any(groups):
            return []
        for attempt in range(DYNSEC_ATTEMPTS):
            try:
                with self._one_at_a_time:
                    return self._run_once(groups)
            except ControlConnectionLost:
                if attempt == DYNSEC_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
        raise AssertionError("unreachable")

    def _run_once(self, groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        commands = [c for group in groups for c in group]
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        prefix = secrets.token_hex(8)
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"_fleet-dynsec-{prefix}", protocol=mqtt.MQTTv311
        )
        client.username_pw_set(self.username, self._password)
        if self.target.tls:
            client.tls_set()  # the system's CAs, host name checked: the units' listener's own certificate
        # paho calls these positionally with (client, userdata, ...): only the last ones matter here
        client.on_connect = lambda _c, _u, _f, rc, _p: events.put(("connack", rc.value))
        client.on_subscribe = lambda _c, _u, _mid, codes, _p: events.put(("suback", codes[0].value))
        client.on_message = lambda _c, _u, m: events.put(("message", m.payload))
        client.on_disconnect = lambda _c, _u, _f, rc, _p: events.put(("disconnect", rc.value))
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
                    raise ControlConnectionLost(
                        f"the dynamic security plugin's listener {self.target!r} closed the connection ({data})"
                    )
                if got == kind:
                    if value is not None and data != value:
                        raise MosquittoError(
                            f"the dynamic security plugin's listener {self.target!r} answered "
                            f"{kind} {data} (needs the service account and `{DYNSEC_TOPIC}` "
                            "access there)"
                        )
                    return data
        except queue.Empty:
            raise MosquittoError(
                f"no {kind} from the dynamic security plugin at {self.target!r} within "
                f"{self.timeout_s:g} s (is it loaded on that listener?)"
            ) from None


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
