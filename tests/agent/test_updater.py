"""`update` with real git repositories: a bare origin and the unit's clone; rollback verified on disk."""

from __future__ import annotations

import http.server
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
from tests.agent.conftest import fast_settings, script

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
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "init.defaultBranch=main",
         *args], cwd=cwd, check=True, capture_output=True, text=True,
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
    failing = script(tmp_path / "failing_hook.py", HOOK + "import sys\nsys.exit(0 if 'v1' in open('app.txt').read() "
                                                          "else 4)\n") + f" {repos.hook_log}"
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
