"""`fleet up` (embedded broker, service, dashboard and SQLite in one process) and `fleet service` (against an
external MQTT broker and database)."""

from __future__ import annotations

import argparse
import asyncio

from fleet_cli.errors import USAGE, StartupError
from fleet_service.cli.common import db_options, settings


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="embedded mode: broker + service + dashboard + SQLite in one process")
    _service_options(up)
    up.add_argument("--mqtt-port", type=int, help="embedded MQTT port (0 picks a free one) [FLEET_MQTT_PORT]")
    up.set_defaults(func=_up)

    svc = sub.add_parser("service", help="the fleet service against an external MQTT broker and database")
    _service_options(svc)
    svc.add_argument("--broker-url", help="mqtt[s]://user:pass@host:port [FLEET_BROKER_URL]")
    svc.add_argument(
        "--shared-subscriptions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="share ingest between replicas with $share/fleet/... (default on)",
    )
    svc.set_defaults(func=_service)


def _service_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="HTTP listen address [FLEET_HOST]")
    p.add_argument("--http-port", type=int, help="HTTP port (0 picks a free one) [FLEET_HTTP_PORT]")
    db_options(p)
    p.add_argument("--admin-token", help="accept this bearer token as admin [FLEET_ADMIN_TOKEN]")
    p.add_argument("--replica-id", help="stable name of this replica (its MQTT session) [FLEET_REPLICA_ID]")


def _up(args: argparse.Namespace) -> int:
    from fleet_service.runtime import serve_forever

    config = settings(args, ["mqtt_port"])
    if config.broker_url:
        config = config.model_copy(update={"broker_url": ""})  # `up` always embeds its broker
    asyncio.run(serve_forever(config))
    return 0


def _service(args: argparse.Namespace) -> int:
    from fleet_service.runtime import serve_forever

    config = settings(args, ["broker_url", "shared_subscriptions"])
    if not config.broker_url:
        raise StartupError(
            "fleet service needs --broker-url (or FLEET_BROKER_URL)",
            "pass mqtt://user:pass@host:1883 of your broker, or run `fleet up` for embedded mode",
            USAGE,
        )
    asyncio.run(serve_forever(config))
    return 0
