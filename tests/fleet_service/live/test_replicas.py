"""Two service replicas sharing one Mosquitto (`$share` ingest) and one database: each streams every event."""

from __future__ import annotations

import asyncio
import json
import time

from fleet_service.live.bus import EventBus
from fleet_service.live.replicas import MAX_MESSAGE_BYTES, EventRelay
from fleet_service.mosquitto.acl import acl_text
from fleet_service.prometheus import Registry
from protocol import ProtocolError
from protocol.ids import now_ms
from protocol.topics import (
    EVENTS,
    Kind,
    events_filter,
    events_origin,
    events_topic,
    parse,
    unit_may_publish,
    unit_may_subscribe,
)
from tests.fleet_service.control_support import Responder, SseReader, increasing, succeed
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for
from tests.support.unit import RawUnit


def test_the_events_topics_are_service_only():
    name = events_topic("replica-a-1f2e")
    assert name == "fleet/_events/replica-a-1f2e" and events_origin(name) == "replica-a-1f2e"
    assert events_origin("fleet/unit-1/logs") is None and events_origin(events_filter()) is None
    for candidate in (name, events_filter(), "fleet/_events/state", "fleet/_events/cmd/result"):
        try:
            parse(candidate)
        except ProtocolError:
            pass
        else:
            raise AssertionError(f"{candidate} parsed as a unit topic")
        assert not unit_may_publish("unit-1", candidate) and not unit_may_subscribe("unit-1", candidate)
    assert EVENTS not in acl_text()  # units get only `fleet/%u/...` patterns, and `_events` is never a device id


def persisted_logs(stack: StackThread) -> float:
    return stack.ctx.registry.value("fleet_ingest_persisted_total", kind="logs")


def test_each_replica_streams_the_events_the_other_persisted(tmp_path, mosquitto_factory, postgres_url):
    base = {"database_url": postgres_url, **settings_overrides(tmp_path / "mosquitto-files")}
    settings_a = settings_for(tmp_path / "a", replica_id="replica-a", **base)
    settings_b = settings_for(tmp_path / "b", replica_id="replica-b", **base)
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings_a)
    with StackThread(settings_a) as a, StackThread(settings_b) as b, a.client() as api_a, b.client() as api_b:
        wait_for(lambda: a.ctx.link.connected.is_set() and b.ctx.link.connected.is_set(), what="both connected")
        secret = api_a.post("/api/devices", json={"id": "shared-1"}).json()["secret"]
        wait_for(lambda: accepts(managed.unit_port, "shared-1", secret) == 0, what="unit accepted")
        with SseReader(a.url, ADMIN_TOKEN) as sse_a, SseReader(b.url, ADMIN_TOKEN) as sse_b:
            unit = Responder(managed.unit_port, "shared-1", secret, succeed).start()
            lines = [f"line {i}" for i in range(12)]
            for i, msg in enumerate(lines):
                unit.unit.publish(Kind.LOGS, {"v": 1, "records": [{"id": f"r{i}", "ts": now_ms(), "msg": msg}]})
            for sse in (sse_a, sse_b):
                for msg in lines:
                    sse.wait_for(lambda e, m=msg: e["event"] == "log" and e["data"]["msg"] == m, what=msg)
            # `$share` split the lines between the replicas, so each stream carries lines the other persisted.
            assert persisted_logs(a) > 0 and persisted_logs(b) > 0
            assert persisted_logs(a) + persisted_logs(b) == len(lines)

            cmd = api_a.post("/api/devices/shared-1/restart").json()  # stored by A; its result may land on either
            rollout = api_b.post("/api/rollouts", json={"command": "ping", "device_ids": ["shared-1"]}).json()
            for sse in (sse_a, sse_b):
                sse.wait_for(
                    lambda e: (
                        e["event"] == "command" and e["data"]["id"] == cmd["id"] and e["data"]["status"] == "succeeded"
                    ),
                    what="the command's result",
                )
                sse.wait_for(
                    lambda e: (
                        e["event"] == "rollout"
                        and e["data"]["id"] == rollout["id"]
                        and e["data"]["state"] == "completed"
                    ),
                    what="the rollout's end",
                )

            # A unit can neither listen to nor forge the replicas' event topic.
            spy = RawUnit(managed.unit_port, "shared-2", None, will=False)
            secret2 = api_b.post("/api/devices", json={"id": "shared-2"}).json()["secret"]
            wait_for(lambda: accepts(managed.unit_port, "shared-2", secret2) == 0, what="second unit accepted")
            spy.client.username_pw_set("shared-2", secret2)
            spy.connect()
            spy.client.subscribe(events_filter(), qos=0)
            forged = {
                "v": 1,
                "origin": "replica-x",
                "events": [{"type": "log", "device_id": "shared-1", "ts": 1, "data": {"msg": "forged"}}],
            }
            spy.publish_raw(events_topic("replica-x"), json.dumps(forged).encode(), qos=1)
            unit.unit.publish(Kind.LOGS, {"v": 1, "records": [{"id": "last", "ts": now_ms(), "msg": "marker"}]})
            for sse in (sse_a, sse_b):
                sse.wait_for(lambda e: e["event"] == "log" and e["data"]["msg"] == "marker", what="marker")
            time.sleep(0.3)
            assert spy.received.empty()
            for sse in (sse_a, sse_b):
                events = sse.snapshot()
                assert not any(e["data"].get("msg") == "forged" for e in events)
                assert increasing([e["id"] for e in events])
                logged = [e["data"]["msg"] for e in events if e["event"] == "log"]
                assert sorted(logged) == sorted([*lines, "marker"])  # every line once: no echo, no double relay
            spy.client.disconnect()
            spy.client.loop_stop()
            unit.stop()


async def test_a_large_burst_is_relayed_in_bounded_messages_and_arrives_whole():
    sent: list[tuple[str, bytes]] = []

    async def publish(name: str, payload: bytes, qos: int = 0) -> None:
        sent.append((name, payload))

    origin_bus, target_bus = EventBus(), EventBus()
    origin = EventRelay(origin_bus, publish, Registry(), "replica-a", flush_interval_s=0.01)
    target = EventRelay(target_bus, publish, Registry(), "replica-b")
    origin_bus.taps.append(origin.tap)
    target_bus.taps.append(target.tap)
    task = asyncio.create_task(origin.run())
    for i in range(3000):
        origin_bus.publish("log", {"device_id": "u1", "msg": f"{i:04d} " + "x" * 200}, "u1")
    for _ in range(200):
        await asyncio.sleep(0.01)
        if sum(len(json.loads(p)["events"]) for _, p in sent) == 3000:
            break
    task.cancel()
    assert len(sent) > 1 and all(len(p) <= MAX_MESSAGE_BYTES for _, p in sent)
    assert {name for name, _ in sent} == {events_topic("replica-a")}
    received = []
    target_bus.taps.append(received.append)  # taps see only local events: the relayed ones must not show here
    for name, payload in sent:
        await target.handle(name, payload)
        await origin.handle(name, payload)  # its own echo: ignored
    await target.handle(events_topic("replica-x"), b"{not json")  # counted and dropped
    assert received == []
    relayed = [e for e in target_bus._recent if e.origin == "replica-a"]
    assert [e.data["msg"][:4] for e in relayed] == [f"{i:04d}" for i in range(3000)]
    assert len(origin_bus._recent) == 3000  # nothing came back to the origin
