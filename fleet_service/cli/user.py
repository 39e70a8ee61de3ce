"""`fleet user add|passwd|list|delete`: dashboard/API users. Passwords come from a prompt or stdin, never from the
command line.

Each change is written to the audit log too (method `CLI`, status 0), so out-of-band changes stay visible.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from fleet_service.cli.common import audit, db_options, open_engine


def register(sub: argparse._SubParsersAction) -> None:
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


def _password_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        print("fleet user: no terminal to prompt on; pass the password on stdin with --password-stdin", file=sys.stderr)
        return None
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        print("fleet user: the passwords differ", file=sys.stderr)
        return None
    return first


def _user_add(args: argparse.Namespace) -> int:
    from fleet_service.auth.users import UserError, add_user, check_new_password, check_username

    try:
        check_username(args.username)
        password = _read_password(args)
        if password is None:
            return 2
        check_new_password(password)
        engine = open_engine(args)
        user = add_user(engine, args.username, password, args.role)
    except UserError as exc:
        print(f"fleet user add: {exc}", file=sys.stderr)
        return 1
    audit(engine, "fleet user add", user.username)
    print(f"user {user.username} ({user.role}) created")
    return 0


def _user_passwd(args: argparse.Namespace) -> int:
    from fleet_service.auth.users import UserError, set_password

    password = _read_password(args)
    if password is None:
        return 2
    try:
        engine = open_engine(args)
        found = set_password(engine, args.username, password)
    except UserError as exc:
        print(f"fleet user passwd: {exc}", file=sys.stderr)
        return 1
    if not found:
        print(f"fleet user passwd: no user named {args.username!r}", file=sys.stderr)
        return 1
    audit(engine, "fleet user passwd", args.username)
    print(f"password of {args.username} changed; the user's sessions were ended")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    from sqlmodel import Session, select

    from fleet_service.auth.models import User
    from fleet_service.db.columns import iso

    with Session(open_engine(args)) as s:
        rows = s.exec(select(User).order_by(User.username)).all()
    for u in rows:
        print(f"{u.username}\t{u.role}\tcreated {iso(u.created_at)}\tlast login {iso(u.last_login_at) or '-'}")
    return 0


def _user_delete(args: argparse.Namespace) -> int:
    from fleet_service.auth.users import delete_user

    engine = open_engine(args)
    if not delete_user(engine, args.username):
        print(f"fleet user delete: no user named {args.username!r}", file=sys.stderr)
        return 1
    audit(engine, "fleet user delete", args.username)
    print(f"user {args.username} deleted")
    return 0
