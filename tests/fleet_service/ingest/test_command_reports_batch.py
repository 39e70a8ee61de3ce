"""A unit's reports on one command often arrive together (accepted, running and the result within milliseconds):
ingest writes them in one compare-and-set with every status's event, and the outcome is what one report after
another would give — history, times, output, live events and acks (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

from sqlmodel import Session, select

from fleet_service.commands.models import Command, CommandEvent
from fleet_service.commands.state import apply_results, transition
from fleet_service.devices.enrollment import enroll
from fleet_service.devices.models import Device
from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.ingest.persister import Inbound, Persister
from fleet_service.prometheus import Registry
from protocol.ids import now_ms
from protocol.payloads import CommandResult
from protocol.topics import Kind, topic
from tests.fleet_service.commands.stored import new_command, stored

UNIT = "batch-unit"


def result(cmd_id: str, status: str, received: int, ack: str) -> Inbound:
    body = {"v": 1, "id": cmd_id, "status": status, "ts": received, "ack_id": ack}
    if status == "succeeded":
        body |= {"exit_code": 0, "output": "pong"}
    return Inbound(topic(UNIT, Kind.CMD_RESULT), json.dumps(body).encode(), received)


def history(engine, cmd_id: str) -> list[tuple[str, int]]:
    with Session(engine) as s:
        q = select(CommandEvent.status, CommandEvent.ts).where(CommandEvent.command_id == cmd_id)
        return [(status, ts) for status, ts in s.exec(q.order_by(CommandEvent.id)).all()]


def persist(engine, batch: list[Inbound]):
    registry = Registry()
    return Persister(engine, registry, BadMessageLog(registry)).persist(batch)


def test_three_reports_in_one_batch_before_the_command_was_marked_sent(engine):
    enroll(engine, UNIT)
    cmd_id = new_command(engine, UNIT, sent=False)  # the unit answered before the service marked it sent
    t = now_ms()
    done = persist(
        engine, [result(cmd_id, s, t + i, f"a{i}") for i, s in enumerate(("accepted", "running", "succeeded"))]
    )

    assert [s for s, _ in history(engine, cmd_id)] == ["queued", "sent", "accepted", "running", "succeeded"]
    assert history(engine, cmd_id)[1:] == [("sent", t), ("accepted", t), ("running", t + 1), ("succeeded", t + 2)]
    cmd = stored(engine, cmd_id)
    assert (cmd.status, cmd.exit_code, cmd.output) == ("succeeded", 0, "pong")
    assert (cmd.started_at, cmd.finished_at, cmd.updated_at) == (t, t + 2, t + 2)
    # One live event per report, each showing the command as that report left it; every report acknowledged.
    events = [o.data for o in done.outcomes if o.type == "command"]
    assert [e["status"] for e in events] == ["accepted", "running", "succeeded"]
    assert events[0]["finished_at"] is None and events[0]["output"] == "" and events[2]["output"] == "pong"
    assert done.acks.units[UNIT].ids == ["a0", "a1", "a2"]


def test_scrambled_and_repeated_reports_in_one_batch_keep_the_first_final_answer(engine):
    enroll(engine, UNIT)
    cmd_id = new_command(engine, UNIT, sent=True)
    t = now_ms()
    order = ("succeeded", "accepted", "running", "succeeded", "failed")
    done = persist(engine, [result(cmd_id, s, t + i, f"b{i}") for i, s in enumerate(order)])

    assert [s for s, _ in history(engine, cmd_id)] == ["queued", "sent", "succeeded"]
    cmd = stored(engine, cmd_id)
    assert (cmd.status, cmd.exit_code, cmd.output, cmd.finished_at) == ("succeeded", 0, "pong", t)
    assert cmd.started_at is None  # it went straight to its result: accepted and running came too late to count
    assert [o.data["status"] for o in done.outcomes if o.type == "command"] == ["succeeded"]
    assert done.acks.units[UNIT].ids == [f"b{i}" for i in range(5)]  # stored as far as each matters


def test_another_writer_between_the_read_and_the_write_falls_back_to_one_report_at_a_time(engine):
    enroll(engine, UNIT)
    cmd_id = new_command(engine, UNIT, sent=True)
    t = now_ms()
    with Session(engine, expire_on_commit=False) as reader:
        stale = reader.get(Command, cmd_id)  # read as `sent`
        assert stale is not None and stale.status == "sent"
        with Session(engine) as other:  # the sweeper times it out meanwhile (as if the unit had taken it long ago)
            other_cmd = other.get(Command, cmd_id)
            assert transition(other, other_cmd, "accepted", t - 5) and transition(other, other_cmd, "timed_out", t - 1)
            other.commit()
        reports = [
            (CommandResult(id=cmd_id, status=s, ts=t, exit_code=0, output="late"), t) for s in ("running", "succeeded")
        ]
        changed = apply_results(reader, stale, reports)
        reader.commit()
    # The compare-and-set from `sent` lost; read again, `running` no longer counts and the unit's result overrules
    # the sweeper's guess, as an event of its own.
    assert changed[0] is None and changed[1] is not None and changed[1]["status"] == "succeeded"
    assert [s for s, _ in history(engine, cmd_id)] == ["queued", "sent", "accepted", "timed_out", "succeeded"]
    assert (stored(engine, cmd_id).status, stored(engine, cmd_id).output) == ("succeeded", "late")


def test_reports_naming_another_units_command_or_from_no_unit_change_nothing(engine):
    enroll(engine, UNIT)
    enroll(engine, "batch-other")
    cmd_id = new_command(engine, UNIT, sent=True)
    t = now_ms()
    forged = [
        Inbound(topic(unit, Kind.CMD_RESULT), json.dumps(body).encode(), t)
        for unit, body in [
            ("batch-other", {"v": 1, "id": cmd_id, "status": "succeeded", "ts": t, "ack_id": "o1"}),
            ("ghost-unit", {"v": 1, "id": cmd_id, "status": "failed", "ts": t, "ack_id": "g1"}),
        ]
    ]
    registry = Registry()
    badlog = BadMessageLog(registry)
    done = Persister(engine, registry, badlog).persist(forged)

    assert [s for s, _ in history(engine, cmd_id)] == ["queued", "sent"]
    assert stored(engine, cmd_id).status == "sent"
    assert not [o for o in done.outcomes if o.type == "command"]
    assert {u: a.rejected for u, a in done.acks.units.items()} == {
        "batch-other": {"o1": f"unknown command {cmd_id}"},
        "ghost-unit": {"g1": f"unknown command {cmd_id}"},
    }
    assert 'reason="unknown_command"} 2' in registry.render()
    with Session(engine) as s:
        assert s.get(Device, "ghost-unit") is None
