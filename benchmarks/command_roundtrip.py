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


def api_round_trips(
    base: str, token: str, ids: list[str], count: int, stages: dict[str, list[float]] | None = None
) -> list[float]:
    arrivals, ready, stop = Arrivals(), threading.Event(), threading.Event()
    threading.Thread(target=follow_events, args=(base, token, arrivals, ready, stop), daemon=True).start()
    if not ready.wait(10):
        raise SystemExit("the event stream did not start")
    out = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
        for n in range(count):
            start = time.perf_counter()
            r = api.post(f"/api/devices/{ids[n % len(ids)]}/commands", json={"name": "ping"})
            answered = time.perf_counter()
            if r.status_code != 202:
                raise SystemExit(f"POST commands: {r.status_code} {r.text[:200]}")
            command_id = r.json()["id"]
            out.append(arrivals.wait(command_id) - start)
            if stages is not None:
                stages["POST answered (202)"].append(answered - start)
                for status in ("sent", "accepted", "running"):
                    seen = arrivals.seen(command_id, status)
                    if seen is not None:
                        stages[f"'{status}' event"].append(seen - start)
            time.sleep(0.01)
    stop.set()
    return out


def raw_round_trips(port: int, ids: list[str], count: int) -> list[float]:
    arrivals = Arrivals()
    subscribed = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{new_id()[:8]}", protocol=mqtt.MQTTv311
    )
    client.username_pw_set(SERVICE_USERNAME, SERVICE_SECRET)
    results = [(topic(i, Kind.CMD_RESULT), 1) for i in ids]
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(results)
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()

    def on_message(c, u, m) -> None:
        data = json.loads(m.payload)
        if data.get("status") == "succeeded":
            arrivals.record(data["id"])

    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=60)
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the service's link does
    client.loop_start()
    if not subscribed.wait(10):
        raise SystemExit("the raw MQTT client could not subscribe")
    out = []
    try:
        for n in range(count):
            cmd_id = new_id()
            body = json.dumps(
                {"v": 1, "id": cmd_id, "name": "ping", "args": {}, "ts": now_ms(), "expires_at": now_ms() + 60_000}
            ).encode()
            start = time.perf_counter()
            client.publish(topic(ids[n % len(ids)], Kind.CMD), body, qos=1)
            out.append(arrivals.wait(cmd_id) - start)
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()
    return out


def commit_times(url: str, count: int) -> list[float]:
    engine = make_engine(url)
    out = []
    with engine.connect() as conn:
        for n in range(count):
            start = time.perf_counter()
            conn.execute(
                text("INSERT INTO command_event (command_id, status, ts) VALUES (:c, 'sent', :t)"),
                {"c": f"bench-{n}", "t": now_ms()},
            )
            conn.commit()
            out.append(time.perf_counter() - start)
        conn.execute(text("DELETE FROM command_event WHERE command_id LIKE 'bench-%'"))
        conn.commit()
    engine.dispose()
    return out


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
            raw_round_trips(mqtt_port, ids, warm)
            raw = raw_round_trips(mqtt_port, ids, args.commands)
            token = operator_token(base)
            api_round_trips(base, token, ids, warm)
            stages: dict[str, list[float]] = defaultdict(list)
            via_api = api_round_trips(base, token, ids, args.commands, stages)
            commits = commit_times(url, 200)
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
