"""Running the service: embedded (`fleet up`: amqtt + API + SQLite) or against an external broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI

from fleet_service.app import create_app
from fleet_service.bootstrap import ensure_admin_token
from fleet_service.config import ServiceSettings
from fleet_service.db import make_engine, migrate
from fleet_service.presence import mark_all_offline
from protocol.ids import SERVICE_USERNAME

log = logging.getLogger(__name__)


@dataclass
class Running:
    """What a started stack exposes to its caller (the CLI prints it, tests use it)."""

    settings: ServiceSettings
    app: FastAPI
    http_port: int
    mqtt_port: int | None = None
    admin_token: str | None = None
    broker: Any = None
    server: uvicorn.Server | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.http_port}"


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after shutting down, which skips our own clean-up; stop gracefully instead."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off only on accepted sockets whose proto says TCP.
    # Without it every keep-alive response waits ~40 ms for the client's delayed ACK (uvicorn writes headers
    # and body separately).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def start_embedded_broker(settings: ServiceSettings) -> tuple[Any, str]:
    """Start amqtt with our plugins on settings.mqtt_port; return it and the service's broker URL."""
    from broker.config import BrokerSettings
    from broker.credentials import SqlCredentialStore
    from broker.server import EmbeddedBroker

    service_secret = settings.service_secret or secrets.token_urlsafe(32)
    broker_settings = BrokerSettings(mqtt_host=settings.mqtt_host, mqtt_port=settings.mqtt_port,
                                     database_url=settings.database_url, service_secret=service_secret)
    broker = EmbeddedBroker(broker_settings, SqlCredentialStore(settings.database_url, service_secret))
    await broker.start()
    return broker, f"mqtt://{SERVICE_USERNAME}:{service_secret}@127.0.0.1:{broker.port}"


async def start(settings: ServiceSettings) -> Running:
    """Migrate, start the broker when embedded, start the HTTP server; returns once it serves."""
    engine = make_engine(settings.database_url)
    await asyncio.to_thread(migrate, engine)
    admin_token = await asyncio.to_thread(ensure_admin_token, engine, settings.admin_token)
    broker = None
    if settings.embedded:
        await asyncio.to_thread(mark_all_offline, engine, "broker_restart")
        broker, url = await start_embedded_broker(settings)
        settings = settings.model_copy(update={"broker_url": url, "shared_subscriptions": False})
    app = create_app(settings, engine, broker)
    sock = _bind(settings.host, settings.http_port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3)
    server = _Server(config)
    running = Running(settings, app, sock.getsockname()[1], broker.port if broker else None, admin_token, broker,
                      server)

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            if broker is not None:
                await broker.stop()
            running.stopped.set()

    running.task = asyncio.create_task(serve(), name="http")  # type: ignore[attr-defined]
    while not server.started:
        if running.task.done():  # type: ignore[attr-defined]
            running.task.result()  # type: ignore[attr-defined]
            raise RuntimeError("the HTTP server stopped during start-up")
        await asyncio.sleep(0.02)
    return running


async def stop(running: Running) -> None:
    if running.server is not None:
        running.server.should_exit = True
    await running.stopped.wait()


def announce(running: Running) -> None:
    """The CLI's start-up banner: URLs, ports, and a generated admin token exactly once."""
    out = sys.stdout
    print(f"fleet: dashboard and API at {running.url}  (OpenAPI: {running.url}/docs)", file=out)
    if running.mqtt_port is not None:
        print(f"fleet: embedded MQTT broker on port {running.mqtt_port}", file=out)
    print(f"fleet: database {running.settings.database_url.split('@')[-1]}", file=out)
    if running.admin_token:
        print("fleet: first start - admin API token (shown once, store it now):", file=out)
        print(f"  {running.admin_token}", file=out)
    print("fleet: ready (Ctrl-C stops)", file=out)
    out.flush()


async def serve_forever(settings: ServiceSettings) -> None:
    running = await start(settings)
    announce(running)
    await running.stopped.wait()
    print("fleet: stopped", flush=True)
