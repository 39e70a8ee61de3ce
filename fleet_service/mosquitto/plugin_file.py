"""The broker's files for FLEET_MOSQUITTO_AUTH=dynsec, written while it is stopped (`fleet mosquitto sync --offline`).

The dynamic security plugin reads its file only when the broker starts and rewrites it after every change, so
this is for a broker that is not running: a first start, a move from the file mode, a plugin file lost. The
units' passwords come from the database's `$7$` hashes (PBKDF2-SHA512, the hash the plugin stores too: digest,
salt and iterations go into the client's entry as they are), so every enrolled unit logs in with its current
secret without being rotated. The service account gets a client with the plugin's control topics, so the
replicas can manage the plugin once it runs.

Written beside FLEET_MOSQUITTO_ACL_FILE: `acl` (the units' listener: publishing and delivery, static),
`service-passwd` and `service-acl` (the replicas' listener) and `dynamic-security.json`. Clients, groups and
roles the service did not make (an operator's own admin account, say) are kept from the existing plugin file.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fleet_service.mosquitto.acl import (
    DEFAULT_ACL_ACCESS,
    ROLE_PREFIX,
    SERVICE_ROLE,
    acl_text,
    role_name,
    service_acl_text,
    service_role,
    unit_role,
)
from fleet_service.mosquitto.admin import password_hash, password_matches, write_if_changed
from fleet_service.mosquitto.dynsec import DYNSEC_FILE
from fleet_service.mosquitto.errors import MosquittoError
from fleet_service.mosquitto.plugin_auth import read_stamp, stamp
from protocol.ids import is_device_id, now_ms

__all__ = ["hash_fields", "plugin_config", "write_offline_files"]

SALT_BYTES = 12  # what the plugin's file holds (and our `$7$` hashes use)
DIGEST_BYTES = 64


def hash_fields(stored: str) -> dict[str, Any]:
    """A `$7$` hash as the plugin's client entry spells it; ValueError for anything else."""
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        raise ValueError("not a $7$ hash")
    iterations, salt, digest = int(parts[2]), parts[3], parts[4]
    if len(base64.b64decode(salt)) != SALT_BYTES or len(base64.b64decode(digest)) != DIGEST_BYTES or iterations < 1:
        raise ValueError("not the plugin's salt and digest lengths")
    return {"password": digest, "salt": salt, "iterations": iterations}


def _foreign(existing: dict[str, Any], units: dict[str, str], service_username: str) -> dict[str, list[Any]]:
    """What the existing file holds that is not ours to write."""

    def ours(client: dict[str, Any]) -> bool:
        name = client.get("username")
        roles = {r.get("rolename") for r in client.get("roles") or [] if isinstance(r, dict)}
        made_here = read_stamp(client.get("textdescription")) is not None or any(
            isinstance(r, str) and r.startswith(ROLE_PREFIX) for r in roles
        )
        return name == service_username or name in units or (isinstance(name, str) and is_device_id(name) and made_here)

    return {
        "clients": [c for c in existing.get("clients") or [] if isinstance(c, dict) and not ours(c)],
        "groups": [g for g in existing.get("groups") or [] if isinstance(g, dict)],
        "roles": [
            r
            for r in existing.get("roles") or []
            if isinstance(r, dict)
            and isinstance(r.get("rolename"), str)
            and not r["rolename"].startswith(ROLE_PREFIX)
            and r["rolename"] != SERVICE_ROLE
        ],
    }


def plugin_config(
    units: dict[str, str],
    service_username: str,
    service_hash: str,
    existing: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The plugin's whole file -> (config, units left out because their stored hash is not one it can hold)."""
    at = now_ms()
    clients: list[dict[str, Any]] = [
        {"username": service_username, "roles": [{"rolename": SERVICE_ROLE}], **hash_fields(service_hash)}
    ]
    roles = [service_role()]
    skipped = []
    for device_id, stored in sorted(units.items()):
        try:
            fields = hash_fields(stored)
        except ValueError:
            skipped.append(device_id)
            continue
        clients.append(
            {
                "username": device_id,
                "textdescription": stamp(stored, at),
                "roles": [{"rolename": role_name(device_id)}],
                **fields,
            }
        )
        roles.append(unit_role(device_id))
    foreign = _foreign(existing or {}, units, service_username)
    config = {
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
        "clients": clients + foreign["clients"],
        "groups": foreign["groups"],
        "roles": roles + foreign["roles"],
    }
    return config, skipped


def write_offline_files(
    acl_file: Path, units: dict[str, str], service_username: str, service_password: str
) -> tuple[list[Path], list[str]]:
    """Write the four files beside `acl_file` -> (the files that changed, units left out)."""
    folder = Path(acl_file).parent
    plugin_path, passwd_path = folder / DYNSEC_FILE, folder / "service-passwd"
    try:
        existing = json.loads(plugin_path.read_text() or "{}")
    except FileNotFoundError:
        existing = {}
    except (OSError, ValueError) as exc:
        raise MosquittoError(f"cannot read {plugin_path}: {exc}") from exc
    service_hash = _kept_service_hash(passwd_path, service_username, service_password)
    config, skipped = plugin_config(
        units, service_username, service_hash, existing if isinstance(existing, dict) else {}
    )
    files = {
        Path(acl_file): acl_text(service_username, dynsec=True),
        folder / "service-acl": service_acl_text(service_username),
        passwd_path: f"{service_username}:{service_hash}\n",
        plugin_path: json.dumps(config, indent=1) + "\n",
    }
    try:
        changed = [path for path, text in files.items() if write_if_changed(path, text)]
    except OSError as exc:
        raise MosquittoError(f"cannot write the Mosquitto files in {folder}: {exc}") from exc
    return changed, skipped


def _kept_service_hash(passwd_path: Path, username: str, password: str) -> str:
    """The service account's hash already in `service-passwd` when it still matches (no needless rewrite)."""
    try:
        for line in passwd_path.read_text().splitlines():
            user, _, stored = line.partition(":")
            if user == username and password_matches(password, stored):
                return stored
    except FileNotFoundError:
        pass
    return password_hash(password)
