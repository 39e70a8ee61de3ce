"""The service's own counters and gauges, rendered in the Prometheus text format at /metrics."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

LabelKey = tuple[tuple[str, str], ...]


class Registry:
    """Thread-safe counters and gauges; gauges may be callables sampled at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[LabelKey, float]] = defaultdict(dict)
        self._callbacks: dict[str, Callable[[], float]] = {}
        self._collectors: list[Callable[[], Iterable[tuple[str, dict[str, str], float]]]] = []

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def gauge_callback(self, name: str, fn: Callable[[], float]) -> None:
        self._callbacks[name] = fn

    def collector(self, fn: Callable[[], Iterable[tuple[str, dict[str, str], float]]]) -> None:
        """Add series produced at scrape time by another component: (name, labels, value) triples."""
        self._collectors.append(fn)

    def take(self) -> list[tuple[str, LabelKey, float]]:
        """Every series' value, and the registry emptied: what a worker process counted since it was last asked."""
        with self._lock:
            taken = [(name, key, value) for name, series in self._values.items() for key, value in series.items()]
            self._values.clear()
        return taken

    def add(self, counted: list[tuple[str, LabelKey, float]]) -> None:
        """Add what take() returned in another process to these counters."""
        with self._lock:
            for name, key, amount in counted:
                series = self._values[name]
                series[key] = series.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            snapshot = {k: dict(v) for k, v in self._values.items()}
        for name, probe in self._callbacks.items():
            try:
                snapshot[name] = {(): float(probe())}
            except Exception:  # noqa: BLE001 (a probe is any component's code: a broken one must not break the scrape)
                continue
        for collect in self._collectors:
            try:
                for name, labels, value in collect():
                    snapshot.setdefault(name, {})[tuple(sorted(labels.items()))] = float(value)
            except Exception:  # noqa: BLE001 (same for a collector)
                continue
        for name in sorted(set(snapshot) | set(self._help)):
            kind, text = self._help.get(name, ("untyped", ""))
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            for key, value in sorted(snapshot.get(name, {}).items()):
                pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                lines.append(f"{name}{{{pairs}}} {value:g}" if pairs else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def standard_registry() -> Registry:
    r = Registry()
    r.describe("fleet_ingest_messages_total", "counter", "MQTT messages received by ingest, by kind")
    r.describe("fleet_ingest_persisted_total", "counter", "Messages persisted to the database, by kind")
    r.describe("fleet_ingest_dropped_total", "counter", "Messages dropped by ingest, by reason")
    r.describe("fleet_ingest_batches_total", "counter", "Database transactions written by ingest")
    r.describe("fleet_ingest_queue_depth", "gauge", "Messages waiting to be persisted")
    r.describe("fleet_ingest_lag_seconds", "gauge", "Receive-to-commit time of the last batch")
    r.describe("fleet_ingest_db_errors_total", "counter", "Failed ingest transactions (retried)")
    r.describe("fleet_devices_online", "gauge", "Units currently online")
    r.describe("fleet_broker_connected", "gauge", "1 when the service is connected to the MQTT broker")
    r.describe("fleet_http_requests_total", "counter", "HTTP requests, by status class")
    r.describe("fleet_events_published_total", "counter", "Live events published to SSE subscribers")
    r.describe("fleet_events_relay_gaps_total", "counter", "Times relayed live events were found missing on the way")
    r.describe("fleet_events_resets_total", "counter", "Event streams told to re-read what they show, by reason")
    return r
