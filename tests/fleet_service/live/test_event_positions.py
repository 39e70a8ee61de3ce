"""Event ids as positions in every origin's sequence (`live/origins.py`), on two buses joined by their relays in
memory: what a resume replays, when it must say `reset` instead, relay gaps, and replicas that go away."""

from __future__ import annotations

import asyncio
import json

from fleet_service.live import origins as origins_module
from fleet_service.live.bus import Event, EventBus, Mark
from fleet_service.live.origins import decode, encode
from fleet_service.live.replicas import EventRelay
from fleet_service.prometheus import Registry
from protocol.topics import events_topic


class Pair:
    """Replicas A and B: each one's relay batches are held until `deliver()` hands them to the other."""

    def __init__(self, buffer: int = 1000) -> None:
        self.a, self.b = EventBus(buffer, origin="aaaa"), EventBus(buffer, origin="bbbb")
        self.held: dict[str, list[tuple[str, bytes]]] = {"a": [], "b": []}
        self.relays = {}
        for name, bus in (("a", self.a), ("b", self.b)):

            async def publish(topic: str, payload: bytes, qos: int = 0, name=name) -> None:
                self.held[name].append((topic, payload))

            relay = EventRelay(bus, publish, Registry(), f"replica-{name}", flush_interval_s=0)
            bus.taps.append(relay.tap)
            self.relays[name] = relay

    async def flush(self) -> None:
        """Put each relay's pending events into its held batches."""
        for relay in self.relays.values():
            for payload, _ in relay._messages(relay._take()):
                await relay._publish(relay._topic, payload)

    async def deliver(self, frm: str = "ab") -> None:
        await self.flush()
        for name in frm:
            to = self.relays["b" if name == "a" else "a"]
            batches, self.held[name] = self.held[name], []
            for topic, payload in batches:
                await to.handle(topic, payload)


class Follower:
    """Reads a bus stream, its opening mark first; a read that found nothing stays pending for the next one."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.ready = [stream.opening] if stream.opening is not None else []
        self.pending: asyncio.Future | None = None

    async def take(self, count: int) -> list:
        items = []
        for _ in range(count):
            if self.ready:
                items.append(self.ready.pop(0))
                continue
            if self.pending is None:
                self.pending = asyncio.ensure_future(self.stream.__anext__())
            items.append(await asyncio.wait_for(asyncio.shield(self.pending), 1))
            self.pending = None
        return items

    async def nothing_more(self) -> None:
        assert not self.ready, self.ready
        if self.pending is None:
            self.pending = asyncio.ensure_future(self.stream.__anext__())
        await asyncio.sleep(0.05)
        assert not self.pending.done(), self.pending.result()

    async def aclose(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            await asyncio.gather(self.pending, return_exceptions=True)
        self.stream.close()


def follow(bus: EventBus, resume: str | None = None) -> Follower:
    return Follower(bus.follow(resume))


async def take(stream: Follower, count: int) -> list:
    return await stream.take(count)


async def nothing_more(stream: Follower) -> None:
    await stream.nothing_more()


def msgs(items: list) -> list:
    return [i.data["n"] if isinstance(i, Event) else ("mark", i.reset) for i in items]


def test_ids_round_trip_and_foreign_ids_are_not_positions():
    assert decode(encode({"aaaa": 3, "0f1e2d3c4b": 0})) == {"aaaa": 3, "0f1e2d3c4b": 0}
    for garbage in (
        "",
        "12345",
        "aaaa",
        "aaaa:",
        "aaaa:-1",
        "AAAA:1",
        "aaaa:1,aaaa:2",
        "aaaa:1;bbbb:2",
        "aaaa:١",
        "a" * 17 + ":1",
        "aaaa:" + "9" * 19,
        ",".join(f"o{i}:1" for i in range(600)),
    ):
        assert decode(garbage) is None, garbage


async def test_a_stream_resumed_on_the_other_replica_gets_exactly_what_it_missed():
    pair = Pair()
    pair.a.publish("log", {"n": 1})
    pair.b.publish("log", {"n": 2})
    await pair.deliver()
    stream = follow(pair.a, None)
    start = await take(stream, 1)
    assert isinstance(start[0], Mark) and start[0].reset is None and decode(start[0].cursor) == {"aaaa": 1, "bbbb": 1}
    pair.a.publish("log", {"n": 3})
    pair.b.publish("log", {"n": 4})
    await pair.deliver()
    got = await take(stream, 2)
    assert msgs(got) == [3, 4]
    position = got[-1].cursor
    await stream.aclose()

    pair.a.publish("log", {"n": 5})
    pair.b.publish("log", {"n": 6})
    pair.a.publish("log", {"n": 7})
    await pair.deliver()
    for bus in (pair.a, pair.b):  # the same id, either replica: 5, 6, 7 in that replica's order, nothing else
        resumed = follow(bus, position)
        replay = await take(resumed, 3)
        assert sorted(msgs(replay)) == [5, 6, 7]
        assert decode(replay[-1].cursor) == {"aaaa": 4, "bbbb": 3}
        await nothing_more(resumed)
        await resumed.aclose()


async def test_events_the_client_had_that_have_not_reached_this_replica_are_not_sent_twice():
    pair = Pair()
    pair.a.publish("log", {"n": 0})
    await pair.deliver()
    stream = follow(pair.a, None)
    await take(stream, 1)
    for n in range(1, 4):
        pair.a.publish("log", {"n": n})
    got = await take(stream, 3)
    position = got[-1].cursor  # aaaa:4 -- B has had only A's first event yet
    await stream.aclose()

    on_b = follow(pair.b, position)
    pair.b.publish("log", {"n": 10})
    first = await take(on_b, 1)
    assert msgs(first) == [10]
    assert decode(first[0].cursor) == {"bbbb": 1, "aaaa": 4}  # still says it had A's events up to 4
    pair.a.publish("log", {"n": 4})
    await pair.deliver()
    assert msgs(await take(on_b, 1)) == [4]  # 1-3 arrived late and were skipped
    await nothing_more(on_b)
    await on_b.aclose()


async def test_a_point_older_than_the_buffer_or_from_an_unknown_replica_gets_a_reset():
    pair = Pair(buffer=5)
    pair.a.publish("log", {"n": "a"})
    await pair.deliver()
    stream = follow(pair.a, None)
    old = (await take(stream, 1))[0].cursor
    await stream.aclose()
    for n in range(10):
        pair.b.publish("log", {"n": n})
    await pair.deliver()
    for bus in (pair.a, pair.b):
        resumed = follow(bus, old)
        head = await take(resumed, 1)
        assert isinstance(head[0], Mark) and head[0].reset == "expired"
        assert decode(head[0].cursor)["bbbb"] == 10
        await nothing_more(resumed)  # nothing half-replayed after it
        bus.publish("log", {"n": "live"})
        assert msgs(await take(resumed, 1)) == ["live"]
        await resumed.aclose()

    restarted = EventBus(origin="cccc")  # A after a restart: it never heard of its former self
    for garbage in (old, "1719400000000", None):
        first = await take(follow(restarted, garbage), 1)
        assert isinstance(first[0], Mark)
        assert first[0].reset == (None if garbage is None else "unknown")


async def test_an_origin_the_id_does_not_name_is_replayed_whole_or_reset():
    pair = Pair(buffer=4)
    position = encode({"aaaa": 0})  # a client of A before A heard anything of B
    pair.b.publish("log", {"n": 1})
    pair.b.publish("log", {"n": 2})
    await pair.deliver()
    replay = follow(pair.a, position)
    assert msgs(await take(replay, 2)) == [1, 2]
    await replay.aclose()
    for n in range(3, 8):
        pair.b.publish("log", {"n": n})
    await pair.deliver()
    reset = follow(pair.a, position)
    assert msgs(await take(reset, 1)) == [("mark", "expired")]  # B's first events are gone from A's buffer
    await reset.aclose()


async def test_events_lost_between_replicas_tell_open_streams_to_reset():
    pair = Pair()
    stream = follow(pair.b, None)
    await take(stream, 1)
    pair.a.publish("log", {"n": 1})
    await pair.deliver()
    assert msgs(await take(stream, 1)) == [1]
    pair.a.publish("log", {"n": 2})
    await pair.flush()
    pair.held["a"].clear()  # a relay batch lost (QoS 0, broker away)
    pair.a.publish("log", {"n": 3})
    await pair.deliver()
    got = await take(stream, 2)
    assert msgs(got) == [("mark", "gap"), 3]
    assert decode(got[0].cursor)["aaaa"] == 2  # the reset's position stops short of the event after it
    # A duplicate batch changes nothing.
    pair.a.publish("log", {"n": 4})
    await pair.flush()
    pair.held["a"] *= 2
    await pair.deliver()
    assert msgs(await take(stream, 1)) == [4]
    await nothing_more(stream)
    # A lost tail shows in the next heartbeat.
    pair.a.publish("log", {"n": 5})
    await pair.flush()
    pair.held["a"].clear()
    relay_a = pair.relays["a"]
    await pair.relays["b"].handle(events_topic("replica-a"), relay_a._wrap([], last=relay_a._last_seq))
    assert msgs(await take(stream, 1)) == [("mark", "gap")]
    await stream.aclose()
    assert pair.b.origins.gaps == 2


async def test_a_replica_long_gone_leaves_the_ids_but_a_client_that_had_its_last_events_resumes(monkeypatch):
    pair = Pair(buffer=3)
    pair.a.publish("log", {"n": 1})
    await pair.deliver()
    stream = follow(pair.b, None)
    position = (await take(stream, 1))[0].cursor
    await stream.aclose()
    assert decode(position) == {"bbbb": 0, "aaaa": 1}
    for n in range(5):
        pair.b.publish("log", {"n": n})  # A's event leaves B's buffer
    monkeypatch.setattr(origins_module, "RETIRE_AFTER_S", 0.0)
    assert pair.b.retire_quiet() == ["aaaa"]
    assert decode(pair.b.origins.cursor()) == {"bbbb": 5}
    resumed = follow(pair.b, encode({**decode(position), "bbbb": 2}))
    assert msgs(await take(resumed, 3)) == [2, 3, 4]  # A's last event had: resumes exactly
    await resumed.aclose()
    behind = follow(pair.b, encode({"aaaa": 0, "bbbb": 5}))
    assert msgs(await take(behind, 1)) == [("mark", "expired")]
    await behind.aclose()


async def test_relay_batches_name_their_origin_and_bad_ones_are_dropped():
    pair = Pair()
    pair.a.publish("log", {"n": 1})
    await pair.flush()
    topic, payload = pair.held["a"][0]
    batch = json.loads(payload)
    assert batch["src"] == "aaaa" and batch["events"][0]["seq"] == 1
    relay_b = pair.relays["b"]
    for bad in ({**batch, "src": "NOT VALID"}, {**batch, "last": "x"}, [1, 2]):
        await relay_b.handle(topic, json.dumps(bad).encode())
    assert relay_b._registry.value("fleet_events_relay_dropped_total", reason="malformed") == 3
    legacy = {"v": 1, "origin": "replica-a", "events": [{"type": "log", "data": {"n": 9}}]}
    await relay_b.handle(topic, json.dumps(legacy).encode())  # an older replica: numbered on arrival
    assert [e.data["n"] for e in pair.b._recent] == [9]


async def test_a_relay_announces_its_origin_at_start_so_its_first_events_lost_show_as_a_gap():
    sent: list[bytes] = []

    async def publish(topic: str, payload: bytes, qos: int = 0) -> None:
        sent.append(payload)

    bus_c, bus_a = EventBus(origin="cccc"), EventBus(origin="aaaa")
    relay_c = EventRelay(bus_c, publish, Registry(), "replica-c", flush_interval_s=0)
    relay_a = EventRelay(bus_a, publish, Registry(), "replica-a")
    bus_c.taps.append(relay_c.tap)
    task = asyncio.create_task(relay_c.run())
    await asyncio.sleep(0.01)
    announce = json.loads(sent[0])
    assert announce == {
        "v": 1,
        "origin": "replica-c",
        "src": "cccc",
        "since": announce["since"],
        "last": 0,
        "events": [],
    }
    await relay_a.handle(events_topic("replica-c"), sent[0])
    stream = follow(bus_a)
    await take(stream, 1)
    bus_c.publish("log", {"n": 1})
    await asyncio.sleep(0.01)
    sent.pop()  # lost on the way
    bus_c.publish("log", {"n": 2})
    await asyncio.sleep(0.01)
    await relay_a.handle(events_topic("replica-c"), sent[-1])
    assert msgs(await take(stream, 2)) == [("mark", "gap"), 2]
    task.cancel()
    await stream.aclose()


async def test_a_replica_started_after_this_one_whose_first_events_never_came_shows_a_gap():
    sent: list[bytes] = []

    async def publish(topic: str, payload: bytes, qos: int = 0) -> None:
        sent.append(payload)

    for started_later, expect in ((True, [("mark", "gap"), 3]), (False, [3])):
        bus_a = EventBus(origin="aaaa")
        bus_c = EventBus(origin="cccc")
        shift = 60_000 if started_later else -60_000
        bus_c.origins.started_ms = bus_a.origins.started_ms + shift  # before its relay reads it
        relay_c = EventRelay(bus_c, publish, Registry(), "replica-c", flush_interval_s=0)
        relay_a = EventRelay(bus_a, publish, Registry(), "replica-a")
        bus_c.taps.append(relay_c.tap)
        stream = follow(bus_a)
        await take(stream, 1)
        for n in (1, 2, 3):  # the announce and the first two events never reach A (broker not there yet)
            bus_c.publish("log", {"n": n})
        sent.clear()
        for payload, _ in relay_c._messages(relay_c._take()[2:]):
            await relay_a.handle(events_topic("replica-c"), payload)
        # Started after A: A listened all along, so 1 and 2 were lost. Started before A: A cannot know.
        assert msgs(await take(stream, len(expect))) == expect
        await stream.nothing_more()
        await stream.aclose()
