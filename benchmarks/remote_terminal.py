"""The remote terminal's keystroke echo latency through the fleet, against a local PTY, and the agent's memory.

For each broker (the embedded one, and a Mosquitto managed by the service as in compose.yaml) the script runs the
service in-process on SQLite, enrolls a unit and starts a real agent process that allows remote shells. Then:

- echo: a WebSocket client (as `fleet shell` or the dashboard) opens a session running `cat` on a raw terminal
  (`stty raw -echo; exec cat`: every byte comes back from the program at once, like a shell's line editor echoing a
  key) and sends one byte at a time, waiting for it to come back: WebSocket -> service -> broker -> agent -> PTY ->
  cat and back. The same program on a local PTY (pty.fork, write and read the master) is the floor.
- memory: the agent's RSS with no session, then with a session running `yes` whose output a reader drains as fast
  as it can (the credit window paces it), sampled every 0.2 s.

    .venv/bin/python benchmarks/remote_terminal.py            # --keys 500 --busy 10 (the defaults)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pty
import select
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_support import percentile  # noqa: E402
from tests.fleet_service.terminal.support import Term, shell_options  # noqa: E402
from tests.support.agent_process import PYTHON_M_AGENT, AgentProcesses  # noqa: E402
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto  # noqa: E402
from tests.support.services import Mosquitto, have_mosquitto, wait_for  # noqa: E402
from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for  # noqa: E402

RAW_CAT = "stty raw -echo; exec cat"
UNIT = "bench-term-1"


def local_pty_echo(keys: int) -> list[float]:
    """One byte written to a local PTY running `cat` in raw mode, until it reads back: the floor."""
    pid, master = pty.fork()
    if pid == 0:  # the child: the same program as on the unit
        os.execv("/bin/sh", ["/bin/sh", "-c", RAW_CAT])
    try:
        time.sleep(0.3)  # stty has run
        while select.select([master], [], [], 0.1)[0]:
            os.read(master, 4096)
        times = []
        for i in range(keys):
            key = bytes([97 + i % 26])
            start = time.perf_counter()
            os.write(master, key)
            got = b""
            while key not in got:
                select.select([master], [], [], 5)
                got += os.read(master, 4096)
            times.append(time.perf_counter() - start)
        return times
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(master)


def fleet_echo(url: str, keys: int) -> list[float]:
    term = Term.open(url, UNIT, token=ADMIN_TOKEN, command=RAW_CAT)
    try:
        term.wait_event("opened")
        time.sleep(0.5)  # stty has run
        while term.pump(0.1) and term.output:
            term.output.clear()
        times = []
        for i in range(keys):
            key = bytes([97 + i % 26])
            mark = len(term.output)
            start = time.perf_counter()
            term.send(key)
            while key not in term.output[mark:]:
                if not term.pump(5):
                    raise RuntimeError(f"the session closed: {term.close_info()}")
            times.append(time.perf_counter() - start)
        return times
    finally:
        term.close()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


def busy_rss(url: str, agent_pid: int, seconds: float) -> tuple[float, float, float]:
    """(peak RSS MB, mean RSS MB, MB/s read) with `yes` running and a reader draining the socket."""
    term = Term.open(url, UNIT, token=ADMIN_TOKEN, command="yes")
    received = 0
    samples = []
    try:
        term.wait_event("opened")
        start = time.monotonic()
        next_sample = start
        while time.monotonic() - start < seconds:
            try:
                message = term.conn.recv(timeout=0.2)
            except TimeoutError:
                message = b""
            if isinstance(message, bytes):
                received += len(message)
            if time.monotonic() >= next_sample:
                samples.append(rss_mb(agent_pid))
                next_sample += 0.2
        elapsed = time.monotonic() - start
    finally:
        term.close()
    return max(samples), sum(samples) / len(samples), received / elapsed / 1e6


@contextlib.contextmanager
def running_fleet(kind: str, directory: Path) -> Iterator[tuple[StackThread, int]]:
    """The service (SQLite) with its embedded broker, or with a managed Mosquitto: (stack, the units' MQTT port).

    `mosquitto` has deploy/mosquitto/mosquitto.conf's `set_tcp_nodelay true`; `mosquitto-nagle` leaves Mosquitto's
    default (Nagle's algorithm on), to show what that line is worth for a terminal."""
    mosquitto = kind.startswith("mosquitto")
    overrides = settings_overrides(directory / "mosquitto-files") if mosquitto else {}
    settings = settings_for(directory, **overrides)
    brokers: list[Mosquitto] = []

    def factory(extra_config: str = "", name: str = "mosquitto") -> Mosquitto:
        broker = Mosquitto(workdir=directory / f"{name}{len(brokers)}", extra_config=extra_config)
        brokers.append(broker)
        return broker.start()

    try:
        extra = "set_tcp_nodelay true\n" if kind == "mosquitto" else ""
        managed = start_managed_mosquitto(directory, factory, settings, extra) if mosquitto else None
        with StackThread(settings) as stack:
            wait_for(lambda: stack.ctx.link.connected.is_set(), timeout=30, what="service connected to the broker")
            yield stack, (managed.unit_port if managed else stack.mqtt_port)
    finally:
        for broker in brokers:
            broker.stop()


def run(kind: str, keys: int, busy_s: float) -> dict[str, object]:
    directory = Path(tempfile.mkdtemp(prefix=f"bench-term-{kind}-"))
    procs = AgentProcesses(directory)
    try:
        with running_fleet(kind, directory) as (stack, port), stack.client() as api:
            r = api.post("/api/devices", json={"id": UNIT})
            r.raise_for_status()
            secret = r.json()["secret"]
            if kind.startswith("mosquitto"):
                wait_for(lambda: accepts(port, UNIT, secret) == 0, timeout=10, what="Mosquitto accepting the unit")
            agent = procs.start(port, UNIT, secret, "--relay-port", "0", *shell_options(), entry=PYTHON_M_AGENT)
            wait_for(lambda: api.get(f"/api/devices/{UNIT}").json()["online"], timeout=30, what="the unit online")
            time.sleep(3)  # the agent settles after its first reports
            idle = rss_mb(agent.pid)
            fleet_echo(stack.url, 20)  # warm up: the first session imports the terminal code
            echo = fleet_echo(stack.url, keys)
            idle_after = rss_mb(agent.pid)
            peak, mean, rate = busy_rss(stack.url, agent.pid, busy_s)
            time.sleep(2)
            after_busy = rss_mb(agent.pid)
            return {
                "echo": echo,
                "idle": idle,
                "idle_after": idle_after,
                "busy_peak": peak,
                "busy_mean": mean,
                "rate": rate,
                "after_busy": after_busy,
            }
    finally:
        procs.stop_all()
        shutil.rmtree(directory, ignore_errors=True)


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=500, help="keystrokes timed per path")
    parser.add_argument("--busy", type=float, default=10.0, help="seconds of `yes` for the busy memory figure")
    args = parser.parse_args()
    kinds = ["embedded"] + (["mosquitto", "mosquitto-nagle"] if have_mosquitto() else [])
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores; {args.keys} keystrokes per path")
    local = local_pty_echo(args.keys)
    results = {kind: run(kind, args.keys, args.busy) for kind in kinds}
    print("\nkeystroke echo (ms)            p50     p99     max")
    print(f"  local PTY                   {ms(local, 50):>6}  {ms(local, 99):>6}  {max(local) * 1000:6.2f}")
    for kind, r in results.items():
        echo = r["echo"]
        assert isinstance(echo, list)
        print(f"  fleet, {kind:<20} {ms(echo, 50):>6}  {ms(echo, 99):>6}  {max(echo) * 1000:6.2f}")
    print("\nagent RSS (MB)        idle  after a session  busy peak  busy mean  after busy  `yes` read")
    for kind, r in results.items():
        print(
            f"  {kind:<18} {r['idle']:6.1f}  {r['idle_after']:15.1f}  {r['busy_peak']:9.1f}  {r['busy_mean']:9.1f}"
            f"  {r['after_busy']:10.1f}  {r['rate']:.2f} MB/s"
        )
    print(f"\nload average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
