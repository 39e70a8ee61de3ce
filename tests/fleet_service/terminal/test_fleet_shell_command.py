"""`fleet shell UNIT` as an operator types it: in a pseudo-terminal, against a real service and a real agent.

The command runs on its own terminal (its controlling terminal, so a size change reaches it as SIGWINCH); the test
types into that terminal and reads what the command shows, as a person at a keyboard would.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.fleet_service.terminal.support import shell_options
from tests.support.stack import ADMIN_TOKEN

pytestmark = pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)

# Runs `fleet shell`, then says whether the terminal was put back as it was before.
WRAPPER = """
import sys, termios
from fleet_cli.main import main
before = termios.tcgetattr(0)
code = main(sys.argv[1:])
after = termios.tcgetattr(0)
print("TERMINAL " + ("RESTORED" if after == before else "CHANGED"), flush=True)
sys.exit(code)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["TERM"] = "xterm"
    return env


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class OnTerminal:
    """A process on its own pseudo-terminal, as a person's terminal window would run it."""

    def __init__(self, argv: list[str], cols: int = 80, rows: int = 24) -> None:
        self.master, slave = os.openpty()
        self.set_size(cols, rows)
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=_env(),
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self.seen = bytearray()

    def set_size(self, cols: int, rows: int) -> None:
        """Like resizing the window: the kernel sends SIGWINCH to the terminal's foreground process."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def expect(self, needle: bytes, timeout: float = 15, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.seen[after:]:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} not shown; the screen so far: {self.seen.decode(errors='replace')[-800:]!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    time.sleep(0.05)

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.expect(b"", 0.1)  # keep reading: a full terminal would block the process
            time.sleep(0.05)
        self._drain()
        return self.proc.wait(1)

    def _drain(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                return
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.seen += data

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        os.close(self.master)


def _fleet_shell(fleet, *args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        WRAPPER,
        "shell",
        *args,
        "--api-url",
        fleet.stack.url,
        "--token",
        ADMIN_TOKEN,
    ]


def test_fleet_shell_in_a_terminal_types_resizes_and_exits_with_the_remote_status(fleet, agents):
    agents(fleet, "cli-unit", *shell_options())
    screen = OnTerminal(_fleet_shell(fleet, "cli-unit"), cols=90, rows=30)
    try:
        screen.expect(b"$ ")  # the remote prompt: a person types once they see it
        screen.type(b"stty size; echo hello-$((6*7))\n")
        screen.expect(b"hello-42")
        assert b"30 90" in screen.seen, screen.seen[-400:]  # the session started at the window's size

        mark = len(screen.seen)
        screen.set_size(120, 40)  # SIGWINCH: the new size reaches the remote terminal
        time.sleep(0.5)
        screen.type(b"stty size\n")
        screen.expect(b"40 120", after=mark)

        mark = len(screen.seen)
        screen.type(b"sleep 30\n")
        time.sleep(0.5)
        screen.type(b"\x03")  # ^C goes to the remote program (the local side is raw), not to `fleet shell`
        screen.type(b"echo still-here\n")
        screen.expect(b"still-here\r\n", after=mark)
        assert screen.proc.poll() is None

        screen.type(b"exit 7\n")
        assert screen.wait() == 7
        screen.expect(b"TERMINAL RESTORED")
    finally:
        screen.close()


def test_fleet_shell_command_runs_one_command(fleet, agents):
    agents(fleet, "cli-cmd", *shell_options())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleet_cli.main",
            *_fleet_shell(fleet, "cli-cmd", "--command", "echo one-$((40+2)); exit 5")[3:],
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 5, done
    assert b"one-42" in done.stdout


def test_fleet_shell_says_why_it_was_refused(fleet, agents):
    agents(fleet, "cli-off")  # remote shell not allowed on this unit
    screen = OnTerminal(_fleet_shell(fleet, "cli-off"))
    try:
        assert screen.wait() == 255
        screen.expect(b"remote shell is disabled on this unit")
        screen.expect(b"TERMINAL RESTORED")
    finally:
        screen.close()
