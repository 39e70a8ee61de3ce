"""A unit's results for one command land on different replicas, in any order, at once: every one is applied.

Each replica's ingest applies a result in its own transaction on its own connection; here two threads with their
own sessions play the two replicas against one real database (SQLite file, fresh PostgreSQL), started together
by a barrier so that both read the same stored status and then race their compare-and-set.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import Session, select

from fleet_service.commands.dispatch import Dispatcher
from fleet_service.commands.models import Command, CommandEvent
from fleet_service.commands.state import FINAL, apply_result, rank, transition
from fleet_service.devices.enrollment import enroll, revoke
from protocol.ids import now_ms
from protocol.payloads import CommandResult, encode
from protocol.topics import Kind, topic
from tests.fleet_service.commands import stored as stored_commands
from tests.fleet_service.commands.stored import stored
from tests.fleet_service.control_support import Responder, silent
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for

DEVICE = "race-unit"
COMMANDS = 100
# Per command, two rounds; in each round replica A and replica B apply one result at the same moment. The second
# result of a round can be a QoS-1 re-delivery of one already sent. In order, reversed, final first, final last.
SCHEDULES = [
    (("accepted", "running"), ("succeeded", "succeeded")),
    (("succeeded", "accepted"), ("running", "accepted")),
    (("running", "succeeded"), ("accepted", "running")),
    (("succeeded", "running"), ("accepted", "succeeded")),
    (("accepted", "succeeded"), ("running", "running")),
    (("running", "accepted"), ("succeeded", "accepted")),
]


def report(cmd_id: str, status: str, exit_code: int | None = None, output: str = "") -> CommandResult:
    return CommandResult(id=cmd_id, status=status, exit_code=exit_code, output=output, ts=now_ms())


def pong(cmd_id: str, status: str) -> CommandResult:
    """The unit's report on a ping; the final one carries its exit code and output."""
    return report(cmd_id, status, 0, f"pong {cmd_id}") if status in FINAL else report(cmd_id, status)


def new_command(engine, *, sent: bool = True, timeout_s: int | None = None) -> str:
    return stored_commands.new_command(engine, DEVICE, sent=sent, timeout_s=timeout_s)


def apply_as_replica(engine, res: CommandResult, ready: threading.Barrier | None = None) -> dict | None:
    """What one replica's ingest does with one result: read the command, apply, commit."""
    with Session(engine, expire_on_commit=False) as s:
        cmd = s.get(Command, res.id)
        if ready is not None:
            ready.wait(timeout=30)  # both replicas have read the same stored status: now both write
        changed = apply_result(s, cmd, res, now_ms())
        s.commit()
        return changed


def history(engine, cmd_id: str) -> list[str]:
    with Session(engine) as s:
        q = select(CommandEvent.status).where(CommandEvent.command_id == cmd_id).order_by(CommandEvent.id)
        return list(s.exec(q).all())


def test_results_split_over_two_racing_replicas_all_land(engine):
    enroll(engine, DEVICE)
    # Every fourth command is still `queued`: the unit answered before its replica marked it sent.
    ids = [new_command(engine, sent=i % 4 != 0) for i in range(COMMANDS)]
    rounds = {"a": [], "b": []}
    for i, cmd_id in enumerate(ids):
        for a, b in SCHEDULES[i % len(SCHEDULES)]:
            rounds["a"].append(pong(cmd_id, a))
            rounds["b"].append(pong(cmd_id, b))
    ready = threading.Barrier(2)

    def replica(name: str) -> list[tuple[str, dict | None]]:
        return [(res.id, apply_as_replica(engine, res, ready)) for res in rounds[name]]

    with ThreadPoolExecutor(2) as pool:
        outcomes = [o for future in [pool.submit(replica, "a"), pool.submit(replica, "b")] for o in future.result()]

    stuck = {}
    for cmd_id in ids:
        cmd, events = stored(engine, cmd_id), history(engine, cmd_id)
        if cmd.status != "succeeded":
            stuck[cmd_id] = (cmd.status, events)
            continue
        assert (cmd.exit_code, cmd.output) == (0, f"pong {cmd_id}"), events
        assert cmd.finished_at is not None
        # One event per status, in the state order: queued, sent, whichever of accepted/running came before the
        # final one, succeeded. Nothing repeated, nothing after the end.
        assert events[:2] == ["queued", "sent"] and events[-1] == "succeeded", events
        assert [rank(s) for s in events] == sorted({rank(s) for s in events}), events
        assert (cmd.started_at is not None) == bool({"accepted", "running"} & set(events)), events
        # apply_result said "changed" exactly once for every status the unit moved it to.
        assert sum(1 for i, changed in outcomes if i == cmd_id and changed) == len(events) - 2, events
    assert not stuck, f"{len(stuck)} of {COMMANDS} commands did not end succeeded: {list(stuck.values())[:5]}"


def test_a_final_result_keeps_its_exit_code_and_output_whatever_comes_later(engine):
    enroll(engine, DEVICE)
    first = new_command(engine)
    changed = apply_as_replica(engine, report(first, "failed", 3, "bad ref"))
    assert changed is not None
    assert (changed["status"], changed["exit_code"], changed["output"]) == ("failed", 3, "bad ref")
    for late in ("accepted", "running", "failed"):  # delayed progress reports and a duplicate: nothing changes
        assert apply_as_replica(engine, report(first, late)) is None
    # A second, different final answer from the unit is ignored: the first one it gave is kept.
    assert apply_as_replica(engine, report(first, "succeeded", 0, "ok")) is None
    cmd = stored(engine, first)
    assert (cmd.status, cmd.exit_code, cmd.output, cmd.started_at) == ("failed", 3, "bad ref", None)
    assert history(engine, first) == ["queued", "sent", "failed"]


def test_the_units_real_outcome_replaces_the_sweepers_timed_out(engine):
    enroll(engine, DEVICE)
    cmd_id = new_command(engine, timeout_s=1)
    long_ago = now_ms() - 10_000
    with Session(engine, expire_on_commit=False) as s:
        assert apply_result(s, s.get(Command, cmd_id), report(cmd_id, "running"), long_ago)
        s.commit()
    swept = Dispatcher(engine, link=None, bus=None).sweep()
    assert [c.id for c in swept] == [cmd_id] and swept[0].status == "timed_out"
    assert "no result within 1 s" in stored(engine, cmd_id).output
    # A late progress report does not undo the guess; the unit's real final answer does, as an event of its own.
    assert apply_as_replica(engine, report(cmd_id, "running")) is None
    changed = apply_as_replica(engine, report(cmd_id, "succeeded", 0, "pong"))
    assert changed is not None and changed["status"] == "succeeded"
    assert apply_as_replica(engine, report(cmd_id, "failed", 1, "no")) is None
    cmd = stored(engine, cmd_id)
    assert (cmd.status, cmd.exit_code, cmd.output) == ("succeeded", 0, "pong")
    assert cmd.started_at == long_ago and cmd.finished_at > long_ago
    assert history(engine, cmd_id) == ["queued", "sent", "running", "timed_out", "succeeded"]
    assert Dispatcher(engine, link=None, bus=None).sweep() == []


@pytest.mark.parametrize("answer", ["succeeded", "failed", "rejected", "expired"])
def test_a_canceled_command_shows_what_the_unit_did_with_it(engine, answer):
    """Canceled while `sent`, the command may already be at the unit. succeeded/failed say the unit ran it: that
    replaces `canceled`. rejected/expired say it never ran: it stays canceled."""
    enroll(engine, DEVICE)
    cmd_id = new_command(engine)
    with Session(engine) as s:
        assert transition(s, s.get(Command, cmd_id), "canceled", now_ms())
        s.commit()
    for progress in ("accepted", "running"):  # progress never undoes a final state
        assert apply_as_replica(engine, report(cmd_id, progress)) is None
    changed = apply_as_replica(engine, report(cmd_id, answer, 7, "what the unit said"))
    cmd = stored(engine, cmd_id)
    if answer in ("succeeded", "failed"):
        assert changed is not None and changed["status"] == answer
        assert (cmd.status, cmd.exit_code, cmd.output) == (answer, 7, "what the unit said")
        assert history(engine, cmd_id) == ["queued", "sent", "canceled", answer]
    else:
        assert changed is None and cmd.status == "canceled"
        assert history(engine, cmd_id) == ["queued", "sent", "canceled"]


@pytest.mark.parametrize("guess", ["canceled", "timed_out"])
def test_the_services_guess_racing_the_units_answer_never_hides_it(engine, guess):
    """A cancel (command `sent`) or the sweeper (command taken long ago) racing the unit's final answer: whichever
    commits first, the unit's answer ends up stored, with one event per status."""
    enroll(engine, DEVICE)
    ids = [new_command(engine, timeout_s=1) for _ in range(30)]
    before = ["queued", "sent"]
    if guess == "timed_out":
        before.append("accepted")
        for cmd_id in ids:
            with Session(engine, expire_on_commit=False) as s:
                apply_result(s, s.get(Command, cmd_id), report(cmd_id, "accepted"), now_ms() - 10_000)
                s.commit()
    ready = threading.Barrier(2)

    def service(cmd_id: str) -> None:
        with Session(engine) as s:
            cmd = s.get(Command, cmd_id)
            ready.wait(timeout=30)
            transition(s, cmd, guess, now_ms())
            s.commit()

    with ThreadPoolExecutor(2) as pool:
        for cmd_id in ids:
            for future in (
                pool.submit(service, cmd_id),
                pool.submit(apply_as_replica, engine, pong(cmd_id, "succeeded"), ready),
            ):
                future.result()
    for cmd_id in ids:
        cmd, events = stored(engine, cmd_id), history(engine, cmd_id)
        assert (cmd.status, cmd.exit_code, cmd.output) == ("succeeded", 0, f"pong {cmd_id}"), events
        assert events in ([*before, "succeeded"], [*before, guess, "succeeded"]), events


def test_a_result_for_a_command_whose_unit_was_just_removed_changes_nothing(engine):
    enroll(engine, DEVICE)
    cmd_id = new_command(engine)
    with Session(engine, expire_on_commit=False) as s:
        cmd = s.get(Command, cmd_id)
        assert revoke(engine, DEVICE)  # on another connection, between this replica's read and its write
        assert apply_result(s, cmd, report(cmd_id, "succeeded", 0, "pong"), now_ms()) is None
        s.commit()
    assert stored(engine, cmd_id) is None and history(engine, cmd_id) == []


def test_two_service_replicas_keep_every_result_of_100_pings(tmp_path, mosquitto_factory, postgres_url):
    """The issue's set-up end to end: `$share` deals one unit's results to two real replicas in turn.

    The persister writes the unit's `last_seen` before it reads the command, so the unit's row lock happens to
    serialize its results across replicas, and this passed with the unfixed apply_result too; the race itself is
    reproduced above. This guards the whole path (broker, ingest, database) against dropping or repeating results.
    """
    base = {"database_url": postgres_url, **settings_overrides(tmp_path / "mosquitto-files")}
    settings_a = settings_for(tmp_path / "a", replica_id="replica-a", **base)
    settings_b = settings_for(tmp_path / "b", replica_id="replica-b", **base)
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings_a)
    with StackThread(settings_a) as a, StackThread(settings_b) as b, a.client() as api_a, b.client() as api_b:
        wait_for(lambda: a.ctx.link.connected.is_set() and b.ctx.link.connected.is_set(), what="both connected")
        secret = api_a.post("/api/devices", json={"id": DEVICE}).json()["secret"]
        wait_for(lambda: accepts(managed.unit_port, DEVICE, secret) == 0, what="unit accepted")
        unit = Responder(managed.unit_port, DEVICE, secret, silent).start()
        wait_for(lambda: api_a.get(f"/api/devices/{DEVICE}/status").json()["online"], what="unit online")
        ids = []
        for i in range(COMMANDS):
            r = (api_a, api_b)[i % 2].post(f"/api/devices/{DEVICE}/commands", json={"name": "ping"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        wait_for(lambda: len(unit.command_ids()) == COMMANDS, timeout=30, what="every ping at the unit")
        # The unit answers the way an agent flushes its outbox: every result at once, in order per command.
        # `$share` deals them to the two replicas in turn, so one command's results land on both.
        sent = [
            unit.unit.client.publish(topic(DEVICE, Kind.CMD_RESULT), encode(pong(cmd_id, status)), qos=1)
            for cmd_id in ids
            for status in ("accepted", "running", "succeeded")
        ]
        for info in sent:
            info.wait_for_publish(10)

        def by_status() -> dict[str, list[str]]:
            items = api_b.get(f"/api/devices/{DEVICE}/commands", params={"limit": 500}).json()["items"]
            seen: dict[str, list[str]] = {}
            for c in items:
                seen.setdefault(c["status"], []).append(c["id"])
            return seen

        deadline = time.monotonic() + 20  # a dropped result would leave its ping in flight for 300 s
        while len(by_status().get("succeeded", [])) < COMMANDS and time.monotonic() < deadline:
            time.sleep(0.2)
        unit.stop()
        ends = by_status()
        assert sorted(ends.get("succeeded", [])) == sorted(ids), {s: len(v) for s, v in ends.items()}
        for cmd_id in ids:
            cmd = api_a.get(f"/api/commands/{cmd_id}").json()
            events = [h["status"] for h in cmd["history"]]
            assert (cmd["exit_code"], cmd["output"]) == (0, f"pong {cmd_id}"), cmd
            assert events[:2] == ["queued", "sent"] and events[-1] == "succeeded", events
            assert [rank(s) for s in events] == sorted({rank(s) for s in events}), events
        # Both replicas did part of the work: the results really were split between them.
        persisted = [s.ctx.registry.value("fleet_ingest_persisted_total", kind="cmd/result") for s in (a, b)]
    assert all(n > 0 for n in persisted) and sum(persisted) >= 3 * COMMANDS, persisted
