"""MQTT 3.1.1 packets, as much of them as the service's own connection uses: building what it sends and cutting
what it receives out of a byte stream.

The service receives every unit's messages over one connection, so the cost of each received PUBLISH is the
ceiling of ingest (docs/performance.md): `Reader.feed` cuts a whole buffer of packets in one pass, with no object
per packet other than the message it hands on, and the PUBACKs for a buffer are written back as one chunk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "CONNACK_REASONS",
    "MAX_PACKET",
    "Packet",
    "ProtocolViolation",
    "Reader",
    "connect",
    "disconnect",
    "pingreq",
    "puback",
    "publish",
    "subscribe",
    "unsubscribe",
]

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
MAX_PACKET = 268_435_455  # the largest remaining length four bytes can say

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

_ID = struct.Struct("!H")


class ProtocolViolation(Exception):
    """The broker sent bytes that are not MQTT 3.1.1: the connection cannot go on."""


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _length(len(body)) + body


def _text(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65,535 bytes")
    return _ID.pack(len(raw)) + raw


def connect(client_id: str, *, username: str | None, password: str | None, keepalive: int, clean: bool) -> bytes:
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0) | (0x02 if clean else 0)
    body = _text("MQTT") + bytes((4, flags)) + _ID.pack(keepalive) + _text(client_id)
    if username is not None:
        body += _text(username)
    if password is not None:
        body += _text(password)
    return _packet(CONNECT << 4, body)


def publish(topic: str, payload: bytes, *, qos: int, retain: bool, packet_id: int = 0) -> bytes:
    body = _text(topic) + (_ID.pack(packet_id) if qos else b"") + payload
    return _packet((PUBLISH << 4) | (qos << 1) | (1 if retain else 0), body)


def puback(packet_id: int) -> bytes:
    return bytes((PUBACK << 4, 2)) + _ID.pack(packet_id)


def pubrec(packet_id: int) -> bytes:
    return bytes((PUBREC << 4, 2)) + _ID.pack(packet_id)


def pubcomp(packet_id: int) -> bytes:
    return bytes((PUBCOMP << 4, 2)) + _ID.pack(packet_id)


def subscribe(packet_id: int, filters: list[str], qos: int) -> bytes:
    body = _ID.pack(packet_id) + b"".join(_text(f) + bytes((qos,)) for f in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def unsubscribe(packet_id: int, filters: list[str]) -> bytes:
    return _packet((UNSUBSCRIBE << 4) | 0x02, _ID.pack(packet_id) + b"".join(_text(f) for f in filters))


def pingreq() -> bytes:
    return bytes((PINGREQ << 4, 0))


def disconnect() -> bytes:
    return bytes((DISCONNECT << 4, 0))


@dataclass(slots=True)
class Packet:
    """A received packet other than PUBLISH: its type and body (CONNACK, PUBACK, SUBACK, PINGRESP, ...)."""

    kind: int
    body: bytes


class Reader:
    """Cuts packets out of the bytes received so far; keeps an incomplete tail for the next `feed`.

    `feed` returns the messages (topic, payload, retained), the control packets, and the acknowledgements owed
    for the QoS 1 and 2 messages, in order, as one chunk of bytes to write.
    """

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self._buffer = b""
        self._max = max_packet

    def feed(self, data: bytes) -> tuple[list[tuple[str, bytes, bool]], list[Packet], bytes]:
        buf = self._buffer + data if self._buffer else data
        size = len(buf)
        messages: list[tuple[str, bytes, bool]] = []
        control: list[Packet] = []
        acks = bytearray()
        pos = 0
        while size - pos >= 2:
            header = _remaining(buf, pos + 1, size)
            if header is None:
                break
            length, i = header
            if length > self._max:
                raise ProtocolViolation(f"a packet of {length} bytes is over the limit of {self._max}")
            end = i + length
            if end > size:
                break
            first = buf[pos]
            kind = first >> 4
            if kind == PUBLISH:
                messages.append(_message(buf, first, i, end, acks))
            elif kind == PUBREL:
                if length != 2:
                    raise ProtocolViolation("malformed PUBREL")
                acks += pubcomp((buf[i] << 8) | buf[i + 1])
            elif kind in (CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, PINGRESP):
                control.append(Packet(kind, buf[i:end]))
            else:
                raise ProtocolViolation(f"a broker does not send packet type {kind}")
            pos = end
        self._buffer = buf[pos:] if pos < size else b""
        return messages, control, bytes(acks)


def _remaining(buf: bytes, i: int, size: int) -> tuple[int, int] | None:
    """The remaining length starting at `i` (up to four bytes of seven bits, low group first) and where the
    packet's body starts; None when the bytes so far end inside it."""
    length, shift = 0, 0
    while i < size:
        byte = buf[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return length, i
        shift += 7
        if shift > 21:
            raise ProtocolViolation("remaining length longer than four bytes")
    return None


def _message(buf: bytes, first: int, i: int, end: int, acks: bytearray) -> tuple[str, bytes, bool]:
    """One PUBLISH's topic, payload and retain flag; its PUBACK (QoS 1) or PUBREC (QoS 2) added to `acks`."""
    if end - i < 2:
        raise ProtocolViolation("PUBLISH without a topic")
    start = i + 2 + ((buf[i] << 8) | buf[i + 1])
    qos = (first >> 1) & 0x03
    if start + (2 if qos else 0) > end or qos == 3:
        raise ProtocolViolation("malformed PUBLISH")
    try:
        name = buf[i + 2 : start].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation("PUBLISH topic is not UTF-8") from None
    if qos:
        acks += (puback if qos == 1 else pubrec)((buf[start] << 8) | buf[start + 1])
        start += 2
    return name, buf[start:end], bool(first & 0x01)
