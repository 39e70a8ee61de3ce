"""Command round trip: API -> unit -> result -> API, against the raw MQTT round trip to the same unit.

    python benchmarks/command_roundtrip.py [--mode mosquitto|embedded] [--commands 300] [--units 10]

Starts its own parts: a fresh PostgreSQL database and Mosquitto (or `fleet up` with the embedded broker and
SQLite), the service as a process, and `fleet simulate` with units that finish a command at once
(`--command-seconds 0`: accepted, running, succeeded right away). One command at a time:

- API: `POST /api/devices/{id}/commands {"name": "ping"}` with an operator API token (as an integration calls)
  until the `succeeded` event of that command arrives on `GET /api/events` (the service stored it, published it,
  the unit answered, the service committed the result);
- raw MQTT: a service-account client publishes the same kind of command (QoS 1) on the unit's `cmd` topic and
  waits for the unit's `succeeded` on `cmd/result`, on the same broker, with no service in the path;
- one commit: a one-row insert + COMMIT on the same database.

The three take turns, one of each per command, so a slower moment of the machine weighs on all of them alike.

Mosquitto runs with `set_tcp_nodelay true` and every client here disables Nagle: otherwise a small packet that
follows an unacknowledged one waits for the peer's delayed ACK (~40 ms on Linux) and both round trips measure
that timer rather than the fleet.

Target (docs/performance.md): API p99 within 5x the raw MQTT p99 plus one commit.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import (  # noqa: E402
    ADMIN_TOKEN,
    SERVICE_SECRET,
    Proc,
    database,
    free_port,
    insert_units,
    percentile,
    start_fleet,
    summary_ms,
    wait_http,
    workdir,
    write_secrets_cache,
)
from sqlalchemy import text  # noqa: E402

from fleet_service.cli.simulated_units import database_target  # noqa: E402
from fleet_service.db.engine import make_engine  # noqa: E402
from protocol.ids import SERVICE_USERNAME, new_id, now_ms  # noqa: E402
from protocol.topics import Kind, topic  # noqa: E402
from simulator.enroll import unit_ids  # noqa: E402


class Arrivals:
    """When each command id reached each status, as seen by one consumer."""

    def __init__(self) -> None:
        self._times: dict[tuple[str, str], float] = {}
        self._cond = threading.Condition()

    def record(self, command_id: str, status: str = "succeeded") -> None:
        with self._cond:
            self._times.setdefault((command_id, status), time.perf_counter())
            self._cond.notify_all()

    def wait(self, command_id: str, timeout: float = 30.0) -> float:
        key = (command_id, "succeeded")
        with self._cond:
            if not self._cond.wait_for(lambda: key in self._times, timeout):
                raise SystemExit(f"command {command_id} did not succeed within {timeout}s")
            return self._times[key]

    def seen(self, command_id: str, status: str) -> float | None:
        with self._cond:
            return self._times.get((command_id, status))


def operator_token(base: str) -> str:
    """An operator API token, made once with the bootstrap admin token: the API calls below are checked the way an
    integration's are (the token's row read on every call), not by the bootstrap token's shortcut."""
    r = httpx.post(
        f"{base}/api/tokens",
        json={"role": "operator", "name": "command-roundtrip"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    r.raise_for_status()
    return r.json()["token"]


def follow_events(base: str, token: str, arrivals: Arrivals, ready: threading.Event, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.stream(
            "GET",
            f"{base}/api/events",
            params={"types": "command"},
            headers=headers,
            timeout=httpx.Timeout(30, read=None),
        ) as r:
            for line in r.iter_lines():
                ready.set()
                if stop.is_set():
                    return
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    arrivals.record(data["id"], data.get("status", ""))
    except httpx.HTTPError:
        return  # the service stopped


class ApiSide:
    """POST a `ping` to a unit and wait for its `succeeded` event on the live stream."""

    def __init__(self, base: str, token: str) -> None:
        self.arrivals, ready, self._stop = Arrivals(), threading.Event(), threading.Event()
        follow = (base, token, self.arrivals, ready, self._stop)
        threading.Thread(target=follow_events, args=follow, daemon=True).start()
        if not ready.wait(10):
            raise SystemExit("the event stream did not start")
        self._api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def one(self, unit: str, stages: dict[str, list[float]] | None = None) -> float:
        start = time.perf_counter()
        r = self._api.post(f"/api/devices/{unit}/commands", json={"name": "ping"})
        answered = time.perf_counter()
        if r.status_code != 202:
            raise SystemExit(f"POST commands: {r.status_code} {r.text[:200]}")
        command_id = r.json()["id"]
        took = self.arrivals.wait(command_id) - start
        if stages is not None:
            stages["POST answered (202)"].append(answered - start)
            for status in ("sent", "accepted", "running"):
                seen = self.arrivals.seen(command_id, status)
                if seen is not None:
                    stages[f"'{status}' event"].append(seen - start)
        return took

    def close(self) -> None:
        self._stop.set()
        self._api.close()


class RawSide:
    """Publish the same kind of command straight to the unit and wait for its `succeeded` on the broker."""

    def __init__(self, port: int, ids: list[str]) -> None:
        self.arrivals = Arrivals()
        subscribed = threading.Event()
        self._client = client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{new_id()[:8]}", protocol=mqtt.MQTTv311
        )
        client.username_pw_set(SERVICE_USERNAME, SERVICE_SECRET)
        results = [(topic(i, Kind.CMD_RESULT), 1) for i in ids]
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(results)
        client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port, keepalive=60)
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the service's link does
        client.loop_start()
        if not subscribed.wait(10):
            raise SystemExit("the raw MQTT client could not subscribe")

    def _on_message(self, _c, _u, m) -> None:
        data = json.loads(m.payload)
        if data.get("status") == "succeeded":
            self.arrivals.record(data["id"])

    def one(self, unit: str) -> float:
        cmd_id = new_id()
        body = json.dumps(
            {"v": 1, "id": cmd_id, "name": "ping", "args": {}, "ts": now_ms(), "expires_at": now_ms() + 60_000}
        ).encode()
        start = time.perf_counter()
        self._client.publish(topic(unit, Kind.CMD), body, qos=1)
        return self.arrivals.wait(cmd_id) - start

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class CommitSide:
    """A one-row insert and its COMMIT on the same database."""

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        self._conn = self._engine.connect()
        self._n = 0

    def one(self) -> float:
        self._n += 1
        start = time.perf_counter()
        self._conn.execute(
            text("INSERT INTO command_event (command_id, status, ts) VALUES (:c, 'sent', :t)"),
            {"c": f"bench-{self._n}", "t": now_ms()},
        )
        self._conn.commit()
        return time.perf_counter() - start

    def close(self) -> None:
        self._conn.execute(text("DELETE FROM command_event WHERE command_id LIKE 'bench-%'"))
        self._conn.commit()
        self._conn.close()
        self._engine.dispose()


def interleaved(
    raw: RawSide, api: ApiSide, commit: CommitSide, ids: list[str], count: int, stages: dict[str, list[float]]
) -> tuple[list[float], list[float], list[float]]:
    """One raw round trip, one commit and one API round trip in turn, `count` times: a slower moment of the machine
    weighs on the three alike, so the API is judged against the baseline measured beside it. The pause after each
    API round trip outlasts the service's work that follows it (acks, the live-event relay's 50 ms batches): the
    baselines are measured with the service as quiet as when they ran on their own."""
    raws, apis, commits = [], [], []
    for n in range(count):
        unit = ids[n % len(ids)]
        raws.append(raw.one(unit))
        time.sleep(0.01)
        commits.append(commit.one())
        time.sleep(0.01)
        apis.append(api.one(unit, stages))
        time.sleep(0.08)
    return raws, apis, commits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["mosquitto", "embedded"], default="mosquitto")
    parser.add_argument(
        "--database", choices=["postgres", "sqlite"], help="default: postgres with mosquitto, sqlite with embedded"
    )
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--units", type=int, default=10)
    args = parser.parse_args()
    embedded = args.mode == "embedded"
    db_kind = args.database or ("sqlite" if embedded else "postgres")
    ids = unit_ids("rt", args.units)

    with workdir("fleet-cmd-rtt-") as tmp, database(db_kind, tmp) as url:
        secret = insert_units(url, ids)
        write_secrets_cache(tmp / "units.json", database_target(make_engine(url)), ids, secret)
        http_port = free_port()
        service, mosquitto, mqtt_port = start_fleet(
            embedded,
            tmp,
            url,
            http_port,
            secret,
            ids,
            "set_tcp_nodelay true\n",
            env={"FLEET_SERVICE_SECRET": SERVICE_SECRET},
        )
        sim = None
        try:
            base = f"http://127.0.0.1:{http_port}"
            wait_http(base)
            sim = Proc(
                "simulate",
                [
                    "--log-level",
                    "WARNING",
                    "simulate",
                    "--devices",
                    str(args.units),
                    "--prefix",
                    "rt",
                    "--broker-url",
                    f"mqtt://127.0.0.1:{mqtt_port}",
                    "--database-url",
                    url,
                    "--secrets-file",
                    str(tmp / "units.json"),
                    "--command-seconds",
                    "0",
                    "--log-interval",
                    "0",
                ],
                tmp,
            )
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as api:
                deadline = time.monotonic() + 60
                while api.get("/api/devices", params={"status": "online"}).json()["total"] < args.units:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"units did not come online\n{sim.tail()}")
                    time.sleep(0.2)
            warm = max(10, args.commands // 10)
            sides = (RawSide(mqtt_port, ids), ApiSide(base, operator_token(base)), CommitSide(url))
            stages: dict[str, list[float]] = defaultdict(list)
            try:
                interleaved(*sides, ids, warm, defaultdict(list))
                raw, via_api, commits = interleaved(*sides, ids, args.commands, stages)
            finally:
                for side in sides:
                    side.close()
        finally:
            if sim is not None:
                sim.stop()
            service.stop()
            if mosquitto is not None:
                mosquitto.stop()

    raw_p99, api_p99, commit_p99 = (percentile(v, 99) for v in (raw, via_api, commits))
    budget = 5 * raw_p99 + commit_p99
    print(
        f"command_roundtrip ({args.mode}, {db_kind}, {args.commands} commands, one at a time, {args.units} units; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(f"  raw MQTT round trip (cmd -> unit -> succeeded): {summary_ms(raw)}")
    print(f"  API round trip (POST -> unit -> succeeded event): {summary_ms(via_api)}")
    for stage, values in stages.items():
        print(f"    of which, from the POST to {stage}: {summary_ms(values)}")
    print(f"  one commit (insert + COMMIT): {summary_ms(commits)}")
    print(
        f"  target API p99 {api_p99 * 1000:.1f} ms <= 5 x raw p99 + one commit p99 = {budget * 1000:.1f} ms: "
        f"{'met' if api_p99 <= budget else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
