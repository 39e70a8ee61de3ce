"""What one live event costs the service, in-process (no broker, no HTTP): the bus on the replica where it arose
with SSE-shaped subscribers formatting it, and the way to another replica (relay batch encoded, decoded, put on
that replica's bus and formatted for its subscribers). Prints microseconds of CPU per event (this process's CPU
time, which a busy machine disturbs less than the wall clock) and SSE bytes per event on each side.

    python benchmarks/live_event_cost.py [--events 40000] [--subscribers 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet_service.live.bus import Event, EventBus  # noqa: E402
from fleet_service.live.replicas import EventRelay  # noqa: E402
from fleet_service.prometheus import Registry  # noqa: E402

BURST = 1000  # events published back to back before the subscribers get the loop (below their queue size)


def metrics_event(i: int) -> tuple[str, dict, str]:
    unit = f"unit-{i % 10_000:05d}"
    data = {
        "device_id": unit,
        "cpu_percent": 12.5 + i % 50,
        "mem_percent": 41.2,
        "mem_used_bytes": 1_717_986_918,
        "disk_percent": 63.0,
        "disk_free_bytes": 12_884_901_888,
        "load1": 0.42,
        "temp_c": 51.5,
        "net_rx_bytes": 1_000_000 + i,
        "net_tx_bytes": 2_000_000 + i,
        "services": {"recorder.service": "active", "webrtc.service": "active"},
    }
    return "metrics", data, unit


def follow(bus: EventBus):
    """What `GET /api/events` reads: the resumable stream where the bus has one, else the plain subscription."""
    return bus.follow(None) if hasattr(bus, "follow") else bus.subscribe()


async def sse_subscriber(bus: EventBus, counts: list[int], index: int, sizes: list[int]) -> None:
    async for item in follow(bus):
        if not isinstance(item, Event):
            continue  # the stream's opening mark
        text = item.to_sse()
        counts[index] += 1
        if index == 0 and len(sizes) < 1000:
            sizes.append(len(text.encode()))


async def drain(counts: list[int], target: int) -> None:
    while min(counts, default=target) < target:
        await asyncio.sleep(0)


async def local_round(events: int, subscribers: int) -> tuple[float, float]:
    """CPU seconds per event on the replica where the events arise; SSE bytes per event."""
    bus = EventBus(buffer=10_000)
    counts = [0] * subscribers
    sizes: list[int] = []
    tasks = [asyncio.create_task(sse_subscriber(bus, counts, i, sizes)) for i in range(subscribers)]
    await asyncio.sleep(0)
    payloads = [metrics_event(i) for i in range(events)]
    start = time.process_time()
    for n in range(0, events, BURST):
        for type_, data, unit in payloads[n : n + BURST]:
            bus.publish(type_, data, unit)
        await drain(counts, n + min(BURST, events - n))
    elapsed = time.process_time() - start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed / events, statistics.fmean(sizes) if sizes else 0.0


async def relay_round(events: int, subscribers: int) -> tuple[float, float]:
    """CPU seconds per event for the way to another replica (tap, batch encode, decode, its bus, its subscribers);
    SSE bytes per event there (its ids name two origins)."""
    origin_bus, target_bus = EventBus(buffer=10_000), EventBus(buffer=10_000)
    inbox: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes, qos: int = 0) -> None:
        inbox.append((topic, payload))

    origin = EventRelay(origin_bus, publish, Registry(), "replica-a", flush_interval_s=0)
    target = EventRelay(target_bus, publish, Registry(), "replica-b", flush_interval_s=0)
    origin_bus.taps.append(origin.tap)
    counts = [0] * subscribers
    sizes: list[int] = []
    target_bus.publish("device", {"action": "started"})  # the target has events of its own too
    tasks = [asyncio.create_task(sse_subscriber(target_bus, counts, i, sizes)) for i in range(subscribers)]
    runner = asyncio.create_task(origin.run())
    await asyncio.sleep(0)
    payloads = [metrics_event(i) for i in range(events)]
    start = time.process_time()
    for n in range(0, events, BURST):
        for type_, data, unit in payloads[n : n + BURST]:
            origin_bus.publish(type_, data, unit)
        want = n + min(BURST, events - n)
        while min(counts) < want:
            while inbox:
                topic, payload = inbox.pop(0)
                await target.handle(topic, payload)
            await asyncio.sleep(0)
    elapsed = time.process_time() - start
    for t in [*tasks, runner]:
        t.cancel()
    await asyncio.gather(*tasks, runner, return_exceptions=True)
    return elapsed / events, statistics.fmean(sizes) if sizes else 0.0


async def main_async(events: int, subscribers: int, rounds: int) -> None:
    local, relayed, sizes, relayed_sizes = [], [], [], []
    for _ in range(rounds):
        per_event, size = await local_round(events, subscribers)
        local.append(per_event)
        sizes.append(size)
        per_event, size = await relay_round(events, subscribers)
        relayed.append(per_event)
        relayed_sizes.append(size)
    print(f"{events} metrics events, {subscribers} SSE subscribers, {rounds} rounds (CPU median, then all rounds)")
    print(
        f"  where the event arose: {statistics.median(local) * 1e6:.1f} us/event "
        f"({', '.join(f'{x * 1e6:.1f}' for x in local)})"
    )
    print(
        f"  relayed to another replica: {statistics.median(relayed) * 1e6:.1f} us/event "
        f"({', '.join(f'{x * 1e6:.1f}' for x in relayed)})"
    )
    print(
        f"  SSE bytes per event: {statistics.median(sizes):.0f} where it arose, "
        f"{statistics.median(relayed_sizes):.0f} on the other replica"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--subscribers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main_async(args.events, args.subscribers, args.rounds))


if __name__ == "__main__":
    main()
