"""A subscriber that follows some event types only is never handed (or held up by) the others: the alert
evaluator and the notifier follow the bus this way, next to the fleet's flood of metrics events."""

from __future__ import annotations

import asyncio

from fleet_service.live.bus import EventBus


async def test_a_typed_subscriber_gets_its_types_only_live_and_from_the_backlog():
    bus = EventBus(buffer=100, subscriber_queue=5)
    first = bus.publish("alert", {"n": 0})
    bus.publish("metrics", {"n": 1}, "u1")
    got: list[tuple[str, int]] = []

    async def follow() -> None:
        async for event in bus.subscribe(last_event_id=first.id - 1, types=frozenset({"alert"})):
            got.append((event.type, event.data["n"]))
            if len(got) == 2:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    for n in range(2, 50):  # far more than its queue holds: it must not be dropped as too slow
        bus.publish("metrics", {"n": n}, "u1")
    bus.publish("alert", {"n": 50})
    await asyncio.wait_for(task, 2)
    assert got == [("alert", 0), ("alert", 50)]
    assert bus.subscriber_count == 0


async def test_an_untyped_subscriber_still_gets_everything():
    bus = EventBus()
    seen: list[str] = []

    async def follow() -> None:
        async for event in bus.subscribe():
            seen.append(event.type)
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    for t in ("metrics", "alert", "log"):
        bus.publish(t, {})
    await asyncio.wait_for(task, 2)
    assert seen == ["metrics", "alert", "log"]
