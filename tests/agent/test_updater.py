"""`update` with real git repositories: a bare origin and the unit's clone; rollback verified on disk."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import UpdateError
from agent.process import run_command
from agent.updater import Updater, describe
from protocol.topics import Kind
from tests.agent.conftest import Service, fast_settings, script
from tests.support.agent_process import PYTHON_M_AGENT, AgentProcesses
from tests.support.services import wait_for

CHECK = """
import sys, pathlib
sys.exit(0 if (pathlib.Path(sys.argv[1]) / "healthy").read_text().strip() == "ok" else 1)
"""
HOOK = """
import sys, pathlib
with open(sys.argv[1], "a") as fh:
    fh.write(pathlib.Path("app.txt").read_text().strip() + "\\n")
"""
RESTART = """
import sys
with open(sys.argv[1], "a") as fh:
    fh.write(sys.argv[2] + "\\n")
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        [
            "git",
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit(work: Path, app: str, healthy: str, message: str) -> str:
    (work / "app.txt").write_text(app + "\n")
    (work / "healthy").write_text(healthy + "\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD")


@dataclass
class Repos:
    origin: Path
    unit: Path
    v1: str
    v2: str
    bad: str
    hook_log: Path
    restart_log: Path
    settings_kw: dict

    def hook_runs(self) -> list[str]:
        return self.hook_log.read_text().split() if self.hook_log.exists() else []

    def restarts(self) -> list[str]:
        return self.restart_log.read_text().split() if self.restart_log.exists() else []

    def head(self) -> str:
        return git(self.unit, "rev-parse", "HEAD")


@pytest.fixture
def repos(tmp_path) -> Repos:
    origin, dev, unit = tmp_path / "origin.git", tmp_path / "dev", tmp_path / "unit"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(tmp_path, "init", "-q", str(dev))
    v1 = commit(dev, "v1", "ok", "v1")
    git(dev, "remote", "add", "origin", str(origin))
    git(dev, "push", "-q", "origin", "main")
    git(tmp_path, "clone", "-q", str(origin), str(unit))
    v2 = commit(dev, "v2", "ok", "v2")
    git(dev, "tag", "v2")
    git(dev, "checkout", "-q", "-b", "bad")
    bad = commit(dev, "bad", "broken", "a release that fails its health check")
    git(dev, "push", "-q", "origin", "main", "bad", "v2")
    hook_log, restart_log = tmp_path / "hook.log", tmp_path / "restart.log"
    kw = {
        "repo": unit,
        "unit": ["rec.service"],
        "check_command": script(tmp_path / "check.py", CHECK) + f" {unit} {{unit}}",
        "post_update_command": script(tmp_path / "hook.py", HOOK) + f" {hook_log}",
        "restart_command": script(tmp_path / "restart.py", RESTART) + f" {restart_log} {{unit}}",
        "health_timeout": 1.0,
    }
    return Repos(origin, unit, v1, v2, bad, hook_log, restart_log, kw)


def _updater(tmp_path: Path, repos: Repos, **kw) -> Updater:
    settings = fast_settings(tmp_path, "mqtt://127.0.0.1:1", **{**repos.settings_kw, **kw})

    def restart(units: list[str]):
        return [run_command(settings.restart_command, 10, unit=u) for u in units]

    return Updater(settings, restart)


def test_update_to_a_tag_over_mqtt_checks_out_runs_hook_restarts_and_reports(broker, service, agents, tmp_path, repos):
    agent = agents(fast_settings(tmp_path, broker.url, **repos.settings_kw))
    first = service.wait("unit-1", Kind.STATE, lambda b: b["online"])[0]
    assert first["software_version"] == repos.v1[:7]
    cmd = service.command("unit-1", "update", {"ref": "v2"})
    final = service.wait_final("unit-1", cmd)
    assert final["status"] == "succeeded", final["output"]
    assert repos.head() == repos.v2
    assert repos.hook_runs() == ["v2"] and repos.restarts() == ["rec.service"]
    assert f"updated {repos.v1[:12]} -> {repos.v2[:12]}" in final["output"]
    reborn = service.wait("unit-1", Kind.STATE, lambda b: b.get("software_version") == "v2")[0]
    assert reborn["session"] == agent.session


def test_a_failed_health_check_rolls_back_to_the_previous_commit(broker, service, agents, tmp_path, repos):
    agents(fast_settings(tmp_path, broker.url, **repos.settings_kw))
    service.wait("unit-1", Kind.STATE)
    cmd = service.command("unit-1", "update", {"ref": "bad"})
    final = service.wait_final("unit-1", cmd)
    assert final["status"] == "failed" and final["exit_code"] == 1
    assert "health check failed" in final["output"] and f"rolled back to {repos.v1}" in final["output"]
    assert repos.head() == repos.v1
    assert git(repos.unit, "rev-parse", "--abbrev-ref", "HEAD") == "main"  # back on the branch it was on
    assert repos.hook_runs() == ["bad", "v1"]  # the hook ran again for the rollback
    assert repos.restarts() == ["rec.service", "rec.service"]
    assert (repos.unit / "app.txt").read_text() == "v1\n"


def test_update_to_a_branch_and_a_commit(tmp_path, repos):
    updater = _updater(tmp_path, repos)
    assert "updated" in updater.update("main")
    assert repos.head() == repos.v2
    updater.update(repos.v1)
    assert repos.head() == repos.v1
    assert describe(repos.unit) == repos.v1[:7]


def test_a_dirty_tree_fails_without_touching_anything(tmp_path, repos):
    (repos.unit / "app.txt").write_text("hand edit\n")
    with pytest.raises(UpdateError, match="local changes") as err:
        _updater(tmp_path, repos).update("v2")
    assert err.value.rolled_back_to is None
    assert repos.head() == repos.v1 and (repos.unit / "app.txt").read_text() == "hand edit\n"
    assert repos.hook_runs() == [] and repos.restarts() == []


def test_an_unknown_ref_fails_without_touching_anything(tmp_path, repos):
    with pytest.raises(UpdateError, match="unknown ref 'v9'"):
        _updater(tmp_path, repos).update("v9")
    assert repos.head() == repos.v1 and repos.hook_runs() == [] and repos.restarts() == []


def test_a_failing_hook_rolls_back(tmp_path, repos):
    failing = (
        script(
            tmp_path / "failing_hook.py", HOOK + "import sys\nsys.exit(0 if 'v1' in open('app.txt').read() else 4)\n"
        )
        + f" {repos.hook_log}"
    )
    with pytest.raises(UpdateError, match="post-update hook exited 4") as err:
        _updater(tmp_path, repos, post_update_command=failing).update("v2")
    assert err.value.rolled_back_to == repos.v1 and repos.head() == repos.v1
    assert repos.hook_runs() == ["v2", "v1"]


@pytest.fixture
def health_server() -> Iterator[dict]:
    state = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(state["code"])
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/health"
    yield state
    server.shutdown()
    server.server_close()


def test_the_health_url_decides_too(tmp_path, repos, health_server):
    updater = _updater(tmp_path, repos, health_url=health_server["url"])
    assert "health check: healthy" in updater.update("v2")
    health_server["code"] = 503
    with pytest.raises(UpdateError, match="answered 503") as err:
        updater.update("main")
    assert err.value.rolled_back_to == repos.v2 and repos.head() == repos.v2


# An update interrupted by a crash: real agent processes, SIGKILLed in the middle, started again. ----------------

# Both block (and say so in `marker`, with their pid) only while the checkout holds v2, i.e. during the update.
BLOCKING_HOOK = """
import os, pathlib, sys, time
with open(sys.argv[1], "a") as fh:
    fh.write(pathlib.Path("app.txt").read_text().strip() + "\\n")
if pathlib.Path("app.txt").read_text().strip() == "v2":
    pathlib.Path(sys.argv[2]).write_text(str(os.getpid()))
    time.sleep(60)
"""
BLOCKING_CHECK = """
import os, pathlib, sys, time
unit = pathlib.Path(sys.argv[1])
if (unit / "app.txt").read_text().strip() == "v2":
    pathlib.Path(sys.argv[2]).write_text(str(os.getpid()))
    time.sleep(60)
sys.exit(0 if (unit / "healthy").read_text().strip() == "ok" else 1)
"""
FINAL = {"succeeded", "failed", "rejected", "expired"}


@dataclass
class Crashable:
    """`python -m agent` processes for unit-1 on `repos`, whose hook or health check blocks while on v2."""

    phase: str  # "fetch", "hook" or "health": where the update blocks; "none": nothing blocks
    procs: AgentProcesses
    port: int
    repos: Repos
    options: list[str]
    marker: Path
    service: Service
    session: str = ""

    def start(self) -> subprocess.Popen:
        """Start an agent and wait for its birth (sent after it subscribed); `session` is that birth's."""
        seen = {b["session"] for b in self.service.of("unit-1", Kind.STATE)}
        proc = self.procs.start(self.port, "unit-1", "secret", *self.options, entry=PYTHON_M_AGENT)
        birth = self.service.wait("unit-1", Kind.STATE, lambda b: b["online"] and b["session"] not in seen, timeout=20)[
            0
        ]
        assert proc.poll() is None
        self.session = birth["session"]
        return proc

    def interrupt_update(self) -> str:
        """Start an agent, update to v2, SIGKILL it while the hook or health check blocks; the command's id."""
        proc = self.start()
        cmd = self.service.command("unit-1", "update", {"ref": "v2"})
        pid = int(
            wait_for(
                lambda: self.marker.exists() and self.marker.read_text().strip(),
                timeout=30,
                what=f"the {self.phase} blocking",
            )
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _kill_group(pid)  # the hook or check too, as systemd does when the agent's unit dies
        if self.phase != "fetch":
            assert self.repos.head() == self.repos.v2  # the crash left the unit on the new commit
        assert self.finals(cmd) == []
        return cmd

    def barrier(self) -> None:
        """Wait until the command worker ran everything queued before a ping (commands run one at a time)."""
        ping = self.service.command("unit-1", "ping")
        assert self.service.wait_final("unit-1", ping, timeout=60)["status"] == "succeeded"

    def stop(self, proc: subprocess.Popen) -> None:
        proc.terminate()
        assert proc.wait(15) == 0

    def finals(self, cmd: str) -> list[dict]:
        return [r for r in self.service.results("unit-1", cmd) if r["status"] in FINAL]

    def log(self) -> str:
        return (self.procs.workdir / "unit-1.log").read_text()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # hooks and checks run with start_new_session: the pid is the group
    except ProcessLookupError:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(params=["hook", "health"])
def crashable(request, broker, service, tmp_path, repos) -> Iterator[Crashable]:
    marker = tmp_path / "blocked"
    kw = dict(repos.settings_kw)
    if request.param == "hook":
        kw["post_update_command"] = script(tmp_path / "hook2.py", BLOCKING_HOOK) + f" {repos.hook_log} {marker}"
    elif request.param == "health":
        kw["check_command"] = script(tmp_path / "check2.py", BLOCKING_CHECK) + f" {repos.unit} {marker} {{unit}}"
    elif request.param == "fetch":  # the fetch runs this in place of git-upload-pack: it hangs
        hanging = tmp_path / "upload-pack.sh"
        hanging.write_text(f"#!/bin/sh\necho $$ > {marker}\nexec sleep 60\n")
        hanging.chmod(0o755)
        git(repos.unit, "config", "remote.origin.uploadpack", str(hanging))
    options = [
        "--repo",
        str(kw["repo"]),
        "--unit",
        "rec.service",
        "--check-command",
        kw["check_command"],
        "--post-update-command",
        kw["post_update_command"],
        "--restart-command",
        kw["restart_command"],
        "--health-timeout",
        "5",
        "--command-timeout",
        "120",
        "--metrics-interval",
        "3600",
        "--heartbeat-interval",
        "1",
        "--keepalive",
        "5",
        "--relay-port",
        "0",
        "--reconnect-min-delay",
        "0.1",
    ]
    procs = AgentProcesses(tmp_path)
    yield Crashable(request.param, procs, broker.port, repos, options, marker, service)
    procs.stop_all()
    if marker.exists() and marker.read_text().strip():
        _kill_group(int(marker.read_text()))


def test_an_update_interrupted_by_a_crash_is_rolled_back_at_the_next_start(crashable):
    repos = crashable.repos
    cmd = crashable.interrupt_update()

    crashable.start()
    final = crashable.service.wait_final("unit-1", cmd, timeout=60)
    assert final["status"] == "failed", final
    out = final["output"]
    assert f"during the {'post-update hook' if crashable.phase == 'hook' else 'health check'}" in out, out
    assert f"update to v2 failed: interrupted; rolled back to {repos.v1}" in out, out
    assert repos.head() == repos.v1
    assert git(repos.unit, "rev-parse", "--abbrev-ref", "HEAD") == "main"  # back on the branch it was on
    assert (repos.unit / "app.txt").read_text() == "v1\n"
    assert repos.hook_runs() == ["v2", "v1"]  # the hook ran again for the rollback
    # The update's own restart had run before a kill in the health check, not before one in the hook.
    assert repos.restarts() == ["rec.service"] * (1 if crashable.phase == "hook" else 2)
    # The new process's birth says v1 again (it started on v2).
    crashable.service.wait(
        "unit-1",
        Kind.STATE,
        lambda b: b["session"] == crashable.session and b["online"] and b["software_version"] == repos.v1[:7],
    )
    crashable.barrier()
    assert crashable.finals(cmd) == [final]  # reported once: not also as a plain "interrupted"


def test_after_the_rollback_another_start_changes_nothing(crashable):
    repos = crashable.repos
    cmd = crashable.interrupt_update()
    proc = crashable.start()
    crashable.service.wait_final("unit-1", cmd, timeout=60)
    crashable.barrier()
    crashable.stop(proc)
    crashable.start()
    crashable.barrier()
    assert repos.head() == repos.v1 and repos.hook_runs() == ["v2", "v1"]
    assert len(crashable.finals(cmd)) == 1


@pytest.mark.parametrize("crashable", ["hook"], indirect=True)
def test_a_failed_rollback_is_reported_and_tried_again_at_the_next_start(crashable):
    repos = crashable.repos
    cmd = crashable.interrupt_update()
    lock = repos.unit / ".git" / "index.lock"  # as if another git process held the index: the checkout fails
    lock.write_text("")
    proc = crashable.start()
    final = crashable.service.wait_final("unit-1", cmd, timeout=60)
    out = final["output"]
    assert final["status"] == "failed"
    assert "ROLLBACK CHECKOUT FAILED" in out and "index.lock" in out, out
    assert f"still on {repos.v2[:12]}" in out and "the next agent start tries again (attempt 1 of 3)" in out, out
    assert repos.head() == repos.v2 and repos.hook_runs() == ["v2"]

    crashable.barrier()
    crashable.stop(proc)
    lock.unlink()
    crashable.start()
    crashable.barrier()
    assert repos.head() == repos.v1 and repos.hook_runs() == ["v2", "v1"]
    assert crashable.finals(cmd) == [final]  # the service keeps the first final result: no second one is sent
    assert f"rolled back to {repos.v1}" in crashable.log()


@pytest.mark.parametrize("crashable", ["hook"], indirect=True)
def test_rollback_attempts_are_bounded_then_the_agent_gives_up_loudly(crashable):
    repos = crashable.repos
    cmd = crashable.interrupt_update()
    lock = repos.unit / ".git" / "index.lock"
    lock.write_text("")
    for _ in range(3):
        proc = crashable.start()
        crashable.barrier()
        crashable.stop(proc)
    assert len(crashable.finals(cmd)) == 1
    assert "ERROR" in crashable.log() and "giving up after 3 attempts" in crashable.log()
    lock.unlink()
    crashable.start()
    crashable.barrier()
    assert repos.head() == repos.v2 and repos.hook_runs() == ["v2"]  # given up: no fourth attempt


@pytest.mark.parametrize("crashable", ["fetch"], indirect=True)
def test_an_update_interrupted_in_the_fetch_moved_nothing_and_is_reported_so(crashable):
    repos = crashable.repos
    cmd = crashable.interrupt_update()
    git(repos.unit, "config", "--unset", "remote.origin.uploadpack")
    crashable.start()
    final = crashable.service.wait_final("unit-1", cmd, timeout=60)
    assert final["status"] == "failed"
    assert "during the git fetch" in final["output"] and f"still on {repos.v1}" in final["output"], final["output"]
    crashable.barrier()
    assert repos.head() == repos.v1 and repos.hook_runs() == [] and repos.restarts() == []


@pytest.mark.parametrize("crashable", ["none"], indirect=True)
def test_a_completed_update_is_not_rolled_back_after_a_crash(crashable):
    repos = crashable.repos
    proc = crashable.start()
    cmd = crashable.service.command("unit-1", "update", {"ref": "v2"})
    assert crashable.service.wait_final("unit-1", cmd, timeout=60)["status"] == "succeeded"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    crashable.start()
    crashable.barrier()
    assert repos.head() == repos.v2 and repos.hook_runs() == ["v2"] and repos.restarts() == ["rec.service"]
