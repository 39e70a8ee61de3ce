"""`fleet broker`: the embedded MQTT broker on its own, authenticating units against the service's database."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

log = logging.getLogger(__name__)

_OPTIONS = ("mqtt_host", "mqtt_port", "ws_port", "database_url")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "broker",
        help="run the embedded MQTT broker on its own",
        description="Run the embedded MQTT broker (amqtt). Units authenticate against the device table of "
        "the service's database; the service account's password is FLEET_SERVICE_SECRET. "
        "Every option falls back to its FLEET_* environment variable.",
    )
    parser.add_argument("--host", dest="mqtt_host", help="address to listen on (FLEET_MQTT_HOST, default 0.0.0.0)")
    parser.add_argument("--mqtt-port", type=int, help="MQTT port, 0 picks a free one (FLEET_MQTT_PORT, default 1883)")
    parser.add_argument("--ws-port", type=int, help="also serve MQTT over WebSocket on this port (FLEET_WS_PORT)")
    parser.add_argument("--database-url", help="SQLAlchemy URL of the service's database (FLEET_DATABASE_URL)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `fleet agent` on a unit must not pay for SQLAlchemy and amqtt at start-up.
    from broker.config import load_settings
    from broker.credentials import SqlCredentialStore
    from broker.server import EmbeddedBroker

    given = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name, None) is not None}
    settings = load_settings(**given)
    if settings.service_password is None:
        log.warning("FLEET_SERVICE_SECRET is not set: the service account is disabled, only units can connect")
    credentials = SqlCredentialStore(settings.database_url, settings.service_password)
    try:
        asyncio.run(_serve(EmbeddedBroker(settings, credentials)))
    finally:
        credentials.close()
    return 0


async def _serve(broker: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with broker:
        print(f"MQTT broker listening on port {broker.port}", flush=True)
        if broker.ws_port is not None:
            print(f"MQTT over WebSocket on port {broker.ws_port}", flush=True)
        if broker.mqtts_port is not None:
            print(f"MQTT over TLS on port {broker.mqtts_port}", flush=True)
        await stop.wait()
        log.info("stopping the broker")
