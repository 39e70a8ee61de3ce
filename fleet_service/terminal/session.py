"""One remote session as this replica sees it: the frames to and from the unit, in order, within both windows.

Output (unit -> operator): the unit may send `window` bytes past what the operator has been given; each DATA goes
into `output`, and `delivered()` grants more once the operator's socket took it. A unit that sends past its grant
breaks the protocol and the session ends, so `output` never holds more than one window. Input (operator ->
unit): `write_input()` waits for the unit's credit before it sends, so the operator's socket is simply not read
while the unit's terminal is not taking input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from protocol.terminal import (
    MAX_DATA,
    Accept,
    Close,
    CloseReason,
    Credit,
    Data,
    Frame,
    Open,
    Resize,
    encode_frame,
)

PublishDown = Callable[[bytes], Awaitable[None]]  # a frame's bytes to the session's `down` topic (QoS 1)


class ServiceSession:
    def __init__(self, sid: str, device_id: str, publish: PublishDown, window: int) -> None:
        self.sid = sid
        self.device_id = device_id
        self._publish = publish
        self._send_lock = asyncio.Lock()
        self._out_seq = 0
        self._in_seq = 0
        self.window = window
        self.granted = window  # output bytes the unit may have sent in all
        self.received = 0
        self.consumed = 0  # output bytes the operator's socket took
        self.in_limit = 0  # input bytes the unit lets us send in all (its ACCEPT, then CREDIT)
        self.bytes_in = 0
        self._in_room = asyncio.Event()
        self.output: asyncio.Queue[bytes | Close] = asyncio.Queue()
        self.accepted: asyncio.Future[Accept | Close] = asyncio.get_running_loop().create_future()
        self.ended: Close | None = None
        self.last_heard = self.last_sent = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()

    # To the unit ------------------------------------------------------------------------------------------------

    async def send(self, body: Open | Data | Resize | Credit | Close) -> None:
        """Publish the next frame; BrokerUnavailable when the broker cannot take it."""
        async with self._send_lock:
            payload = encode_frame(Frame(self._out_seq, body))
            self._out_seq += 1
            self.last_sent = time.monotonic()
            await self._publish(payload)

    async def write_input(self, data: bytes) -> None:
        """Send the operator's input as the unit's credit allows (waits, possibly long, for it)."""
        view = memoryview(data)
        while view and self.ended is None:
            room = self.in_limit - self.bytes_in
            if room <= 0:
                self._in_room.clear()
                await self._in_room.wait()
                continue
            piece = bytes(view[: min(room, MAX_DATA)])
            await self.send(Data(piece))
            self.bytes_in += len(piece)
            view = view[len(piece) :]

    async def delivered(self, size: int) -> None:
        """The operator's socket took `size` output bytes: grant more once a quarter window is free, or when the
        queue ran dry (a program that writes a little and waits for an answer is never held back)."""
        self.consumed += size
        limit = self.consumed + self.window
        if limit - self.granted >= self.window // 4 or (self.output.empty() and limit > self.granted):
            self.granted = limit
            await self.send(Credit(limit))

    async def answer(self, timeout: float) -> Accept | Close:
        """The unit's answer to OPEN: its ACCEPT, or how the session ended before (a refusal, no answer within
        `timeout`: then the unit is told)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.accepted), timeout)
        except TimeoutError:
            self.end(Close(CloseReason.TIMEOUT, None, f"the unit did not answer within {timeout:g} s"), tell_unit=True)
            return self.accepted.result()

    async def close(self, close: Close) -> None:
        """End the session from this side (the operator left, a timeout): the unit is told, once."""
        if self.ended is not None:
            return
        self.end(close, tell_unit=True)

    # From the unit (called on the event loop by the hub; never blocks) ------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        if self.ended is not None or frame.seq < self._in_seq:
            return  # after the end, or a repeat (QoS 1 may deliver twice)
        if frame.seq > self._in_seq:
            self.end(Close(CloseReason.ERROR, None, f"frame {self._in_seq} from the unit was lost"), tell_unit=True)
            return
        self._in_seq += 1
        self.last_heard = time.monotonic()
        body = frame.body
        if isinstance(body, Accept) and not self.accepted.done():
            self.in_limit = body.window
            self._in_room.set()
            self.accepted.set_result(body)
        elif isinstance(body, Data) and self.accepted.done():
            self.received += len(body.data)
            if self.received > self.granted:
                self.end(Close(CloseReason.ERROR, None, "the unit sent output past the window"), tell_unit=True)
                return
            self.output.put_nowait(body.data)
        elif isinstance(body, Credit):
            if body.limit > self.in_limit:
                self.in_limit = body.limit
                self._in_room.set()
        elif isinstance(body, Close):
            self.end(body, tell_unit=False)
        else:
            self.end(Close(CloseReason.ERROR, None, f"unexpected {frame.type.name} frame from the unit"), True)

    def end(self, close: Close, tell_unit: bool) -> None:
        """The session is over: the operator's side gets `close` after the output before it."""
        if self.ended is not None:
            return
        self.ended = close
        if tell_unit:
            task = asyncio.get_running_loop().create_task(self._tell_unit(close))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not self.accepted.done():
            self.accepted.set_result(close)
        self.output.put_nowait(close)
        self._in_room.set()

    async def _tell_unit(self, close: Close) -> None:
        try:
            await self.send(close)
        except Exception:  # noqa: BLE001 - the broker is away: the unit ends the session when it hears nothing
            pass

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait for the CLOSE sent to the unit (at the end of a bridge)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
