"""Port forward throughput: bulk bytes through `fleet forward` against a direct loopback TCP copy, same run.

    python benchmarks/remote_forward.py [--mb 50] [--brokers embedded,mosquitto]

Starts its own parts in a temporary directory: the service (in this process, SQLite) on the embedded broker or
on a managed Mosquitto, one real agent process allowed to forward one port, a loopback server on that port that
sends N MB as fast as it can, and `fleet forward` as a subprocess. Each leg downloads the N MB three ways and
reports MB/s (best of the runs):

- direct: straight from the server over loopback TCP (the ceiling of this machine);
- WebSocket: the service's `WS /api/devices/{id}/forward/{port}` read directly;
- fleet forward: through the CLI's local port (local TCP -> WebSocket -> service -> broker -> agent -> TCP).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from websockets.sync.client import connect  # noqa: E402

from tests.support.agent_process import PYTHON_M_AGENT, AgentProcesses  # noqa: E402
from tests.support.managed_mosquitto import settings_overrides, start_managed_mosquitto  # noqa: E402
from tests.support.services import Mosquitto, wait_for  # noqa: E402
from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for  # noqa: E402

MB = 1024 * 1024
RUNS = 3


class Source:
    """Loopback server: each connection gets `size` bytes, then the server closes it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.block = os.urandom(256 * 1024)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket) -> None:
        with conn:
            left = self.size
            try:
                while left > 0:
                    piece = self.block[: min(left, len(self.block))]
                    conn.sendall(piece)
                    left -= len(piece)
            except OSError:
                pass


def tcp_download(port: int) -> int:
    total = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        while data := s.recv(1024 * 1024):
            total += len(data)
    return total


def ws_download(url: str) -> int:
    total = 0
    with connect(url, additional_headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, max_size=None) as ws:
        for message in ws:
            total += len(message)
    return total


def timed(label: str, size: int, fetch) -> float:  # noqa: ANN001
    best = 0.0
    for _ in range(RUNS):
        start = time.perf_counter()
        got = fetch()
        elapsed = time.perf_counter() - start
        assert got == size, f"{label}: got {got} of {size} bytes"
        best = max(best, size / MB / elapsed)
    return best


def start_forward(base: str, unit: str, port: int) -> tuple[subprocess.Popen, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["PYTHONPATH"] = str(ROOT)
    argv = ["forward", unit, f"0:{port}", "--api-url", base, "--token", ADMIN_TOKEN]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet_cli.main", *argv],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    match = re.search(r":(\d+) -> ", proc.stdout.readline())
    assert match, "fleet forward did not start"
    return proc, int(match.group(1))


def leg(kind: str, size: int, tmp: Path) -> dict[str, float]:
    overrides: dict = {}
    started: list[Mosquitto] = []

    def factory(extra_config: str = "", name: str = "mosquitto") -> Mosquitto:
        m = Mosquitto(workdir=tmp / f"{name}{len(started)}", extra_config=extra_config)
        started.append(m)
        return m.start()

    if kind == "mosquitto":
        overrides.update(settings_overrides(tmp / "mosquitto-files"))
    settings = settings_for(tmp, **overrides)
    managed = start_managed_mosquitto(tmp, factory, settings) if kind == "mosquitto" else None
    source = Source(size)
    agents = AgentProcesses(tmp)
    forward = None
    try:
        with StackThread(settings) as stack, stack.client() as api:
            wait_for(lambda: stack.ctx.link.connected.is_set(), timeout=30, what="service connected to the broker")
            r = api.post("/api/devices", json={"id": "bench-fwd"})
            secret = r.json()["secret"]
            if managed is not None:
                time.sleep(1.0)  # Mosquitto reloads its password file
            port = stack.mqtt_port if managed is None else managed.unit_port
            agents.start(port, "bench-fwd", secret, "--allow-remote-port", str(source.port), entry=PYTHON_M_AGENT)
            wait_for(lambda: api.get("/api/devices/bench-fwd/status").json()["online"], timeout=30, what="online")
            url = stack.url.replace("http://", "ws://") + f"/api/devices/bench-fwd/forward/{source.port}"
            forward, local = start_forward(stack.url, "bench-fwd", source.port)
            return {
                "direct": timed("direct", size, lambda: tcp_download(source.port)),
                "websocket": timed("websocket", size, lambda: ws_download(url)),
                "fleet forward": timed("fleet forward", size, lambda: tcp_download(local)),
            }
    finally:
        if forward is not None:
            forward.terminate()
            forward.wait(10)
        agents.stop_all()
        for m in started:
            m.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=50, help="megabytes per download (default 50)")
    parser.add_argument("--brokers", default="embedded,mosquitto", help="legs to run (default embedded,mosquitto)")
    args = parser.parse_args()
    size = args.mb * MB
    print(f"load average before: {os.getloadavg()}")
    for kind in args.brokers.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-forward-{kind}-") as tmp:
            figures = leg(kind, size, Path(tmp))
        direct = figures["direct"]
        print(f"\n{kind} broker, {args.mb} MB, best of {RUNS}:")
        for name, rate in figures.items():
            share = "" if name == "direct" else f"  ({rate / direct:.1%} of direct)"
            print(f"  {name:14s} {rate:9.1f} MB/s{share}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
