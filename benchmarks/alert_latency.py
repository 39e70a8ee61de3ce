"""Metric -> webhook latency: from a unit publishing a sample over a rule's line to the signed webhook arriving.

    python benchmarks/alert_latency.py [--units 20] [--crossings 60] [--wake-delay 0.25]

`fleet up` as a user runs it (embedded broker, SQLite), in this process on its own loop; a webhook receiver
(a real HTTP server) in a thread; units are MQTT clients. One rule, `temp_c > 85` with no hold time, and one
webhook channel with no grouping window, so the figure is the pipeline's own: ingest, the evaluator's wake-up
(`--wake-delay`, the service's FLEET_ALERT_WAKE_DELAY_S, 0.25 s by default, gathers a burst into one
evaluation), the alert's commit, the dispatcher, the outbox and the HTTP POST. Each crossing goes hot and then
back: the resolved notification's latency is measured too. A rule's `for_s` and a channel's `group_wait_s`
add to these figures by design.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import percentile  # noqa: E402

from protocol.ids import now_ms  # noqa: E402
from protocol.topics import Kind  # noqa: E402
from tests.support.stack import StackThread, settings_for  # noqa: E402
from tests.support.unit import RawUnit  # noqa: E402


class Receiver:
    """Records (arrival time, body) of every POST; answers 200."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict]] = []
        self.changed = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server hook's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.time()
                self.send_response(200)
                self.end_headers()
                with outer.changed:
                    outer.got.append((arrived, json.loads(body)))
                    outer.changed.notify_all()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, device_id: str, status: str, after: int, timeout: float = 30) -> float:
        def found() -> float | None:
            for arrived, body in self.got[after:]:
                if body["status"] == status and any(a["device_id"] == device_id for a in body["alerts"]):
                    return arrived
            return None

        deadline = time.monotonic() + timeout
        with self.changed:
            while (arrived := found()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"no {status} webhook for {device_id} within {timeout} s")
                self.changed.wait(left)
        return arrived


def sample(unit: RawUnit, temp: float) -> float:
    sent = time.time()
    unit.publish(Kind.METRICS, {"v": 1, "ts": now_ms(), "temp_c": temp, "cpu_percent": 10.0})
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--crossings", type=int, default=60)
    parser.add_argument("--wake-delay", type=float, default=0.25, help="FLEET_ALERT_WAKE_DELAY_S (default 0.25)")
    args = parser.parse_args()
    receiver = Receiver()
    fired: list[float] = []
    resolved: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), alert_wake_delay_s=args.wake_delay)
        with StackThread(settings) as stack, stack.client() as api:
            for rule in api.get("/api/alert-rules").json()["items"]:
                assert api.delete(f"/api/alert-rules/{rule['id']}").status_code == 204
            r = api.post(
                "/api/alert-rules",
                json={"name": "hot", "kind": "metric", "severity": "critical", "field": "temp_c", "op": ">",
                      "threshold": 85, "clear_threshold": 80, "for_s": 0, "clear_for_s": 0},
            )  # fmt: skip
            assert r.status_code == 201, r.text
            r = api.post(
                "/api/notification-channels",
                json={"name": "bench", "kind": "webhook", "group_wait_s": 0, "config": {"url": receiver.url}},
            )
            assert r.status_code == 201, r.text
            units = []
            for i in range(args.units):
                device_id = f"lat-{i:03d}"
                secret = api.post("/api/devices", json={"id": device_id}).json()["secret"]
                unit = RawUnit(stack.mqtt_port, device_id, secret).connect()
                unit.birth()
                sample(unit, 50.0)
                units.append(unit)
            time.sleep(2)
            for n in range(args.crossings):
                unit = units[n % len(units)]
                mark = len(receiver.got)
                sent = sample(unit, 95.0)
                fired.append(receiver.wait(unit.device_id, "firing", mark) - sent)
                mark = len(receiver.got)
                sent = sample(unit, 50.0)
                resolved.append(receiver.wait(unit.device_id, "resolved", mark) - sent)
            for unit in units:
                unit.stop_clean()
    receiver.server.shutdown()

    def line(values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (
            f"p50 {percentile(ms, 50):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
            f"max {max(ms):.0f} ms, mean {statistics.fmean(ms):.0f} ms"
        )

    print(f"alert_latency: {args.crossings} crossings over {args.units} units, embedded broker + SQLite, "
          f"wake delay {args.wake_delay} s, no hold time, no grouping; {os.cpu_count()} cores")  # fmt: skip
    print(f"  metric -> firing webhook:   {line(fired)}")
    print(f"  metric -> resolved webhook: {line(resolved)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
