"""Fault-injection parts: the service as a process to kill, log writers that number their lines, and the count.

Used by tests/faults (short runs in CI) and benchmarks/fault_soak.py (the long soak). Every record is a line
`<unit> n=<i>` written to a file an agent follows; at the end the database says which arrived, which are
missing and which are stored twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import text

from fleet_service.db.engine import make_engine
from tests.support.services import free_port, wait_for
from tests.support.stack import ADMIN_TOKEN

# Agents in fault tests: quick acks, batches, keepalives and reconnects, so a fault shows within seconds.
AGENT_OPTIONS = (
    "--ack-timeout",
    "2",
    "--log-batch-interval",
    "0.2",
    "--keepalive",
    "5",
    "--heartbeat-interval",
    "5",
    "--reconnect-min-delay",
    "0.2",
    "--reconnect-max-delay",
    "1",
    "--relay-port",
    "0",
)


class FleetUpProcess:
    """`fleet up` (embedded broker + service + SQLite) as a child process on fixed ports: kill it, start it again."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.env = dict(env or {})  # FLEET_* settings for the child (the test's own environment's are dropped)
        self.data_dir = workdir / "data"
        self.http_port = free_port()
        self.mqtt_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'fleet.db'}"

    def start(self, timeout: float = 60.0) -> FleetUpProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        env["FLEET_ADMIN_TOKEN"] = ADMIN_TOKEN
        env.update(self.env)
        cmd = [
            sys.executable,
            "-m",
            "fleet_cli.main",
            "up",
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--mqtt-port",
            str(self.mqtt_port),
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / f"fleet-up-{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        wait_for(self._healthy, timeout=timeout, interval=0.2, what="fleet up to answer /health")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"fleet up exited with {self.proc.returncode}: {self.output()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("fleet-up-*.log")))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=15)


class LineWriter:
    """Appends `<unit> n=<i>` lines to a file at `rate` lines/s on a thread; `sent` is how many were written.

    The file is created by the first line, so the agent following it reads it from its first byte."""

    def __init__(self, path: Path, unit: str, rate: float) -> None:
        self.path = path
        self.unit = unit
        self.rate = rate
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"writer-{unit}")
        # The file appears with its first line: an agent that starts following a file that already exists
        # begins at its end (only new lines), so a slow agent start would skip lines written before it.
        path.unlink(missing_ok=True)

    def start(self) -> LineWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        with self.path.open("a", buffering=1) as fh:
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.sent < due:
                    fh.write(f"{self.unit} n={self.sent}\n")
                    self.sent += 1
                self._stop.wait(0.02)

    def write_now(self, count: int) -> None:
        """Write `count` lines at once (the thread must not be running)."""
        with self.path.open("a") as fh:
            fh.write("".join(f"{self.unit} n={self.sent + i}\n" for i in range(count)))
        self.sent += count

    def stop(self) -> int:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        return self.sent


@dataclass
class Tally:
    unit: str
    sent: int
    stored: int  # distinct lines in the database
    doubled: int  # rows beyond the first for a line stored more than once
    reported_dropped: int  # what the unit said it had to drop (device.logs_dropped)
    missing: list[int]

    @property
    def lost(self) -> int:
        return self.sent - self.stored

    def line(self) -> str:
        return (
            f"{self.unit}: sent {self.sent}, stored {self.stored}, lost {self.lost}, doubled {self.doubled}, "
            f"reported dropped {self.reported_dropped}"
        )


def tally(database_url: str, unit: str, sent: int) -> Tally:
    """Count a unit's numbered lines in the database: what arrived, what is missing, what is there twice."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT msg, COUNT(*) FROM log_record WHERE device_id = :d GROUP BY msg"), {"d": unit}
            ).all()
            dropped = conn.execute(text("SELECT logs_dropped FROM device WHERE id = :d"), {"d": unit}).scalar()
    finally:
        engine.dispose()
    seen: set[int] = set()
    doubled = 0
    prefix = f"{unit} n="
    for msg, count in rows:
        if msg.startswith(prefix):
            seen.add(int(msg[len(prefix) :]))
            doubled += count - 1
    missing = [n for n in range(sent) if n not in seen]
    return Tally(unit, sent, len(seen & set(range(sent))), doubled, int(dropped or 0), missing)


def wait_tallies(database_url: str, sent: dict[str, int], timeout: float, settled=None) -> list[Tally]:
    """Wait until every unit's lines are all stored (or `settled(tally)` says the count is final)."""
    done = settled or (lambda t: t.stored == t.sent)
    deadline = time.monotonic() + timeout
    while True:
        tallies = [tally(database_url, unit, n) for unit, n in sent.items()]
        if all(done(t) for t in tallies) or time.monotonic() > deadline:
            return tallies
        time.sleep(0.5)


def assert_nothing_lost(tallies: list[Tally], min_sent: int = 1) -> None:
    """Print each unit's count and assert every unit sent at least `min_sent` lines, lost none, doubled none."""
    for t in tallies:
        print(t.line())
    assert all(t.sent >= min_sent for t in tallies), [(t.unit, t.sent) for t in tallies]
    assert [(t.unit, t.lost, t.doubled) for t in tallies] == [(t.unit, 0, 0) for t in tallies], [
        (t.unit, t.missing[:10]) for t in tallies
    ]


def wait_online(api: httpx.Client, units: list[str], timeout: float = 60.0) -> None:
    """Wait until every unit is online: its agent has started and opened the files it follows (a file that
    exists when an agent starts is followed from its end, so lines written before that are not its to send)."""
    for unit in units:
        wait_for(
            lambda u=unit: api.get(f"/api/devices/{u}/status").json().get("online"),
            timeout=timeout,
            interval=0.2,
            what=f"{unit} online",
        )


def kill_process(proc: subprocess.Popen, sig: int) -> None:
    """Send `sig` and reap the process (SIGKILL after 10 s if it ignores the signal)."""
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


class BurstLineWriter(LineWriter):
    """A LineWriter whose steady thread may be joined by bursts from another thread (`burst(count)`)."""

    def __init__(self, path: Path, unit: str, rate: float) -> None:
        super().__init__(path, unit, rate)
        self._lock = threading.Lock()

    def _run(self) -> None:
        started = time.monotonic()
        steady = 0  # the steady lines alone keep the rate: a burst comes on top
        with self.path.open("a", buffering=1) as fh:
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self.rate)
                with self._lock:
                    while steady < due:
                        fh.write(f"{self.unit} n={self.sent}\n")
                        self.sent += 1
                        steady += 1
                self._stop.wait(0.02)

    def burst(self, count: int) -> None:
        """Write `count` lines at once, whether or not the steady thread runs."""
        with self._lock:
            self.write_now(count)


def set_database_connections(admin_dsn: str, database: str, allow: bool) -> int:
    """Let clients into one PostgreSQL database or shut them out (the server and its other databases go on).

    Shutting out also ends the backends already connected to it; returns how many were ended."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if allow:
            return 0
        row = conn.execute(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
        return int(row[0]) if row else 0
