"""Messages per second through the embedded broker (amqtt + our fixes and plugins), QoS 0 and QoS 1.

A few unit publishers (paho, one thread each) send ~200-byte JSON payloads on their own `logs` topic;
one service-account subscriber receives everything on `fleet/+/logs`. The rate is messages received
by the subscriber per second, from the first publish to the last message received; the broker
thread's CPU time per message is printed too, as it does not depend on other load on the machine.

    python benchmarks/broker_throughput.py [--messages 20000] [--publishers 4] [--broker fleet|plain]

`--broker plain` runs plain amqtt 0.12.1 with the same plugins, to show what our fixes cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amqtt.broker import Broker  # noqa: E402

from broker import EmbeddedBroker, StaticCredentialStore, load_settings  # noqa: E402
from broker.server import amqtt_config, free_port  # noqa: E402
from protocol.ids import SERVICE_USERNAME  # noqa: E402
from protocol.secrets import hash_secret  # noqa: E402

SERVICE_SECRET = "benchmark-service-secret"


class BrokerThread:
    """The broker in its own event loop thread, as fleet_service would run it beside its other work."""

    def __init__(self, kind: str, store: StaticCredentialStore) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = load_settings(mqtt_host="127.0.0.1", mqtt_port=0)

        async def start() -> tuple[object, int]:
            if kind == "plain":
                port = free_port("127.0.0.1")
                plain = Broker(amqtt_config(settings, {"default": port}, store))
                await plain.start()
                return plain, port
            embedded = EmbeddedBroker(settings, store)
            await embedded.start()
            return embedded, embedded.port

        self.broker, self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the broker's event-loop thread (independent of other load on the machine)."""

        async def read() -> float:
            return time.thread_time()

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)

    def stop(self) -> None:
        stop = self.broker.shutdown() if isinstance(self.broker, Broker) else self.broker.stop()
        asyncio.run_coroutine_threadsafe(stop, self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def client(port: int, client_id: str, username: str, password: str, inflight: int = 100) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.username_pw_set(username, password)
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    if not connected.wait(10):
        raise SystemExit(f"{client_id} could not connect")
    return c


def run_round(port: int, qos: int, publishers: int, total: int, payload_bytes: int) -> tuple[float, int]:
    per_publisher = total // publishers
    expected = per_publisher * publishers
    received = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        nonlocal received
        with lock:
            received += 1
            if received >= expected:
                done.set()

    sub = client(port, f"svc-bench-{qos}", SERVICE_USERNAME, SERVICE_SECRET)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe("fleet/+/logs", qos=qos)
    subscribed.wait(10)
    pubs = [client(port, f"p{i}", f"p{i}", f"secret-p{i}") for i in range(publishers)]
    body = json.dumps({"v": 1, "records": [{"id": "x", "ts": 0, "level": "info", "msg": ""}]})
    pad = max(0, payload_bytes - len(body))
    payload = json.dumps({"v": 1, "records": [{"id": "x", "ts": 0, "level": "info", "msg": "m" * pad}]}).encode()

    def publish(index: int) -> None:
        topic = f"fleet/p{index}/logs"
        infos = [pubs[index].publish(topic, payload, qos=qos) for _ in range(per_publisher)]
        for info in infos[-1:] if qos == 0 else infos:
            info.wait_for_publish(120)

    start = time.perf_counter()
    threads = [threading.Thread(target=publish, args=(i,)) for i in range(publishers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.wait(max(30.0, total / 500))
    elapsed = time.perf_counter() - start
    for c in [*pubs, sub]:
        c.disconnect()
        c.loop_stop()
    return elapsed, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--broker", choices=("fleet", "plain"), default="fleet")
    args = parser.parse_args()

    units = {f"p{i}": hash_secret(f"secret-p{i}") for i in range(args.publishers)}
    broker = BrokerThread(args.broker, StaticCredentialStore(SERVICE_SECRET, units))
    try:
        print(
            f"broker={args.broker} publishers={args.publishers} messages={args.messages} "
            f"payload={args.payload_bytes} B, one subscriber"
        )
        for qos in (0, 1):
            cpu_before = broker.cpu_seconds()
            elapsed, received = run_round(broker.port, qos, args.publishers, args.messages, args.payload_bytes)
            cpu = broker.cpu_seconds() - cpu_before
            print(
                f"QoS {qos}: {received / elapsed:8.0f} msg/s  ({received}/{args.messages} received "
                f"in {elapsed:.2f} s; broker thread {cpu:.2f} CPU s = {1e6 * cpu / max(received, 1):.0f} us/msg, "
                f"{received / cpu if cpu else 0:.0f} msg per CPU second)"
            )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
