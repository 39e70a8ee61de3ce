"""Ingest throughput: messages/s the service persists, against a bare subscriber on the same broker.

    python benchmarks/ingest_throughput.py [--messages 20000] [--units 50] [--broker mosquitto|embedded|both]
                                           [--database postgres|sqlite] [--ingest-processes 1,2,3]

QoS 1 log batches of one record (~200 bytes) from many units, on `fleet/{id}/logs`.

- Mosquitto (scaled mode): the consumer's persistent session is subscribed, the consumer goes away, the
  messages are published and queued by Mosquitto, then the consumer comes back and drains them. The rate is
  messages / (last one received or persisted - reconnect): the consumer's own capacity, whatever the publishers
  manage. Consumers: a bare paho subscriber, a bare aiomqtt subscriber (the service's client library), and the
  service (in-process, `$share/fleet/...` subscriptions, PostgreSQL by default).
- Embedded broker (amqtt + our plugins; `fleet up` mode, SQLite): publishers send as fast as the broker takes
  them. The rate is messages / (last received or persisted - first publish). Consumers: a bare paho subscriber
  with the broker alone in its process, and the service with its embedded broker (one process, as `fleet up`).

Every part runs in its own process (publishers and bare subscribers are spawned), on loopback, in temporary
directories with a fresh database, all removed at the end. Targets (docs/performance.md): the service persists
>= 50 % of the bare subscriber's rate on Mosquitto and >= 80 % of the embedded broker's own rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import (  # noqa: E402
    SERVICE_SECRET,
    database,
    insert_units,
    service_url,
    start_mosquitto,
    workdir,
)

from protocol.ids import SERVICE_USERNAME, now_ms  # noqa: E402
from protocol.topics import Kind, topic  # noqa: E402
from tests.support.stack import StackThread, settings_for  # noqa: E402

# The service's capacity is measured, not its fairness: no unit is held to an ingest budget here.
UNLIMITED = {"unit_messages_per_s": 1e9, "unit_bytes_per_s": 1e12}

LOGS_FILTER = "fleet/+/logs"


def payload(device_id: str, n: int) -> bytes:
    record = {
        "id": f"{device_id}-{n}",
        "ts": now_ms(),
        "level": "info",
        "source": "recorder",
        "msg": f"segment written: cam{n % 4 + 1}/{n:010d}.mp4 (45.2 MB), 1920x1080@30, h264 main, 4 Mbit/s",
    }
    return json.dumps({"v": 1, "records": [record]}, separators=(",", ":")).encode()


# -- child processes ----------------------------------------------------------------------------------------


def publish_all(port: int, secret: str, ids: list[str], per_unit: int, started, done) -> None:
    """One paho client per unit (threads), QoS 1, 100 in flight each; `started` holds the first publish time."""
    import paho.mqtt.client as mqtt

    def unit(device_id: str) -> None:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
        c.username_pw_set(device_id, secret)
        c.max_inflight_messages_set(100)
        connected = threading.Event()
        c.on_connect = lambda *a: connected.set()
        c.connect("127.0.0.1", port, keepalive=60)
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.loop_start()
        connected.wait(30)
        with started.get_lock():
            if started.value == 0:
                started.value = time.time()
        name = topic(device_id, Kind.LOGS)
        infos = [c.publish(name, payload(device_id, n), qos=1) for n in range(per_unit)]
        for info in infos:
            info.wait_for_publish(120)
        c.disconnect()
        c.loop_stop()

    threads = [threading.Thread(target=unit, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()


def bare_paho(port: int, expected: int, drain: bool, ready, go, result) -> None:
    """Counts QoS 1 messages on fleet/+/logs; in drain mode it first leaves a persistent session behind."""
    import paho.mqtt.client as mqtt

    state = {"n": 0, "last": 0.0}
    finished = threading.Event()

    def on_message(c, u, m) -> None:
        state["n"] += 1
        if state["n"] >= expected:
            state["last"] = time.time()
            finished.set()

    def client() -> mqtt.Client:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare-paho", clean_session=False, protocol=mqtt.MQTTv311
        )
        c.username_pw_set(SERVICE_USERNAME, SERVICE_SECRET)
        c.max_inflight_messages_set(1000)
        subscribed = threading.Event()
        c.on_connect = lambda c_, u, f, rc, p: c_.subscribe(LOGS_FILTER, qos=1)
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_message = on_message
        c.connect("127.0.0.1", port, keepalive=60)
        c.loop_start()
        subscribed.wait(30)
        return c

    c = client()
    if drain:
        c.disconnect()
        c.loop_stop()
    ready.set()
    go.wait()
    t0 = time.time()
    if drain:
        c = client()
    finished.wait(600)
    result.put((state["n"], t0, state["last"]))
    c.unsubscribe(LOGS_FILTER)  # leave no session behind that would keep queueing during the next leg
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def bare_aiomqtt(port: int, expected: int, ready, go, result) -> None:
    """Drain mode only: the service's own MQTT library with nothing behind it."""
    import aiomqtt

    async def main() -> None:
        def client() -> aiomqtt.Client:
            return aiomqtt.Client(
                "127.0.0.1",
                port,
                username=SERVICE_USERNAME,
                password=SERVICE_SECRET,
                identifier="bench-bare-aiomqtt",
                clean_session=False,
            )

        async with client() as c:
            await c.subscribe(LOGS_FILTER, qos=1)
        ready.set()
        await asyncio.to_thread(go.wait)
        t0, n, last = time.time(), 0, 0.0
        async with client() as c:
            await c.subscribe(LOGS_FILTER, qos=1)
            async for _ in c.messages:
                n += 1
                if n >= expected:
                    last = time.time()
                    break
            await c.unsubscribe(LOGS_FILTER)
        result.put((n, t0, last))

    asyncio.run(main())


# -- parent -------------------------------------------------------------------------------------------------


def run_publishers(ctx, port: int, secret: str, ids: list[str], per_unit: int):
    started, done = ctx.Value("d", 0.0), ctx.Event()
    proc = ctx.Process(target=publish_all, args=(port, secret, ids, per_unit, started, done))
    proc.start()
    return proc, started, done


def bare_rate(ctx, kind: str, port: int, secret: str, ids: list[str], per_unit: int, drain: bool) -> float:
    expected = per_unit * len(ids)
    ready, go, result = ctx.Event(), ctx.Event(), ctx.Queue()
    target, args = (
        (bare_paho, (port, expected, drain, ready, go, result))
        if kind == "paho"
        else (bare_aiomqtt, (port, expected, ready, go, result))
    )
    sub = ctx.Process(target=target, args=args)
    sub.start()
    ready.wait(60)
    pub, started, done = run_publishers(ctx, port, secret, ids, per_unit)
    if drain:
        done.wait(600)
        pub.join()
        go.set()
    else:
        go.set()
    n, t0, last = result.get(timeout=900)
    sub.join(30)
    pub.join(600)
    if n < expected:
        raise SystemExit(f"bare {kind} subscriber received {n} of {expected}")
    start = t0 if drain else started.value
    return expected / (last - start)


def persisted(stack: StackThread) -> float:
    return stack.ctx.registry.value("fleet_ingest_persisted_total", kind="logs")


def wait_persisted(stack: StackThread, expected: float, timeout: float = 900) -> float:
    deadline = time.monotonic() + timeout
    while persisted(stack) < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"the service persisted {persisted(stack):.0f} of {expected:.0f}")
        time.sleep(0.01)
    return time.time()


def service_drain_rate(
    ctx, tmp: Path, url: str, port: int, secret: str, ids: list[str], per_unit: int, processes: int = 1
) -> float:
    settings = settings_for(
        tmp,
        database_url=url,
        broker_url=service_url(port),
        replica_id="bench-ingest",
        ingest_processes=processes,
        **UNLIMITED,
    )
    expected = per_unit * len(ids)
    with StackThread(settings) as stack:
        wait_link(stack)
        base = persisted(stack)
        stack.call(_stop_link(stack.ctx))
        pub, _, done = run_publishers(ctx, port, secret, ids, per_unit)
        done.wait(600)
        pub.join()
        t0 = time.time()
        stack.call(_start_link(stack.ctx))
        last = wait_persisted(stack, base + expected)
        return expected / (last - t0)


def service_live_rate(ctx, tmp: Path, url: str, secret: str, ids: list[str], per_unit: int) -> float:
    settings = settings_for(tmp, database_url=url, service_secret=SERVICE_SECRET, **UNLIMITED)
    expected = per_unit * len(ids)
    with StackThread(settings) as stack:
        wait_link(stack)
        base = persisted(stack)
        pub, started, _ = run_publishers(ctx, stack.mqtt_port, secret, ids, per_unit)
        last = wait_persisted(stack, base + expected)
        pub.join(600)
        return expected / (last - started.value)


def wait_link(stack: StackThread) -> None:
    deadline = time.monotonic() + 30
    while not stack.ctx.link.connected.is_set():
        if time.monotonic() > deadline:
            raise SystemExit("the service did not connect to the broker")
        time.sleep(0.05)


async def _stop_link(ctx) -> None:
    task = next(t for t in ctx.tasks if t.get_name() == "mqtt-link")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ctx.tasks.remove(task)


async def _start_link(ctx) -> None:
    ctx.tasks.append(asyncio.create_task(ctx.link.run(), name="mqtt-link"))


def embedded_bare_rate(ctx, tmp: Path, url: str, secret: str, ids: list[str], per_unit: int) -> float:
    """The embedded broker alone in this process (its own loop thread); subscriber and publishers elsewhere."""
    from broker import EmbeddedBroker, load_settings
    from broker.credentials import SqlCredentialStore

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    broker = EmbeddedBroker(
        load_settings(mqtt_host="127.0.0.1", mqtt_port=0, database_url=url), SqlCredentialStore(url, SERVICE_SECRET)
    )
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(30)
    try:
        return bare_rate(ctx, "paho", broker.port, secret, ids, per_unit, drain=False)
    finally:
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--units", type=int, default=50)
    parser.add_argument("--broker", choices=["mosquitto", "embedded", "both"], default="both")
    parser.add_argument(
        "--ingest-processes",
        default="1,2,3",
        help="FLEET_INGEST_PROCESSES values to measure on Mosquitto + PostgreSQL, comma-separated (default 1,2,3)",
    )
    parser.add_argument(
        "--database",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="database of the service on Mosquitto (embedded always uses SQLite)",
    )
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    ids = [f"ingest-{i:05d}" for i in range(1, args.units + 1)]
    per_unit = max(1, args.messages // args.units)
    total = per_unit * len(ids)
    print(
        f"ingest_throughput: {total} QoS 1 log batches (~{len(payload(ids[0], 1))} bytes) from {len(ids)} units; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    lines = []
    if args.broker in ("mosquitto", "both"):
        with workdir("fleet-ingest-mq-") as tmp, database(args.database, tmp) as url:
            secret = insert_units(url, ids)
            mosquitto = start_mosquitto(
                tmp, secret, ids, "max_queued_messages 1000000\nmax_inflight_messages 1000\nset_tcp_nodelay true\n"
            )
            try:
                paho_rate = bare_rate(ctx, "paho", mosquitto.port, secret, ids, per_unit, drain=True)
                print(f"  Mosquitto -> bare paho subscriber (drain): {paho_rate:,.0f} msg/s", flush=True)
                aio_rate = bare_rate(ctx, "aiomqtt", mosquitto.port, secret, ids, per_unit, drain=True)
                print(f"  Mosquitto -> bare aiomqtt subscriber (drain): {aio_rate:,.0f} msg/s", flush=True)
                counts = [int(n) for n in args.ingest_processes.split(",")] if args.database == "postgres" else [1]
                rates = {}
                for n in counts:
                    rates[n] = service_drain_rate(ctx, tmp, url, mosquitto.port, secret, ids, per_unit, n)
                    print(
                        f"  Mosquitto -> service ({n} ingest process{'es' if n > 1 else ''}), persisted in "
                        f"{args.database} (drain): {rates[n]:,.0f} msg/s",
                        flush=True,
                    )
            finally:
                mosquitto.stop()
        best = max(paho_rate, aio_rate)
        for n, svc_rate in rates.items():
            lines.append(
                f"Mosquitto, {n} ingest process{'es' if n > 1 else ''}: service {svc_rate:,.0f} msg/s = "
                f"{100 * svc_rate / paho_rate:.0f} % of bare paho ({paho_rate:,.0f}), "
                f"{100 * svc_rate / aio_rate:.0f} % of bare aiomqtt ({aio_rate:,.0f}); "
                f"target >= 50 % of the faster: {'met' if svc_rate >= 0.5 * best else 'MISSED'}"
            )
    if args.broker in ("embedded", "both"):
        with workdir("fleet-ingest-emb-") as tmp, database("sqlite", tmp) as url:
            secret = insert_units(url, ids)
            amqtt_rate = embedded_bare_rate(ctx, tmp, url, secret, ids, per_unit)
            print(f"  embedded broker -> bare paho subscriber (live): {amqtt_rate:,.0f} msg/s", flush=True)
            emb_rate = service_live_rate(ctx, tmp, url, secret, ids, per_unit)
            print(
                f"  embedded broker + service in one process, persisted in sqlite (live): {emb_rate:,.0f} msg/s",
                flush=True,
            )
        lines.append(
            f"Embedded: service {emb_rate:,.0f} msg/s = {100 * emb_rate / amqtt_rate:.0f} % of the broker's "
            f"own rate to a bare subscriber ({amqtt_rate:,.0f}); target >= 80 %: "
            f"{'met' if emb_rate >= 0.8 * amqtt_rate else 'MISSED'}"
        )
    print("\ningest_throughput results")
    for line in lines:
        print(f"  {line}")
    print(f"  (load average at the end {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
