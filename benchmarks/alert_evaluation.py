"""What one alert evaluation costs at fleet size: the built-in rules over N units' latest state (SQLite).

Times a full evaluation with nothing changing (the steady state: every unit read, nothing written), one where
1 % of the units start pending, and a woken evaluation over 1,000 units named by live events. The evaluator
runs these in a worker thread of the service; ingest never waits for them.

Then adds a log rule (more than 5 `error` lines containing "encoder" in 300 s) and a command_failed rule over every
unit, with `--lines` stored log lines per unit inside the window, and times: the first full evaluation of a new
lease holder (it looks at every unit that logged within the window), a steady full evaluation, and a woken
evaluation over 1,000 units whose new lines the live bus announced (one window query each).

    python benchmarks/alert_evaluation.py [--units 10000] [--runs 5] [--lines 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, update  # noqa: E402

from fleet_service.alerts.evaluator import evaluate  # noqa: E402
from fleet_service.alerts.models import AlertRule  # noqa: E402
from fleet_service.alerts.sources import Heard, Looks  # noqa: E402
from fleet_service.db.engine import make_engine, migrate  # noqa: E402
from fleet_service.devices.models import LEVEL_NUMBERS, Device, LogRecord  # noqa: E402
from protocol.ids import now_ms  # noqa: E402


def _metrics(i: int, temp: float) -> dict:
    return {
        "ts": now_ms(),
        "cpu_percent": 20.0 + i % 50,
        "mem_percent": 40.0,
        "disk_percent": 50.0 + i % 30,
        "temp_c": temp,
        "load1": 0.5,
        "services": {"recorder": "active", "uploader": "active"},
        "extra": {"fps": 25, "recording": True},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=30, help="stored log lines per unit within the window")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/fleet.db")
        migrate(engine)
        now = now_ms()
        rows = [
            {
                "id": f"unit-{i:05d}",
                "secret_hash": "x",
                "created_at": now,
                "online": True,
                "last_seen": now,
                "last_metrics": _metrics(i, 50.0),
                "tags": [],
                "ips": [],
                "desired_config": {},
                "reported_config": {},
            }
            for i in range(args.units)
        ]
        with engine.begin() as conn:
            for start in range(0, len(rows), 1000):
                conn.execute(insert(Device), rows[start : start + 1000])

        def timed(only: set[str] | None = None, heard: Heard | None = None) -> float:
            start = time.perf_counter()
            assert evaluate(engine, "bench", 60_000, only, heard) is not None
            return (time.perf_counter() - start) * 1000

        timed()
        steady = [timed() for _ in range(args.runs)]
        hot = [f"unit-{i:05d}" for i in range(0, args.units, 100)]
        with engine.begin() as conn:
            for unit in hot:
                conn.execute(update(Device).where(Device.id == unit).values(last_metrics=_metrics(0, 95.0)))
        changing = timed()
        woken = [timed({f"unit-{i:05d}" for i in range(j, args.units, max(1, args.units // 1000))}) for j in range(3)]
        print(f"{args.units} units, 5 built-in rules, SQLite")
        print(f"  full evaluation, nothing changes: median {statistics.median(steady):.0f} ms ({args.runs} runs)")
        print(f"  full evaluation, {len(hot)} units start pending: {changing:.0f} ms")
        print(f"  woken evaluation over 1,000 units: median {statistics.median(woken):.0f} ms")

        _add_log_and_command_rules(engine, args.units, args.lines)
        looks = Looks()
        takeover = timed(None, Heard(looks=looks))
        steady = [timed(None, Heard(looks=looks)) for _ in range(args.runs)]
        woken = []
        for j in range(3):
            ids = {f"unit-{i:05d}" for i in range(j, args.units, max(1, args.units // 1000))}
            woken.append(timed(ids, Heard(logs=dict.fromkeys(ids, LEVEL_NUMBERS["error"]), looks=looks)))
        print(f"+ a log rule and a command_failed rule, {args.lines} stored lines per unit in the window")
        print(f"  first full evaluation of a new holder: {takeover:.0f} ms")
        print(f"  full evaluation, nothing new: median {statistics.median(steady):.0f} ms ({args.runs} runs)")
        print(f"  woken evaluation over 1,000 units with new error lines: median {statistics.median(woken):.0f} ms")
        engine.dispose()


def _add_log_and_command_rules(engine, units: int, lines: int) -> None:
    now = now_ms()
    common = {
        "created_at": now,
        "updated_at": now,
        "updated_by": "bench",
        "severity": "warning",
        "field": "",
        "level": "",
        "pattern": "",
        "threshold": None,
        "window_s": None,
    }
    with engine.begin() as conn:
        conn.execute(
            insert(AlertRule),
            [
                {
                    **common,
                    "id": "bench-log",
                    "name": "encoder errors",
                    "kind": "log",
                    "level": "error",
                    "pattern": "encoder",
                    "threshold": 5.0,
                    "window_s": 300.0,
                },
                {**common, "id": "bench-cmd", "name": "update failed", "kind": "command_failed", "field": "update"},
            ],
        )
        levels = ("debug", "info", "info", "warning", "error")
        batch = []
        for i in range(units):
            for n in range(lines):
                level = levels[n % len(levels)]
                batch.append(
                    {
                        "device_id": f"unit-{i:05d}",
                        "rec_id": f"r{n}",
                        "ts": now - n * 9_000,
                        "received_at": now - n * 9_000,
                        "level": level,
                        "level_no": LEVEL_NUMBERS[level],
                        "source": "recorder",
                        "msg": f"encoder frame {n} late" if n % 7 == 0 else f"segment {n} written",
                    }
                )
            if len(batch) >= 10_000 or i == units - 1:
                conn.execute(insert(LogRecord), batch)
                batch = []


if __name__ == "__main__":
    main()
