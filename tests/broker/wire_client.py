"""A blocking MQTT 3.1.1 client speaking raw packets, for tests that need exact control of the wire.

It can go silent, stall mid-packet, see the CONNACK code and SUBACK failures, and notice the broker closing.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    packet_id: int | None = None


class BrokerClosedError(ConnectionError):
    """The broker closed the connection."""


def _str(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + _remaining_length(len(body)) + body


def connect_packet(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    keepalive: int = 60,
    clean: bool = True,
    will: tuple[str, bytes, int, bool] | None = None,
) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    return packet(CONNECT, 0, _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload)


def publish_packet(topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 1) -> bytes:
    body = _str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(PUBLISH, (qos << 1) | (1 if retain else 0), body)


class WireClient:
    def __init__(
        self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, sock: socket.socket | None = None
    ) -> None:
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.inbox: list[Received] = []
        self.auto_ack = True  # PUBACK every QoS 1 PUBLISH as it arrives
        self._buf = b""
        self._packet_id = 0

    # ---- session ----

    def connect(self, client_id: str, username: str | None = None, password: str | None = None, **kw) -> int:
        """Send CONNECT; return the CONNACK return code (0 = accepted)."""
        return self.connect_full(client_id, username, password, **kw)[1]

    def connect_full(self, client_id: str, username: str | None = None, password: str | None = None, **kw):
        """(session_present, return_code) of the CONNACK."""
        self.sock.sendall(connect_packet(client_id, username, password, **kw))
        body = self._expect(CONNACK)
        return bool(body[0] & 1), body[1]

    def subscribe(self, *filters: str, qos: int = 1) -> list[int]:
        """SUBSCRIBE and return the SUBACK codes (granted QoS, or 0x80 for a refusal)."""
        pid = self._next_id()
        body = struct.pack("!H", pid) + b"".join(_str(f) + bytes([qos]) for f in filters)
        self.sock.sendall(packet(SUBSCRIBE, 2, body))
        return list(self._expect(SUBACK)[2:])

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """PUBLISH; at QoS 1 wait for the broker's PUBACK."""
        pid = self._next_id()
        self.sock.sendall(publish_packet(topic, payload, qos, retain, pid))
        if qos:
            self._expect(PUBACK)

    def ping(self) -> None:
        self.sock.sendall(packet(PINGREQ, 0, b""))
        self._expect(PINGRESP)

    def disconnect(self) -> None:
        self.sock.sendall(packet(DISCONNECT, 0, b""))
        self.close()

    def close(self) -> None:
        self.sock.close()

    # ---- receiving ----

    def next_message(self, timeout: float | None = None) -> Received | None:
        """The next PUBLISH from the broker, or None when none arrives within `timeout`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self._handle(*self._read_packet(remaining))
            except TimeoutError:
                return None
        return self.inbox.pop(0)

    def messages(self, timeout: float) -> list[Received]:
        """Everything that arrives within `timeout`."""
        out = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next_message(left)
            if message is not None:
                out.append(message)
        return out

    def take(self, count: int, timeout: float = 10.0, grace: float = 0.3) -> list[Received]:
        """Wait (generously) for `count` messages, then `grace` seconds more for any unexpected extra ones."""
        out: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and (left := deadline - time.monotonic()) > 0:
            message = self.next_message(left)
            if message is not None:
                out.append(message)
        return out + self.messages(grace)

    def closed_by_broker(self, timeout: float) -> bool:
        """True once the broker closes the connection within `timeout` (messages meanwhile are kept)."""
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self._handle(*self._read_packet(left))
        except (BrokerClosedError, ConnectionResetError):
            return True
        except TimeoutError:
            return False
        return False

    # ---- internals ----

    def _next_id(self) -> int:
        self._packet_id = self._packet_id % 65535 + 1
        return self._packet_id

    def _expect(self, ptype: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            got, flags, body = self._read_packet(deadline - time.monotonic())
            if got == ptype:
                return body
            self._handle(got, flags, body)

    def _handle(self, ptype: int, flags: int, body: bytes) -> None:
        if ptype != PUBLISH:
            return
        qos = (flags >> 1) & 3
        (tlen,) = struct.unpack("!H", body[:2])
        topic = body[2 : 2 + tlen].decode()
        rest = body[2 + tlen :]
        pid = None
        if qos:
            (pid,), rest = struct.unpack("!H", rest[:2]), rest[2:]
            if self.auto_ack:
                self.ack(pid)
        self.inbox.append(Received(topic, rest, qos, bool(flags & 1), pid))

    def ack(self, packet_id: int) -> None:
        self.sock.sendall(packet(PUBACK, 0, struct.pack("!H", packet_id)))

    def _read_packet(self, timeout: float) -> tuple[int, int, bytes]:
        """One whole packet; on timeout nothing is consumed, so a later call resumes cleanly."""
        deadline = time.monotonic() + max(timeout, 0.001)
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet from the broker in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as exc:
                raise BrokerClosedError(str(exc)) from exc
            if not chunk:
                raise BrokerClosedError("connection closed by the broker")
            self._buf += chunk

    def _parse(self) -> tuple[int, int, bytes] | None:
        buf = self._buf
        length, multiplier, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return None
            byte = buf[i]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            i += 1
            if not byte & 0x80:
                break
        if len(buf) < i + length:
            return None
        self._buf = buf[i + length :]
        return buf[0] >> 4, buf[0] & 0x0F, buf[i : i + length]
