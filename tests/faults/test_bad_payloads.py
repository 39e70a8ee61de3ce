"""Item: one unit's bad payloads cost exactly themselves, never another unit's records (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest

from protocol.ids import now_ms
from protocol.topics import Kind, topic
from tests.support.services import wait_for
from tests.support.unit import RawUnit

GOOD_BATCHES, RECORDS_PER_BATCH = 200, 5


def poison() -> list[tuple[Kind, bytes]]:
    """Payloads that broke ingest: each is valid enough to pass the broker and must cost only itself."""
    deep = b'{"v":1,"ts":1,"extra":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    return [
        (Kind.METRICS, deep),
        (Kind.METRICS, b'{"v":1,"ts":1,"mem_used_bytes":' + b"9" * 30 + b"}"),
        (Kind.METRICS, b'{"v":1,"ts":1,"mem_used_bytes":"' + b"9" * 30 + b'"}'),
        (Kind.METRICS, b'{"v":1,"ts":1,"extra":{"big":' + b"9" * 25 + b"}}"),
        (Kind.METRICS, b'{"v":1,"ts":1,"cpu_percent":1e999}'),
        (Kind.METRICS, b'{"v":1,"ts":1,"extra":{"x":NaN}}'),
        (Kind.METRICS, b'{"v":1,"ts":1,"x":' + b"7" * 5000 + b"}"),
        (Kind.LOGS, b'{"v":1,"records":[{"id":"a","ts":1,"msg":' + b"[" * 5000 + b"]" * 5000 + b"}]}"),
        (Kind.LOGS, b'{"v":1,"records":[{"id":"b","ts":1,"msg":"x"}],"dropped":' + b"9" * 40 + b"}"),
        (Kind.HEARTBEAT, b'{"v":1,"ts":1,"seq":' + b"9" * 21 + b"}"),
        (Kind.CONFIG_REPORTED, b'{"v":1,"version":1e400,"status":"applied"}'),
        (Kind.LOGS, b'\xff\xfe{"v":1}'),
    ]


@pytest.mark.slow
def test_a_flood_of_bad_payloads_costs_exactly_itself(fleet):
    good_secret = fleet.enroll("good-unit")
    bad_secret = fleet.enroll("bad-unit")
    good = RawUnit(fleet.mqtt_port, "good-unit", good_secret).connect()
    bad = RawUnit(fleet.mqtt_port, "bad-unit", bad_secret).connect()
    good.birth()
    bad.birth()
    registry = fleet.stack.ctx.registry
    before = {
        reason: registry.value("fleet_ingest_dropped_total", reason=reason) for reason in ("malformed", "unit_budget")
    }

    payloads = poison()
    bad_sent, pending = 0, []
    for n in range(GOOD_BATCHES):  # interleaved, so good and bad land in the same ingest batches
        records = [
            {"id": f"g{n}-{i}", "ts": now_ms(), "level": "info", "msg": f"good {n}-{i}"}
            for i in range(RECORDS_PER_BATCH)
        ]
        pending.append(
            good.client.publish(topic("good-unit", Kind.LOGS), json.dumps({"v": 1, "records": records}), qos=1)
        )
        for _ in range(10):
            kind, data = payloads[bad_sent % len(payloads)]
            pending.append(bad.client.publish(topic("bad-unit", kind), data, qos=1))
            bad_sent += 1
    for info in pending:
        info.wait_for_publish(30)

    expected = GOOD_BATCHES * RECORDS_PER_BATCH

    def stored() -> int:
        r = fleet.api.get("/api/devices/good-unit/logs", params={"limit": 1000})
        return len(r.json()["items"]) if r.status_code == 200 else 0

    def dropped(reason: str = "malformed") -> float:
        return registry.value("fleet_ingest_dropped_total", reason=reason) - before[reason]

    # The flood also runs past the bad unit's ingest budget: what is over it is refused before decoding.
    wait_for(
        lambda: stored() >= expected and dropped() + dropped("unit_budget") >= bad_sent,
        timeout=60,
        what=f"{expected} good records stored and {bad_sent} bad ones counted",
    )
    fleet.stack.drain()
    assert stored() == expected  # none lost, none doubled
    assert dropped() + dropped("unit_budget") == bad_sent  # every bad message counted once, under its reason
    assert dropped() >= 10 * len(payloads)  # and every kind of poison was decoded (and refused) many times
    assert fleet.api.get("/health").json()["status"] == "ok"
    good.stop_clean()
    bad.stop_clean()
