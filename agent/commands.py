"""Commands from `fleet/{id}/cmd`: validate, remember ids on disk, report accepted -> running -> result."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.errors import CommandError
from agent.store import Store
from protocol.errors import ProtocolError
from protocol.ids import now_ms
from protocol.payloads import COMMAND_NAMES, Command, CommandResult, ResultStatus, decode, load_json
from protocol.refs import is_git_ref
from protocol.topics import Kind

log = logging.getLogger(__name__)

_REMEMBER = 5000  # command ids kept on disk; far more than the service ever re-publishes


@dataclass(frozen=True)
class Done:
    """What a command handler returns when it finished; raise CommandError to fail."""

    output: str = ""
    exit_code: int = 0


Handler = Callable[[dict[str, Any]], Done]
Validator = Callable[[dict[str, Any]], None]


class CommandLedger:
    """Command ids seen by this unit, with their last status: a command is never run twice."""

    def __init__(self, store: Store, boot_id: str) -> None:
        self.store = store
        self.boot_id = boot_id

    def claim(self, cmd_id: str, name: str) -> bool:
        """Remember a new id (True), or say it was seen before (False)."""
        with self.store.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO commands (id, name, status, boot_id, ts) VALUES (?, ?, 'accepted', ?, ?)",
                (cmd_id, name, self.boot_id, now_ms()),
            )
            if cur.rowcount:
                db.execute(
                    "DELETE FROM commands WHERE id IN (SELECT id FROM commands ORDER BY ts DESC LIMIT -1 OFFSET ?)",
                    (_REMEMBER,),
                )
            return bool(cur.rowcount)

    @staticmethod
    def mark(db: sqlite3.Connection, cmd_id: str, status: str) -> None:
        db.execute("UPDATE commands SET status = ? WHERE id = ?", (status, cmd_id))

    def unfinished(self) -> list[tuple[str, str, str]]:
        """(id, name, boot_id) of commands a previous agent accepted but never finished."""
        return [
            tuple(r)
            for r in self.store.query(
                "SELECT id, name, boot_id FROM commands WHERE status IN ('accepted', 'running') ORDER BY ts"
            )
        ]


class CommandRunner:
    """Intake thread answers at once (rejected/expired/accepted); a worker runs accepted jobs one at a time."""

    def __init__(
        self,
        ledger: CommandLedger,
        report: Callable[[CommandResult, Callable[[sqlite3.Connection], None]], None],
        handlers: dict[str, Handler],
        validators: dict[str, Validator] | None = None,
    ) -> None:
        self.ledger = ledger
        self.report = report
        self.handlers = handlers
        self.validators = validators or {}
        self._inbox: queue.Queue[bytes | None] = queue.Queue(maxsize=1000)
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._recover()
        for target, name in ((self._intake, "agent-cmd-intake"), (self._work, "agent-cmd-worker")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._inbox.put(None)
        self._jobs.put(None)
        for t in self._threads:
            t.join(timeout)

    def submit(self, payload: bytes) -> None:
        """Network thread: hand over the raw payload and return."""
        try:
            self._inbox.put_nowait(payload)
        except queue.Full:
            log.warning("command inbox full; dropping a command (the service re-sends pending ones on birth)")

    def enqueue(self, job: Callable[[], None]) -> None:
        """Run other work (a desired config) on the command worker, never beside a running command."""
        self._jobs.put(job)

    # Threads --------------------------------------------------------------------------

    def _recover(self) -> None:
        for cmd_id, name, boot in self.ledger.unfinished():
            if name == "reboot" and boot != self.ledger.boot_id:
                self._result(cmd_id, "succeeded", 0, "the unit rebooted")
            else:
                self._result(cmd_id, "failed", None, "interrupted: the agent stopped while the command ran")

    def _intake(self) -> None:
        while (payload := self._inbox.get()) is not None:
            try:
                self._accept(payload)
            except Exception:
                log.exception("command intake failed")

    def _accept(self, payload: bytes) -> None:
        try:
            cmd = decode(Kind.CMD, payload)
        except ProtocolError as exc:
            self._reject_malformed(payload, exc)
            return
        assert isinstance(cmd, Command)
        if cmd.name not in COMMAND_NAMES or cmd.name not in self.handlers:
            if self.ledger.claim(cmd.id, cmd.name):
                self._result(cmd.id, "rejected", None, f"unknown command {cmd.name!r}")
            return
        if not self.ledger.claim(cmd.id, cmd.name):
            log.info("command %s (%s) seen before; not running it again", cmd.id, cmd.name)
            return
        if _expired(cmd):
            self._result(cmd.id, "expired", None, "command arrived after its expires_at")
            return
        try:
            self.validators.get(cmd.name, _no_check)(cmd.args)
        except CommandError as exc:
            self._result(cmd.id, "rejected", None, f"invalid arguments: {exc}")
            return
        self._result(cmd.id, "accepted", None, "")
        self._jobs.put(lambda: self._execute(cmd))

    def _reject_malformed(self, payload: bytes, exc: ProtocolError) -> None:
        try:
            obj = load_json(payload)
        except ProtocolError:
            obj = {}
        cmd_id = obj.get("id")
        if isinstance(cmd_id, str) and 0 < len(cmd_id) <= 64 and self.ledger.claim(cmd_id, str(obj.get("name"))[:64]):
            self._result(cmd_id, "rejected", None, f"malformed command: {exc}")
        else:
            log.warning("dropping a malformed command without a usable id: %s", exc)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("command worker job failed")

    def _execute(self, cmd: Command) -> None:
        if _expired(cmd):
            self._result(cmd.id, "expired", None, "command expired while waiting for the one before it")
            return
        self._result(cmd.id, "running", None, "")
        log.info("running command %s (%s)", cmd.id, cmd.name)
        try:
            done = self.handlers[cmd.name](cmd.args)
        except CommandError as exc:
            self._result(cmd.id, "failed", exc.exit_code, str(exc))
        except Exception as exc:  # a bug in a handler still ends with a report
            log.exception("command %s crashed", cmd.id)
            self._result(cmd.id, "failed", 1, f"internal error: {exc}")
        else:
            status: ResultStatus = "succeeded" if done.exit_code == 0 else "failed"
            self._result(cmd.id, status, done.exit_code, done.output)

    def _result(self, cmd_id: str, status: ResultStatus, exit_code: int | None, output: str) -> None:
        result = CommandResult(id=cmd_id, status=status, exit_code=exit_code, output=output, ts=now_ms())
        # The result and the ledger's status are written in one transaction: no lost or contradicting result.
        self.report(result, lambda db: self.ledger.mark(db, cmd_id, status))
        log.info("command %s %s%s", cmd_id, status, f" (exit {exit_code})" if exit_code is not None else "")


def _expired(cmd: Command) -> bool:
    return cmd.expires_at is not None and cmd.expires_at <= now_ms()


def _no_check(_args: dict[str, Any]) -> None:
    return None


def check_ref(args: dict[str, Any]) -> None:
    ref = args.get("ref")
    if not is_git_ref(ref):
        raise CommandError("update needs args.ref: a branch, tag or commit name")
