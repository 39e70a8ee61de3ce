"""`fleet device add` (enroll a unit, print its secret once) and `fleet device claim-token` (a one-time token a
unit uses to enroll itself)."""

from __future__ import annotations

import argparse
import sys

from fleet_service.cli.common import audit, db_options, open_engine
from fleet_service.cli.mosquitto import plugin_credentials, sync_mosquitto_if_managed


def register(sub: argparse._SubParsersAction) -> None:
    device = sub.add_parser("device", help="manage units").add_subparsers(dest="device_cmd", required=True)
    add = device.add_parser("add", help="enroll a unit and print its secret once")
    add.add_argument("id")
    add.add_argument("--name")
    add.add_argument("--tag", action="append", default=[], dest="tags")
    db_options(add)
    add.set_defaults(func=_device_add)

    claim = device.add_parser(
        "claim-token", help="make a one-time token a unit uses to enroll itself (POST /api/devices/claim); printed once"
    )
    claim.add_argument("--tag", action="append", default=[], dest="tags", help="tag for the claiming unit")
    claim.add_argument("--ttl", type=int, default=24 * 3600, help="seconds the token stays valid (default 1 day)")
    db_options(claim)
    claim.set_defaults(func=_claim_token)


def _device_add(args: argparse.Namespace) -> int:
    from fleet_service.devices.enrollment import UnitExists, enroll
    from protocol import ProtocolError
    from protocol.tags import check_tags

    try:
        tags = check_tags(args.tags)
    except ValueError as exc:
        print(f"fleet device add: {exc}", file=sys.stderr)
        return 2
    from fleet_service.mosquitto.errors import MosquittoError

    engine = open_engine(args)
    try:
        device, secret = enroll(engine, args.id, args.name or "", tags, plugin_credentials(args, engine))
    except ProtocolError as exc:
        print(f"fleet device add: {exc}", file=sys.stderr)
        return 2
    except (UnitExists, MosquittoError) as exc:  # the plugin refused or was not reached: nothing was stored
        print(f"fleet device add: {exc}", file=sys.stderr)
        return 1
    sync_mosquitto_if_managed(args, engine)
    print(f"enrolled {device.id}; its secret (shown once):\n{secret}")
    return 0


def _claim_token(args: argparse.Namespace) -> int:
    from fleet_service.auth.claims import MAX_TTL_S, create_claim_token
    from protocol.tags import check_tags

    if not 1 <= args.ttl <= MAX_TTL_S:
        print(f"fleet device claim-token: --ttl must be between 1 and {MAX_TTL_S} seconds", file=sys.stderr)
        return 2
    try:
        tags = check_tags(args.tags)
    except ValueError as exc:
        print(f"fleet device claim-token: {exc}", file=sys.stderr)
        return 2
    engine = open_engine(args)
    row, plain = create_claim_token(engine, tags, args.ttl, "cli")
    audit(engine, "fleet device claim-token", row.id)
    print(f"claim token {row.id} (one use, valid {args.ttl} s, tags: {', '.join(tags) or '-'}); shown once:\n{plain}")
    return 0
