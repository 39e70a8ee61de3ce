"""One remote terminal on the unit: a program on a PTY bridged to its session topics, within both windows.

The frames, windows and ending are those of every remote session (agent.stream_session); this is the terminal's
part: spawning the program as the remote user, reading and writing its PTY, resizing it, and at the end hanging
up what still holds the terminal. When the program exits, the session ends with its exit status.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Callable

from agent.stream_session import POLL_S, Publish, StreamSession
from agent.terminal_pty import PtyChild, RemoteUser, UserRefused, argv_for, exit_status, resolve_user, set_size, spawn
from protocol.terminal import Body, Close, CloseReason, Open, Resize

log = logging.getLogger(__name__)

INPUT_WINDOW = 64 * 1024  # bytes of operator input the service may send before this side grants more


class PtySession(StreamSession):
    kind = "remote shell"
    thread_prefix = "agent-term"
    input_window = INPUT_WINDOW
    input_noun = "input"

    def __init__(
        self,
        sid: str,
        request: Open,
        publish: Publish,
        *,
        remote_user: str | None,
        shell_command: str | None,
        on_end: Callable[[StreamSession], None],
    ) -> None:
        super().__init__(sid, request, publish, on_end)
        self._remote_user = remote_user
        self._shell_command = shell_command
        self._size = (request.cols, request.rows)
        self.child: PtyChild | None = None
        self.user: RemoteUser | None = None

    @property
    def running(self) -> bool:
        return self.child is not None

    # Start (a thread of its own) --------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.user = resolve_user(self._remote_user)
            argv = argv_for(self.user, self._shell_command, self.request.target)
            cols, rows = self._size
            self.child = spawn(self.user, argv, cols, rows, self.request.term, os.environ.get("LANG"))
        except UserRefused as exc:
            self.end(Close(CloseReason.NO_USER, None, str(exc)))
            return
        except (OSError, ValueError, KeyError) as exc:
            self.end(Close(CloseReason.ERROR, None, f"cannot start the shell: {exc}"))
            return
        os.set_blocking(self.child.master, False)
        if self.closed.is_set():  # closed while starting
            self._cleanup()
            return
        log.info("remote shell %s opened by %s as %s (pid %s)", self.sid[:8], self.who, self.user.name, self.child.pid)
        self._serve(self.user.name)

    # Frames besides DATA, CREDIT and CLOSE (MQTT network thread: no blocking) -----------------------------------

    def _on_other_frame(self, body: Body) -> bool:
        if not isinstance(body, Resize):
            return False
        self._size = (body.cols, body.rows)
        if self.child is not None and not self.closed.is_set():
            try:
                set_size(self.child.master, body.cols, body.rows)
            except OSError:
                pass
        return True

    # The terminal's bytes ---------------------------------------------------------------------------------------

    def _read(self, size: int) -> bytes | None:
        child = self.child
        assert child is not None
        ready, _, _ = select.select([child.master], [], [], POLL_S)
        if ready:
            try:
                data = os.read(child.master, size)
            except BlockingIOError:
                return None
            except OSError:
                data = b""  # EIO: every process on the terminal has closed it
            if data:
                return data
        elif child.proc.poll() is None:
            return None
        # The program ended; what is left holding the terminal is hung up in _release.
        self._exited(child)
        return b""

    def _exited(self, child: PtyChild) -> None:
        if self.closed.is_set():
            return
        try:
            code = child.proc.wait(2.0)
        except Exception:  # noqa: BLE001 - still running after its terminal went away: hung up in _release
            code = None
        status = exit_status(code) if code is not None else None
        self.end(Close(CloseReason.EXITED, status, f"the shell exited with status {status}"))

    def _write(self, chunk: bytes) -> bool:
        child = self.child
        assert child is not None
        view = memoryview(chunk)
        while view and not self.closed.is_set():
            _, ready, _ = select.select([], [child.master], [], POLL_S)
            if not ready:
                continue
            try:
                n = os.write(child.master, view)
            except BlockingIOError:
                continue
            except OSError:
                return False
            view = view[n:]
        return True

    # End --------------------------------------------------------------------------------------------------------

    def _release(self) -> None:
        child = self.child
        if child is not None:
            child.hang_up()
            child.close()

    def _holding(self) -> bool:
        return self.child is not None and self.child.proc.poll() is None
