"""Resuming `GET /api/events` with `Last-Event-ID` on another replica, on the same one, and after a restart.

Two real service replicas share one Mosquitto (`$share` ingest, `fleet/_events/+` fan-out) and one PostgreSQL
database. A client reads part of the stream on replica A, hangs up, more happens on both replicas, and it comes
back with the last id it saw: it must get exactly what it missed (none lost, none twice, in the serving replica's
order) or, when that replica cannot know, a `reset` event first."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.fleet_service.control_support import Responder, SseReader, succeed
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for

UNIT = "resume-1"


def key(event: dict[str, Any]) -> tuple | None:
    """What makes an event unique in these tests: a log line's text, a command's (id, status)."""
    if event["event"] == "log":
        return ("log", event["data"]["msg"])
    if event["event"] == "command":
        return ("command", event["data"]["id"], event["data"]["status"])
    return None


def keys(events: list[dict[str, Any]]) -> list[tuple]:
    return [k for k in map(key, events) if k is not None]


def log_lines(unit: Responder, first: int, count: int, prefix: str = "line") -> list[str]:
    lines = [f"{prefix} {i:04d}" for i in range(first, first + count)]
    for i, msg in zip(range(first, first + count), lines, strict=True):
        record = {"id": f"{prefix}-{i}", "ts": now_ms(), "level": "info", "source": "recorder", "msg": msg}
        unit.unit.publish(Kind.LOGS, {"v": 1, "records": [record]})
    return lines


def has_all(reader: SseReader, wanted: set[tuple]) -> bool:
    return wanted <= set(keys(reader.snapshot()))


@contextlib.contextmanager
def two_replicas(tmp_path, mosquitto_factory, postgres_url, **b_overrides) -> Iterator[tuple[Any, ...]]:
    base = {"database_url": postgres_url, **settings_overrides(tmp_path / "mosquitto-files")}
    settings_a = settings_for(tmp_path / "a", replica_id="replica-a", **base)
    settings_b = settings_for(tmp_path / "b", replica_id="replica-b", **base, **b_overrides)
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings_a)
    with StackThread(settings_a) as a, StackThread(settings_b) as b, a.client() as api_a, b.client() as api_b:
        wait_for(lambda: a.ctx.link.connected.is_set() and b.ctx.link.connected.is_set(), what="both connected")
        secret = api_a.post("/api/devices", json={"id": UNIT}).json()["secret"]
        wait_for(lambda: accepts(managed.unit_port, UNIT, secret) == 0, what="unit accepted")
        unit = Responder(managed.unit_port, UNIT, secret, succeed).start()
        try:
            yield a, b, api_a, api_b, unit, settings_a
        finally:
            unit.stop()


def test_a_client_resumes_on_the_other_replica_with_exactly_what_it_missed(tmp_path, mosquitto_factory, postgres_url):
    with two_replicas(tmp_path, mosquitto_factory, postgres_url) as (a, b, api_a, api_b, unit, _):
        with SseReader(b.url, ADMIN_TOKEN) as truth_b, SseReader(a.url, ADMIN_TOKEN) as truth_a:
            with SseReader(a.url, ADMIN_TOKEN) as first:
                seen_lines = log_lines(unit, 0, 60)
                first.wait_for(lambda e: e["event"] == "log" and e["data"]["msg"] == seen_lines[-1], what="line 59")
            before = first.snapshot()
            position = before[-1]["id"]
            seen = keys(before)
            assert {("log", m) for m in seen_lines} <= set(seen)

            # Hung up: both replicas keep producing events (ingest is split by `$share`; each stores commands).
            missed_lines = log_lines(unit, 60, 140)
            commands = [
                api_a.post(f"/api/devices/{UNIT}/restart").json(),
                api_b.post(f"/api/devices/{UNIT}/reboot").json(),
            ]
            finals = {("command", c["id"], "succeeded") for c in commands}
            everything = {("log", m) for m in missed_lines} | finals
            for truth in (truth_a, truth_b):
                wait_for(lambda t=truth: has_all(t, everything), timeout=20, what="every event on both replicas")
            assert a.ctx.registry.value("fleet_ingest_persisted_total", kind="logs") > 0
            assert b.ctx.registry.value("fleet_ingest_persisted_total", kind="logs") > 0

            for replica, truth in ((b, truth_b), (a, truth_a)):
                expected = [k for k in keys(truth.snapshot()) if k not in set(seen)]
                with SseReader(replica.url, ADMIN_TOKEN, last_event_id=position) as resumed:
                    wait_for(lambda r=resumed, x=set(expected): has_all(r, x), timeout=10, what="the replay")
                    marker = log_lines(unit, 0, 1, prefix=f"live after {replica.settings.replica_id}")
                    resumed.wait_for(lambda e, m=marker[0]: key(e) == ("log", m), what="a live line after it")
                    got = resumed.snapshot()
                assert not any(e["event"] == "reset" for e in got), "an exact resume must not ask for a refetch"
                received = [k for k in keys(got) if k != ("log", marker[0])]
                counts = Counter(received)
                lost = set(expected) - set(received)
                doubled = sorted(k for k, n in counts.items() if n > 1) + sorted(set(received) & set(seen))
                print(
                    f"resume on {replica.settings.replica_id}: sent {len(expected)}, received {len(received)}, "
                    f"lost {len(lost)}, doubled {len(doubled)}"
                )
                assert not lost and not doubled
                assert received == expected  # in the order the serving replica streams them live


def test_a_resume_point_the_replica_cannot_serve_gets_a_reset_first(tmp_path, mosquitto_factory, postgres_url):
    with two_replicas(tmp_path, mosquitto_factory, postgres_url, events_buffer=40) as (a, b, api_a, _, unit, s_a):
        with SseReader(b.url, ADMIN_TOKEN) as truth_b:
            with SseReader(a.url, ADMIN_TOKEN) as first:
                line = log_lines(unit, 0, 1)[0]
                first.wait_for(lambda e: key(e) == ("log", line), what="the first line")
            position = first.snapshot()[-1]["id"]
            flood = log_lines(unit, 1, 100)  # far more than B's 40-event buffer holds
            wait_for(lambda: has_all(truth_b, {("log", m) for m in flood}), timeout=20, what="the flood on B")

            def first_event(url: str, last_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
                with SseReader(url, ADMIN_TOKEN, last_event_id=last_id) as r:
                    r.wait_for(lambda e: True, what="any event")
                    marker = log_lines(unit, 0, 1, prefix=f"after {last_id[:20]}")[0]
                    r.wait_for(lambda e: key(e) == ("log", marker), what="a live line")
                    events = r.snapshot()
                return events[0], events

            head, events = first_event(b.url, position)
            assert head["event"] == "reset" and head["data"]["reason"] == "expired", head
            assert head["id"], "the reset carries the id to resume from next"
            assert not any(k in {("log", m) for m in flood} for k in keys(events)), "nothing half-replayed"

            # A holds all of it (default buffer): the same id resumes exactly there.
            _, on_a = first_event(a.url, position)
            assert on_a[0]["event"] != "reset"
            replayed = [k for k in keys(on_a) if k[1].startswith("line")]  # in A's order: its own first, B's later
            assert sorted(replayed) == [("log", m) for m in flood]

            for garbage in ("1719400000000", "not-an-id", "x" * 5000):
                head, _ = first_event(a.url, garbage)
                assert head["event"] == "reset" and head["data"]["reason"] == "unknown", (garbage[:20], head)

    # A restarted replica lost its buffer: it says so instead of streaming from an unrelated point.
    with StackThread(s_a) as again:
        wait_for(lambda: again.ctx.link.connected.is_set(), what="A connected again")
        with SseReader(again.url, ADMIN_TOKEN, last_event_id=position) as r:
            head = r.wait_for(lambda e: True, what="any event")
        assert head["event"] == "reset" and head["data"]["reason"] == "unknown", head
