"""A program on a pseudo-terminal, as the configured remote user: who that user is, starting it, its size, its end.

The program gets a clean environment (never the agent's: it may hold the unit's secret), no file descriptor of the
agent, its own session with the terminal as its controlling terminal, and the remote user's identity. An agent
running as root switches to that user (groups first, then the group and user ids); an agent running as another
user can only start programs as itself.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shlex
import signal
import struct
import subprocess
import termios
from dataclasses import dataclass

__all__ = ["PtyChild", "RemoteUser", "UserRefused", "exit_status", "resolve_user", "set_size", "spawn"]

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_NO_SHELL = ("nologin", "false")


class UserRefused(Exception):
    """The remote shell cannot run as the configured user; the message says why."""


@dataclass(frozen=True)
class RemoteUser:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def resolve_user(configured: str | None) -> RemoteUser:
    """The user sessions run as: `configured`, or the agent's own user when it is not root."""
    euid = os.geteuid()
    if configured is None:
        if euid == 0:
            raise UserRefused("no remote_user is configured on this unit and the agent runs as root")
        entry = pwd.getpwuid(euid)
    else:
        try:
            entry = pwd.getpwnam(configured)
        except KeyError:
            raise UserRefused(f"user {configured!r} does not exist on this unit") from None
    if entry.pw_uid == 0:
        raise UserRefused(f"remote shells never run as root (remote_user {entry.pw_name!r} has uid 0)")
    if euid not in (0, entry.pw_uid):
        raise UserRefused(
            f"the agent runs as {pwd.getpwuid(euid).pw_name} and cannot switch to {entry.pw_name} "
            "(run the agent as root, or set remote_user to the agent's own user)"
        )
    return RemoteUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def argv_for(user: RemoteUser, shell_command: str | None, target: str) -> list[str]:
    """The program to run: `target` through the shell, or the shell as a login shell."""
    shell = shell_command or user.shell
    if not shell or os.path.basename(shell) in _NO_SHELL:
        shell = "/bin/sh"
    argv = shlex.split(shell)
    if target:
        return [*argv, "-c", target]
    return [*argv, "-l"] if len(argv) == 1 else argv


@dataclass
class PtyChild:
    proc: subprocess.Popen
    master: int  # the agent's end of the terminal

    @property
    def pid(self) -> int:
        return self.proc.pid

    def hang_up(self) -> None:
        """End the program's session: SIGHUP to its process group, SIGKILL to whatever is left a moment later."""
        for sig in (signal.SIGHUP, signal.SIGCONT):
            try:
                os.killpg(self.proc.pid, sig)
            except OSError:
                pass
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()

    def close(self) -> None:
        try:
            os.close(self.master)
        except OSError:
            pass


def spawn(user: RemoteUser, argv: list[str], cols: int, rows: int, term: str, lang: str | None = None) -> PtyChild:
    """Start argv on a new terminal of the given size, as `user`; OSError when it cannot start."""
    master, slave = os.openpty()
    try:
        set_size(slave, cols, rows)
        os.set_inheritable(slave, False)
        env = {
            "HOME": user.home,
            "USER": user.name,
            "LOGNAME": user.name,
            "SHELL": user.shell or "/bin/sh",
            "PATH": DEFAULT_PATH,
            "TERM": term or "xterm-256color",
        }
        if lang:
            env["LANG"] = lang
        switch = os.geteuid() == 0
        cwd = user.home if os.path.isdir(user.home) and os.access(user.home, os.X_OK) else "/"
        proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=True,
            user=user.uid if switch else None,
            group=user.gid if switch else None,
            extra_groups=_groups(user) if switch else None,
            preexec_fn=_take_terminal,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return PtyChild(proc, master)


def _take_terminal() -> None:
    """In the child, after setsid(): the terminal on fd 0 becomes its controlling terminal (job control, ^C)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _groups(user: RemoteUser) -> list[int]:
    return sorted({user.gid, *os.getgrouplist(user.name, user.gid)})


def set_size(fd: int, cols: int, rows: int) -> None:
    """Set the terminal's size (the kernel sends SIGWINCH to its foreground process group)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def exit_status(returncode: int) -> int:
    """A shell's way to say how a program ended: its exit code, or 128 + the signal that killed it."""
    return 128 + -returncode if returncode < 0 else returncode & 0xFF
