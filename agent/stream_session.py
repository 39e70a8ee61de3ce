"""What every remote session on the unit does with its frames, whatever carries the bytes (a PTY, a TCP socket).

Sequencing: frames from the service are numbered; a repeat (QoS 1 may deliver twice) is ignored and a gap ends
the session. Output: a reader thread reads the source only while the service's credit allows (never more than its
window unacknowledged), so a source that writes faster than the operator reads is held by the kernel, not
buffered here. Input: the service may send at most the window this side announced; a writer thread writes it and
grants more as it goes. Frames from the service arrive on the MQTT network thread, which only updates counters
and queues. A session ends once, whoever ends it; its cleanup runs on a thread of its own.

A subclass says how to start (spawn the program, connect the socket), how to read and write its bytes, which
other frames it takes (a terminal's RESIZE) and what to let go of at the end.
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import time
from collections.abc import Callable

from protocol.terminal import MAX_DATA, Accept, Body, Close, CloseReason, Credit, Data, Frame, Open, encode_frame

log = logging.getLogger(__name__)

POLL_S = 0.25  # how long a reader or writer waits before it looks again whether the session ended

Publish = Callable[[bytes], bool]  # the frame's bytes to this session's `up` topic; False when not connected


class StreamSession(abc.ABC):
    kind = "remote session"  # what the log calls it
    thread_prefix = "agent-stream"
    input_window = 64 * 1024  # bytes the service may send before this side grants more
    input_noun = "input"  # what the service sends, in the message that ends a session it overran
    drain_on_close = False  # the service's CLOSE still lets what it sent before be written

    def __init__(self, sid: str, request: Open, publish: Publish, on_end: Callable[[StreamSession], None]) -> None:
        self.sid = sid
        self.request = request
        self.who = request.who
        self._publish = publish
        self._on_end = on_end
        self._send_lock = threading.Lock()
        self._out_seq = 0
        self._in_seq = 1  # OPEN was frame 0
        self._credit = threading.Condition()
        self.out_limit = request.window
        self.out_sent = 0
        self.in_received = 0
        self.in_granted = self.input_window
        self._input: queue.Queue[bytes | None] = queue.Queue()
        now = time.monotonic()
        self.started = self.last_input = self.last_heard = self.last_sent = now
        self.closed = threading.Event()
        self._drain = False  # the service closed: write what it sent before letting go of the source
        self._end_lock = threading.Lock()
        self._writer: threading.Thread | None = None

    # What a kind of session provides ----------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """The program or connection was started."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the source (on a thread of its own), then `_serve()` it; on failure end with why."""

    @abc.abstractmethod
    def _read(self, size: int) -> bytes | None:
        """At most `size` bytes from the source; None when nothing came within POLL_S; b"" when the source is done
        (it has then ended the session, saying why)."""

    @abc.abstractmethod
    def _write(self, chunk: bytes) -> bool:
        """Write all of `chunk` to the source; False when it cannot take more (the writer stops)."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Let go of the source (on the cleanup thread)."""

    @abc.abstractmethod
    def _holding(self) -> bool:
        """The source is still there (a program running, a socket open)."""

    def _on_other_frame(self, body: Body) -> bool:  # noqa: ARG002 - a kind that takes none
        """A frame kind this session takes besides DATA, CREDIT and CLOSE; False: not one it takes."""
        return False

    # Sending ----------------------------------------------------------------------------------------------------

    def send(self, body: Accept | Data | Credit | Close) -> bool:
        with self._send_lock:
            ok = self._publish(encode_frame(Frame(self._out_seq, body)))
            self._out_seq += 1
            self.last_sent = time.monotonic()
        return ok

    def _serve(self, accepted_as: str) -> None:
        """Tell the service the session is open (ACCEPT with `accepted_as`), then carry bytes both ways until the
        end: input on a writer thread, output on this one."""
        if not self.send(Accept(self.input_window, accepted_as)):
            self.end(None)
            return
        self._writer = threading.Thread(target=self._write_loop, name=f"{self.thread_prefix}-in", daemon=True)
        self._writer.start()
        self._read_loop()

    # Frames from the service (MQTT network thread: no blocking) -------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        if frame.seq < self._in_seq:
            return  # a repeat (QoS 1 may deliver twice)
        if frame.seq > self._in_seq:
            self.end(Close(CloseReason.ERROR, None, f"frame {self._in_seq} from the service was lost"))
            return
        self._in_seq += 1
        self.last_heard = time.monotonic()
        body = frame.body
        if isinstance(body, Data):
            self.in_received += len(body.data)
            if self.in_received > self.in_granted:
                self.end(Close(CloseReason.ERROR, None, f"the service sent {self.input_noun} past the window"))
                return
            self.last_input = self.last_heard
            self._input.put(body.data)
        elif isinstance(body, Credit):
            with self._credit:
                if body.limit > self.out_limit:
                    self.out_limit = body.limit
                    self._credit.notify_all()
        elif isinstance(body, Close):
            log.info("%s %s closed by the service: %s", self.kind, self.sid[:8], body.message or body.reason.name)
            self._drain = self.drain_on_close
            self.end(None)
        elif not self._on_other_frame(body):
            self.end(Close(CloseReason.ERROR, None, f"unexpected {frame.type.name} frame"))

    # Output: source -> service ----------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self.closed.is_set():
            with self._credit:
                room = self.out_limit - self.out_sent
                if room <= 0:
                    self._credit.wait(POLL_S)
                    continue
            data = self._read(min(MAX_DATA, room))
            if data is None:
                continue
            if not data:
                return  # the source is done: _read ended the session
            self.out_sent += len(data)
            if not self.send(Data(data)):
                self.end(None)
                return

    # Input: service -> source -----------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        window = self.input_window
        written = 0
        while True:
            chunk = self._input.get()
            if chunk is None or (self.closed.is_set() and not self._drain):
                return
            if not self._write(chunk):
                return
            written += len(chunk)
            if self.closed.is_set():
                continue  # ended (draining, or about to stop): no more credit to grant
            # Grant more once a quarter of the window was written, or when everything received is written.
            if written + window - self.in_granted >= window // 4 or self._input.empty():
                if written + window > self.in_granted:
                    self.in_granted = written + window
                    self.send(Credit(self.in_granted))

    # End --------------------------------------------------------------------------------------------------------

    def end(self, close: Close | None) -> None:
        """End the session once: tell the service why (unless it already knows), let go of the source, forget it."""
        with self._end_lock:
            if self.closed.is_set():
                return
            self.closed.set()
        if close is not None:
            self.send(close)
            log.info("%s %s of %s ended: %s", self.kind, self.sid[:8], self.who, close.message or close.reason.name)
        self._input.put(None)
        with self._credit:
            self._credit.notify_all()
        threading.Thread(target=self._cleanup, name=f"{self.thread_prefix}-end", daemon=True).start()

    def _cleanup(self) -> None:
        writer = self._writer
        if writer is not None and self._drain:
            writer.join(10.0)  # what the operator sent before leaving reaches the source
        self._release()
        self._on_end(self)

    def join_cleanup(self, timeout: float) -> None:
        """Wait until the source is gone (the agent stopping)."""
        deadline = time.monotonic() + timeout
        while self._holding() and time.monotonic() < deadline:
            time.sleep(0.05)
