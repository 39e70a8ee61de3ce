"""Per-connection plumbing under amqtt: a reader that records activity and caps packet size, and a hard close."""

from __future__ import annotations

import time

from amqtt.adapters import ReaderAdapter, WriterAdapter


class PacketTooLargeError(ConnectionError):
    """A client announced a packet beyond the broker's limit; the connection is dropped unread."""


class ActivityReader(ReaderAdapter):
    """Wraps amqtt's reader: stamps the time of the last completed read and refuses oversized reads.

    amqtt reads a PUBLISH payload with one `read(n)` of the whole remaining length, so refusing a
    large `n` drops the connection before the payload is buffered.
    """

    def __init__(self, inner: ReaderAdapter, max_read: int) -> None:
        self._inner = inner
        self._max_read = max_read
        self.last_activity = time.monotonic()

    async def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._max_read:
            raise PacketTooLargeError(f"read of {n} bytes exceeds the {self._max_read}-byte packet limit")
        data = await self._inner.read(n)
        self.last_activity = time.monotonic()
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()


def abort(writer: WriterAdapter) -> None:
    """Drop the TCP connection at once (no flush): the peer is dead, silent or unwanted."""
    # StreamWriterAdapter keeps the asyncio StreamWriter in `_writer`, WebSocketsWriter the connection in `_protocol`.
    inner = getattr(writer, "_writer", None) or getattr(writer, "_protocol", None)
    transport = getattr(inner, "transport", None)
    if transport is not None:
        transport.abort()
