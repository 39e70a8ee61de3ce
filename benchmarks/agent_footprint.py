"""Agent footprint: RSS and CPU of one `fleet agent` process at default intervals against a local Mosquitto.

Usage: python benchmarks/agent_footprint.py [--seconds 120] [--entry module|fleet] [--units N]

Starts Mosquitto on a free port (anonymous, loopback), a subscriber that counts what the agent publishes,
and the agent as a subprocess the way the installed systemd unit runs it (`python -m agent`; `--entry fleet`
runs `fleet agent`, which also imports the other parts' CLI modules). After a warm-up it samples the agent's RSS every
second and its CPU time (user+system, children included) over the window. Targets (docs/performance.md):
RSS < 40 MB, CPU < 0.5 % of one core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
RSS_TARGET_MB = 40.0
CPU_TARGET_PERCENT = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(workdir: Path, port: int) -> subprocess.Popen:
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [shutil.which("mosquitto") or "mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="measurement window (default 120)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds ignored after start (default 5)")
    parser.add_argument(
        "--entry",
        choices=("module", "fleet"),
        default="module",
        help="`python -m agent` (as the installed unit runs it, default) or `fleet agent`",
    )
    parser.add_argument(
        "--units",
        type=int,
        default=0,
        help="watched units, each checked with `true` every metrics interval (default 0)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # run the cleanup below when stopped

    workdir = Path(tempfile.mkdtemp(prefix="agent-footprint-"))
    port = free_port()
    broker = start_mosquitto(workdir, port)
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def on_message(client, userdata, msg) -> None:
        kind = msg.topic.split("/", 2)[2]
        with lock:
            counts[kind] = counts.get(kind, 0) + 1

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="footprint-observer")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("fleet/#", qos=1)
    sub.loop_start()

    entry = ["-m", "fleet_cli.main", "agent"] if args.entry == "fleet" else ["-m", "agent"]
    cmd = [
        sys.executable,
        *entry,
        "--device-id",
        "bench-1",
        "--broker-url",
        f"mqtt://127.0.0.1:{port}",
        "--state-dir",
        str(workdir / "state"),
        "--secret",
        "unused",
    ]
    for n in range(args.units):
        cmd += ["--unit", f"unit{n}.service"]
    if args.units:
        cmd += ["--check-command", "true {unit}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["PYTHONPATH"] = str(ROOT)
    agent = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = psutil.Process(agent.pid)
    try:
        time.sleep(args.warmup)
        if agent.poll() is not None:
            raise SystemExit(f"agent exited: {agent.stderr.read().decode()[-2000:]}")
        t0 = proc.cpu_times()
        wall0 = time.monotonic()
        rss: list[float] = []
        while time.monotonic() - wall0 < args.seconds:
            rss.append(proc.memory_info().rss / 2**20)
            time.sleep(1.0)
        t1 = proc.cpu_times()
        wall = time.monotonic() - wall0
        cpu_s = (t1.user - t0.user) + (t1.system - t0.system)
        cpu_s += (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
        cpu_pct = 100.0 * cpu_s / wall
        threads = proc.num_threads()
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
        sub.loop_stop()
        sub.disconnect()
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"agent entry: {' '.join(entry[1:])}; window {wall:.0f} s after {args.warmup:.0f} s warm-up; "
        f"units {args.units}; threads {threads}"
    )
    print(f"RSS: mean {sum(rss) / len(rss):.1f} MB, max {max(rss):.1f} MB (target < {RSS_TARGET_MB:.0f} MB)")
    print(f"CPU: {cpu_s:.2f} s over {wall:.0f} s = {cpu_pct:.3f} % of one core (target < {CPU_TARGET_PERCENT} %)")
    print(f"published: {dict(sorted(counts.items()))}")
    ok = max(rss) < RSS_TARGET_MB and cpu_pct < CPU_TARGET_PERCENT
    print("within targets" if ok else "OUTSIDE TARGETS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
