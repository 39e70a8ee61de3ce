"""Rollouts over units answering on a real broker: batches, the abort threshold, pause/resume/cancel, a restart."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import Session, select

from fleet_service.commands.dispatch import Dispatcher
from fleet_service.commands.models import Command
from fleet_service.db.engine import make_engine, migrate
from fleet_service.devices.enrollment import enroll
from fleet_service.live.bus import EventBus
from fleet_service.rollouts.models import Rollout
from fleet_service.rollouts.plan import Plan, store_plan
from fleet_service.rollouts.progress import decide
from fleet_service.rollouts.runner import RolloutEngine
from tests.fleet_service.control_support import Responder, fail, silent, succeed
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for


def rollout(api, rollout_id: str) -> dict:
    r = api.get(f"/api/rollouts/{rollout_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_rollout(api, rollout_id: str, predicate, what: str, timeout: float = 20) -> dict:
    return wait_for(
        lambda: (r := rollout(api, rollout_id)) and predicate(r) and r,
        timeout=timeout,
        what=f"rollout {what} (now {rollout(api, rollout_id)['state']}, "
        f"{rollout(api, rollout_id)['totals']['by_state']})",
    )


def units_by_id(view: dict) -> dict[str, dict]:
    return {u["device_id"]: u for u in view["units"]}


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-postgres"], indirect=True)
def test_a_rollout_over_20_units_stops_at_the_abort_threshold(fleet):
    ids = [f"ru-{i:02d}" for i in range(20)]
    failing = {"ru-03", "ru-06", "ru-07"}  # one in the first batch (at the threshold), two in the second (over it)
    units = {}
    for device_id in ids:
        secret = fleet.enroll(device_id, tags=["stage"])
        units[device_id] = Responder(fleet.mqtt_port, device_id, secret, fail if device_id in failing else succeed)
    for unit in units.values():
        unit.start()
    wait_for(
        lambda: fleet.api.get("/api/devices", params={"status": "online"}).json()["total"] == 20, what="20 units online"
    )

    r = fleet.api.post(
        "/api/rollouts",
        json={
            "name": "recorder 2.5",
            "command": "update",
            "args": {"ref": "v2.5.0"},
            "tag": "stage",
            "batch_size": 5,
            "abort_threshold": 0.2,
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["batches"] == 4 and created["totals"]["total"] == 20 and created["target"] == {"tag": "stage"}

    done = wait_rollout(fleet.api, created["id"], lambda v: v["state"] == "aborted", "aborted")
    assert "threshold" in done["reason"]
    assert done["batch"] == 2 and done["totals"]["failed"] == 3 and done["finished_at"]
    per_unit = units_by_id(done)
    for device_id in ids[10:]:  # batches 3 and 4 never started: canceled, and nothing reached those units
        assert per_unit[device_id]["state"] == "canceled" and per_unit[device_id]["command_id"] is None
        assert units[device_id].commands == []
    for device_id in ids[:10]:
        cmd_id = per_unit[device_id]["command_id"]
        assert units[device_id].command_ids() == [cmd_id]
        cmd = fleet.api.get(f"/api/commands/{cmd_id}").json()
        assert cmd["rollout_id"] == created["id"] and cmd["args"] == {"ref": "v2.5.0"}
        if device_id in failing:
            assert per_unit[device_id]["state"] == "failed" and per_unit[device_id]["exit_code"] == 3
    # Commands a unit already took run to their end. The abort came as soon as ru-06 and ru-07 had failed, so a
    # second-batch command that was still only `sent` then is canceled (its unit's late answers are ignored).
    settled = wait_rollout(fleet.api, created["id"], lambda v: v["totals"]["in_progress"] == 0, "all results in")
    per_unit = units_by_id(settled)
    assert all(per_unit[d]["state"] == "succeeded" for d in ids[:5] if d not in failing)
    assert all(per_unit[d]["state"] in ("succeeded", "canceled") for d in ids[5:10] if d not in failing)
    assert settled["totals"]["failed"] == 3 and settled["totals"]["succeeded"] + settled["totals"]["canceled"] == 17
    listed = fleet.api.get("/api/rollouts", params={"state": "aborted"}).json()
    assert [x["id"] for x in listed["items"]] == [created["id"]]
    for unit in units.values():
        unit.stop()


@pytest.mark.parametrize("fleet", ["mosquitto-sqlite"], indirect=True)
def test_pause_resume_and_cancel(fleet):
    policies = [succeed, succeed, silent, silent, succeed, succeed]
    units = {}
    for i, policy in enumerate(policies):
        secret = fleet.enroll(f"pr-{i}")
        units[f"pr-{i}"] = Responder(fleet.mqtt_port, f"pr-{i}", secret, policy).start()
    wait_for(lambda: fleet.api.get("/api/devices", params={"status": "online"}).json()["total"] == 6, what="online")

    created = fleet.api.post(
        "/api/rollouts",
        json={"command": "restart", "device_ids": list(units), "batch_size": 2, "pause_s": 0.5, "abort_threshold": 0.5},
    ).json()
    rid = created["id"]
    paused = fleet.api.post(f"/api/rollouts/{rid}/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert fleet.api.post(f"/api/rollouts/{rid}/pause").status_code == 409
    # The first batch runs to its end; no new batch starts while paused.
    wait_rollout(fleet.api, rid, lambda v: v["totals"]["succeeded"] == 2, "first batch done")
    time.sleep(1.5)
    view = rollout(fleet.api, rid)
    assert view["state"] == "paused" and view["batch"] == 1 and view["totals"]["pending"] == 4
    assert units["pr-2"].commands == [] and units["pr-4"].commands == []

    resumed = fleet.api.post(f"/api/rollouts/{rid}/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] == "running"
    wait_for(lambda: units["pr-2"].commands and units["pr-3"].commands, what="second batch at its units")
    waiting = units_by_id(
        wait_rollout(
            fleet.api, rid, lambda v: {units_by_id(v)[d]["state"] for d in ("pr-2", "pr-3")} == {"sent"}, "batch 2 sent"
        )
    )
    assert waiting["pr-2"]["state"] == "sent" and waiting["pr-4"]["state"] == "pending"

    canceled = fleet.api.post(f"/api/rollouts/{rid}/cancel")
    assert canceled.status_code == 200, canceled.text
    view = canceled.json()
    assert view["state"] == "canceled" and view["totals"]["canceled"] == 4 and view["totals"]["succeeded"] == 2
    per_unit = units_by_id(rollout(fleet.api, rid))
    assert [per_unit[f"pr-{i}"]["state"] for i in range(6)] == ["succeeded"] * 2 + ["canceled"] * 4
    # The second batch's commands were still waiting for their units: canceled, and a late answer changes nothing.
    units["pr-2"].result(per_unit["pr-2"]["command_id"], "accepted")
    fleet.stack.drain()
    assert fleet.api.get(f"/api/commands/{per_unit['pr-2']['command_id']}").json()["status"] == "canceled"
    time.sleep(0.7)
    assert units["pr-4"].commands == [] and units["pr-5"].commands == []

    assert fleet.api.post(f"/api/rollouts/{rid}/resume").status_code == 409
    assert fleet.api.post(f"/api/rollouts/{rid}/cancel").status_code == 409
    assert fleet.api.post("/api/rollouts/nope/pause").status_code == 404
    assert fleet.api.get("/api/rollouts/nope").status_code == 404
    for unit in units.values():
        unit.stop()


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_bad_rollout_requests_are_refused(fleet):
    fleet.enroll("only-1", tags=["hall"])
    bad = [
        {"command": "update", "args": {"ref": "v1"}},  # no target
        {"command": "update", "args": {"ref": "v1"}, "tag": "hall", "device_ids": ["only-1"]},
        {"command": "update", "args": {"ref": "v1"}, "device_ids": ["only-1", "ghost-9"]},
        {"command": "update", "args": {"ref": "v1"}, "device_ids": []},
        {"command": "update", "args": {"ref": "v1"}, "tag": "nobody"},
        {"command": "update", "tag": "hall"},  # no ref
        {"command": "format", "tag": "hall"},
        {"command": "ping", "tag": "hall", "abort_threshold": 2},
        {"command": "ping", "tag": "hall", "batch_size": 0},
        {"command": "ping", "tag": "hall", "batch_size": 2, "batch_percent": 50},
    ]
    for body in bad:
        r = fleet.api.post("/api/rollouts", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"]
    unknown = fleet.api.post("/api/rollouts", json={"command": "ping", "device_ids": ["only-1", "ghost-9"]})
    assert "ghost-9" in unknown.json()["detail"]
    assert fleet.api.get("/api/rollouts").json()["total"] == 0
    assert fleet.api.get("/api/rollouts", params={"state": "weird"}).status_code == 422


class SlowUnit(Responder):
    """Accepts at once and finishes 2.5 s later: meanwhile the service restarts, and the result waits in the
    service's persistent broker session."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.policy = self._answer

    def _answer(self, cmd: dict) -> list:
        self.result(cmd["id"], "accepted")
        time.sleep(2.5)
        return [("running", None, ""), ("succeeded", 0, "done after a while")]


def test_a_rollout_continues_after_a_service_restart(tmp_path, mosquitto_factory, postgres_url):
    overrides = {
        "database_url": postgres_url,
        "replica_id": "restart-test",
        **settings_overrides(tmp_path / "mosquitto-files"),
    }
    settings = settings_for(tmp_path, **overrides)
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings)
    ids = [f"rs-{i}" for i in range(6)]
    units: dict[str, Responder] = {}
    with StackThread(settings) as first, first.client() as api:
        wait_for(lambda: first.ctx.link.connected.is_set(), what="service connected")
        for i, device_id in enumerate(ids):
            secret = api.post("/api/devices", json={"id": device_id}).json()["secret"]
            wait_for(lambda d=device_id, s=secret: accepts(managed.unit_port, d, s) == 0, what="unit accepted")
            kind = SlowUnit if i in (2, 3) else Responder
            units[device_id] = kind(managed.unit_port, device_id, secret, succeed).start()
        wait_for(lambda: api.get("/api/devices", params={"status": "online"}).json()["total"] == 6, what="online")
        rid = api.post(
            "/api/rollouts", json={"command": "restart", "device_ids": ids, "batch_size": 2, "abort_threshold": 0.5}
        ).json()["id"]
        wait_rollout(
            api,
            rid,
            lambda v: units_by_id(v)["rs-2"]["state"] == "accepted" and units_by_id(v)["rs-3"]["state"] == "accepted",
            "second batch taken",
        )
    # The service is down while the second batch finishes; a new one on the same database takes over.
    time.sleep(3)
    with StackThread(settings) as second, second.client() as api:
        done = wait_rollout(api, rid, lambda v: v["state"] == "completed", "completed", timeout=30)
        assert done["totals"]["succeeded"] == 6 and done["batch"] == 3
        per_unit = units_by_id(done)
        for device_id in ids:
            assert units[device_id].command_ids() == [per_unit[device_id]["command_id"]]  # one command each
        history = api.get(f"/api/commands/{per_unit['rs-2']['command_id']}").json()["history"]
        assert [h["status"] for h in history] == ["queued", "sent", "accepted", "running", "succeeded"]
    for unit in units.values():
        unit.stop()


def test_the_abort_rule_acts_as_soon_as_the_outcome_is_certain():
    r = Rollout(
        id="r1",
        command="ping",
        batch_size=5,
        batches=4,
        abort_threshold=0.2,
        state="running",
        dispatched_batches=1,
        created_at=0,
        updated_at=0,
    )
    assert decide(r, {"failed": 1, "succeeded": 4, "pending": 15}, 0) == "dispatch"  # 1 of 5: at, not over
    r.dispatched_batches = 2
    assert decide(r, {"failed": 2, "succeeded": 4, "running": 4, "pending": 10}, 0) is None  # could still pass
    assert decide(r, {"failed": 3, "succeeded": 4, "running": 3, "pending": 10}, 0) == "abort"  # over, whatever comes
    bad_ends = {"timed_out": 1, "expired": 1, "rejected": 1, "succeeded": 7, "pending": 10}
    assert decide(r, bad_ends, 0) == "abort"  # every kind of bad end counts as failed
    assert decide(r, {"canceled": 5, "succeeded": 5}, 0) == "complete"  # canceled is neither success nor failure
    r.abort_threshold = 1.0
    assert decide(r, {"failed": 10}, 0) == "complete"  # a threshold of 1 never aborts

    r.abort_threshold, r.pause_s = 0.5, 2.0
    assert decide(r, {"succeeded": 10, "pending": 10}, 0) == "wait"
    r.next_batch_at = 5_000
    assert decide(r, {"succeeded": 10, "pending": 10}, 4_999) is None
    assert decide(r, {"succeeded": 10, "pending": 10}, 5_000) == "dispatch"
    r.state = "paused"
    assert decide(r, {"succeeded": 10, "pending": 10}, 9_000) is None  # paused: no new batch ...
    assert decide(r, {"failed": 6, "succeeded": 4, "pending": 10}, 9_000) == "abort"  # ... but it still aborts


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_replicas_deciding_at_once_dispatch_a_batch_only_once(db, tmp_path, request):
    url = request.getfixturevalue("postgres_url") if db == "postgres" else f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = make_engine(url)
    migrate(engine)
    ids = [f"cc-{i}" for i in range(6)]
    for device_id in ids:
        enroll(engine, device_id)
    # One engine object per "replica"; only their database decisions run here (nothing is published).
    engines = [RolloutEngine(engine, Dispatcher(engine, None, EventBus()), EventBus()) for _ in range(6)]
    plan = Plan(
        command="ping",
        args={},
        device_ids=ids,
        target={"device_ids": ids},
        batch_size=3,
        pause_s=0,
        abort_threshold=0.5,
        ttl_s=60,
        timeout_s=None,
    )
    rid = store_plan(engine, plan)
    barrier = threading.Barrier(len(engines))

    def decide_now(e: RolloutEngine):
        barrier.wait()
        return e._decide_and_act(rid)

    with ThreadPoolExecutor(len(engines)) as pool:
        steps = list(pool.map(decide_now, engines))
    assert sum(1 for s in steps if s.acted) == 1
    assert sum(len(s.new) for s in steps) == 3
    with Session(engine) as s:
        assert s.get(Rollout, rid).dispatched_batches == 1
        assert len(s.exec(select(Command).where(Command.rollout_id == rid)).all()) == 3
    engine.dispose()
