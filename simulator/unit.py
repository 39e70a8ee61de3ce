"""One simulated unit: its own MQTT connection, birth and Will, periodic reports, commands and config.

Each unit connects with username = client id = its device id, publishes a retained birth with a fresh session
under a retained Will, sends heartbeats, metrics and now and then a few log lines, and answers commands and
desired configs the way the agent does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import ssl
import time
from collections import deque
from typing import Any

import aiomqtt

from protocol.ids import new_id, now_ms
from protocol.payloads import ConfigDesired
from protocol.topics import Kind, topic
from simulator.commands import CommandHandling
from simulator.shared import Shared
from simulator.vitals import LogSource, Vitals

log = logging.getLogger(__name__)

AGENT_VERSION = "sim-1"
_OUTBOX_MAX = 1000  # reliable messages held while disconnected, oldest dropped
_BACKOFF_CAP_S = 30.0
_AUTH_RETRY_S = 120.0


class SimUnit(CommandHandling):
    """One simulated unit: its connection loop and its periodic reports; commands and config (`CommandHandling`)."""

    def __init__(self, device_id: str, secret: str, sim: Shared, index: int) -> None:
        self.id = device_id
        self._secret = secret
        self._sim = sim
        self._opts = sim.options
        self._rng = random.Random(f"{sim.options.seed}-{device_id}" if sim.options.seed is not None else None)
        self._topics = {kind: topic(device_id, kind) for kind in Kind}
        self.software_version = self._opts.software_version
        self.boot_id = new_id()
        self._booted = time.time() - self._rng.uniform(600, 20 * 86400)
        self.hostname = f"r58-{device_id}"[:63]
        self.ips = [f"10.{64 + index // 65000 % 64}.{index // 250 % 250}.{index % 250 + 2}"]
        self.vitals = Vitals(self._rng)
        self._logs = LogSource(self._rng, new_id()[:12])
        self.session = ""
        self.connected = asyncio.Event()
        self.state = "idle"  # idle -> running -> stopped | killed
        self.applied_version: int | None = None
        self.desired: ConfigDesired | None = None
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task | None = None
        self._seq = 0
        self._seen: dict[str, None] = {}
        self._outbox: deque[tuple[str, bytes, bool]] = deque()
        self._work = asyncio.Lock()
        self._pending: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None  # heartbeats, metrics and logs of the current connection

    # Lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self.state = "running"
        self._task = asyncio.create_task(self._run(), name=f"sim-{self.id}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Clean stop: publish offline on the state topic, then DISCONNECT (no Will)."""
        if self.state != "running":
            return
        self.state = "stopped"
        await self._go_offline(timeout)
        await self._end_task()

    async def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a power cut does: the broker publishes the Will."""
        if self.state != "running":
            return
        self.state = "killed"
        for pending in list(self._pending):
            pending.cancel()
        client, task = self._client, self._task
        sock = client._client.socket() if client is not None else None  # aiomqtt keeps paho's socket private
        if isinstance(sock, socket.socket) and task is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            await asyncio.wait({task}, timeout=5)  # the loop sees the lost connection and ends by itself
        await self._end_task()

    async def _go_offline(self, timeout: float) -> None:
        """Publish offline for the current session, then leave the connection with DISCONNECT (no Will)."""
        client = self._client
        if self._ticker is not None:
            # Nothing after the last word: a heartbeat sent while the offline message waits for its PUBACK
            # would arrive after it, and the service takes a heartbeat from an offline unit as a sign of life.
            self._ticker.cancel()
        if client is not None and self.connected.is_set():
            death = json.dumps({"v": 1, "online": False, "session": self.session, "ts": now_ms()}).encode()
            try:
                await client.publish(self._topics[Kind.STATE], death, qos=1, retain=True, timeout=timeout)
            except (aiomqtt.MqttError, TimeoutError) as exc:
                log.debug("unit %s: offline message not acknowledged: %s", self.id, exc)
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()  # leaving `async with` on cancellation sends DISCONNECT
            await asyncio.gather(task, return_exceptions=True)
        self.connected.clear()

    async def _end_task(self) -> None:
        task, self._task = self._task, None
        for pending in list(self._pending):
            if pending is not asyncio.current_task():
                pending.cancel()
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.connected.clear()

    # Connection loop ----------------------------------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        address = self._sim.address
        death = json.dumps({"v": 1, "online": False, "session": self.session}).encode()
        return aiomqtt.Client(
            hostname=address.host,
            port=address.port,
            username=self.id,
            password=self._secret,
            identifier=self.id,
            clean_session=True,
            keepalive=self._opts.keepalive,
            timeout=15,
            will=aiomqtt.Will(self._topics[Kind.STATE], death, qos=1, retain=True),
            tls_context=ssl.create_default_context() if address.tls else None,
            max_queued_incoming_messages=1000,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],  # results go out at once, not Nagled
        )

    async def _run(self) -> None:
        attempt = 0
        stats = self._sim.stats
        while self.state == "running":
            await self._sim.pacer.wait()
            if self.state != "running":
                return
            self.session = new_id()
            started = time.monotonic()
            try:
                async with self._make_client() as client:
                    self._client = client
                    await self._on_connected(client)
                    ticker = self._ticker = asyncio.create_task(self._tick(client), name=f"sim-tick-{self.id}")
                    try:
                        async for message in client.messages:
                            self._on_message(message)
                    finally:
                        ticker.cancel()
                        self._client = None
                        self.connected.clear()
            except (aiomqtt.MqttError, OSError) as exc:
                self._client = None
                self.connected.clear()
                if self.state != "running":
                    return
                text = str(exc).lower()
                if "not authori" in text or "bad user" in text:
                    stats.refused += 1
                    if stats.refused == 1 or log.isEnabledFor(logging.DEBUG):
                        log.warning(
                            "unit %s refused by the broker (%s); retrying in %.0fs", self.id, exc, _AUTH_RETRY_S
                        )
                    await asyncio.sleep(_AUTH_RETRY_S * self._rng.uniform(0.8, 1.2))
                    continue
                stats.connection_errors += 1
                attempt = 1 if time.monotonic() - started > 30 else attempt + 1
                delay = min(_BACKOFF_CAP_S, 0.5 * 2 ** min(attempt, 8)) * self._rng.uniform(0.5, 1.0)
                log.debug("unit %s: connection lost (%s); reconnecting in %.1fs", self.id, exc, delay)
                await asyncio.sleep(delay)

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        # Subscribe before the birth: the service re-publishes pending commands when it sees the birth.
        await client.subscribe([(self._topics[Kind.CMD], 1), (self._topics[Kind.CONFIG_DESIRED], 1)])
        birth = {
            "v": 1,
            "online": True,
            "ts": now_ms(),
            "session": self.session,
            "agent_version": AGENT_VERSION,
            "software_version": self.software_version,
            "boot_id": self.boot_id,
        }
        await client.publish(self._topics[Kind.STATE], json.dumps(birth).encode(), qos=1, retain=True)
        self._sim.stats.connects += 1
        self.connected.set()
        while self._outbox:
            name, payload, retain = self._outbox.popleft()
            self._send(name, payload, retain)

    async def _tick(self, client: aiomqtt.Client) -> None:
        """Heartbeats, metrics and log batches, each at its own interval, phases spread across units."""
        loop = asyncio.get_running_loop()
        opts, rng = self._opts, self._rng
        now = loop.time()
        next_hb = now + rng.uniform(0.0, min(2.0, opts.heartbeat_interval))
        next_metrics = now + rng.uniform(0.0, opts.metrics_interval)
        next_log = now + rng.expovariate(1.0 / opts.log_interval) if opts.log_interval > 0 else float("inf")
        while True:
            await asyncio.sleep(max(0.0, min(next_hb, next_metrics, next_log) - loop.time()))
            now = loop.time()
            if now >= next_hb:
                self._publish_fast(client, Kind.HEARTBEAT, self._heartbeat())
                next_hb = _advance(next_hb, opts.heartbeat_interval, now)
            if now >= next_metrics:
                self._publish_fast(client, Kind.METRICS, self.vitals.sample(now_ms()))
                next_metrics = _advance(next_metrics, opts.metrics_interval, now)
            if now >= next_log:
                batch = {"v": 1, "records": self._logs.records(now_ms(), self.vitals)}
                self._send(self._topics[Kind.LOGS], json.dumps(batch).encode())
                next_log = now + rng.expovariate(1.0 / opts.log_interval)

    def _publish_fast(self, client: aiomqtt.Client, kind: Kind, payload: dict[str, Any]) -> None:
        """QoS 0, as the agent sends heartbeats and metrics: lost when the connection is down.

        Handed straight to paho: aiomqtt's publish() makes an Event, a pending-call entry and a wait_for task
        even for QoS 0, which at thousands of units costs more than the rest of the unit together.
        """
        info = client._client.publish(self._topics[kind], _compact(payload), qos=0)
        if info.rc == 0:
            self._sim.stats.published += 1

    def _heartbeat(self) -> dict[str, Any]:
        self._seq += 1
        return {
            "v": 1,
            "ts": now_ms(),
            "seq": self._seq,
            "uptime_s": round(time.time() - self._booted, 1),
            "hostname": self.hostname,
            "ips": self.ips,
            "software_version": self.software_version,
            "agent_version": AGENT_VERSION,
        }

    def _send(self, name: str, payload: bytes, retain: bool = False) -> None:
        """QoS 1 with an outbox: held while disconnected and sent on the next connect, as the agent does."""
        client = self._client
        if client is None or not self.connected.is_set():
            if len(self._outbox) >= _OUTBOX_MAX:
                self._outbox.popleft()
                self._sim.stats.outbox_dropped += 1
            self._outbox.append((name, payload, retain))
            return
        self._spawn(self._publish_reliable(client, name, payload, retain))

    async def _publish_reliable(self, client: aiomqtt.Client, name: str, payload: bytes, retain: bool) -> None:
        try:
            await client.publish(name, payload, qos=1, retain=retain, timeout=30)
            self._sim.stats.published += 1
        except (aiomqtt.MqttError, TimeoutError):
            self._outbox.append((name, payload, retain))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


_encoder = json.JSONEncoder(separators=(",", ":"))


def _compact(payload: dict[str, Any]) -> bytes:
    return _encoder.encode(payload).encode()


def _advance(due: float, interval: float, now: float) -> float:
    due += interval
    return due if due > now else now + interval  # after a stall, skip missed beats instead of bursting
