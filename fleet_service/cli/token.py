"""`fleet token create|revoke|list`: API tokens, each printed once when created and never listed."""

from __future__ import annotations

import argparse
import sys

from fleet_service.cli.common import audit, db_options, open_engine


def register(sub: argparse._SubParsersAction) -> None:
    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="token_cmd", required=True)
    create = token.add_parser("create", help="create an API token and print it once")
    create.add_argument("--role", choices=["viewer", "operator", "admin"], required=True)
    create.add_argument("--name", default="")
    db_options(create)
    create.set_defaults(func=_token_create)

    revoke = token.add_parser("revoke", help="revoke an API token by its id")
    revoke.add_argument("id")
    db_options(revoke)
    revoke.set_defaults(func=_token_revoke)

    listing = token.add_parser("list", help="list API tokens (ids, names, roles; never the tokens)")
    db_options(listing)
    listing.set_defaults(func=_token_list)


def _token_create(args: argparse.Namespace) -> int:
    from fleet_service.auth.credentials import create_token

    row, plain = create_token(open_engine(args), args.role, args.name)
    print(f"token {row.id} ({row.role}) created; the token (shown once):\n{plain}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from fleet_service.auth.credentials import revoke_token

    engine = open_engine(args)
    if not revoke_token(engine, args.id):
        print(f"fleet token revoke: no token with id {args.id!r}", file=sys.stderr)
        return 1
    audit(engine, "fleet token revoke", args.id)
    print(f"token {args.id} revoked")
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from sqlmodel import Session, col, select

    from fleet_service.auth.models import ApiToken
    from fleet_service.db.columns import iso

    with Session(open_engine(args)) as s:
        rows = s.exec(select(ApiToken).order_by(col(ApiToken.created_at))).all()
    for t in rows:
        state = "revoked" if t.revoked else "active"
        print(f"{t.id}\t{t.role}\t{state}\t{t.name or '-'}\tcreated {iso(t.created_at)}")
    return 0
