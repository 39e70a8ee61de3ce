"""EmbeddedBroker: the zero-setup MQTT broker (amqtt plus our fixes and plugins) inside a running event loop."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import ssl
from typing import Any

from amqtt.errors import BrokerError as AmqttBrokerError

from broker.config import BrokerSettings
from broker.credentials import CredentialStore
from broker.errors import BrokerError
from broker.routing import Consumer
from broker.sessions import FleetBroker

log = logging.getLogger(__name__)

_START_ATTEMPTS = 5
_AUTH_PLUGIN = "broker.plugins.FleetAuthPlugin"
_TOPIC_PLUGIN = "broker.plugins.FleetTopicPlugin"


class ListenError(BrokerError):
    """A listener could not bind its port: `listener` ("default", "ws" or "tls") with its `label`, `host`, `port`,
    and the OSError as `cause`."""

    def __init__(self, listener: str, host: str, port: int, cause: OSError) -> None:
        self.label = _LISTENER_LABELS.get(listener, f"MQTT {listener}")
        reason = "in use" if cause.errno == errno.EADDRINUSE else (cause.strerror or str(cause))
        super().__init__(f"MQTT broker could not start: {self.label} port {port} on {host}: {reason}")
        self.listener = listener
        self.host = host
        self.port = port
        self.cause = cause


_LISTENER_LABELS = {"default": "MQTT", "ws": "MQTT over WebSocket", "tls": "MQTT over TLS"}


class EmbeddedBroker:
    """Runs the fleet's MQTT broker in the current event loop; `port` is the bound MQTT port once started."""

    def __init__(self, settings: BrokerSettings, credentials: CredentialStore) -> None:
        self._settings = settings
        self._credentials = credentials
        self._broker: FleetBroker | None = None
        self._ports: dict[str, int] = {}
        self._consumers: list[Consumer] = []  # shared with the amqtt broker, so they may be added at any time
        self._stopped = asyncio.Event()
        self._stopped.set()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the listeners and start serving; raises BrokerError when that fails."""
        if self._broker is not None:
            raise BrokerError("the broker is already running")
        _quiet_amqtt_logging()
        for attempt in range(1, _START_ATTEMPTS + 1):
            ports = self._choose_ports()
            try:
                broker = self._build(ports)
            except (AmqttBrokerError, ValueError, OSError) as exc:  # e.g. a missing certificate file
                raise BrokerError(f"MQTT broker configuration is invalid: {exc}") from exc
            try:
                await broker.start()
            except AmqttBrokerError as exc:
                failed = next((name for name in ports if name not in broker._servers), None)
                await _close_listeners(broker)
                cause = exc.__cause__
                in_use = isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE
                # A port picked as free may have been taken meanwhile; pick again.
                if attempt == _START_ATTEMPTS or not self._has_port_zero() or not in_use:
                    if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError) and failed is not None:
                        raise ListenError(failed, self._settings.mqtt_host, ports[failed], cause) from exc
                    raise BrokerError(f"MQTT broker could not start: {cause or exc}") from exc
                log.info("broker start attempt %d failed (%s); retrying on other ports", attempt, exc)
                continue
            self._broker = broker
            self._stopped.clear()
            self._ports = {name: port or _bound_port(broker, name) for name, port in ports.items()}
            log.info("MQTT broker listening on %s", ", ".join(f"{k} {v}" for k, v in self._ports.items()))
            return

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            self._stopped.set()
            await broker.shutdown()
            log.info("MQTT broker stopped")

    async def wait_stopped(self) -> None:
        """Return once the broker is not running (at once when it is not started)."""
        await self._stopped.wait()

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def port(self) -> int:
        """The bound MQTT (TCP) port."""
        return self._port("default")

    @property
    def ws_port(self) -> int | None:
        return self._ports.get("ws")

    @property
    def mqtts_port(self) -> int | None:
        return self._ports.get("tls")

    @property
    def amqtt(self) -> FleetBroker:
        """The underlying amqtt broker, for in-process hooks such as `internal_message_broadcast`."""
        if self._broker is None:
            raise BrokerError("the broker is not running")
        return self._broker

    def add_consumer(self, consumer: Consumer) -> None:
        """Have `await consumer(topic, payload, qos, retain)` called for every message the broker routes:
        what clients publish (after the size and ACL checks), the Wills it publishes, and `publish()` calls.

        Called in each publisher's own order, before the publisher's next message is taken; a consumer that
        waits holds that publisher back (its messages stay acknowledged and queued in the broker, never dropped).
        Messages are passed as received, not copied. A consumer's exception is logged and the message goes on.
        """
        self._consumers.append(consumer)

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish from this process with the service account's rights (subscribers' read ACL still applies);
        `retain` stores it for later subscribers. Raises BrokerError when the broker is not running."""
        await self.amqtt.publish_internal(topic, payload, qos, retain)

    def inbound_backlog(self) -> int:
        """Messages acknowledged to publishers that the broker has not routed yet (0 when not running)."""
        return self._broker.inbound_backlog() if self._broker is not None else 0

    def connected_clients(self) -> list[str]:
        return list(self.amqtt.connections)

    async def disconnect(self, client_id: str) -> bool:
        """Close a client's live connection as a TCP drop would (its Will fires); False if not connected."""
        return await self.amqtt.disconnect(client_id)

    def forget(self, device_id: str) -> None:
        """After a unit's secret changed: its next CONNECT is checked against the store, not a cached login."""
        forget = getattr(self._credentials, "forget", None)
        if forget is not None:
            forget(device_id)

    async def revoke(self, device_id: str) -> bool:
        """After a unit is deleted: drop cached logins and close its live connection (its Will fires)."""
        self.forget(device_id)
        return await self.disconnect(device_id)

    # ---- configuration --------------------------------------------------------------------------

    def _port(self, listener: str) -> int:
        if listener not in self._ports:
            raise BrokerError("the broker is not running")
        return self._ports[listener]

    def _wanted_ports(self) -> dict[str, int]:
        s = self._settings
        wanted = {"default": s.mqtt_port}
        if s.ws_port is not None:
            wanted["ws"] = s.ws_port
        if s.tls_enabled:
            wanted["tls"] = s.mqtts_port
        return wanted

    def _has_port_zero(self) -> bool:
        return 0 in self._wanted_ports().values()

    def _choose_ports(self) -> dict[str, int]:
        """Port 0 stays 0 (the OS picks; read back after start) when the host is one address, else a free port."""
        host = self._settings.mqtt_host
        single = _is_ip_literal(host)
        return {name: port or (0 if single else free_port(host)) for name, port in self._wanted_ports().items()}

    def _build(self, ports: dict[str, int]) -> FleetBroker:
        s = self._settings
        return FleetBroker(
            amqtt_config(s, ports, self._credentials),
            max_payload_bytes=s.max_payload_bytes,
            max_packet_bytes=s.max_packet_bytes,
            max_queued_messages=s.max_queued_messages,
            max_inflight_messages=s.max_inflight_messages,
            keepalive_factor=s.keepalive_factor,
            connect_timeout_s=s.connect_timeout_s,
            consumers=self._consumers,
        )


def amqtt_config(settings: BrokerSettings, ports: dict[str, int], credentials: CredentialStore) -> dict[str, Any]:
    """amqtt's configuration: our listeners and exactly our two plugins (no anonymous access, no $SYS)."""
    host = f"[{settings.mqtt_host}]" if ":" in settings.mqtt_host else settings.mqtt_host
    common = {"max_connections": settings.max_connections}
    listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{host}:{ports['default']}", **common}}
    if "ws" in ports:
        listeners["ws"] = {"type": "ws", "bind": f"{host}:{ports['ws']}", **common}
    if "tls" in ports:
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{host}:{ports['tls']}",
            "ssl": True,
            "certfile": settings.tls_certfile,
            "keyfile": settings.tls_keyfile,
            **common,
        }
    return {
        "listeners": listeners,
        "session_expiry_interval": settings.session_expiry_s,
        "plugins": {
            _AUTH_PLUGIN: {
                "credentials": credentials,
                "failures_per_minute": settings.auth_failures_per_minute,
                "max_payload_bytes": settings.max_payload_bytes,
            },
            _TOPIC_PLUGIN: {},
        },
    }


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _bound_port(broker: FleetBroker, listener: str) -> int:
    sockets = broker._servers[listener].instance.sockets  # asyncio and websockets servers both expose them
    return int(next(iter(sockets)).getsockname()[1])


def free_port(host: str) -> int:
    """A port that is free on `host` right now."""
    family = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _close_listeners(broker: FleetBroker) -> None:
    for server in broker._servers.values():  # listeners bound before the one that failed
        try:
            await server.close_instance()
        except OSError:
            log.debug("closing a listener after a failed start", exc_info=True)


def _quiet_amqtt_logging() -> None:
    """amqtt (and its state-machine library) log every connection at INFO; keep that out unless asked for."""
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    startup = logging.getLogger("amqtt.broker")
    if not any(isinstance(f, _NoStartupTraceback) for f in startup.filters):
        startup.addFilter(_NoStartupTraceback())


class _NoStartupTraceback(logging.Filter):
    """amqtt logs a failed start with a full traceback; start() raises BrokerError saying the same in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Broker startup failed"
