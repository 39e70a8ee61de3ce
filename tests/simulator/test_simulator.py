"""`fleet simulate`: simulated units against the real service and broker — presence, telemetry, commands, Will."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from sqlmodel import Session

from fleet_service.cli.simulated_units import database_target, ensure_in_database
from fleet_service.db.engine import make_engine, migrate
from fleet_service.devices.models import Device
from fleet_service.settings import BrokerTarget
from protocol.ids import new_id, now_ms
from protocol.secrets import verify_secret
from protocol.topics import Kind, topic
from simulator.enroll import SecretCache, unit_ids
from simulator.fleet import SimOptions, Simulation
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN

LEGS = pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
FAST = SimOptions(
    heartbeat_interval=0.5,
    metrics_interval=0.5,
    log_interval=0.3,
    keepalive=2,
    command_seconds=0.1,
    reboot_seconds=0.5,
    connect_rate=0,
    fail_update=frozenset({"sim-b"}),
    seed=7,
)


class LoopThread:
    """An event loop in a background thread, so the synchronous test can poll the API while units run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="sim-loop")
        self._thread.start()

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def simulate(fleet) -> Iterator:
    runner = LoopThread()
    sims: list[Simulation] = []

    def start(ids: list[str], options: SimOptions = FAST) -> Simulation:
        sim = Simulation(f"mqtt://127.0.0.1:{fleet.mqtt_port}", {i: fleet.enroll(i) for i in ids}, options)
        sims.append(sim)
        runner.call(sim.start())
        assert runner.call(sim.wait_online(20)) == len(ids), f"units did not connect: {sim.stats}"
        return sim

    start.call = runner.call
    yield start
    for sim in sims:
        runner.call(sim.stop())
    runner.close()


def finished(fleet, command_id: str) -> dict:
    def done():
        cmd = fleet.api.get(f"/api/commands/{command_id}").json()
        return cmd if cmd["status"] in ("succeeded", "failed", "rejected", "expired", "timed_out") else None

    return wait_for(done, timeout=15, what=f"command {command_id} finished")


@LEGS
def test_simulated_units_report_answer_commands_and_die(fleet, simulate):
    sim = simulate(["sim-a", "sim-b", "sim-c"])
    listing = wait_for(
        lambda: (r := fleet.api.get("/api/devices", params={"status": "online"}).json())["total"] == 3 and r,
        what="three units online",
    )
    assert {d["id"] for d in listing["items"]} == {"sim-a", "sim-b", "sim-c"}
    assert all(d["agent_version"] == "sim-1" and d["software_version"] == "1.0.0" for d in listing["items"])

    points = wait_for(
        lambda: len(p := fleet.api.get("/api/devices/sim-a/metrics").json()["points"]) >= 2 and p, what="metrics stored"
    )
    assert all(0 < p["cpu_percent"] <= 100 and 0 < p["disk_percent"] < 100 for p in points)
    assert points[-1]["net_tx_bytes"] >= points[0]["net_tx_bytes"]
    assert points[-1]["services"]["recorder.service"] in ("active", "failed", "activating")
    logs = wait_for(lambda: fleet.api.get("/api/devices/sim-b/logs").json()["items"], what="log lines stored")
    assert all(r["msg"] and r["source"] in ("recorder", "fleet-agent") for r in logs)
    status = wait_for(lambda: (s := fleet.status("sim-c"))["hostname"] and s, what="heartbeat stored")
    assert status["hostname"] == "r58-sim-c" and status["ips"] and status["uptime_s"] > 0

    restart = fleet.api.post("/api/devices/sim-a/restart").json()
    done = finished(fleet, restart["id"])
    assert done["status"] == "succeeded" and done["exit_code"] == 0 and "restarted recorder.service" in done["output"]

    failing = finished(fleet, fleet.api.post("/api/devices/sim-b/update", json={"ref": "v2.1"}).json()["id"])
    assert failing["status"] == "failed" and failing["exit_code"] == 1 and "rolled back" in failing["output"]
    updated = finished(fleet, fleet.api.post("/api/devices/sim-c/update", json={"ref": "v2.1"}).json()["id"])
    assert updated["status"] == "succeeded" and updated["exit_code"] == 0
    wait_for(lambda: fleet.status("sim-c")["software_version"] == "v2.1", what="new version reported")
    assert fleet.status("sim-b")["software_version"] == "1.0.0"

    assert fleet.api.put("/api/devices/sim-a/config", json={"fps": 25, "cameras": 2}).status_code == 200
    config = wait_for(
        lambda: (c := fleet.api.get("/api/devices/sim-a/config").json())["in_sync"] and c, what="config applied"
    )
    assert config["reported"] == {"fps": 25, "cameras": 2} and config["reported_version"] == 1

    simulate.call(sim.kill("sim-c"))  # no DISCONNECT: the broker publishes the Will
    dead = wait_for(lambda: not (s := fleet.status("sim-c"))["online"] and s, timeout=10, what="killed unit offline")
    assert dead["offline_reason"] == "disconnected"
    simulate.call(sim.stop_unit("sim-a"))
    wait_for(lambda: not fleet.status("sim-a")["online"], timeout=3, what="stopped unit offline at once")
    assert fleet.status("sim-b")["online"] is True

    simulate.call(sim.stop())
    wait_for(
        lambda: fleet.api.get("/api/devices", params={"status": "online"}).json()["total"] == 0,
        timeout=5,
        what="all offline after stop",
    )


@LEGS
def test_unknown_expired_repeated_and_reboot_commands(fleet, simulate):
    """Commands published straight to the unit's topic, as the service would: rejected, expired, run once."""
    sim = simulate(["sim-d"])
    results: queue.Queue[dict] = queue.Queue()
    service = _service_client(fleet, results, topic("sim-d", Kind.CMD_RESULT))
    try:

        def send(**cmd) -> None:
            body = {"v": 1, "args": {}, "ts": now_ms(), "expires_at": now_ms() + 60_000, **cmd}
            service.publish(topic("sim-d", Kind.CMD), json.dumps(body), qos=1).wait_for_publish(5)

        def statuses(cmd_id: str, final: str) -> list[str]:
            seen: list[str] = []
            while final not in seen:
                r = results.get(timeout=10)
                if r["id"] == cmd_id:
                    seen.append(r["status"])
            return seen

        unknown = new_id()
        send(id=unknown, name="selfdestruct")
        assert statuses(unknown, "rejected") == ["rejected"]
        late = new_id()
        send(id=late, name="ping", expires_at=now_ms() - 1000)
        assert statuses(late, "expired") == ["expired"]
        twice = new_id()
        send(id=twice, name="ping")
        send(id=twice, name="ping")
        assert statuses(twice, "succeeded") == ["accepted", "running", "succeeded"]
        wait_for(lambda: sim.stats.duplicates == 1, what="the repeat dropped")
        with pytest.raises(queue.Empty):
            results.get(timeout=0.5)
    finally:
        service.disconnect()
        service.loop_stop()

    boot = fleet.status("sim-d")["boot_id"]
    reboot = finished(fleet, fleet.api.post("/api/devices/sim-d/reboot").json()["id"])
    assert reboot["status"] == "succeeded" and reboot["output"] == "the unit rebooted"
    back = wait_for(lambda: (s := fleet.status("sim-d"))["online"] and s, what="online after the reboot")
    assert back["boot_id"] != boot


def _service_client(fleet, results: queue.Queue, result_topic: str) -> mqtt.Client:
    target = BrokerTarget(fleet.stack.running.settings.broker_url)
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{new_id()[:8]}", protocol=mqtt.MQTTv311)
    client.username_pw_set(target.username, target.password)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(result_topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    client.on_message = lambda c, u, m: results.put(json.loads(m.payload))
    # The service account is taken on the service listener only (the units' one refuses it).
    client.connect("127.0.0.1", target.port if fleet.mosquitto is not None else fleet.mqtt_port)
    client.loop_start()
    assert subscribed.wait(10), "service client could not subscribe"
    return client


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_fleet_simulate_enrolls_through_the_api_and_stops_cleanly(fleet, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    cache = tmp_path / "units.json"
    cmd = [
        sys.executable,
        "-m",
        "fleet_cli.main",
        "--log-level",
        "WARNING",
        "simulate",
        "--devices",
        "3",
        "--prefix",
        "cli",
        "--broker-url",
        f"mqtt://127.0.0.1:{fleet.mqtt_port}",
        "--api-url",
        fleet.stack.url,
        "--token",
        ADMIN_TOKEN,
        "--secrets-file",
        str(cache),
        "--heartbeat-interval",
        "1",
        "--metrics-interval",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: fleet.api.get("/api/devices", params={"status": "online"}).json()["total"] == 3,
            timeout=30,
            what="three CLI-simulated units online",
        )
        units = fleet.api.get("/api/devices", params={"tag": "simulated"}).json()["items"]
        assert [d["id"] for d in units] == unit_ids("cli", 3)
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
        assert set(json.loads(cache.read_text())["targets"][fleet.stack.url]) == set(unit_ids("cli", 3))
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "stopped" in output

    def all_disconnected() -> bool:  # the units' last words are ingested like any message: moments after the exit
        devices = {d["id"]: d for d in fleet.api.get("/api/devices").json()["items"]}
        return all(
            not devices[i]["online"] and devices[i]["offline_reason"] == "disconnected" for i in unit_ids("cli", 3)
        )

    wait_for(all_disconnected, timeout=10, what="the three units offline, disconnected")


def test_database_enrollment_is_cached_and_reused(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate(engine)
    path = tmp_path / "cache" / "simulated-units.json"
    ids = unit_ids("load", 4)
    first = ensure_in_database(engine, ids, SecretCache(path, database_target(engine)))
    assert sorted(first) == ids and stat.S_IMODE(path.stat().st_mode) == 0o600
    with Session(engine) as s:
        hashes = {i: s.get(Device, i).secret_hash for i in ids}
        assert all(verify_secret(first[i], hashes[i]) and s.get(Device, i).tags == ["simulated"] for i in ids)

    assert ensure_in_database(engine, ids, SecretCache(path, database_target(engine))) == first
    with Session(engine) as s:
        assert {i: s.get(Device, i).secret_hash for i in ids} == hashes  # reused, not re-keyed

    cache = SecretCache(path, database_target(engine))
    del cache.secrets["load-00002"]  # the unit exists, its secret is lost: it is re-keyed
    again = ensure_in_database(engine, [*ids, "load-00005"], cache)
    with Session(engine) as s:
        assert verify_secret(again["load-00002"], s.get(Device, "load-00002").secret_hash)
        assert verify_secret(again["load-00005"], s.get(Device, "load-00005").secret_hash)
    assert again["load-00002"] != first["load-00002"] and again["load-00001"] == first["load-00001"]
    engine.dispose()
