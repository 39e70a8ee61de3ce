"""What alert evaluation costs ingest: the service draining metrics from 10,000 units, alerts on versus off.

    python benchmarks/alert_ingest_overhead.py [--units 10000] [--per-unit 10] [--rounds 2]
                                               [--database postgres|sqlite]

The scaled mode (Mosquitto + PostgreSQL by default). Every unit is enrolled and marked online, so every rule
reads every unit (an offline unit's metric rules are skipped, which would flatter the figure); 1 % of the
units report a temperature over the built-in 85 C line, so conditions go pending and alerts fire during the
run. Each leg publishes `--per-unit` QoS 1 metrics samples per unit into the service's persistent session
while the service is away, then lets a fresh service drain them: the rate is samples / (last one persisted -
reconnect). In an "off" leg the evaluator's tasks are cancelled before the drain; in an "on" leg it runs as in
production (the timer over every unit plus the wake-ups the metrics events cause). Legs alternate off/on so a
drift of the machine does not land on one side. The target (docs/alerts.md): alerts on costs ingest <= 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import database, insert_units, service_url, start_mosquitto, workdir  # noqa: E402
from ingest_throughput import UNLIMITED, _start_link, _stop_link, wait_link  # noqa: E402
from sqlalchemy import update  # noqa: E402

from fleet_service.alerts.models import Alert, AlertRule  # noqa: E402
from fleet_service.db.engine import make_engine  # noqa: E402
from fleet_service.devices.models import Device  # noqa: E402
from protocol.ids import now_ms  # noqa: E402
from protocol.topics import Kind, topic  # noqa: E402
from tests.support.stack import StackThread, settings_for  # noqa: E402

HOT_EVERY = 100  # one unit in a hundred runs hot
EVAL_INTERVAL_S = [10.0]  # the service's FLEET_ALERT_EVAL_INTERVAL_S (--eval-interval)


def sample(index: int, n: int) -> bytes:
    hot = index % HOT_EVERY == 0
    body = {
        "v": 1,
        "ts": now_ms(),
        "cpu_percent": 20.0 + (index + n) % 50,
        "mem_percent": 41.5,
        "disk_percent": 50.0 + index % 30,
        "temp_c": 90.0 if hot else 55.0 + index % 10,
        "load1": 0.7,
        "services": {"recorder": "active", "uploader": "active"},
        "extra": {"fps": 25, "recording": True},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def publish_all(port: int, secret: str, ids: list[str], per_unit: int, leg: int, done) -> None:
    """16 threads, each connecting as its units one after another (Mosquitto's ACL lets a unit publish only
    under its own id) and publishing `per_unit` QoS 1 samples."""
    import paho.mqtt.client as mqtt

    def worker(k: int, chunk: list[tuple[int, str]]) -> None:
        # Each thread connects from its own loopback address: 10,000 connections a leg, closed and left in
        # TIME_WAIT, would otherwise use up the machine's ephemeral ports within a few legs.
        source = f"127.0.{leg}.{k + 1}"
        for index, device_id in chunk:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
            c.username_pw_set(device_id, secret)
            connected = threading.Event()
            c.on_connect = lambda *a, e=connected: e.set()
            c.connect("127.0.0.1", port, keepalive=60, bind_address=source)
            c.loop_start()
            if not connected.wait(30):
                raise SystemExit(f"{device_id} could not connect")
            infos = [c.publish(topic(device_id, Kind.METRICS), sample(index, n), qos=1) for n in range(per_unit)]
            for info in infos:
                info.wait_for_publish(60)
            c.disconnect()
            c.loop_stop()

    indexed = list(enumerate(ids))
    threads = [threading.Thread(target=worker, args=(k, indexed[k::16])) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()


def persisted(stack: StackThread) -> float:
    return stack.ctx.registry.value("fleet_ingest_persisted_total", kind="metrics")


async def _stop_alerts(ctx) -> list[str]:
    tasks = [t for t in ctx.tasks if t.get_name().startswith(("alert", "notif"))]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        ctx.tasks.remove(task)
    return [t.get_name() for t in tasks]


def run_leg(
    ctx, tmp: Path, url: str, port: int, secret: str, ids: list[str], per_unit: int, alerts: bool, leg: int
) -> float:
    settings = settings_for(tmp, database_url=url, broker_url=service_url(port), replica_id="bench-alerts", **UNLIMITED)
    expected = per_unit * len(ids)
    with StackThread(settings) as stack:
        wait_link(stack)
        stopped = [] if alerts else stack.call(_stop_alerts(stack.ctx))
        if not alerts and not stopped:
            raise SystemExit("found no alert tasks to stop: the benchmark no longer matches the service")
        base = persisted(stack)
        stack.call(_stop_link(stack.ctx))
        done = ctx.Event()
        pub = ctx.Process(target=publish_all, args=(port, secret, ids, per_unit, leg, done))
        pub.start()
        done.wait(1800)
        pub.join()
        t0 = time.time()
        stack.call(_start_link(stack.ctx))
        deadline = time.monotonic() + 900
        while persisted(stack) < base + expected:
            if time.monotonic() > deadline:
                raise SystemExit(f"the service persisted {persisted(stack) - base:.0f} of {expected}")
            time.sleep(0.01)
        return expected / (time.time() - t0)


def prepare(url: str) -> None:
    """Every unit online; the built-in temperature rule fires after 5 s instead of 120 s, so the hot units'
    alerts fire within a leg and their writes are part of what is measured."""
    engine = make_engine(url)
    now = now_ms()
    with engine.begin() as conn:
        conn.execute(update(Device).values(online=True, online_changed_at=now, last_seen=now))
        conn.execute(update(AlertRule).where(AlertRule.builtin == "temperature").values(for_s=5.0))
    engine.dispose()


def fired(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(Alert.__table__.select()).fetchall()  # type: ignore[attr-defined]
    engine.dispose()
    return len(n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--per-unit", type=int, default=10, help="metrics samples per unit per leg")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--eval-interval", type=float, default=10.0, help="FLEET_ALERT_EVAL_INTERVAL_S (default 10)")
    args = parser.parse_args()
    EVAL_INTERVAL_S[0] = args.eval_interval
    ctx = mp.get_context("spawn")
    ids = [f"alert-{i:05d}" for i in range(1, args.units + 1)]
    print(
        f"alert_ingest_overhead: {args.units} online units x {args.per_unit} metrics samples per leg, "
        f"{args.rounds} off/on rounds, {args.database}; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores",
        flush=True,
    )
    rates: dict[bool, list[float]] = {False: [], True: []}
    with workdir("fleet-alert-ingest-") as tmp, database(args.database, tmp) as url:
        secret = insert_units(url, ids)
        prepare(url)
        mosquitto = start_mosquitto(
            tmp, secret, ids, "max_queued_messages 1000000\nmax_inflight_messages 1000\nset_tcp_nodelay true\n"
        )
        try:
            for r in range(args.rounds):
                for alerts in (False, True):
                    leg = 2 * r + int(alerts) + 1
                    rate = run_leg(ctx, tmp, url, mosquitto.port, secret, ids, args.per_unit, alerts, leg)
                    rates[alerts].append(rate)
                    print(f"  round {r + 1}, alerts {'on ' if alerts else 'off'}: {rate:,.0f} samples/s", flush=True)
        finally:
            mosquitto.stop()
        alerts_fired = fired(url)
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    cost = 100 * (off - on) / off
    print("\nalert_ingest_overhead results")
    print(f"  alerts off: {off:,.0f} samples/s (median of {args.rounds})")
    print(f"  alerts on:  {on:,.0f} samples/s (median of {args.rounds}); {alerts_fired} alerts fired in the run")
    print(f"  cost of evaluation: {cost:.1f} % of ingest; target <= 10 %: {'met' if cost <= 10 else 'MISSED'}")
    print(f"  (load average at the end {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
