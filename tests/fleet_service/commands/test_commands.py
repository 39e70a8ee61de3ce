"""Commands through every state, driven by units answering over a real broker (and the real agent)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import Session, select

from fleet_service.commands.dispatch import build, store_new
from fleet_service.commands.models import Command, CommandEvent
from fleet_service.commands.state import transition
from fleet_service.db.engine import make_engine, migrate
from fleet_service.devices.enrollment import enroll
from protocol.ids import now_ms
from protocol.payloads import COMMAND_NAMES
from tests.fleet_service.control_support import Responder, silent, succeed
from tests.support.services import wait_for


def command(fleet, cmd_id: str) -> dict:
    r = fleet.api.get(f"/api/commands/{cmd_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(fleet, cmd_id: str, status: str, timeout: float = 10) -> dict:
    return wait_for(
        lambda: (c := command(fleet, cmd_id))["status"] == status and c,
        timeout=timeout,
        what=f"command {cmd_id} {status} (now {command(fleet, cmd_id)['status']})",
    )


def online(fleet, device_id: str) -> None:
    wait_for(lambda: fleet.status(device_id)["online"], what=f"{device_id} online")


def test_a_command_goes_through_every_state_and_keeps_its_result(fleet):
    secret = fleet.enroll("cmd-1")
    unit = Responder(fleet.mqtt_port, "cmd-1", secret, policy=silent).start()
    online(fleet, "cmd-1")

    r = fleet.api.post("/api/devices/cmd-1/restart", json={"unit": "recorder.service"})
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["status"] in ("queued", "sent") and created["device_id"] == "cmd-1"
    assert created["name"] == "restart" and created["args"] == {"unit": "recorder.service"}
    wait_for(lambda: unit.commands, what="the command at the unit")
    message = unit.commands[0]
    assert message["id"] == created["id"] and message["name"] == "restart"
    assert message["expires_at"] > time.time() * 1000
    wait_status(fleet, created["id"], "sent")

    unit.result(created["id"], "accepted")
    assert wait_status(fleet, created["id"], "accepted")["started_at"]
    unit.result(created["id"], "running")
    wait_status(fleet, created["id"], "running")
    unit.result(created["id"], "succeeded", 0, "restarted recorder.service")
    done = wait_status(fleet, created["id"], "succeeded")
    assert done["exit_code"] == 0 and done["output"] == "restarted recorder.service" and done["finished_at"]
    assert [h["status"] for h in done["history"]] == ["queued", "sent", "accepted", "running", "succeeded"]
    times = [h["time"] for h in done["history"]]
    assert all(t.endswith("Z") for t in times) and times == sorted(times)

    # A report after the final state (a unit's outbox flushed twice) changes nothing.
    unit.result(created["id"], "failed", 1, "late duplicate")

    update = fleet.api.post("/api/devices/cmd-1/update", json={"ref": "v2.5.0"}).json()
    wait_for(lambda: len(unit.commands) == 2, what="the update at the unit")
    assert unit.commands[1]["args"] == {"ref": "v2.5.0"}
    unit.result(update["id"], "accepted")
    unit.result(update["id"], "failed", 3, "health check failed; rolled back to 1a2b3c")
    failed = wait_status(fleet, update["id"], "failed")
    assert failed["exit_code"] == 3 and "rolled back" in failed["output"]

    ping = fleet.api.post("/api/devices/cmd-1/commands", json={"name": "ping"}).json()
    wait_for(lambda: len(unit.commands) == 3, what="the ping at the unit")
    unit.result(ping["id"], "rejected", None, "not allowed on this unit")
    rejected = wait_status(fleet, ping["id"], "rejected")
    assert [h["status"] for h in rejected["history"]] == ["queued", "sent", "rejected"]

    fleet.stack.drain()
    assert command(fleet, created["id"])["status"] == "succeeded"  # the late duplicate was ignored
    page = fleet.api.get("/api/devices/cmd-1/commands", params={"limit": 2}).json()
    assert page["total"] == 3 and [c["name"] for c in page["items"]] == ["ping", "update"]
    rest = fleet.api.get("/api/devices/cmd-1/commands", params={"limit": 2, "offset": 2}).json()
    assert [c["id"] for c in rest["items"]] == [created["id"]]
    only_failed = fleet.api.get("/api/devices/cmd-1/commands", params={"status": "failed"}).json()
    assert [c["id"] for c in only_failed["items"]] == [update["id"]]
    assert fleet.api.get("/api/devices/cmd-1/commands", params={"status": "done"}).status_code == 422
    unit.stop()


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-postgres"], indirect=True)
def test_untaken_commands_expire_and_silent_ones_time_out(fleet):
    fleet.enroll("away-1")  # never connects
    secret = fleet.enroll("slow-1")
    unit = Responder(fleet.mqtt_port, "slow-1", secret, policy=silent).start()
    online(fleet, "slow-1")

    untaken = fleet.api.post("/api/devices/away-1/commands", json={"name": "ping", "ttl_s": 1}).json()
    taken = fleet.api.post("/api/devices/slow-1/commands", json={"name": "ping", "timeout_s": 1}).json()
    wait_for(lambda: unit.commands, what="the command at the slow unit")
    unit.result(taken["id"], "accepted")
    wait_status(fleet, taken["id"], "accepted")

    expired = wait_status(fleet, untaken["id"], "expired", timeout=8)
    assert [h["status"] for h in expired["history"]] == ["queued", "sent", "expired"]
    assert "expired" in expired["output"]
    timed_out = wait_status(fleet, taken["id"], "timed_out", timeout=8)
    assert [h["status"] for h in timed_out["history"]] == ["queued", "sent", "accepted", "timed_out"]
    assert "no result within 1 s" in timed_out["output"]

    unit.result(taken["id"], "succeeded", 0, "too late")  # the unit finished after all: its answer replaces the guess
    late = wait_status(fleet, taken["id"], "succeeded")
    assert [h["status"] for h in late["history"]] == ["queued", "sent", "accepted", "timed_out", "succeeded"]
    assert (late["exit_code"], late["output"]) == (0, "too late")
    unit.stop()


@pytest.mark.parametrize("fleet", ["mosquitto-sqlite"], indirect=True)
def test_cancel_before_the_unit_takes_it_and_409_after(fleet):
    secret = fleet.enroll("later-1")
    doomed = fleet.api.post("/api/devices/later-1/reboot").json()
    wait_status(fleet, doomed["id"], "sent")
    r = fleet.api.post(f"/api/commands/{doomed['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    again = fleet.api.post(f"/api/commands/{doomed['id']}/cancel")
    assert again.status_code == 409 and "canceled" in again.json()["detail"]
    kept = fleet.api.post("/api/devices/later-1/restart").json()

    unit = Responder(fleet.mqtt_port, "later-1", secret, policy=succeed).start()
    wait_status(fleet, kept["id"], "succeeded")
    assert unit.command_ids() == [kept["id"]]  # the canceled reboot never reached the unit
    assert [h["status"] for h in command(fleet, doomed["id"])["history"]] == ["queued", "sent", "canceled"]

    finished = fleet.api.post(f"/api/commands/{kept['id']}/cancel")
    assert finished.status_code == 409 and "succeeded" in finished.json()["detail"]
    assert command(fleet, kept["id"])["status"] == "succeeded"
    assert fleet.api.post("/api/commands/0123456789abcdef/cancel").status_code == 404
    unit.stop()


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_an_offline_unit_receives_its_pending_commands_when_it_connects(fleet):
    secret = fleet.enroll("venue-9")
    first = fleet.api.post("/api/devices/venue-9/restart").json()
    second = fleet.api.post("/api/devices/venue-9/update", json={"ref": "release-7"}).json()
    stale = fleet.api.post("/api/devices/venue-9/commands", json={"name": "ping", "ttl_s": 1}).json()
    wait_status(fleet, stale["id"], "expired", timeout=8)

    unit = Responder(fleet.mqtt_port, "venue-9", secret, policy=succeed).start()
    wait_status(fleet, first["id"], "succeeded")
    wait_status(fleet, second["id"], "succeeded")
    assert unit.command_ids() == [first["id"], second["id"]]  # in order; the expired one is not sent
    unit.stop()


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_the_real_agent_runs_a_command_queued_while_it_was_offline(fleet, tmp_path):
    secret = fleet.enroll("r58-q")
    cmd = fleet.api.post("/api/devices/r58-q/restart", json={"unit": "recorder.service"}).json()
    bad = fleet.api.post("/api/devices/r58-q/restart", json={"unit": "camera.service"}).json()

    marker = tmp_path / "restarted"
    (tmp_path / "secret").write_text(secret)
    restart = f"{sys.executable} -c \"open('{marker}', 'a').write('{{unit}}\\n')\""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    with (tmp_path / "agent.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet_cli.main",
                "agent",
                "--broker-url",
                f"mqtt://127.0.0.1:{fleet.mqtt_port}",
                "--device-id",
                "r58-q",
                "--secret-file",
                str(tmp_path / "secret"),
                "--state-dir",
                str(tmp_path / "st"),
                "--unit",
                "recorder.service",
                "--restart-command",
                restart,
                "--check-command",
                "true {unit}",
                "--keepalive",
                "5",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        done = wait_status(fleet, cmd["id"], "succeeded", timeout=30)
        assert [h["status"] for h in done["history"]][-3:] == ["accepted", "running", "succeeded"]
        assert marker.read_text().split() == ["recorder.service"]
        rejected = wait_status(fleet, bad["id"], "rejected", timeout=10)
        assert "camera.service" in rejected["output"]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_bad_command_input_is_refused_and_stores_nothing(fleet):
    fleet.enroll("bad-1")
    for path in ("/api/devices/nope/restart", "/api/devices/nope/reboot"):
        assert fleet.api.post(path).status_code == 404
    assert fleet.api.post("/api/devices/nope/commands", json={"name": "ping"}).status_code == 404
    assert fleet.api.post("/api/devices/nope/update", json={"ref": "v1"}).status_code == 404
    assert fleet.api.get("/api/devices/nope/commands").status_code == 404
    assert fleet.api.get("/api/commands/nope").status_code == 404

    unknown = fleet.api.post("/api/devices/bad-1/commands", json={"name": "format_disk"})
    assert unknown.status_code == 422
    assert "format_disk" in unknown.json()["detail"] and all(n in unknown.json()["detail"] for n in COMMAND_NAMES)
    for body in (
        {"name": "update"},
        {"name": "update", "args": {"ref": "--upload-pack=evil"}},
        {"name": "update", "args": {"ref": "a/../b"}},
        {"name": "restart", "args": {"units": ["a"]}},
        {"name": "ping", "ttl_s": 0},
        {"name": "ping", "ttl_s": 10**9},
        {"name": "ping", "args": [1]},
        {"name": "ping", "timeout_s": 0},
        {"args": {}},
    ):
        r = fleet.api.post("/api/devices/bad-1/commands", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"], body
    assert fleet.api.post("/api/devices/bad-1/update", json={"ref": ""}).status_code == 422
    assert (
        fleet.api.post(
            "/api/devices/bad-1/update", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert fleet.api.get("/api/devices/bad-1/commands").json()["total"] == 0
    assert fleet.api.get("/api/devices/bad-1/commands", params={"limit": 0}).status_code == 422


@pytest.mark.parametrize("fleet", ["mosquitto-postgres"], indirect=True)
def test_roles_and_a_long_operator_name(fleet):
    fleet.enroll("role-1", tags=["hall"])
    tokens = {
        role: fleet.api.post("/api/tokens", json={"role": role, "name": "n" * 100}).json()["token"]
        for role in ("viewer", "operator")
    }
    with fleet.stack.client(tokens["viewer"]) as viewer, fleet.stack.client(tokens["operator"]) as operator:
        for method, path, body in (
            ("POST", "/api/devices/role-1/restart", None),
            ("PUT", "/api/devices/role-1/config", {"log_level": "info"}),
            ("PUT", "/api/config/groups/hall", {"log_level": "info"}),
            ("POST", "/api/rollouts", {"command": "ping", "tag": "hall"}),
        ):
            assert viewer.request(method, path, json=body).status_code == 403, path
        assert viewer.get("/api/devices/role-1/commands").status_code == 200
        assert viewer.get("/api/rollouts").status_code == 200
        # The longest token name still fits the stored `created_by` (PostgreSQL enforces column lengths).
        cmd = operator.post("/api/devices/role-1/restart")
        assert cmd.status_code == 202 and cmd.json()["created_by"].startswith("token:nnn")
        assert operator.put("/api/config/groups/hall", json={"log_level": "info"}).status_code == 200
        assert operator.post("/api/rollouts", json={"command": "ping", "tag": "hall"}).status_code == 201


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_racing_transitions_of_one_command_leave_one_winner(db, tmp_path, request):
    """A result, the sweeper and a cancel arriving at once (on one replica or several): exactly one lands."""
    url = request.getfixturevalue("postgres_url") if db == "postgres" else f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = make_engine(url)
    migrate(engine)
    enroll(engine, "race-1")
    cmd = build("race-1", "ping", {})
    with Session(engine, expire_on_commit=False) as s:
        store_new(s, cmd)
        s.commit()
    with Session(engine) as s:
        assert transition(s, s.get(Command, cmd.id), "sent", now_ms())
        s.commit()
    targets = ["succeeded", "failed", "timed_out", "canceled", "expired", "rejected"] * 2
    barrier = threading.Barrier(len(targets))

    def move(status: str) -> bool:
        with Session(engine) as s:
            row = s.get(Command, cmd.id)
            barrier.wait()
            won = transition(s, row, status, now_ms())
            s.commit()
            return won

    with ThreadPoolExecutor(len(targets)) as pool:
        wins = list(pool.map(move, targets))
    with Session(engine, expire_on_commit=False) as s:
        final = s.get(Command, cmd.id)
        events = s.exec(select(CommandEvent).where(CommandEvent.command_id == cmd.id).order_by(CommandEvent.id)).all()
    assert wins.count(True) == 1 and final.status == targets[wins.index(True)]
    assert [e.status for e in events] == ["queued", "sent", final.status]
    engine.dispose()
