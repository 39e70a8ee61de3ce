"""`Agent`: wires the connection, outbox, telemetry, log followers and command worker together."""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import socket
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.commands import CommandLedger, CommandRunner, Done, check_ref
from agent.config import AgentSettings
from agent.config_apply import ConfigApplier
from agent.connection import Connection, Hooks
from agent.errors import CommandError
from agent.metrics import Probe, boot_id
from agent.outbox import Outbox
from agent.process import Outcome, run_command
from agent.sender import OutboxSender
from agent.store import Store
from agent.terminal import TerminalHost
from agent.updater import Updater, describe
from protocol.errors import ProtocolError
from protocol.ids import now_ms
from protocol.payloads import Birth, CommandResult, ConfigDesired, ConfigReported, decode, encode
from protocol.topics import Kind, parse, topic

if TYPE_CHECKING:
    from agent.logs_follow import FileFollower, JournalFollower, LogPump
    from agent.relay_bridge import RelayBridge
    from agent.turn_fetch import TurnFetcher

log = logging.getLogger(__name__)

__all__ = ["Agent"]


class Agent:
    """One unit's agent. `start()` runs it on background threads; `stop()` ends it (clean: offline published)."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.device_id = settings.device_id
        self.boot_id = boot_id()
        self.software_version = settings.software_version or describe(settings.repo)
        self.store = Store(settings.state_dir)
        self.outbox = Outbox(self.store, settings.outbox_max_bytes)
        self.turn: TurnFetcher | None = None
        if settings.api_url:  # imported only when this unit fetches TURN credentials for its recorder
            from agent.turn_fetch import TurnFetcher

            self.turn = TurnFetcher(settings)
        self.relay: RelayBridge | None = None
        if settings.relay_port:
            from agent.relay_bridge import RelayBridge

            self.relay = RelayBridge(settings.relay_port, self._publish_relay_up, self.turn, settings.relay_origin)
        self.terminal = TerminalHost(settings, self._publish_term)
        subscriptions = [self._topic(Kind.CMD), self._topic(Kind.CONFIG_DESIRED), self._topic(Kind.ACK)]
        if self.relay is not None:
            subscriptions.append(self._topic(Kind.RELAY_DOWN))
        subscriptions.append(self.terminal.filter)  # always: a refused shell is told why
        self.connection = Connection(
            settings,
            Hooks(
                birth=self._birth,
                on_connected=self._on_connected,
                on_disconnected=self.terminal.on_disconnected,
                on_message=self._on_message,
            ),
            subscriptions=subscriptions,
        )
        self.sender = OutboxSender(
            self.outbox, self.connection, self._topic(Kind.LOGS), settings.log_batch_records, settings.ack_timeout
        )
        self.probe = Probe(settings, lambda: (__version__, self.software_version))
        self.pump: LogPump | None = None
        self.journal: JournalFollower | None = None
        self.files: FileFollower | None = None
        if settings.log_unit or settings.log_file:  # imported only when there is something to follow
            from agent.logs_follow import FileFollower, JournalFollower, LogPump

            self.pump = LogPump(self.outbox, settings.log_batch_records, settings.log_batch_interval)
            if settings.log_unit:
                self.journal = JournalFollower(settings.journal_command, settings.log_unit, self.pump, self.outbox)
            if settings.log_file:
                self.files = FileFollower(settings.log_file, self.pump, self.outbox, settings.file_poll_interval)
        self.updater = Updater(settings, self.restart_units)
        self.configs = ConfigApplier(settings, self.store, self.restart_units, self._report_config)
        self.commands = CommandRunner(
            CommandLedger(self.store, self.boot_id),
            self._report_result,
            handlers={
                "ping": lambda _args: Done("pong"),
                "restart": self._restart,
                "reboot": self._reboot,
                "update": self._update,
                "config_update": lambda args: Done(self.configs.apply_command(args)),
            },
            validators={"update": check_ref, "restart": self._check_restart, "config_update": _check_config_args},
        )
        self._heartbeat_now = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    # Lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        log.info(
            "agent %s starting as %s -> %s (software %s)",
            __version__,
            self.device_id,
            self.settings.broker_url,
            self.software_version or "unknown",
        )
        self.updater.resume_interrupted(self, self._report_result)  # an update a crash cut short is rolled back
        self.commands.start()
        self.sender.start()
        for follower in (self.pump, self.journal, self.files):
            if follower is not None:
                follower.start()
        self._spawn(self._heartbeats, "agent-heartbeat")
        self._spawn(self._metrics, "agent-metrics")
        if self.turn is not None:
            self.turn.start()
        if self.relay is not None:
            self.relay.start()
        self.terminal.start()
        self.connection.start()

    def stop(self, clean: bool = True, timeout: float = 5.0) -> None:
        """Stop every thread; clean publishes offline for this session first, otherwise the Will fires."""
        if not self._started:
            self.store.close()
            return
        self._started = False
        self._stopping.set()
        self._heartbeat_now.set()
        for follower in (self.journal, self.files, self.pump):
            if follower is not None:
                follower.stop(timeout)
        self.commands.stop(timeout)
        self.terminal.stop(timeout)  # before the connection: the service hears why its sessions end
        if self.relay is not None:
            self.relay.stop(timeout)
        if self.turn is not None:
            self.turn.stop(timeout)
        self.connection.stop(clean=clean, timeout=timeout)
        self.sender.stop(timeout)
        for t in self._threads:
            t.join(timeout)
        self.store.close()
        log.info("agent stopped (%s)", "clean" if clean else "dropped")

    def run_forever(self) -> None:
        """CLI entry: run until SIGTERM or SIGINT, then stop cleanly."""
        done = threading.Event()

        def _signal(signum: int, _frame: Any) -> None:
            log.info("received signal %s; stopping", signum)
            done.set()

        # The kernel may hand the signal to any thread; Python runs the handler on the main thread only when that
        # thread wakes. A blocking Event.wait() may never wake, so the main thread sleeps on a socket that the C
        # signal handler writes to, whichever thread it ran on.
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        try:
            self.start()
            while not done.is_set():
                if select.select([wake_r], [], [], 3600)[0]:
                    with contextlib.suppress(BlockingIOError):
                        wake_r.recv(512)
        finally:
            signal.set_wakeup_fd(previous)
            wake_r.close()
            wake_w.close()
        self.stop(clean=True)

    @property
    def connected(self) -> bool:
        return self.connection.connected

    @property
    def session(self) -> str:
        return self.connection.session

    # Publishing -------------------------------------------------------------------------

    def _topic(self, kind: Kind) -> str:
        return topic(self.device_id, kind)

    def _birth(self, session: str) -> bytes:
        return encode(
            Birth(
                ts=now_ms(),
                session=session,
                agent_version=__version__,
                software_version=self.software_version[:128],
                boot_id=self.boot_id[:64],
            )
        )

    def _report_result(self, result: CommandResult, also: Callable[[sqlite3.Connection], None]) -> None:
        self.outbox.add_message(self._topic(Kind.CMD_RESULT), encode(result), also=also)

    def _report_config(self, report: ConfigReported) -> None:
        self.outbox.add_message(self._topic(Kind.CONFIG_REPORTED), encode(report), retain=True)

    def _publish_relay_up(self, data: bytes) -> bool:
        return self.connection.publish(self._topic(Kind.RELAY_UP), data, qos=1) is not None

    def _publish_term(self, name: str, data: bytes) -> bool:
        return self.connection.publish(name, data, qos=1) is not None

    def _on_connected(self, _session: str) -> None:
        self.sender.wake()
        self._heartbeat_now.set()

    def _on_message(self, name: str, payload: bytes) -> None:
        try:
            kind = parse(name).kind
        except ProtocolError:
            self.terminal.on_message(name, payload)  # a session's downlink, or nothing of ours
            return
        if kind is Kind.ACK:
            self.sender.on_ack(payload)
        elif kind is Kind.RELAY_DOWN:
            if self.relay is not None:
                self.relay.on_down(payload)
        elif kind is Kind.CMD:
            self.commands.submit(payload)
        elif kind is Kind.CONFIG_DESIRED:
            try:
                desired = decode(Kind.CONFIG_DESIRED, payload)
            except ProtocolError as exc:
                log.warning("ignoring an invalid desired config: %s", exc)
                return
            assert isinstance(desired, ConfigDesired)
            self.terminal.on_desired_config(desired.config)
            self.commands.enqueue(lambda: self.configs.on_desired(desired))

    # Periodic telemetry -----------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _heartbeats(self) -> None:
        seq = 0
        name = self._topic(Kind.HEARTBEAT)
        while not self._stopping.is_set():
            self._heartbeat_now.wait(self.settings.heartbeat_interval)
            self._heartbeat_now.clear()
            if self._stopping.is_set() or not self.connected:
                continue
            try:
                self.connection.publish(name, encode(self.probe.heartbeat(seq)), qos=0)
                seq += 1
            except Exception:
                log.exception("heartbeat failed")

    def _metrics(self) -> None:
        name = self._topic(Kind.METRICS)
        while not self._stopping.wait(self.settings.metrics_interval):
            if not self.connected:
                continue
            try:
                self.connection.publish(name, encode(self.probe.sample()), qos=0)
            except Exception:
                log.exception("metrics sample failed")

    # Command handlers (worker thread) ---------------------------------------------------

    def restart_units(self, units: list[str]) -> list[Outcome]:
        """Run the restart command for each unit, stopping at the first failure."""
        outcomes = []
        for unit in units:
            outcome = run_command(self.settings.restart_command, self.settings.command_timeout, unit=unit)
            outcomes.append(outcome)
            if not outcome.ok:
                break
        return outcomes

    def _check_restart(self, args: dict[str, Any]) -> None:
        unit = args.get("unit")
        if unit is not None and unit not in self.settings.unit:
            raise CommandError(f"{unit!r} is not one of the configured units")
        if not self.settings.unit:
            raise CommandError("no units are configured on this unit")

    def _restart(self, args: dict[str, Any]) -> Done:
        units = [args["unit"]] if args.get("unit") else self.settings.restart_units
        outcomes = self.restart_units(units)
        text = "\n".join(o.describe() for o in outcomes)
        failed = next((o for o in outcomes if not o.ok), None)
        if failed is not None:
            raise CommandError(text, exit_code=failed.exit_code)
        return Done(text)

    def _reboot(self, _args: dict[str, Any]) -> Done:
        outcome = run_command(self.settings.reboot_command, self.settings.command_timeout)
        if not outcome.ok:
            raise CommandError(outcome.describe(), exit_code=outcome.exit_code)
        return Done(outcome.describe())

    def _update(self, args: dict[str, Any]) -> Done:
        try:
            return Done(self.updater.update(args["ref"]))
        finally:
            # After success or rollback the checkout may differ: tell the service in a fresh birth.
            version = self.settings.software_version or describe(self.settings.repo)
            if version != self.software_version:
                self.software_version = version
                self.connection.republish_birth()


def _check_config_args(args: dict[str, Any]) -> None:
    if "config" in args and not isinstance(args["config"], dict):
        raise CommandError("args.config must be a JSON object")
    version = args.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
        raise CommandError("args.version must be a non-negative integer")
