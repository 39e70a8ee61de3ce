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
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from fleet_service.simulator_vitals import LogSource, Vitals
from protocol import ProtocolError
from protocol.ids import new_id, now_ms
from protocol.payloads import COMMAND_NAMES, Command, ConfigDesired, cap_output, decode, load_json
from protocol.topics import Kind, topic

log = logging.getLogger(__name__)

AGENT_VERSION = "sim-1"
_SEEN_MAX = 1000  # command ids a unit remembers (the service re-publishes only recent pending ones)
_OUTBOX_MAX = 1000  # reliable messages held while disconnected, oldest dropped
_BACKOFF_CAP_S = 30.0
_AUTH_RETRY_S = 120.0


@dataclass(frozen=True)
class SimOptions:
    """How the simulated units behave; intervals in seconds."""

    heartbeat_interval: float = 30.0
    metrics_interval: float = 10.0
    log_interval: float = 60.0  # mean time between log batches of one unit; 0 turns logs off
    keepalive: int = 60
    connect_rate: float = 100.0  # connection attempts per second across the whole simulation; 0 = no limit
    command_seconds: float = 1.0  # how long a command "runs"
    reboot_seconds: float = 3.0
    fail_update: frozenset[str] = frozenset()  # units whose `update` fails
    fail_rate: float = 0.0  # fraction of `update` commands that fail on any unit
    software_version: str = "1.0.0"
    seed: int | None = None


@dataclass
class SimStats:
    """Counters of the whole simulation."""

    connects: int = 0
    refused: int = 0
    connection_errors: int = 0
    published: int = 0
    duplicates: int = 0
    outbox_dropped: int = 0
    results: Counter = field(default_factory=Counter)  # final command statuses reported


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """mqtt[s]://host:port; any user:password in the URL is ignored (each unit uses its own)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls)


class Pacer:
    """Spaces connection attempts so thousands of units (or a reconnect wave) do not hit the broker at once."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class Shared:
    """What all units of one simulation share."""

    address: BrokerAddress
    options: SimOptions
    stats: SimStats = field(default_factory=SimStats)
    pacer: Pacer = field(init=False)

    def __post_init__(self) -> None:
        self.pacer = Pacer(self.options.connect_rate)


class SimUnit:
    """One simulated unit: its connection loop, its periodic reports, its command and config handling."""

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
                    ticker = asyncio.create_task(self._tick(client), name=f"sim-tick-{self.id}")
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
                        log.warning("unit %s refused by the broker (%s); retrying in %.0fs", self.id, exc,
                                    _AUTH_RETRY_S)
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
        birth = {"v": 1, "online": True, "ts": now_ms(), "session": self.session, "agent_version": AGENT_VERSION,
                 "software_version": self.software_version, "boot_id": self.boot_id}
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
        return {"v": 1, "ts": now_ms(), "seq": self._seq, "uptime_s": round(time.time() - self._booted, 1),
                "hostname": self.hostname, "ips": self.ips, "software_version": self.software_version,
                "agent_version": AGENT_VERSION}

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

    # Inbound: commands and desired config ---------------------------------------------------------------

    def _on_message(self, message: aiomqtt.Message) -> None:
        name = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        if name == self._topics[Kind.CMD]:
            self._on_command(payload)
        elif name == self._topics[Kind.CONFIG_DESIRED]:
            self._on_desired(payload)

    def _on_command(self, payload: bytes) -> None:
        try:
            cmd = decode(Kind.CMD, payload)
        except ProtocolError as exc:
            try:
                cmd_id = load_json(payload).get("id")
            except ProtocolError:
                cmd_id = None
            if isinstance(cmd_id, str) and 0 < len(cmd_id) <= 64 and self._claim(cmd_id):
                self._result(cmd_id, "rejected", None, f"malformed command: {exc}")
            return
        assert isinstance(cmd, Command)
        if not self._claim(cmd.id):
            self._sim.stats.duplicates += 1
            return
        if cmd.name not in COMMAND_NAMES:
            self._result(cmd.id, "rejected", None, f"unknown command {cmd.name!r}")
            return
        if cmd.expires_at is not None and cmd.expires_at <= now_ms():
            self._result(cmd.id, "expired", None, "command arrived after its expires_at")
            return
        if cmd.name == "update" and not _valid_ref(cmd.args.get("ref")):
            self._result(cmd.id, "rejected", None, "invalid arguments: update needs args.ref")
            return
        self._result(cmd.id, "accepted", None, "")
        self._spawn(self._execute(cmd))

    def _claim(self, cmd_id: str) -> bool:
        """Remember a command id; False when it was seen before (a command runs at most once)."""
        if cmd_id in self._seen:
            return False
        self._seen[cmd_id] = None
        if len(self._seen) > _SEEN_MAX:
            del self._seen[next(iter(self._seen))]
        return True

    async def _execute(self, cmd: Command) -> None:
        async with self._work:  # one command at a time, like the agent's worker
            if cmd.expires_at is not None and cmd.expires_at <= now_ms():
                self._result(cmd.id, "expired", None, "command expired while waiting for the one before it")
                return
            self._result(cmd.id, "running", None, "")
            if cmd.name == "reboot":
                await self._reboot(cmd)
                return
            await asyncio.sleep(self._opts.command_seconds * self._rng.uniform(0.5, 1.5))
            status, code, output = self._outcome(cmd)
            self._result(cmd.id, status, code, output)

    def _outcome(self, cmd: Command) -> tuple[str, int, str]:
        if cmd.name == "ping":
            return "succeeded", 0, "pong"
        if cmd.name == "restart":
            units = cmd.args.get("units") or list(self.vitals.services)
            self.vitals.restart(units)
            return "succeeded", 0, "\n".join(f"restarted {u}: active" for u in units)
        if cmd.name == "config_update":
            return self._config_command(cmd.args)
        ref = str(cmd.args["ref"])
        old = self.software_version
        lines = ["git fetch origin: ok", f"checked out {ref} (was {old})", "post-update hook: ok",
                 "restarted recorder.service"]
        if self.id in self._opts.fail_update or self._rng.random() < self._opts.fail_rate:
            lines += ["health check failed: recorder.service is not active after 30 s",
                      f"rolled back to {old}; restarted recorder.service: active"]
            return "failed", 1, "\n".join(lines)
        self.software_version = ref
        self._send_heartbeat_now()
        return "succeeded", 0, "\n".join([*lines, "health check: ok"])

    def _config_command(self, args: dict[str, Any]) -> tuple[str, int, str]:
        if isinstance(args.get("config"), dict):
            version = args.get("version", self.desired.version if self.desired else 0)
            config = args["config"]
        elif self.desired is not None:
            version, config = self.desired.version, self.desired.config
        else:
            return "failed", 1, "no desired config received yet and no args.config given"
        error = self._apply(version, config)
        return ("failed", 1, error) if error else ("succeeded", 0, f"applied config version {version}")

    async def _reboot(self, cmd: Command) -> None:
        """Go offline cleanly, come back with a new boot id, then report the reboot done (as the agent does)."""
        await self._go_offline(10.0)
        await asyncio.sleep(self._opts.reboot_seconds)
        if self.state != "running":
            return
        self.boot_id = new_id()
        self._booted = time.time()
        self._seq = 0
        self._result(cmd.id, "succeeded", 0, "the unit rebooted")  # held in the outbox until the birth
        self._task = asyncio.create_task(self._run(), name=f"sim-{self.id}")

    def _send_heartbeat_now(self) -> None:
        if self._client is not None and self.connected.is_set():
            self._publish_fast(self._client, Kind.HEARTBEAT, self._heartbeat())

    def _result(self, cmd_id: str, status: str, exit_code: int | None, output: str) -> None:
        body = {"v": 1, "id": cmd_id, "status": status, "exit_code": exit_code, "output": cap_output(output),
                "ts": now_ms()}
        if status in ("succeeded", "failed", "rejected", "expired"):
            self._sim.stats.results[status] += 1
        self._send(self._topics[Kind.CMD_RESULT], json.dumps(body).encode())

    def _on_desired(self, payload: bytes) -> None:
        try:
            desired = decode(Kind.CONFIG_DESIRED, payload)
        except ProtocolError as exc:
            log.debug("unit %s: ignoring a malformed desired config: %s", self.id, exc)
            return
        assert isinstance(desired, ConfigDesired)
        self.desired = desired
        if desired.version != self.applied_version:
            self._apply(desired.version, desired.config)

    def _apply(self, version: int, config: dict[str, Any]) -> str | None:
        """Apply a config and report it (retained); a config asking `simulate_failure` fails. Returns the error."""
        error = "the recorder refused this config (simulate_failure)" if config.get("simulate_failure") else None
        if error is None:
            self.applied_version = version
        report = {"v": 1, "version": version, "status": "failed" if error else "applied", "error": error,
                  "config": config}
        self._send(self._topics[Kind.CONFIG_REPORTED], json.dumps(report).encode(), retain=True)
        return error


_encoder = json.JSONEncoder(separators=(",", ":"))


def _compact(payload: dict[str, Any]) -> bytes:
    return _encoder.encode(payload).encode()


def _advance(due: float, interval: float, now: float) -> float:
    due += interval
    return due if due > now else now + interval  # after a stall, skip missed beats instead of bursting


def _valid_ref(ref: Any) -> bool:
    return isinstance(ref, str) and 0 < len(ref) <= 200 and not ref.startswith("-") and ".." not in ref
