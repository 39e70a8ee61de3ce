"""Running configured programs: argv lists only (never a shell), a time limit, output captured and capped."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agent.config import split_command
from protocol.payloads import cap_output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    argv: list[str]
    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        text = self.output.strip()
        return f"$ {' '.join(self.argv)}\n{text + chr(10) if text else ''}(exit {self.exit_code})"


def run(argv: list[str], timeout: float, cwd: Path | None = None) -> Outcome:
    """Run argv to completion; exit code 124 on timeout, 127 when it cannot start. Never raises for the program."""
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills its children too
        )
    except OSError as exc:
        return Outcome(argv, 127, f"cannot run {argv[0]}: {exc.strerror or exc}")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        text = out.decode("utf-8", "replace") if out else ""
        return Outcome(argv, 124, cap_output(text + f"\n[killed after {timeout:g} s]"))
    return Outcome(argv, proc.returncode, cap_output(out.decode("utf-8", "replace")))


def run_command(command: str, timeout: float, cwd: Path | None = None, **fields: str) -> Outcome:
    """Split a configured command line (placeholders such as {unit} filled per argument) and run it."""
    return run(split_command(command, **fields), timeout, cwd)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
