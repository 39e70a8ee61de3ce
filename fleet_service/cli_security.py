"""Security sub-commands: `fleet user ...`, `fleet token list|revoke`, `fleet device claim-token`,
`fleet mosquitto sync`. Passwords come from a prompt or stdin, never from the command line.

Each change is written to the audit log too (method `CLI`, status 0), so out-of-band changes stay visible.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable

from fleet_cli.options import overrides

DbOptions = Callable[[argparse.ArgumentParser], None]


def register(sub: argparse._SubParsersAction, db_options: DbOptions) -> None:
    user = sub.add_parser("user", help="manage dashboard/API users").add_subparsers(dest="user_cmd", required=True)
    add = user.add_parser("add", help="create a user (the password is prompted for, or read from stdin)")
    add.add_argument("username")
    add.add_argument("--role", choices=["viewer", "operator", "admin"], required=True)
    _password_source(add)
    db_options(add)
    add.set_defaults(func=_user_add)

    passwd = user.add_parser("passwd", help="set a user's password (ends the user's sessions)")
    passwd.add_argument("username")
    _password_source(passwd)
    db_options(passwd)
    passwd.set_defaults(func=_user_passwd)

    listing = user.add_parser("list", help="list users")
    db_options(listing)
    listing.set_defaults(func=_user_list)

    remove = user.add_parser("delete", help="delete a user and end the user's sessions")
    remove.add_argument("username")
    db_options(remove)
    remove.set_defaults(func=_user_delete)

    mosq = sub.add_parser("mosquitto", help="a Mosquitto whose password/ACL files fleet manages")
    msub = mosq.add_subparsers(dest="mosquitto_cmd", required=True)
    sync = msub.add_parser("sync", help="write the password and ACL files from the database (and SIGHUP)")
    sync.add_argument("--broker-url", help="the service's mqtt://_fleet_service:PASS@host:port [FLEET_BROKER_URL]")
    sync.add_argument("--mosquitto-password-file", help="[FLEET_MOSQUITTO_PASSWORD_FILE]")
    sync.add_argument("--mosquitto-acl-file", help="[FLEET_MOSQUITTO_ACL_FILE]")
    sync.add_argument("--mosquitto-pid-file", help="send SIGHUP to this PID when a file changed "
                                                   "[FLEET_MOSQUITTO_PID_FILE]")
    db_options(sync)
    sync.set_defaults(func=_mosquitto_sync)


def add_token_commands(token: argparse._SubParsersAction, db_options: DbOptions) -> None:
    revoke = token.add_parser("revoke", help="revoke an API token by its id")
    revoke.add_argument("id")
    db_options(revoke)
    revoke.set_defaults(func=_token_revoke)

    listing = token.add_parser("list", help="list API tokens (ids, names, roles; never the tokens)")
    db_options(listing)
    listing.set_defaults(func=_token_list)


def add_device_commands(device: argparse._SubParsersAction, db_options: DbOptions) -> None:
    claim = device.add_parser("claim-token", help="make a one-time token a unit uses to enroll itself "
                                                  "(POST /api/devices/claim); printed once")
    claim.add_argument("--tag", action="append", default=[], dest="tags", help="tag for the claiming unit")
    claim.add_argument("--ttl", type=int, default=24 * 3600, help="seconds the token stays valid (default 1 day)")
    db_options(claim)
    claim.set_defaults(func=_claim_token)


def _password_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        print("fleet user: no terminal to prompt on; pass the password on stdin with --password-stdin",
              file=sys.stderr)
        return None
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        print("fleet user: the passwords differ", file=sys.stderr)
        return None
    return first


def _engine(args: argparse.Namespace):
    """The database the command line names (--database-url, or the SQLite file in --data-dir)."""
    from fleet_cli.options import overrides
    from fleet_service.config import load_settings, open_database

    return open_database(load_settings(**overrides(args, ["data_dir", "database_url"])).database_url)


def _audit(engine, route: str, target: str) -> None:
    from fleet_service.audit import record

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid())
    record(engine, actor=f"cli:{who}", role="admin", method="CLI", route=route, path="", target=target,
           status=0, source_ip="")


def _user_add(args: argparse.Namespace) -> int:
    from fleet_service.users import UserError, add_user, check_new_password, check_username

    try:
        check_username(args.username)
        password = _read_password(args)
        if password is None:
            return 2
        check_new_password(password)
        engine = _engine(args)
        user = add_user(engine, args.username, password, args.role)
    except UserError as exc:
        print(f"fleet user add: {exc}", file=sys.stderr)
        return 1
    _audit(engine, "fleet user add", user.username)
    print(f"user {user.username} ({user.role}) created")
    return 0


def _user_passwd(args: argparse.Namespace) -> int:
    from fleet_service.users import UserError, set_password

    password = _read_password(args)
    if password is None:
        return 2
    try:
        engine = _engine(args)
        found = set_password(engine, args.username, password)
    except UserError as exc:
        print(f"fleet user passwd: {exc}", file=sys.stderr)
        return 1
    if not found:
        print(f"fleet user passwd: no user named {args.username!r}", file=sys.stderr)
        return 1
    _audit(engine, "fleet user passwd", args.username)
    print(f"password of {args.username} changed; the user's sessions were ended")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    from sqlmodel import Session, select

    from fleet_service.models import User, iso

    with Session(_engine(args)) as s:
        rows = s.exec(select(User).order_by(User.username)).all()
    for u in rows:
        print(f"{u.username}\t{u.role}\tcreated {iso(u.created_at)}\tlast login {iso(u.last_login_at) or '-'}")
    return 0


def _user_delete(args: argparse.Namespace) -> int:
    from fleet_service.users import delete_user

    engine = _engine(args)
    if not delete_user(engine, args.username):
        print(f"fleet user delete: no user named {args.username!r}", file=sys.stderr)
        return 1
    _audit(engine, "fleet user delete", args.username)
    print(f"user {args.username} deleted")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from fleet_service.security import revoke_token

    engine = _engine(args)
    if not revoke_token(engine, args.id):
        print(f"fleet token revoke: no token with id {args.id!r}", file=sys.stderr)
        return 1
    _audit(engine, "fleet token revoke", args.id)
    print(f"token {args.id} revoked")
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from sqlmodel import Session, select

    from fleet_service.models import ApiToken, iso

    with Session(_engine(args)) as s:
        rows = s.exec(select(ApiToken).order_by(ApiToken.created_at)).all()
    for t in rows:
        state = "revoked" if t.revoked else "active"
        print(f"{t.id}\t{t.role}\t{state}\t{t.name or '-'}\tcreated {iso(t.created_at)}")
    return 0


def _claim_token(args: argparse.Namespace) -> int:
    from fleet_service.api.routes.devices import _check_tags
    from fleet_service.claims import MAX_TTL_S, create_claim_token

    if not 1 <= args.ttl <= MAX_TTL_S:
        print(f"fleet device claim-token: --ttl must be between 1 and {MAX_TTL_S} seconds", file=sys.stderr)
        return 2
    try:
        tags = _check_tags(args.tags)
    except ValueError as exc:
        print(f"fleet device claim-token: {exc}", file=sys.stderr)
        return 2
    engine = _engine(args)
    row, plain = create_claim_token(engine, tags, args.ttl, "cli")
    _audit(engine, "fleet device claim-token", row.id)
    print(f"claim token {row.id} (one use, valid {args.ttl} s, tags: {', '.join(tags) or '-'}); shown once:\n{plain}")
    return 0


def mosquitto_settings(args: argparse.Namespace):
    from fleet_service.config import load_settings

    names = ["data_dir", "database_url", "broker_url", "mosquitto_password_file", "mosquitto_acl_file",
             "mosquitto_pid_file"]
    return load_settings(**overrides(args, names))


def sync_mosquitto_if_managed(args: argparse.Namespace, engine) -> None:
    """After a CLI change to unit credentials: rewrite a managed Mosquitto's files when one is configured."""
    from fleet_service.mosquitto_admin import MosquittoError, MosquittoFiles

    settings = mosquitto_settings(args)
    if not settings.mosquitto_managed:
        return
    try:
        MosquittoFiles.from_settings(settings, engine).sync()
    except MosquittoError as exc:
        print(f"fleet: Mosquitto files not updated: {exc}", file=sys.stderr)


def _mosquitto_sync(args: argparse.Namespace) -> int:
    from fleet_service.mosquitto_admin import MosquittoError, MosquittoFiles

    try:
        settings = mosquitto_settings(args)
    except ValueError as exc:
        print(f"fleet mosquitto sync: {exc}", file=sys.stderr)
        return 2
    if not settings.mosquitto_managed:
        print("fleet mosquitto sync: set --mosquitto-password-file and --mosquitto-acl-file "
              "(FLEET_MOSQUITTO_PASSWORD_FILE, FLEET_MOSQUITTO_ACL_FILE)", file=sys.stderr)
        return 2
    try:
        files = MosquittoFiles.from_settings(settings, _engine(args))
        changed = files.sync()
    except MosquittoError as exc:
        print(f"fleet mosquitto sync: {exc}", file=sys.stderr)
        return 1
    state = "updated" if changed else "already up to date"
    print(f"Mosquitto files {state}: {settings.mosquitto_password_file}, {settings.mosquitto_acl_file}")
    return 0
