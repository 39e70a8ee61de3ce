"""The MQTT link: birth/Will per session, an explicit reconnect loop with backoff and jitter, acked publishes."""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from agent.config import AgentSettings
from protocol.ids import new_id, now_ms
from protocol.payloads import Death, encode
from protocol.topics import Kind, topic

log = logging.getLogger(__name__)

# CONNACK refusals that retrying soon cannot fix (MQTT 3.1.1 codes 4/5 as paho's v5-style reason codes).
_AUTH_REFUSED = {134, 135}
# A connection that lived this long resets the backoff; shorter ones keep growing it (no flapping storm).
_STABLE_AFTER_S = 10.0


@dataclass
class Hooks:
    """What the agent does on link events; every hook runs on the network thread and must return fast."""

    birth: Callable[[str], bytes]
    on_connected: Callable[[str], None] = lambda _session: None
    on_disconnected: Callable[[], None] = lambda: None
    on_message: Callable[[str, bytes], None] = lambda _name, _payload: None
    on_published: Callable[[int], None] = lambda _mid: None


class Connection:
    """One paho client driven by our own loop thread; survives any broker outage."""

    def __init__(self, settings: AgentSettings, hooks: Hooks, subscriptions: list[str]) -> None:
        self.settings = settings
        self.hooks = hooks
        self.subscriptions = subscriptions
        self.state_topic = topic(settings.device_id, Kind.STATE)
        self.session = ""
        self.auth_refused = False
        self.connects = 0
        self._connected = threading.Event()
        self._stopping = threading.Event()  # leave the network loop
        self._closing = threading.Event()  # never connect again
        self._thread: threading.Thread | None = None
        self._client = self._make_client()

    # Public ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agent-mqtt", daemon=True)
        self._thread.start()

    def publish(self, name: str, payload: bytes, qos: int = 0, retain: bool = False) -> int | None:
        """Hand a message to paho; the mid to await for QoS 1, or None when it was not sent."""
        if not self.connected:
            return None
        info = self._client.publish(name, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.debug("publish to %s failed: %s", name, mqtt.error_string(info.rc))
            return None
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            return None
        return info.mid

    def republish_birth(self) -> None:
        """Publish the birth again for the current session (e.g. after the software version changed)."""
        if self.connected:
            self._client.publish(self.state_topic, self.hooks.birth(self.session), qos=1, retain=True)

    def stop(self, clean: bool = True, timeout: float = 5.0) -> None:
        """Clean: publish offline for this session and DISCONNECT. Not clean: drop the socket (the Will fires)."""
        self._closing.set()  # no new connection from here on
        if clean and self.connected:
            death = encode(Death(session=self.session, ts=now_ms()))
            info = self._client.publish(self.state_topic, death, qos=1, retain=True)
            try:
                # The loop thread is still running and reads the PUBACK.
                info.wait_for_publish(timeout=min(timeout, 3.0))
            except (RuntimeError, ValueError) as exc:
                log.warning("offline message not acknowledged: %s", exc)
            self._stopping.set()
            self._client.disconnect()
        self._stopping.set()
        if not clean:
            # Drop the TCP connection without DISCONNECT, as a crash or power cut would: the Will fires.
            sock = self._client.socket()
            if isinstance(sock, socket.socket):  # plain TCP or TLS: the agent never uses the websocket transport
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout)
        self._connected.clear()

    # Loop -----------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.device_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(s.device_id, s.password())
        if s.tls:
            client.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
        client.max_inflight_messages_set(20)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        # Every write to the socket happens on the loop thread. Without a write callback, paho writes from
        # whatever thread calls publish() while the loop thread may be writing too; neither holds a lock, so
        # under a full socket buffer two threads put packets on the wire out of order (seen as a remote
        # session's frames arriving swapped). With one, publish() only queues and wakes the loop's select().
        client.on_socket_register_write = _loop_thread_writes
        return client

    def _run(self) -> None:
        attempt = 0
        failures = 0
        while not self._closing.is_set():
            self.session = new_id()
            self.auth_refused = False
            self._client.will_set(self.state_topic, encode(Death(session=self.session)), qos=1, retain=True)
            started = time.monotonic()
            try:
                self._client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
            except (OSError, ValueError) as exc:
                failures += 1
                # Quiet on a long outage: the first failure and then every 20th are worth a line.
                level = logging.WARNING if failures == 1 or failures % 20 == 0 else logging.DEBUG
                log.log(
                    level,
                    "broker %s:%s unreachable (%s failures): %s",
                    self.settings.host,
                    self.settings.port,
                    failures,
                    exc,
                )
            else:
                _no_delay(self._client)
                while not self._stopping.is_set():
                    rc = self._client.loop(timeout=1.0)
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                if self.connected:
                    failures = 0
                if time.monotonic() - started >= _STABLE_AFTER_S and not self.auth_refused:
                    attempt = 0
                self._connected.clear()
            if self._closing.is_set():
                break
            delay = self._delay(attempt)
            attempt += 1
            self._closing.wait(delay)
        self._connected.clear()

    def _delay(self, attempt: int) -> float:
        s = self.settings
        if self.auth_refused:
            return random.uniform(s.auth_retry_delay * 0.8, s.auth_retry_delay)
        ceiling = min(s.reconnect_max_delay, s.reconnect_min_delay * (2 ** min(attempt, 30)))
        return random.uniform(ceiling / 2, ceiling)

    # paho callbacks (network thread; paho passes the arguments by position) ------------

    def _on_connect(self, client: mqtt.Client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self.auth_refused = reason_code.value in _AUTH_REFUSED
            if self.auth_refused:
                log.error(
                    "broker refused the credentials of %s (%s); retrying every ~%.0f s",
                    self.settings.device_id,
                    reason_code,
                    self.settings.auth_retry_delay,
                )
            else:
                log.warning("broker refused the connection: %s", reason_code)
            return
        self.connects += 1
        for name in self.subscriptions:
            client.subscribe(name, qos=1)
        client.publish(self.state_topic, self.hooks.birth(self.session), qos=1, retain=True)
        self._connected.set()
        log.info("connected to %s:%s (session %s)", self.settings.host, self.settings.port, self.session)
        self.hooks.on_connected(self.session)

    def _on_disconnect(self, _client: mqtt.Client, _userdata, _flags, reason_code, _properties) -> None:
        was_connected = self.connected
        self._connected.clear()
        if was_connected:
            if self._stopping.is_set():
                log.info("disconnected from the broker")
            else:
                log.warning("lost the broker connection: %s", reason_code)
            self.hooks.on_disconnected()

    def _on_message(self, _client: mqtt.Client, _userdata, message: mqtt.MQTTMessage) -> None:
        self.hooks.on_message(message.topic, bytes(message.payload))

    def _on_publish(self, _client: mqtt.Client, _userdata, mid: int, _reason_code, _properties) -> None:
        self.hooks.on_published(mid)


def _loop_thread_writes(_client: mqtt.Client, _userdata: object, _sock: object) -> None:
    """Nothing to do: the loop thread's select() sees that paho wants to write (see _make_client)."""


def _no_delay(client: mqtt.Client) -> None:
    """Disable Nagle on the broker socket: a result or PUBACK that follows an unacknowledged packet would
    otherwise wait for the broker's delayed ACK (~40 ms on Linux) before it leaves."""
    sock = client.socket()
    if not isinstance(sock, socket.socket):  # not connected (the agent never uses the websocket transport)
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("could not set TCP_NODELAY on the broker socket: %s", exc)
