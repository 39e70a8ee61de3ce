"""Real external parts for tests: free ports, a Mosquitto subprocess, a fresh PostgreSQL database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip with `reason` on a developer machine; fail in CI, where everything must run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but a required part is missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; return it or fail with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Mosquitto:
    """A Mosquitto subprocess on a free loopback port with its own config file."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            ""
            # as root, mosquitto would switch to its own user and lose access to this test's files
            + ("user root\n" if os.geteuid() == 0 else "")
            + f"listener {self.port} 127.0.0.1\n"
            "persistence false\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n" + self.extra_config
        )

    def start(self, attempts: int = 3) -> Mosquitto:
        """Start on `port`; if another process took that port meanwhile, try again on a fresh one."""
        for attempt in range(attempts):
            self.write_config()
            with (self.workdir / "stderr.log").open("wb") as err:
                self.proc = subprocess.Popen(
                    [shutil.which("mosquitto") or "mosquitto", "-c", str(self.config_path)],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    wait_port(self.port, timeout=0.2)
                    return self
                except TimeoutError:
                    continue
            self.stop()
            if attempt < attempts - 1:
                self.port = free_port()
        err = (self.workdir / "stderr.log").read_text(errors="replace")
        raise RuntimeError(f"mosquitto did not start: {err} {self.log()}")

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(1)  # SIGHUP re-reads password and ACL files

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text() if path.exists() else ""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def have_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None


def mosquitto_passwd(path: Path, users: dict[str, str]) -> None:
    """Write a Mosquitto password file with the real `mosquitto_passwd` tool."""
    path.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)


PG_ADMIN_DSN = os.environ.get("FLEET_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_available() -> str | None:
    """None when reachable, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3) as conn:
            conn.execute("select 1")
        return None
    except Exception as exc:  # noqa: BLE001 (any failure means: no usable server here)
        return f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}"


class FreshDatabase:
    """A new, empty PostgreSQL database for one test run; dropped afterwards."""

    def __init__(self) -> None:
        self.name = f"fleet_test_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> str:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        return f"{base}/{self.name}"

    def __exit__(self, *exc) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
