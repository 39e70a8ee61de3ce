"""Embedded mode (`fleet up`): the service reads from and publishes through the broker in its own process."""

from __future__ import annotations

import asyncio

import pytest

from fleet_service.broker_link.embedded import EmbeddedLink, filters_regex
from fleet_service.broker_link.mqtt import BrokerUnavailable
from protocol.ids import now_ms
from protocol.topics import service_filters
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for
from tests.support.unit import RawUnit


@pytest.fixture
def stack(tmp_path):
    with StackThread(settings_for(tmp_path)) as running:
        wait_for(lambda: running.ctx.link.connected.is_set(), what="ingest linked to the embedded broker")
        yield running


def _persisted_logs(stack: StackThread) -> float:
    return stack.ctx.registry.value("fleet_ingest_persisted_total", kind="logs")


def test_embedded_service_needs_no_mqtt_connection_and_reports_its_broker(stack):
    assert isinstance(stack.ctx.link, EmbeddedLink)
    assert stack.running.broker.connected_clients() == []  # no loopback client of its own
    with stack.client() as api:
        assert api.get("/health").json()["broker"] == "connected"
        assert "fleet_broker_connected 1" in api.get("/metrics").text
        stack.call(stack.running.broker.stop())
        health = api.get("/health")
        assert health.status_code == 503 and health.json()["broker"] == "disconnected"
        assert "fleet_broker_connected 0" in api.get("/metrics").text
    with pytest.raises(BrokerUnavailable):
        stack.call(stack.ctx.link.publish("fleet/u1/cmd", b"{}"))


def test_embedded_ingest_that_stalls_loses_nothing_units_sent_before_they_left(tmp_path):
    with StackThread(settings_for(tmp_path, ingest_queue_max=5)) as stack:  # ingest takes 5, the rest waits
        wait_for(lambda: stack.ctx.link.connected.is_set(), what="ingest linked to the embedded broker")
        with stack.client() as api:
            secret = api.post("/api/devices", json={"id": "busy-1"}).json()["secret"]
        unit = RawUnit(stack.mqtt_port, "busy-1", secret).connect()
        unit.birth()
        wait_for(lambda: stack.ctx.registry.value("fleet_ingest_persisted_total", kind="state") >= 1, what="birth")
        stack.call(_stop_task(stack.ctx, "ingest"))  # a database that does not answer for a while
        try:
            infos = [unit.client.publish("fleet/busy-1/logs", _logs(n), qos=1) for n in range(300)]
            for info in infos:
                info.wait_for_publish(10)
            assert all(info.is_published() for info in infos)  # the broker acknowledged every one
            unit.kill()  # and the unit is gone, its Will due
            wait_for(lambda: stack.ctx.link.backlog() > 0, what="messages held in the broker for ingest")
        finally:
            stack.call(_start_ingest(stack.ctx))
        wait_for(lambda: _persisted_logs(stack) >= 300, timeout=30, what="all 300 log batches persisted")
        with stack.client() as api:
            wait_for(lambda: not api.get("/api/devices/busy-1/status").json()["online"], what="the Will, last")
            logs = api.get("/api/devices/busy-1/logs", params={"limit": 500}).json()["items"]
        assert sorted(int(r["id"]) for r in logs) == list(range(300))
        assert stack.ctx.link.backlog() == 0


def test_embedded_link_filters_match_like_mqtt():
    match = filters_regex([*service_filters(), "a/#", "b/+/c"]).fullmatch
    assert match("fleet/u1/logs") and match("fleet/u1/cmd/result") and match("fleet/u1/relay/up")
    assert not match("fleet/u1/cmd") and not match("fleet/u1/config/desired") and not match("fleet/u1/logs/x")
    assert match("a") and match("a/b/c") and not match("ab")
    assert match("b//c") and match("b/x/c") and not match("b/x/y/c")
    assert filters_regex([]).fullmatch("fleet/u1/logs") is None


def _logs(n: int) -> bytes:
    return f'{{"v":1,"records":[{{"id":"{n}","ts":{now_ms()},"level":"info","source":"t","msg":"line {n}"}}]}}'.encode()


async def _stop_task(ctx, name: str) -> None:
    task = next(t for t in ctx.tasks if t.get_name() == name)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ctx.tasks.remove(task)


async def _start_ingest(ctx) -> None:
    ctx.tasks.append(asyncio.create_task(ctx.ingest.run(), name="ingest"))


def test_a_backlog_handed_over_while_the_broker_stops_for_shutdown_does_not_hang(stack):
    """`fleet up` on SIGTERM: the broker stops first and cancels its client tasks, which hand their acknowledged
    backlog to the link; the link must take it (ingest drains it next) instead of waiting for a gate that only
    opened after the broker's stop had returned — that wait hung the shutdown."""
    link = stack.ctx.link
    link.stopping()
    stack.call(stack.running.broker.stop())
    assert not link.connected.is_set()
    # What a cancelled client task does in its `finally`: hand over one acknowledged message.
    stack.call(asyncio.wait_for(link.consume("fleet/u1/logs", b'{"v":1,"records":[]}', 1, False), 5))
