"""`fleet shell UNIT`: a remote shell on a unit through the fleet service's `WS /api/devices/{id}/terminal`.

On a terminal the local side goes raw (every key goes to the unit, ^C included) and is put back however the
command ends; a window resize is sent on SIGWINCH. The command exits with the remote shell's exit status, or
255 when the session could not start or ended for another reason (said on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import sys
import termios
import threading
import tty
from typing import Any
from urllib.parse import urlencode

from fleet_cli.options import add_api_options, api_socket_base
from fleet_cli.service_socket import open_socket

FAILED = 255  # like ssh: the remote side's status could not be had
_POLL_S = 0.2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "shell",
        help="open a remote shell on a unit (through the fleet service)",
        description="Open a remote shell on a unit through the fleet service; exits with the shell's exit status.",
    )
    parser.add_argument("unit", help="the unit's id")
    parser.add_argument("--command", "-c", help="run this command instead of a login shell")
    add_api_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = api_socket_base(args, "shell")
    if target is None:
        return 2
    base, token = target
    cols, rows = shutil.get_terminal_size((80, 24))
    query: dict[str, Any] = {"cols": cols, "rows": rows, "term": os.environ.get("TERM") or "xterm-256color"}
    if args.command:
        query["command"] = args.command
    return Shell(f"{base}/api/devices/{args.unit}/terminal?{urlencode(query)}", token).run()


class Shell:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.status: int | None = None
        self.ended: str | None = None  # why the session ended, when it was not the shell's own exit
        self.done = threading.Event()
        self._resized = threading.Event()

    def run(self) -> int:
        from websockets.exceptions import ConnectionClosed

        conn = open_socket(self.url, self.token, "shell")
        if conn is None:
            return FAILED
        with conn:
            try:
                first = conn.recv(timeout=30)
            except ConnectionClosed as closed:
                reason = closed.rcvd.reason if closed.rcvd else "the connection closed"
                print(f"fleet shell: {reason or 'refused'}", file=sys.stderr)
                return FAILED
            except TimeoutError:
                print("fleet shell: the fleet service did not open the session", file=sys.stderr)
                return FAILED
            if not isinstance(first, str) or json.loads(first).get("type") != "opened":
                print("fleet shell: unexpected first message from the service", file=sys.stderr)
                return FAILED
            return self._session(conn)

    def _session(self, conn: Any) -> int:
        stdin = sys.stdin.fileno()
        saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP)}
        receiver = threading.Thread(target=self._receive, args=(conn,), daemon=True)
        try:
            signal.signal(signal.SIGTERM, _exit_on_signal)
            signal.signal(signal.SIGHUP, _exit_on_signal)
            if saved is not None:
                signal.signal(signal.SIGWINCH, lambda *_: self._resized.set())
                tty.setraw(stdin, termios.TCSADRAIN)  # keeps what was typed ahead
            receiver.start()
            self._send_input(conn, stdin)
            self.done.wait()
        finally:
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSAFLUSH, saved)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.ended:
            print(f"fleet shell: {self.ended}", file=sys.stderr)
        return self.status if self.status is not None else FAILED

    def _send_input(self, conn: Any, stdin: int) -> None:
        from websockets.exceptions import ConnectionClosed

        reading = True
        while not self.done.is_set():
            if self._resized.is_set():
                self._resized.clear()
                cols, rows = shutil.get_terminal_size((80, 24))
                try:
                    conn.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))
                except ConnectionClosed:
                    return
            if not reading:
                self.done.wait(_POLL_S)
                continue
            try:
                ready, _, _ = select.select([stdin], [], [], _POLL_S)
            except InterruptedError:
                continue
            if not ready:
                continue
            data = os.read(stdin, 4096)
            if not data:
                reading = False  # end of input (a pipe): the remote command goes on to its end
                continue
            try:
                conn.send(data)
            except ConnectionClosed:
                return

    def _receive(self, conn: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        out = sys.stdout.fileno()
        try:
            for message in conn:
                if isinstance(message, bytes):
                    _write_all(out, message)
                    continue
                event = json.loads(message)
                if event.get("type") == "exit":
                    if event.get("reason") == "exited":
                        self.status = event.get("status")
                    else:
                        self.ended = event.get("message") or event.get("reason")
        except ConnectionClosed as closed:
            if self.status is None and self.ended is None and closed.rcvd is not None:
                self.ended = closed.rcvd.reason or f"the session closed (code {closed.rcvd.code})"
        finally:
            if self.status is None and self.ended is None:
                self.ended = "the connection to the fleet service was lost"
            self.done.set()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: the terminal is put back
