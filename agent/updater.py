"""The `update` command: git fetch + checkout of a ref, post-update hook, restart, health check, rollback on failure."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import AgentSettings
from agent.errors import UpdateError
from agent.process import Outcome, run, run_command

if TYPE_CHECKING:
    import git

# GitPython (and urllib) are imported only when an update runs: they would add ~10 MB to an idle agent.

log = logging.getLogger(__name__)

RestartUnits = Callable[[list[str]], list[Outcome]]


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
        self._fetch(repo, steps)
        target = self._resolve(repo, ref)
        steps.append(f"at {previous[:12]}{f' ({branch})' if branch else ''}; {ref} is {target[:12]}")
        try:
            repo.git.checkout("--detach", target)
        except git.GitCommandError as exc:
            raise UpdateError(f"checkout of {ref} failed (nothing was touched): {_git_message(exc)}") from None
        steps.append(f"checked out {target[:12]}")
        reason = self._deploy(steps)
        if reason is None:
            steps.append(f"updated {previous[:12]} -> {target[:12]} ({ref})")
            return "\n".join(steps)
        log.warning("update to %s failed (%s); rolling back to %s", ref, reason, previous[:12])
        steps.append(f"FAILED: {reason}; rolling back to {previous[:12]}")
        self._rollback(repo, previous, branch, steps)
        raise UpdateError("\n".join(steps) + f"\nupdate to {ref} failed: {reason}; rolled back to {previous}",
                          rolled_back_to=previous)

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

    def _deploy(self, steps: list[str]) -> str | None:
        """Hook, restart, health check; the reason of the first failure, or None."""
        s = self.settings
        if s.post_update_command:
            hook = run_command(s.post_update_command, s.command_timeout, cwd=s.repo)
            steps.append(hook.describe())
            if not hook.ok:
                return f"post-update hook exited {hook.exit_code}"
        for outcome in self.restart_units(s.restart_units):
            steps.append(outcome.describe())
            if not outcome.ok:
                return f"restart failed: {' '.join(outcome.argv)} exited {outcome.exit_code}"
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


def _git_message(exc: Exception) -> str:
    import git

    if isinstance(exc, git.GitCommandError):
        return (exc.stderr or str(exc)).strip().replace("stderr: ", "")[-500:]
    return str(exc)
