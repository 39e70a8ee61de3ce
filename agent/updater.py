"""The `update` command: git fetch + checkout of a ref, post-update hook, restart, health check, rollback on failure.

Each update is recorded on disk (`update.json` in the state dir, see update_record.py) before anything moves and at
every phase. When the agent dies in the middle (killed in the hook, the health check, a power cut), the next start
checks out the previous commit again, runs the hook and the restart for it, and reports the command failed and
rolled back (`Updater.resume_interrupted`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.config import AgentSettings
from agent.errors import UpdateError
from agent.process import Outcome, run, run_command
from agent.update_record import DESCRIBED, FINAL, UpdateJournal, UpdateRecord
from protocol.ids import now_ms
from protocol.payloads import CommandResult, ResultStatus

if TYPE_CHECKING:
    import git

    from agent.commands import CommandLedger, CommandRunner

# GitPython (and urllib) are imported only when an update runs: they would add ~10 MB to an idle agent.

log = logging.getLogger(__name__)

RestartUnits = Callable[[list[str]], list[Outcome]]
Report = Callable[[CommandResult, Callable[[sqlite3.Connection], None]], None]

MAX_ROLLBACK_ATTEMPTS = 3  # rollbacks of an interrupted update tried, one per agent start, before giving up
# Ledger status of an interrupted update whose rollback is not reported yet: not a plain "interrupted" command.
RECOVERING = "recovering"
_UNREPORTED = ("accepted", "running", RECOVERING)


class _Birth(Protocol):
    def republish_birth(self) -> None: ...


class UpdateHost(Protocol):
    """What finishing an interrupted update needs from the agent (`runner.Agent`)."""

    settings: AgentSettings
    commands: CommandRunner
    software_version: str

    @property
    def connection(self) -> _Birth:  # read only: any link that can republish the birth message will do
        ...


def describe(repo_path: Path | None) -> str:
    """The software version of a checkout (`git describe --tags --always --dirty`), or "" when unknown."""
    if repo_path is None:
        return ""
    outcome = run(["git", "-C", str(repo_path), "describe", "--tags", "--always", "--dirty"], timeout=10)
    if not outcome.ok:
        log.debug("cannot describe %s: %s", repo_path, outcome.output.strip())
        return ""
    return outcome.output.strip()[:128]


def check_health(settings: AgentSettings, units: list[str], timeout: float) -> tuple[bool, str]:
    """Poll until every unit is active and the health URL answers 2xx, or the timeout passes."""
    deadline = time.monotonic() + timeout
    interval = min(1.0, max(0.05, timeout / 20))
    while True:
        problems = _health_problems(settings, units, max(1.0, deadline - time.monotonic()))
        if not problems:
            return True, "healthy"
        if time.monotonic() >= deadline:
            return False, "; ".join(problems)
        time.sleep(interval)


def _health_problems(settings: AgentSettings, units: list[str], timeout: float) -> list[str]:
    import urllib.error
    import urllib.request

    problems = []
    for unit in units:
        outcome = run_command(settings.check_command, min(timeout, 10.0), unit=unit)
        if not outcome.ok:
            problems.append(f"{unit} is {outcome.output.strip() or 'not active'}")
    if settings.health_url:
        try:
            with urllib.request.urlopen(settings.health_url, timeout=min(timeout, 10.0)) as resp:
                if not 200 <= resp.status < 300:
                    problems.append(f"{settings.health_url} answered {resp.status}")
        except urllib.error.HTTPError as exc:
            problems.append(f"{settings.health_url} answered {exc.code}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problems.append(f"{settings.health_url} unreachable: {getattr(exc, 'reason', exc)}")
    return problems


class Updater:
    """Runs one update against the configured checkout; raises UpdateError (saying where it rolled back)."""

    def __init__(self, settings: AgentSettings, restart_units: RestartUnits) -> None:
        self.settings = settings
        self.restart_units = restart_units
        self.journal = UpdateJournal(settings.state_dir / "update.json")
        self._running_command: Callable[[], str | None] = lambda: None  # see resume_interrupted

    def update(self, ref: str) -> str:
        import git

        s = self.settings
        if s.repo is None:
            raise UpdateError("no repo configured on this unit")
        steps: list[str] = []
        repo = self._open(s.repo)
        if repo.is_dirty(index=True, working_tree=True, untracked_files=False):
            raise UpdateError(f"{s.repo} has local changes; refusing to update (nothing was touched)")
        previous = repo.head.commit.hexsha
        branch = None if repo.head.is_detached else repo.active_branch.name
        record = UpdateRecord(ref=ref, previous=previous, branch=branch, cmd_id=self._running_command())
        self.journal.save(record)
        try:
            self._fetch(repo, steps)
            record.target = target = self._resolve(repo, ref)
        except Exception:
            self.journal.clear()  # nothing moved
            raise
        steps.append(f"at {previous[:12]}{f' ({branch})' if branch else ''}; {ref} is {target[:12]}")
        self.journal.enter(record, "checkout")  # durable before the checkout moves
        try:
            repo.git.checkout("--detach", target)
        except git.GitCommandError as exc:
            self.journal.clear()
            raise UpdateError(f"checkout of {ref} failed (nothing was touched): {_git_message(exc)}") from None
        steps.append(f"checked out {target[:12]}")
        reason = self._deploy(steps, record)
        if reason is None:
            self.journal.enter(record, "done")
            steps.append(f"updated {previous[:12]} -> {target[:12]} ({ref})")
            return "\n".join(steps)
        log.warning("update to %s failed (%s); rolling back to %s", ref, reason, previous[:12])
        steps.append(f"FAILED: {reason}; rolling back to {previous[:12]}")
        record.reason = reason
        self.journal.enter(record, "rollback")
        self._rollback(repo, previous, branch, steps)  # when its checkout fails, the next agent start tries again
        self.journal.enter(record, "rolled_back")
        raise UpdateError(
            "\n".join(steps) + f"\nupdate to {ref} failed: {reason}; rolled back to {previous}", rolled_back_to=previous
        )

    # Steps ----------------------------------------------------------------------------

    @staticmethod
    def _open(path: Path) -> git.Repo:
        import git

        try:
            return git.Repo(path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise UpdateError(f"{path} is not a git checkout") from None

    def _fetch(self, repo: git.Repo, steps: list[str]) -> None:
        import git

        if not repo.remotes:
            steps.append("no remote configured; using local refs")
            return
        repo.git.update_environment(GIT_TERMINAL_PROMPT="0")
        remote = "origin" if "origin" in [r.name for r in repo.remotes] else repo.remotes[0].name
        try:
            repo.git.fetch("--tags", "--prune", "--force", remote, kill_after_timeout=self.settings.command_timeout)
        except git.GitCommandError as exc:
            raise UpdateError(f"git fetch {remote} failed (nothing was touched): {_git_message(exc)}") from None
        steps.append(f"fetched {remote}")

    @staticmethod
    def _resolve(repo: git.Repo, ref: str) -> str:
        import git

        remotes = [r.name for r in repo.remotes]
        candidates = [f"refs/remotes/{r}/{ref}" for r in remotes] + [f"refs/tags/{ref}", ref]
        for name in candidates:
            try:
                return repo.git.rev_parse("--verify", "--quiet", f"{name}^{{commit}}")
            except git.GitCommandError:
                continue
        raise UpdateError(f"unknown ref {ref!r} (nothing was touched)")

    def _deploy(self, steps: list[str], record: UpdateRecord | None = None) -> str | None:
        """Hook, restart, health check (each phase recorded when updating); the reason of the first failure, or None."""
        s = self.settings

        def enter(phase: str) -> None:
            if record is not None:
                self.journal.enter(record, phase)

        if s.post_update_command:
            enter("hook")
            hook = run_command(s.post_update_command, s.command_timeout, cwd=s.repo)
            steps.append(hook.describe())
            if not hook.ok:
                return f"post-update hook exited {hook.exit_code}"
        enter("restart")
        for outcome in self.restart_units(s.restart_units):
            steps.append(outcome.describe())
            if not outcome.ok:
                return f"restart failed: {' '.join(outcome.argv)} exited {outcome.exit_code}"
        enter("health")
        healthy, detail = check_health(s, s.restart_units, s.health_timeout)
        steps.append(f"health check: {detail}")
        return None if healthy else f"health check failed: {detail}"

    def _rollback(self, repo: git.Repo, previous: str, branch: str | None, steps: list[str]) -> None:
        import git

        try:
            # Force: the hook may have changed tracked files; the previous commit is the known-good state.
            repo.git.checkout("--force", "--detach", previous)
            if branch and repo.heads[branch].commit.hexsha == previous:
                repo.git.checkout("--force", branch)
        except (git.GitCommandError, IndexError) as exc:
            steps.append(f"ROLLBACK CHECKOUT FAILED: {_git_message(exc)}")
            raise UpdateError("\n".join(steps), rolled_back_to=None) from None
        steps.append(f"checked out {previous[:12]}{f' ({branch})' if branch else ''}")
        reason = self._deploy(steps)
        steps.append("rollback healthy" if reason is None else f"rollback not healthy: {reason}")

    def _head(self) -> str:
        outcome = run(["git", "-C", str(self.settings.repo), "rev-parse", "HEAD"], timeout=10)
        return outcome.output.strip() if outcome.ok else "an unknown commit"

    # An update the agent died in ------------------------------------------------------

    def resume_interrupted(self, host: UpdateHost, report: Report) -> None:
        """At agent start, before the command worker starts: finish an update the previous agent died in.

        Returns at once: the rollback runs on the command worker, ahead of any new command. Until it is reported,
        the command's ledger entry is marked so that it is not also reported as a plain "interrupted" command.
        """
        ledger = host.commands.ledger
        self._running_command = lambda: _running_update(ledger)
        record = self.journal.load()
        if record is None:
            return
        status = _ledger_status(ledger, record.cmd_id)
        if record.phase in FINAL:  # it had finished; the agent may have died before reporting it
            if status in _UNREPORTED:
                if record.phase == "done":
                    text = (
                        f"updated {record.previous[:12]} -> {(record.target or '')[:12]} ({record.ref}); the "
                        "agent stopped before reporting it"
                    )
                    _report(ledger, report, record, "succeeded", 0, text)
                else:
                    _report(
                        ledger,
                        report,
                        record,
                        "failed",
                        1,
                        f"update to {record.ref} failed: {record.reason}; rolled back to {record.previous}",
                    )
            self.journal.clear()
            return
        if record.cmd_id is not None and status in _UNREPORTED:
            with ledger.store.transaction() as db:
                ledger.mark(db, record.cmd_id, RECOVERING)
        host.commands.enqueue(lambda: self._finish_interrupted(record, host, report))

    def _finish_interrupted(self, record: UpdateRecord, host: UpdateHost, report: Report) -> None:
        ledger = host.commands.ledger
        previous = record.previous
        target = f" ({record.target[:12]})" if record.target else ""
        record.interrupted_in = record.interrupted_in or record.phase
        if record.reason:  # it had failed and was rolling back (a rollback checkout that failed, or a crash in it)
            steps = [f"the update to {record.ref}{target} failed: {record.reason}"]
        else:
            steps = [
                f"interrupted: the agent stopped during the {DESCRIBED[record.interrupted_in]} of the update to "
                f"{record.ref}{target}"
            ]
        if record.attempts:
            steps.append(f"{record.attempts} earlier rollback attempt(s) did not finish")
        if record.phase == "fetch" and self._head() == previous:
            steps.append(f"the checkout had not moved: still on {previous}")
            log.warning("%s", "; ".join(steps))
            _report(ledger, report, record, "failed", 1, "\n".join(steps))
            self.journal.clear()
            return
        if record.attempts >= MAX_ROLLBACK_ATTEMPTS:
            self._give_up(record, steps, ledger, report)
            return
        record.attempts += 1
        self.journal.enter(record, "rollback")  # counted before it runs: a rollback that kills the agent counts
        log.warning(
            "%s; rolling back to %s (attempt %d of %d)",
            "; ".join(steps),
            previous[:12],
            record.attempts,
            MAX_ROLLBACK_ATTEMPTS,
        )
        try:
            if self.settings.repo is None:
                raise UpdateError("\n".join([*steps, "ROLLBACK FAILED: no repo is configured any more"]))
            self._rollback(self._open(self.settings.repo), previous, record.branch, steps)
        except Exception as exc:  # UpdateError says what failed; anything else is a bug, still reported
            if isinstance(exc, UpdateError):
                steps = str(exc).splitlines()
            else:
                log.exception("rollback of the interrupted update crashed")
                steps.append(f"ROLLBACK FAILED: internal error: {exc}")
            if record.attempts >= MAX_ROLLBACK_ATTEMPTS:
                self._give_up(record, steps, ledger, report)
                return
            steps.append(
                f"rollback to {previous} failed; still on {self._head()[:12]}; the next agent start tries "
                f"again (attempt {record.attempts} of {MAX_ROLLBACK_ATTEMPTS})"
            )
            log.error("%s", "\n".join(steps))
            _report(ledger, report, record, "failed", 1, "\n".join(steps))
            return
        finally:
            self._refresh_version(host)
        record.reason = record.reason or "interrupted"
        self.journal.enter(record, "rolled_back")
        steps.append(f"update to {record.ref} failed: {record.reason}; rolled back to {previous}")
        log.warning("%s", "\n".join(steps))
        _report(ledger, report, record, "failed", 1, "\n".join(steps))
        self.journal.clear()

    def _give_up(self, record: UpdateRecord, steps: list[str], ledger: CommandLedger, report: Report) -> None:
        steps.append(
            f"giving up after {record.attempts} attempts to roll back to {record.previous}: the unit stays "
            f"on {self._head()}; check the checkout {self.settings.repo} by hand"
        )
        log.error("%s", "\n".join(steps))
        _report(ledger, report, record, "failed", 1, "\n".join(steps))
        self.journal.clear()

    def _refresh_version(self, host: UpdateHost) -> None:
        version = self.settings.software_version or describe(self.settings.repo)
        if version != host.software_version:
            host.software_version = version
            host.connection.republish_birth()


def _running_update(ledger: CommandLedger) -> str | None:
    """The `update` command the worker is running (commands run one at a time), as the ledger says."""
    rows = ledger.store.query(
        "SELECT id FROM commands WHERE name = 'update' AND status = 'running' ORDER BY ts DESC LIMIT 1"
    )
    return rows[0][0] if rows else None


def _ledger_status(ledger: CommandLedger, cmd_id: str | None) -> str | None:
    rows = ledger.store.query("SELECT status FROM commands WHERE id = ?", (cmd_id,)) if cmd_id else []
    return rows[0][0] if rows else None


def _report(
    ledger: CommandLedger, report: Report, record: UpdateRecord, status: ResultStatus, exit_code: int, output: str
) -> None:
    """Report the command's final result once: not when it has no id or was already reported."""
    cmd_id = record.cmd_id
    if cmd_id is None or _ledger_status(ledger, cmd_id) not in _UNREPORTED:
        return
    result = CommandResult(id=cmd_id, status=status, exit_code=exit_code, output=output, ts=now_ms())
    report(result, lambda db: ledger.mark(db, cmd_id, status))
    log.info("command %s %s (exit %d)", cmd_id, status, exit_code)


def _git_message(exc: Exception) -> str:
    import git

    if isinstance(exc, git.GitCommandError):
        return (exc.stderr or str(exc)).strip().replace("stderr: ", "")[-500:]
    return str(exc)
