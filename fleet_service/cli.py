"""Sub-commands of the service side: `up`, `service`, `device`, `token`, `simulate`.

Kept import-light: FastAPI, SQLModel and friends load only when a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from fleet_cli.errors import USAGE, StartupError
from fleet_cli.options import overrides
from fleet_service import cli_security

SERVICE_OPTIONS = ["host", "http_port", "data_dir", "database_url", "admin_token", "replica_id"]


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="embedded mode: broker + service + dashboard + SQLite in one process")
    _service_options(up)
    up.add_argument("--mqtt-port", type=int, help="embedded MQTT port (0 picks a free one) [FLEET_MQTT_PORT]")
    up.set_defaults(func=_up)

    svc = sub.add_parser("service", help="the fleet service against an external MQTT broker and database")
    _service_options(svc)
    svc.add_argument("--broker-url", help="mqtt[s]://user:pass@host:port [FLEET_BROKER_URL]")
    svc.add_argument("--shared-subscriptions", action=argparse.BooleanOptionalAction, default=None,
                     help="share ingest between replicas with $share/fleet/... (default on)")
    svc.set_defaults(func=_service)

    device = sub.add_parser("device", help="manage units").add_subparsers(dest="device_cmd", required=True)
    add = device.add_parser("add", help="enroll a unit and print its secret once")
    add.add_argument("id")
    add.add_argument("--name")
    add.add_argument("--tag", action="append", default=[], dest="tags")
    _db_options(add)
    add.set_defaults(func=_device_add)
    cli_security.add_device_commands(device, _db_options)

    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="token_cmd", required=True)
    create = token.add_parser("create", help="create an API token and print it once")
    create.add_argument("--role", choices=["viewer", "operator", "admin"], required=True)
    create.add_argument("--name", default="")
    _db_options(create)
    create.set_defaults(func=_token_create)
    cli_security.add_token_commands(token, _db_options)

    sim = sub.add_parser("simulate", help="N simulated units speaking the real protocol (demos, dashboards, load)")
    sim.add_argument("--devices", type=int, help="number of units, ids PREFIX-00001... (default 10) [FLEET_DEVICES]")
    sim.add_argument("--broker-url", help="mqtt://host:port of the broker (default mqtt://127.0.0.1:1883) "
                                          "[FLEET_BROKER_URL]")
    sim.add_argument("--prefix", help="device id prefix (default sim) [FLEET_PREFIX]")
    sim.add_argument("--api-url", help="enroll missing units through this fleet API (else directly in the "
                                       "database) [FLEET_API_URL]")
    sim.add_argument("--token", dest="admin_token", help="admin API token for --api-url [FLEET_ADMIN_TOKEN]")
    sim.add_argument("--secrets-file", help="cache of the units' secrets (default DATA_DIR/simulated-units.json)")
    sim.add_argument("--heartbeat-interval", type=float, help="seconds (default 30)")
    sim.add_argument("--metrics-interval", type=float, help="seconds (default 10)")
    sim.add_argument("--log-interval", type=float, help="mean seconds between log batches per unit, 0 = none "
                                                         "(default 60)")
    sim.add_argument("--keepalive", type=int, help="MQTT keepalive in seconds (default 60)")
    sim.add_argument("--connect-rate", type=float, help="new connections per second (default 100, 0 = no limit)")
    sim.add_argument("--command-seconds", type=float, help="how long a simulated command runs (default 1)")
    sim.add_argument("--fail-update", action="append", default=[], help="unit id whose `update` fails (repeatable)")
    sim.add_argument("--fail-rate", type=float, help="fraction of `update` commands that fail (default 0)")
    sim.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    _db_options(sim)
    sim.set_defaults(func=_simulate)

    cli_security.register(sub, _db_options)


def _service_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="HTTP listen address [FLEET_HOST]")
    p.add_argument("--http-port", type=int, help="HTTP port (0 picks a free one) [FLEET_HTTP_PORT]")
    _db_options(p)
    p.add_argument("--admin-token", help="accept this bearer token as admin [FLEET_ADMIN_TOKEN]")
    p.add_argument("--replica-id", help="stable name of this replica (its MQTT session) [FLEET_REPLICA_ID]")


def _db_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (SQLite database) [FLEET_DATA_DIR]")
    p.add_argument("--database-url", help="SQLAlchemy URL, e.g. postgresql://... [FLEET_DATABASE_URL]")


def _settings(args: argparse.Namespace, extra: list[str]):
    from fleet_service.config import load_settings

    return load_settings(**overrides(args, SERVICE_OPTIONS + extra))


def _up(args: argparse.Namespace) -> int:
    from fleet_service.runtime import serve_forever

    settings = _settings(args, ["mqtt_port"])
    if settings.broker_url:
        settings = settings.model_copy(update={"broker_url": ""})  # `up` always embeds its broker
    asyncio.run(serve_forever(settings))
    return 0


def _service(args: argparse.Namespace) -> int:
    from fleet_service.runtime import serve_forever

    settings = _settings(args, ["broker_url", "shared_subscriptions"])
    if not settings.broker_url:
        raise StartupError(
            "fleet service needs --broker-url (or FLEET_BROKER_URL)",
            "pass mqtt://user:pass@host:1883 of your broker, or run `fleet up` for embedded mode",
            USAGE,
        )
    asyncio.run(serve_forever(settings))
    return 0


def _engine(args: argparse.Namespace):
    from fleet_service.config import open_database

    return open_database(_settings(args, []).database_url)


def _device_add(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from fleet_service.enrollment import enroll
    from protocol import ProtocolError

    engine = _engine(args)
    try:
        device, secret = enroll(engine, args.id, args.name or "", sorted(set(args.tags)))
    except ProtocolError as exc:
        print(f"fleet device add: {exc}", file=sys.stderr)
        return 2
    except IntegrityError:
        print(f"fleet device add: a unit with id {args.id!r} already exists", file=sys.stderr)
        return 1
    cli_security.sync_mosquitto_if_managed(args, engine)
    print(f"enrolled {device.id}; its secret (shown once):\n{secret}")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from fleet_service.security import create_token

    row, plain = create_token(_engine(args), args.role, args.name)
    print(f"token {row.id} ({row.role}) created; the token (shown once):\n{plain}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from fleet_service.simulator import run_simulation

    return run_simulation(args, lambda: _engine(args), _settings(args, []).data_dir)
