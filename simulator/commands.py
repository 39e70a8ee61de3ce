"""How a simulated unit answers commands and desired configs, the way the agent does: each command at most once,
one at a time, with accepted/running/final results; `update` can be told to fail, `reboot` really reconnects."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any

import aiomqtt

from protocol import ProtocolError
from protocol.ids import new_id, now_ms
from protocol.payloads import COMMAND_NAMES, Command, ConfigDesired, cap_output, decode, load_json
from protocol.topics import Kind
from simulator.shared import Shared, SimOptions
from simulator.vitals import Vitals

log = logging.getLogger(__name__)

_SEEN_MAX = 1000  # command ids a unit remembers (the service re-publishes only recent pending ones)


class CommandHandling:
    """The inbound half of `SimUnit`: commands and desired config. The unit supplies the state and the sending."""

    id: str
    state: str
    software_version: str
    boot_id: str
    vitals: Vitals
    desired: ConfigDesired | None
    applied_version: int | None
    connected: asyncio.Event
    _client: aiomqtt.Client | None
    _task: asyncio.Task | None
    _topics: dict[Kind, str]
    _rng: random.Random
    _booted: float
    _seq: int
    _seen: dict[str, None]
    _work: asyncio.Lock

    _opts: SimOptions
    _sim: Shared

    if TYPE_CHECKING:  # provided by SimUnit: the connection loop and the two ways of publishing

        async def _run(self) -> None: ...

        async def _go_offline(self, timeout: float) -> None: ...

        def _send(self, name: str, payload: bytes, retain: bool = False) -> None: ...

        def _spawn(self, coro) -> None: ...

        def _publish_fast(self, client: aiomqtt.Client, kind: Kind, payload: dict[str, Any]) -> None: ...

        def _heartbeat(self) -> dict[str, Any]: ...

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
        lines = [
            "git fetch origin: ok",
            f"checked out {ref} (was {old})",
            "post-update hook: ok",
            "restarted recorder.service",
        ]
        if self.id in self._opts.fail_update or self._rng.random() < self._opts.fail_rate:
            lines += [
                "health check failed: recorder.service is not active after 30 s",
                f"rolled back to {old}; restarted recorder.service: active",
            ]
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
        body = {
            "v": 1,
            "id": cmd_id,
            "status": status,
            "exit_code": exit_code,
            "output": cap_output(output),
            "ts": now_ms(),
        }
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
        report = {
            "v": 1,
            "version": version,
            "status": "failed" if error else "applied",
            "error": error,
            "config": config,
        }
        self._send(self._topics[Kind.CONFIG_REPORTED], json.dumps(report).encode(), retain=True)
        return error


def _valid_ref(ref: Any) -> bool:
    return isinstance(ref, str) and 0 < len(ref) <= 200 and not ref.startswith("-") and ".." not in ref
