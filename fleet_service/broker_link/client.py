"""One MQTT 3.1.1 connection from the service to its broker, on asyncio, with no thread and no per-packet task.

Every unit's messages arrive over this connection, so receiving is kept cheap: the bytes of one read are cut into
messages in one pass (`wire.Reader`), their acknowledgements go back as one write, and the messages wait in a list
that the link's consumer takes whole (`take`). When that list is long, in messages or in bytes (ingest is behind),
the connection stops reading, and the broker holds the rest: memory stays bounded and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from fleet_service.broker_link import wire

__all__ = ["Connection", "ConnectionLost", "Message", "Refused"]

log = logging.getLogger(__name__)
Message = tuple[str, bytes, bool]  # topic, payload, retained


class ConnectionLost(Exception):
    """The connection is gone (or never came up); everything waiting on it fails with this."""


class Refused(ConnectionLost):
    """The broker refused the connection (CONNACK return code)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"broker refused the connection: {wire.CONNACK_REASONS.get(code, f'code {code}')}")
        self.code = code

    @property
    def credentials(self) -> bool:
        return self.code in (4, 5)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: Connection) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._owner._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(exc)


class Connection:
    """Open with `open()`; then `take()` messages, `publish()`, `subscribe()`; `close()` ends it."""

    def __init__(
        self, *, inbox_max: int = 20_000, inbox_max_bytes: int = 32 * 1024 * 1024, max_packet: int = wire.MAX_PACKET
    ) -> None:
        self._transport: asyncio.Transport | None = None
        self._reader = wire.Reader(max_packet)
        self._inbox: list[Message] = []
        self._inbox_max = inbox_max
        self._inbox_max_bytes = inbox_max_bytes
        self._inbox_bytes = 0
        self._arrived = asyncio.Event()
        self._paused = False
        self._waiting: dict[int, asyncio.Future[bytes]] = {}  # packet id -> its acknowledgement's body
        self._connack: asyncio.Future[bytes] | None = None
        self._next_id = 0
        self._error: ConnectionLost | None = None
        self._closed = asyncio.Event()
        self._last_heard = time.monotonic()
        self._pinger: asyncio.Task[None] | None = None

    # -- opening and closing -----------------------------------------------------------------------------

    async def open(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        username: str | None,
        password: str | None,
        keepalive: int = 30,
        clean: bool = False,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> bool:
        """Connect and wait for CONNACK; True when the broker kept a session for this client id."""
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self), host, port, ssl=tls, server_hostname=host if tls else None
                ),
                timeout,
            )
            self._write(wire.connect(client_id, username=username, password=password, keepalive=keepalive, clean=clean))
            body = await asyncio.wait_for(self._connack, timeout)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ConnectionLost(f"cannot connect to {host}:{port}: {exc or 'timed out'}") from exc
        except ConnectionLost:
            self.close()
            raise
        if len(body) != 2:
            self.close()
            raise ConnectionLost("malformed CONNACK")
        if body[1]:
            self.close()
            raise Refused(body[1])
        if keepalive:
            self._pinger = asyncio.create_task(self._keep_alive(keepalive), name="mqtt-keepalive")
        return bool(body[0] & 0x01)

    def close(self) -> None:
        """Say DISCONNECT (so the broker does not send the Will) and drop the connection."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(wire.disconnect())
            transport.close()
        self._fail(ConnectionLost("connection closed"))

    async def wait_closed(self) -> ConnectionLost:
        await self._closed.wait()
        assert self._error is not None
        return self._error

    # -- receiving -------------------------------------------------------------------------------------------

    async def take(self) -> list[Message]:
        """Every message received so far (at least one); ConnectionLost once the connection is gone and they
        are all taken."""
        while not self._inbox:
            if self._error is not None:
                raise self._error
            self._arrived.clear()
            await self._arrived.wait()
        messages, self._inbox, self._inbox_bytes = self._inbox, [], 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return messages

    def pending(self) -> int:
        """Messages received, not yet taken."""
        return len(self._inbox)

    # -- sending ---------------------------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """QoS 0: written. QoS 1: returns once the broker acknowledged it."""
        if qos not in (0, 1):
            raise ValueError("the service publishes at QoS 0 or 1")
        if not qos:
            self._write(wire.publish(topic, payload, qos=0, retain=retain))
            return
        packet_id, done = self._expect()
        self._write(wire.publish(topic, payload, qos=1, retain=retain, packet_id=packet_id))
        await done

    async def subscribe(self, filters: list[str], qos: int = 1) -> None:
        packet_id, done = self._expect()
        self._write(wire.subscribe(packet_id, filters, qos))
        body = await done
        refused = [f for f, code in zip(filters, body[2:], strict=False) if code == 0x80]
        if refused or len(body) - 2 != len(filters):
            raise ConnectionLost(f"broker refused the subscription to {', '.join(refused) or filters}")

    async def unsubscribe(self, filters: list[str]) -> None:
        packet_id, done = self._expect()
        self._write(wire.unsubscribe(packet_id, filters))
        await done

    def _expect(self) -> tuple[int, asyncio.Future[bytes]]:
        if self._error is not None:
            raise self._error
        for _ in range(0xFFFF):
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._waiting:
                break
        else:
            raise ConnectionLost("65,535 packets waiting for the broker")
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = done
        return self._next_id, done

    def _write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._transport is None:
            raise ConnectionLost("not connected")
        self._transport.write(data)

    async def _keep_alive(self, keepalive: int) -> None:
        """A PINGREQ every half keep-alive; a broker silent for 1.5 keep-alives is taken for gone."""
        while self._error is None:
            await asyncio.sleep(keepalive / 2)
            if self._paused:  # our consumer is behind, not the broker: its bytes wait in the socket
                self._last_heard = time.monotonic()
            elif time.monotonic() - self._last_heard > keepalive * 1.5:
                log.warning("no word from the broker in %.0f s: dropping the connection", keepalive * 1.5)
                self._abort(ConnectionLost("the broker stopped answering"))
                return
            try:
                self._write(wire.pingreq())
            except ConnectionLost:
                return

    # -- the protocol's callbacks ----------------------------------------------------------------------------

    def _made(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def _received(self, data: bytes) -> None:
        self._last_heard = time.monotonic()
        try:
            messages, control, acks = self._reader.feed(data)
        except wire.ProtocolViolation as exc:
            log.error("broker sent malformed data: %s", exc)
            self._abort(ConnectionLost(f"protocol violation: {exc}"))
            return
        if acks and self._transport is not None:
            self._transport.write(acks)
        for packet in control:
            self._control(packet)
        if messages:
            self._inbox.extend(messages)
            self._inbox_bytes += len(data)  # what was read: payloads and their headers, within a few bytes
            self._arrived.set()
            full = len(self._inbox) >= self._inbox_max or self._inbox_bytes >= self._inbox_max_bytes
            if full and not self._paused and self._transport is not None:
                self._paused = True
                self._transport.pause_reading()

    def _control(self, packet: wire.Packet) -> None:
        if packet.kind == wire.CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(packet.body)
            return
        if packet.kind == wire.PINGRESP or len(packet.body) < 2:
            return
        done = self._waiting.pop((packet.body[0] << 8) | packet.body[1], None)
        if done is not None and not done.done():
            done.set_result(packet.body)

    def _lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(f"connection lost: {exc}" if exc else "the broker closed the connection"))

    def _abort(self, error: ConnectionLost) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._fail(error)

    def _fail(self, error: ConnectionLost) -> None:
        if self._error is not None:
            return
        self._error = error
        self._arrived.set()
        for waiter in [self._connack, *self._waiting.values()]:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved here: a waiter nobody awaits any more must not log "never retrieved"
        self._waiting.clear()
        if self._pinger is not None and self._pinger is not asyncio.current_task():
            self._pinger.cancel()
        self._closed.set()
