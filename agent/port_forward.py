"""One forwarded TCP connection on the unit: 127.0.0.1:PORT bridged to its session topics, within both windows.

The frames, windows and ending are those of every remote session (agent.stream_session); this is the socket's
part. A server that sends faster than the operator reads is held back by TCP itself, since the socket is read only
while the service's credit allows.

Ends: when the server closes its side, what it sent before is already on its way and CLOSE follows it, so the
service delivers everything and then closes the operator's side. When the service sends CLOSE (the operator left),
the input queued before it is written to the server first, then the socket is closed.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable

from agent.stream_session import POLL_S, Publish, StreamSession
from protocol.terminal import Close, CloseReason, Open

log = logging.getLogger(__name__)

INPUT_WINDOW = 256 * 1024  # bytes the service may send before this side grants more
CONNECT_TIMEOUT_S = 5.0


class TcpSession(StreamSession):
    kind = "port forward"
    thread_prefix = "agent-fwd"
    input_window = INPUT_WINDOW
    input_noun = "data"
    drain_on_close = True

    def __init__(
        self, sid: str, request: Open, port: int, publish: Publish, on_end: Callable[[StreamSession], None]
    ) -> None:
        super().__init__(sid, request, publish, on_end)
        self.port = port
        self.sock: socket.socket | None = None

    @property
    def running(self) -> bool:
        return self.sock is not None

    # Start (a thread of its own) --------------------------------------------------------------------------------

    def start(self) -> None:
        address = f"127.0.0.1:{self.port}"
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=CONNECT_TIMEOUT_S)
        except ConnectionRefusedError:
            self.end(Close(CloseReason.CONNECT_FAILED, None, f"connection refused by {address} on the unit"))
            return
        except OSError as exc:
            self.end(Close(CloseReason.CONNECT_FAILED, None, f"cannot connect to {address} on the unit: {exc}"))
            return
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        if self.closed.is_set():  # closed while connecting
            sock.close()
            return
        log.info("port forward %s to %s opened by %s", self.sid[:8], address, self.who)
        self._serve(address)

    # The socket's bytes -----------------------------------------------------------------------------------------

    def _read(self, size: int) -> bytes | None:
        sock = self.sock
        assert sock is not None
        try:
            ready, _, _ = select.select([sock], [], [], POLL_S)
            if not ready:
                return None
            data = sock.recv(size)
        except (OSError, ValueError):  # ValueError: the socket was closed under select
            self.end(Close(CloseReason.EXITED, None, f"the connection to 127.0.0.1:{self.port} was reset"))
            return b""
        if not data:
            self.end(Close(CloseReason.EXITED, None, f"127.0.0.1:{self.port} closed the connection"))
            return b""
        self.last_input = time.monotonic()  # traffic either way keeps a forward from being idle
        return data

    def _write(self, chunk: bytes) -> bool:
        sock = self.sock
        assert sock is not None
        try:
            sock.sendall(chunk)
        except OSError:
            self.end(Close(CloseReason.EXITED, None, f"127.0.0.1:{self.port} stopped taking data"))
            return False
        return True

    # End --------------------------------------------------------------------------------------------------------

    def _release(self) -> None:
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _holding(self) -> bool:
        return self.sock is not None and self.sock.fileno() != -1
