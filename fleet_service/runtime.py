"""Running the service: embedded (`fleet up`: amqtt + API + SQLite) or against an external broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from fleet_cli.errors import USAGE, StartupError, listen_error, path_reason
from fleet_service.api.connections import read_timeout_protocol
from fleet_service.app import create_app
from fleet_service.auth.bootstrap import ensure_admin_token
from fleet_service.devices.presence import mark_all_offline
from fleet_service.settings import BrokerTarget, ServiceSettings, open_database
from protocol.heap import settle
from protocol.ids import SERVICE_USERNAME

if TYPE_CHECKING:
    from broker.server import EmbeddedBroker

log = logging.getLogger(__name__)


@dataclass
class Running:
    """What a started stack exposes to its caller (the CLI prints it, tests use it)."""

    settings: ServiceSettings
    app: FastAPI
    http_port: int
    mqtt_port: int | None = None
    admin_token: str | None = None
    broker: EmbeddedBroker | None = None
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
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def listen_http(host: str, port: int) -> socket.socket:
    try:
        return _bind(host, port)
    except OSError as exc:
        raise listen_error("HTTP", host, port, exc, "--http-port", "--host") from exc


def check_data_dir(path: Path) -> None:
    """Create the data directory (database, TURN secret) and prove this user may write in it.

    It holds password hashes, tokens and every unit's logs: the directory is 0700 and its files 0600. One that
    an earlier version (or a wide umask) left open to others is tightened, and the log says so.
    """
    fix = "pass --data-dir (FLEET_DATA_DIR) a directory this user can create and write"
    if path.exists() and not path.is_dir():
        raise StartupError(f"data directory {path} is a file, not a directory", fix)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise StartupError(f"data directory {path} cannot be used: {path_reason(exc)}", fix) from exc
    _tighten(path, 0o700)
    for entry in path.iterdir():
        if entry.is_file() and not entry.is_symlink():
            _tighten(entry, 0o600)


def _tighten(path: Path, wanted: int) -> None:
    """chmod `path` to `wanted` when group or others may use it, with a warning (also when that fails)."""
    try:
        current = path.stat().st_mode & 0o7777
    except FileNotFoundError:  # e.g. a -shm file another process just removed
        return
    if not current & 0o077:
        return
    try:
        path.chmod(wanted)
    except OSError as exc:
        log.warning(
            "%s is mode %04o, open to other users, and cannot be made %04o: %s", path, current, wanted, path_reason(exc)
        )
        return
    log.warning("%s was mode %04o, open to other users; now %04o", path, current, wanted)


def check_turn_settings(settings: ServiceSettings) -> None:
    """Bad FLEET_TURN_* values stop the start; TURN merely off (503) is only for settings not given yet."""
    from fleet_service.signalling.turn import turn_settings
    from turn_service import TurnConfigError

    try:
        turn_settings(settings)
    except TurnConfigError as exc:
        raise StartupError(str(exc), "correct or unset that FLEET_TURN_* variable", USAGE) from exc


async def start_embedded_broker(settings: ServiceSettings) -> tuple[EmbeddedBroker, str]:
    """Start amqtt with our plugins on settings.mqtt_port; return it and the service's broker URL."""
    from broker.cli import startup_error
    from broker.config import BrokerSettings
    from broker.credentials import SqlCredentialStore
    from broker.errors import BrokerError
    from broker.server import EmbeddedBroker

    configured = settings.service_secret.get_secret_value() if settings.service_secret else ""
    service_secret = configured or secrets.token_urlsafe(32)
    broker_settings = BrokerSettings(
        mqtt_host=settings.mqtt_host,
        mqtt_port=settings.mqtt_port,
        database_url=settings.database_url,
        service_secret=SecretStr(service_secret),
    )
    credentials = SqlCredentialStore(settings.database_url, service_secret)
    broker = EmbeddedBroker(broker_settings, credentials)
    try:
        await broker.start()
    except BrokerError as exc:
        credentials.close()
        raise startup_error(exc, _EMBEDDED_PORT_OPTIONS, "FLEET_MQTT_HOST") from exc
    return broker, f"mqtt://{SERVICE_USERNAME}:{service_secret}@127.0.0.1:{broker.port}"


# How `fleet up` sets each listener's port of the embedded broker.
_EMBEDDED_PORT_OPTIONS = {"default": "--mqtt-port", "ws": "FLEET_WS_PORT", "tls": "FLEET_MQTTS_PORT"}


async def start(settings: ServiceSettings) -> Running:
    """Check the settings, listen, migrate, start the broker when embedded, serve HTTP; returns once it serves.

    A start-up failure raises StartupError (what is wrong and how to fix it) and leaves nothing behind: no port
    held, no broker running, no admin token generated that nobody was shown.
    """
    check_turn_settings(settings)
    if settings.uses_data_dir:
        check_data_dir(settings.data_dir)
    sock = listen_http(settings.host, settings.http_port)
    engine = broker = None
    try:
        engine = await asyncio.to_thread(open_database, settings.database_url)
        if settings.embedded:
            await asyncio.to_thread(mark_all_offline, engine, "broker_restart")
            broker, url = await start_embedded_broker(settings)
            settings = settings.model_copy(update={"broker_url": url, "shared_subscriptions": False})
        app = create_app(settings, engine, broker)
    except BaseException:
        sock.close()
        if broker is not None:
            await broker.stop()
        if engine is not None:
            engine.dispose()
        raise
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        limit_concurrency=settings.http_max_connections,
        http=read_timeout_protocol(settings.http_read_timeout_s),
    )
    server = _Server(config)
    running = Running(settings, app, sock.getsockname()[1], broker.port if broker else None, None, broker, server)

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
    # Only now: a token generated before a failed start would never be shown, and no later start shows one.
    running.admin_token = await asyncio.to_thread(ensure_admin_token, engine, settings.admin_token)
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
    settle()  # everything built at start lives as long as the process: out of the collector's way (protocol/heap.py)
    announce(running)
    watch = None if running.broker is not None else asyncio.create_task(warn_unless_connected(running))
    await running.stopped.wait()
    if watch is not None:
        watch.cancel()
    print("fleet: stopped", flush=True)


async def warn_unless_connected(running: Running, after_s: float = 5.0) -> None:
    """External broker: say once, on stderr, when it is not connected soon after the start.

    Not fatal by design: the link keeps retrying in the background, as it does when a broker restarts under a
    running replica, and the service serves the API (with /health saying the broker is down) meanwhile.
    """
    try:
        await asyncio.wait_for(running.app.state.ctx.link.connected.wait(), after_s)
    except TimeoutError:
        target = BrokerTarget(running.settings.broker_url)
        print(
            f"fleet: warning: MQTT broker at {target.host}:{target.port} is unreachable or refused the login "
            f"(not connected after {after_s:g} s) — check --broker-url (FLEET_BROKER_URL) and that the broker is "
            "running; the service keeps retrying",
            file=sys.stderr,
            flush=True,
        )
