"""A fleet at size: N simulated units on Mosquitto + PostgreSQL (or the embedded broker + SQLite).

    python benchmarks/fleet_scale.py [--units 10000] [--mode mosquitto|embedded] [--window 60]

Starts everything itself in a temporary directory: a fresh PostgreSQL database (or a SQLite file), Mosquitto on a
free port with a password file and the per-unit ACL (or `fleet up` with its embedded broker), the service as a
`fleet service` / `fleet up` process, and `fleet simulate` as another process (heartbeat 30 s, metrics 10 s, a
log batch per unit per minute). The units are inserted in bulk with ONE shared secret hashed once (fast set-up,
benchmark only). Once every unit is online it measures, over a steady window:

- ingest lag: `fleet_ingest_lag_seconds` from /metrics, and end to end: each metric's `ts` (set by the unit when
  it sends) against the moment its event arrives on `GET /api/events` (published after the commit);
- the service's RSS and CPU;
- `GET /api/devices` latency (first page of 100, and `?status=online`) with the fleet running.

Targets (docs/performance.md): 10,000 units on Mosquitto + PostgreSQL with ingest lag < 1 s, RSS < 1 GB,
`GET /api/devices` p95 < 100 ms; the embedded mode holds >= 2,000 units.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import (  # noqa: E402
    ADMIN_TOKEN,
    Proc,
    database,
    free_port,
    insert_units,
    percentile,
    scrape,
    start_fleet,
    summary_ms,
    wait_http,
    workdir,
    write_secrets_cache,
)

from fleet_service.cli.simulated_units import database_target  # noqa: E402
from fleet_service.db.engine import make_engine  # noqa: E402
from protocol.ids import now_ms  # noqa: E402
from simulator.enroll import unit_ids  # noqa: E402


class MetricLag:
    """Follows `GET /api/events?types=metrics` and records receive time minus the metric's own `ts`."""

    def __init__(self, url: str) -> None:
        self.lags: list[float] = []
        self.recording = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()

    def _run(self, url: str) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        while not self._stop.is_set():
            try:
                with httpx.stream(
                    "GET",
                    f"{url}/api/events",
                    params={"types": "metrics"},
                    headers=headers,
                    timeout=httpx.Timeout(30, read=60),
                ) as r:
                    for line in r.iter_lines():
                        if self._stop.is_set():
                            return
                        if self.recording and line.startswith("data:"):
                            ts = json.loads(line[5:]).get("ts")
                            if isinstance(ts, int):
                                self.lags.append((now_ms() - ts) / 1000)
            except httpx.HTTPError:
                time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()


def online(api: httpx.Client) -> int:
    """Units online per the API; -1 when the service did not answer in time (it is busy, not gone)."""
    try:
        return api.get("/api/devices", params={"status": "online", "limit": 1}).json()["total"]
    except httpx.TimeoutException:
        return -1


def database_bytes(url: str, tmp: Path) -> int:
    """What the database takes on disk now: PostgreSQL's own count for this database, or SQLite's files."""
    if url.startswith("sqlite"):
        return sum(f.stat().st_size for f in tmp.glob("**/*.db*") if f.is_file())
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
    finally:
        engine.dispose()


def time_requests(api: httpx.Client, params: dict, count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        r = api.get("/api/devices", params=params)
        out.append(time.perf_counter() - start)
        if r.status_code != 200:
            raise SystemExit(f"GET /api/devices {params}: {r.status_code} {r.text[:200]}")
        time.sleep(0.05)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, help="simulated units (default 10000; 2000 with --mode embedded)")
    parser.add_argument("--mode", choices=["mosquitto", "embedded"], default="mosquitto")
    parser.add_argument(
        "--database", choices=["postgres", "sqlite"], help="default: postgres with mosquitto, sqlite with embedded"
    )
    parser.add_argument("--window", type=float, default=60.0, help="steady-state window in seconds (default 60)")
    parser.add_argument("--connect-rate", type=float, help="unit connections per second (default 250; 60 embedded)")
    parser.add_argument("--requests", type=int, default=200, help="GET /api/devices requests per query shape")
    parser.add_argument("--ingest-processes", type=int, default=1, help="FLEET_INGEST_PROCESSES of the service")
    args = parser.parse_args()
    embedded = args.mode == "embedded"
    units = args.units or (2000 if embedded else 10000)
    db_kind = args.database or ("sqlite" if embedded else "postgres")
    rate = args.connect_rate or (60.0 if embedded else 250.0)
    ids = unit_ids("bench", units)

    with workdir("fleet-scale-") as tmp, database(db_kind, tmp) as url:
        t0 = time.monotonic()
        secret = insert_units(url, ids)
        target = database_target(make_engine(url))
        write_secrets_cache(tmp / "units.json", target, ids, secret)
        print(
            f"fleet_scale: {units} units in {args.mode} mode on {db_kind}; inserted in "
            f"{time.monotonic() - t0:.1f}s (one shared secret hashed once, benchmark only)",
            flush=True,
        )

        http_port = free_port()
        service, mosquitto, mqtt_port = start_fleet(
            embedded,
            tmp,
            url,
            http_port,
            secret,
            ids,
            "max_queued_messages 100000\n",
            env={"FLEET_INGEST_PROCESSES": str(args.ingest_processes)},
        )
        sim = None
        lag = None
        try:
            base = f"http://127.0.0.1:{http_port}"
            wait_http(base)
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
            sim = Proc(
                "simulate",
                [
                    "--log-level",
                    "WARNING",
                    "simulate",
                    "--devices",
                    str(units),
                    "--prefix",
                    "bench",
                    "--broker-url",
                    f"mqtt://127.0.0.1:{mqtt_port}",
                    "--database-url",
                    url,
                    "--secrets-file",
                    str(tmp / "units.json"),
                    "--connect-rate",
                    str(rate),
                    "--heartbeat-interval",
                    "30",
                    "--metrics-interval",
                    "10",
                    "--log-interval",
                    "60",
                ],
                tmp,
            )
            started = time.monotonic()
            count = 0
            deadline = started + units / rate * 3 + 120
            while count < units and time.monotonic() < deadline:
                time.sleep(2)
                if not sim.alive() or not service.alive():
                    raise SystemExit(f"a process died:\n{sim.tail()}\n{service.tail()}")
                count = max(count, online(api))
            connect_s = time.monotonic() - started
            print(
                f"fleet_scale: {count}/{units} units online after {connect_s:.0f}s (connect rate {rate:.0f}/s)",
                flush=True,
            )
            if count < units:
                print(f"fleet_scale: NOT ALL UNITS CAME ONLINE\n{sim.tail()}", flush=True)

            lag = MetricLag(base)
            time.sleep(12)  # one full metrics interval after the connect wave, then measure
            lag.recording = True
            disk_before = database_bytes(url, tmp)
            before, cpu_before, t_before = scrape(api), service.cpu_seconds(), time.monotonic()
            gauges: list[float] = []
            depths: list[float] = []
            backlogs: list[float] = []
            rss: list[float] = []
            shapes = [({}, "first page (100)"), ({"status": "online"}, "?status=online (100)")]
            latencies: dict[str, list[float]] = {name: [] for _, name in shapes}
            window_end = t_before + args.window
            while time.monotonic() < window_end:
                sample = scrape(api)
                gauges.append(sample.get("fleet_ingest_lag_seconds", float("nan")))
                depths.append(sample.get("fleet_ingest_queue_depth", 0.0))
                backlogs.append(sample.get("fleet_ingest_link_backlog", 0.0))
                rss.append(service.rss_mb())
                for params, name in shapes:
                    latencies[name] += time_requests(api, params, max(1, args.requests // 10))
                time.sleep(max(0.0, min(2.0, window_end - time.monotonic())))
            elapsed = time.monotonic() - t_before
            lag.recording = False
            after, cpu_after = scrape(api), service.cpu_seconds()
            disk_growth = database_bytes(url, tmp) - disk_before
            persisted = sum(v for k, v in after.items() if k.startswith("fleet_ingest_persisted_total")) - sum(
                v for k, v in before.items() if k.startswith("fleet_ingest_persisted_total")
            )
            dropped = sum(v for k, v in after.items() if k.startswith("fleet_ingest_dropped_total"))
            still_online = online(api)

            expected = units / 10 + units / 30 + units / 60
            print(
                f"\nfleet_scale results ({units} units, {args.mode}, {db_kind}, {args.ingest_processes} ingest "
                f"process(es), window {elapsed:.0f}s, "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
            )
            print(f"  units online at the end of the window: {still_online}/{units}")
            print(
                f"  messages persisted: {persisted / elapsed:.0f}/s (the units send ~{expected:.0f}/s; "
                f"dropped in total: {dropped:.0f})"
            )
            print(
                f"  fleet_ingest_lag_seconds (receive->commit of the last batch, sampled every ~2s): "
                f"p50 {percentile(gauges, 50) * 1000:.0f} ms, max {max(gauges) * 1000:.0f} ms; "
                f"ingest queue depth max {max(depths):.0f}, MQTT client backlog before it max {max(backlogs):.0f}"
            )
            print(f"  end-to-end metric lag (unit ts -> SSE event after commit): {summary_ms(lag.lags)}")
            print(
                f"  service RSS: max {max(rss):.0f} MB; CPU {100 * (cpu_after - cpu_before) / elapsed:.0f}% "
                f"of one core; simulator RSS {sim.rss_mb():.0f} MB"
            )
            for name, values in latencies.items():
                print(f"  GET /api/devices {name}: {summary_ms(values)}")
            per_hour = disk_growth / elapsed * 3600
            print(
                f"  database on disk: +{disk_growth / 2**20:.1f} MiB in the window = {per_hour / 2**30:.2f} GiB/hour, "
                f"{per_hour * 24 / units / 2**20:.2f} MiB per unit per day (retention trims it to the tiers' windows)"
            )
            e2e_p99 = percentile(lag.lags, 99) if lag.lags else float("inf")
            verdict = [
                ("ingest lag < 1 s (p99 end to end)", e2e_p99 < 1.0),
                ("service RSS < 1 GB", max(rss) < 1000),
                ("GET /api/devices p95 < 100 ms", all(percentile(v, 95) < 0.1 for v in latencies.values())),
                (f"all {units} units online", still_online == units),
            ]
            for text, ok in verdict:
                print(f"  target {text}: {'met' if ok else 'MISSED'}")
        finally:
            if lag is not None:
                lag.stop()
            if sim is not None:
                t_stop = time.monotonic()
                rc = sim.stop(timeout=120)
                print(f"fleet_scale: simulator stopped (exit {rc}) in {time.monotonic() - t_stop:.0f}s")
            service.stop()
            if mosquitto is not None:
                mosquitto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
