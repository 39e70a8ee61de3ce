"""What the tiers cost ingest: one batch of 1,000 metric messages from 1,000 units persisted with the raw rows and
their rollups (as the service does) against the raw rows alone (a plain insert, as before the tiers), on
PostgreSQL and SQLite, in-process (no broker: the persister's own work).

    python benchmarks/metric_ingest_cost.py [--units 1000] [--batches 15]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_support import database, insert_units  # noqa: E402
from fleet_service.db.core import table_of  # noqa: E402
from fleet_service.db.engine import make_engine  # noqa: E402
from fleet_service.devices.models import MetricSample  # noqa: E402
from fleet_service.ingest.badlog import BadMessageLog  # noqa: E402
from fleet_service.ingest.persister import Inbound, Persister  # noqa: E402
from fleet_service.metrics import rollups  # noqa: E402
from fleet_service.prometheus import Registry  # noqa: E402
from protocol.ids import now_ms  # noqa: E402
from tests.fleet_service.metrics.samples import message, random_samples  # noqa: E402


def raw_only(session, samples) -> int:
    session.execute(table_of(MetricSample).insert(), samples)
    return len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=15)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    for kind in ("postgres", "sqlite"):
        with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
            engine = make_engine(url)
            ids = [f"unit-{i:05d}" for i in range(args.units)]
            insert_units(url, ids)
            registry = Registry()
            persister = Persister(engine, registry, BadMessageLog(registry))
            rng = random.Random(1)
            start = now_ms() - 3_600_000
            store = rollups.store
            times: dict[str, list[float]] = {"raw + rollups": [], "raw only": []}
            for _ in range(2):  # alternated, so a change in the machine's load hits both
                for mode in times:
                    rollups.store = store if mode == "raw + rollups" else raw_only
                    for _ in range(args.batches):
                        batch = [
                            Inbound(*message(s), received_ms=now_ms())
                            for unit in ids
                            for s in random_samples(rng, unit, start + rng.randrange(3_000_000), 1)
                        ]
                        began = time.perf_counter()
                        persister.persist(batch)
                        times[mode].append((time.perf_counter() - began) * 1000)
            rollups.store = store
            engine.dispose()
        for mode, values in times.items():
            print(f"{kind:8s} {mode:14s} median {statistics.median(values):6.1f} ms per batch of {args.units}")


if __name__ == "__main__":
    main()
