"""`fleet mosquitto sync`: bring a managed Mosquitto in line with the database. The file mode writes its password
and ACL files (and SIGHUPs it); the plugin mode (FLEET_MOSQUITTO_AUTH=dynsec) reconciles the dynamic security
plugin over the network, or with `--offline`, while the broker is stopped, writes the plugin's file with the units'
stored hashes. `sync_mosquitto_if_managed` and `plugin_credentials` serve other commands that change units."""

from __future__ import annotations

import argparse
import sys

from fleet_cli.options import overrides
from fleet_service.cli.common import db_options, open_engine

PROBE_TIMEOUT_S = 3.0  # --offline: does a running broker's plugin answer?


def register(sub: argparse._SubParsersAction) -> None:
    mosq = sub.add_parser("mosquitto", help="a Mosquitto whose unit credentials fleet manages")
    msub = mosq.add_subparsers(dest="mosquitto_cmd", required=True)
    sync = msub.add_parser(
        "sync",
        help="bring Mosquitto in line with the database: its password/ACL files (and SIGHUP), or its dynamic "
        "security plugin",
    )
    sync.add_argument("--broker-url", help="the service's mqtt://_fleet_service:PASS@host:port [FLEET_BROKER_URL]")
    sync.add_argument(
        "--mosquitto-auth", choices=["files", "dynsec"], help="who holds the units' passwords [FLEET_MOSQUITTO_AUTH]"
    )
    sync.add_argument("--mosquitto-password-file", help="[FLEET_MOSQUITTO_PASSWORD_FILE]")
    sync.add_argument("--mosquitto-acl-file", help="[FLEET_MOSQUITTO_ACL_FILE]")
    sync.add_argument(
        "--mosquitto-pid-file", help="send SIGHUP to this PID when a file changed [FLEET_MOSQUITTO_PID_FILE]"
    )
    sync.add_argument(
        "--mosquitto-dynsec-url",
        help="mqtts://host:port of the units' listener with the dynamic security plugin [FLEET_MOSQUITTO_DYNSEC_URL]",
    )
    sync.add_argument(
        "--offline",
        action="store_true",
        help="dynsec, for a stopped broker: write its files beside the ACL file, the plugin's with every unit's "
        "stored password hash (if its plugin answers, the broker runs: reconcile over the network instead)",
    )
    db_options(sync)
    sync.set_defaults(func=_mosquitto_sync)


def mosquitto_settings(args: argparse.Namespace):
    from fleet_service.settings import load_settings

    names = [
        "data_dir",
        "database_url",
        "broker_url",
        "mosquitto_auth",
        "mosquitto_password_file",
        "mosquitto_acl_file",
        "mosquitto_pid_file",
        "mosquitto_dynsec_url",
    ]
    return load_settings(**overrides(args, names))


def sync_mosquitto_if_managed(args: argparse.Namespace, engine) -> None:
    """After a CLI change to unit credentials: rewrite a managed Mosquitto's files when one is configured."""
    from fleet_service.mosquitto.admin import MosquittoError, MosquittoFiles

    settings = mosquitto_settings(args)
    if not settings.mosquitto_managed:
        return
    try:
        MosquittoFiles.from_settings(settings, engine).sync()
    except MosquittoError as exc:
        print(f"fleet: Mosquitto files not updated: {exc}", file=sys.stderr)


def plugin_credentials(args: argparse.Namespace, engine):
    """The dynamic security plugin when it holds the units' passwords (FLEET_MOSQUITTO_AUTH=dynsec), else None."""
    from fleet_service.mosquitto.plugin_auth import PluginCredentials

    settings = mosquitto_settings(args)
    return PluginCredentials.from_settings(settings, engine) if settings.mosquitto_plugin_auth else None


def _mosquitto_sync(args: argparse.Namespace) -> int:
    try:
        settings = mosquitto_settings(args)
    except ValueError as exc:
        print(f"fleet mosquitto sync: {exc}", file=sys.stderr)
        return 2
    if settings.mosquitto_plugin_auth:
        return _plugin_sync(settings, args)
    if args.offline:
        print("fleet mosquitto sync: --offline is for FLEET_MOSQUITTO_AUTH=dynsec", file=sys.stderr)
        return 2
    return _files_sync(settings, args)


def _files_sync(settings, args: argparse.Namespace) -> int:
    from fleet_service.mosquitto.admin import MosquittoError, MosquittoFiles

    if not settings.mosquitto_managed:
        print(
            "fleet mosquitto sync: set --mosquitto-password-file and --mosquitto-acl-file "
            "(FLEET_MOSQUITTO_PASSWORD_FILE, FLEET_MOSQUITTO_ACL_FILE), or FLEET_MOSQUITTO_AUTH=dynsec",
            file=sys.stderr,
        )
        return 2
    try:
        files = MosquittoFiles.from_settings(settings, open_engine(args))
        changed = files.sync()
    except MosquittoError as exc:
        print(f"fleet mosquitto sync: {exc}", file=sys.stderr)
        return 1
    state = "updated" if changed else "already up to date"
    print(f"Mosquitto files {state}: {settings.mosquitto_password_file}, {settings.mosquitto_acl_file}")
    return 0


def _plugin_sync(settings, args: argparse.Namespace) -> int:
    from fleet_service.mosquitto.errors import MosquittoError
    from fleet_service.mosquitto.plugin_auth import PluginCredentials

    try:
        credentials = PluginCredentials.from_settings(settings, open_engine(args))
    except MosquittoError as exc:
        print(f"fleet mosquitto sync: {exc}", file=sys.stderr)
        return 2
    if args.offline:
        return _offline(settings, credentials)
    return _reconcile(credentials)


def _reconcile(credentials) -> int:
    from fleet_service.mosquitto.errors import MosquittoError

    try:
        found = credentials.reconcile()
    except MosquittoError as exc:
        print(f"fleet mosquitto sync: {exc} (if the broker is stopped, use --offline)", file=sys.stderr)
        return 1
    print(f"dynamic security plugin reconciled: {credentials.repairs} change(s) sent")
    if found.need_rotate:
        print(
            f"{len(found.need_rotate)} unit(s) cannot log in until their secret is rotated (or the broker is "
            f"stopped and `fleet mosquitto sync --offline` run): {', '.join(found.need_rotate)}",
            file=sys.stderr,
        )
    return 0


def _offline(settings, credentials) -> int:
    from fleet_service.mosquitto.errors import MosquittoError
    from fleet_service.mosquitto.plugin_file import write_offline_files
    from fleet_service.settings import BrokerTarget

    if settings.mosquitto_acl_file is None:
        print(
            "fleet mosquitto sync --offline: set --mosquitto-acl-file (FLEET_MOSQUITTO_ACL_FILE): the broker's "
            "files are written beside it",
            file=sys.stderr,
        )
        return 2
    timeout_s, credentials.admin.timeout_s = credentials.admin.timeout_s, PROBE_TIMEOUT_S
    try:
        credentials.state()
    except MosquittoError:
        pass  # nothing answers: the broker is stopped, its files are ours to write
    else:  # running: it would overwrite its file with what it holds; tell it over the network instead
        credentials.admin.timeout_s = timeout_s
        print(
            f"the dynamic security plugin at {credentials.admin.target!r} answers (the broker runs): no files written"
        )
        return _reconcile(credentials)
    try:
        changed, skipped = write_offline_files(
            settings.mosquitto_acl_file,
            credentials.units(),
            credentials.admin.username,
            BrokerTarget(settings.broker_url).password or "",  # from_settings made sure it is there
        )
    except MosquittoError as exc:
        print(f"fleet mosquitto sync --offline: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(str(p) for p in changed) or "none"
    print(f"Mosquitto files written for the dynamic security plugin (changed: {names}); start the broker now")
    if skipped:
        print(f"units left out (their stored hash is not one the plugin can hold; rotate them): {', '.join(skipped)}")
    return 0
