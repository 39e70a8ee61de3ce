"""`fleet broker`: the embedded MQTT broker on its own, authenticating units against the service's database."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet_cli.errors import StartupError

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
    from broker.server import EmbeddedBroker

    given = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name, None) is not None}
    settings = load_settings(**given)
    if settings.service_password is None:
        log.warning("FLEET_SERVICE_SECRET is not set: the service account is disabled, only units can connect")
    credentials = _credentials(settings.database_url, settings.service_password)
    try:
        asyncio.run(_serve(EmbeddedBroker(settings, credentials)))
    finally:
        credentials.close()
    return 0


# How `fleet broker` sets each listener's port.
_PORT_OPTIONS = {"default": "--mqtt-port", "ws": "--ws-port", "tls": "FLEET_MQTTS_PORT"}


def _credentials(database_url: str, service_password: str | None) -> Any:
    """The unit credential store, once the database answers: a broker whose units all fail to log in because its
    database is unreachable says so at start, as the service does."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, OperationalError

    from broker.credentials import SqlCredentialStore, sync_url
    from fleet_cli.errors import database_url_error, unreachable_database

    try:
        probe = create_engine(sync_url(database_url))
    except (ArgumentError, ValueError, ImportError) as exc:
        raise database_url_error(exc, database_url) from exc
    try:
        with probe.connect():
            pass
    except OperationalError as exc:
        raise unreachable_database(exc, database_url) from exc
    finally:
        probe.dispose()
    return SqlCredentialStore(database_url, service_password)


def startup_error(exc: Exception, port_options: dict[str, str], host_option: str) -> StartupError:
    """The broker's start-up failure (BrokerError) as the CLI shows it, naming the option to change."""
    from broker.server import ListenError
    from fleet_cli.errors import StartupError, listen_error

    if isinstance(exc, ListenError):
        return listen_error(exc.label, exc.host, exc.port, exc.cause, port_options[exc.listener], host_option)
    return StartupError(
        str(exc),
        "check the broker's listener and TLS settings (FLEET_TLS_CERTFILE, "
        "FLEET_TLS_KEYFILE, FLEET_WS_PORT, FLEET_MQTTS_PORT)",
    )


async def _serve(broker: Any) -> None:
    from broker.errors import BrokerError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await broker.start()
    except BrokerError as exc:
        raise startup_error(exc, _PORT_OPTIONS, "--host") from exc
    try:
        print(f"MQTT broker listening on port {broker.port}", flush=True)
        if broker.ws_port is not None:
            print(f"MQTT over WebSocket on port {broker.ws_port}", flush=True)
        if broker.mqtts_port is not None:
            print(f"MQTT over TLS on port {broker.mqtts_port}", flush=True)
        await stop.wait()
        log.info("stopping the broker")
    finally:
        await broker.stop()
