"""Desired config: atomic write, dependent units restarted, retained report, no re-apply of a re-delivered version."""

from __future__ import annotations

import json
import os

import pytest

from agent.files import write_atomic
from protocol.topics import Kind
from tests.agent.conftest import Service, fast_settings, script
from tests.support.services import wait_for

RESTART = """
import sys
with open(sys.argv[1], "a") as fh:
    fh.write(sys.argv[2] + "\\n")
sys.exit(1 if sys.argv[2] == "broken.service" else 0)
"""


@pytest.fixture
def setup(tmp_path, broker):
    restarts = tmp_path / "restarts.log"
    app = tmp_path / "etc" / "recorder.json"
    settings = fast_settings(
        tmp_path, broker.url, unit=["rec.service", "web.service"], config_unit=["rec.service"], app_config_path=app,
        restart_command=script(tmp_path / "restart.py", RESTART) + f" {restarts} {{unit}}",
    )
    return settings, app, restarts


def test_desired_config_is_written_atomically_restarts_dependents_and_is_reported(broker, service, agents, setup):
    settings, app, restarts = setup
    agent = agents(settings)
    service.wait("unit-1", Kind.STATE)
    service.publish("unit-1", Kind.CONFIG_DESIRED, {"v": 1, "version": 3, "config": {"fps": 30}}, retain=True)
    report = service.wait("unit-1", Kind.CONFIG_REPORTED)[0]
    assert report.pop("ack_id").startswith("M")  # kept in the outbox until the service acknowledges it
    assert report == {"v": 1, "version": 3, "status": "applied", "error": None, "config": {"fps": 30}}
    assert json.loads(app.read_text()) == {"fps": 30}
    assert restarts.read_text().split() == ["rec.service"]
    assert not [p for p in app.parent.iterdir() if p.name != app.name]  # no temp file left behind

    # The report is retained for a service that subscribes later.
    late = Service(broker.port)
    try:
        retained = wait_for(lambda: [m for m in late.messages if m[0] == "fleet/unit-1/config/reported"],
                            what="retained report")
        assert retained[0][2] is True and retained[0][1]["version"] == 3
    finally:
        late.close()

    # A restart re-delivers the retained desired config: it must not be applied (or restart units) again.
    agent.stop()
    agents(settings)
    service.wait("unit-1", Kind.STATE, lambda b: b["online"], count=2)
    ping = service.command("unit-1", "ping")
    service.wait_final("unit-1", ping)
    assert restarts.read_text().split() == ["rec.service"]
    assert len(service.of("unit-1", Kind.CONFIG_REPORTED)) == 1

    # config_update forces the apply now, with the config from its args.
    cmd = service.command("unit-1", "config_update", {"version": 4, "config": {"fps": 25}})
    assert service.wait_final("unit-1", cmd)["status"] == "succeeded"
    assert json.loads(app.read_text()) == {"fps": 25}
    assert service.wait("unit-1", Kind.CONFIG_REPORTED, lambda b: b["version"] == 4)[0]["status"] == "applied"


def test_a_failed_restart_restores_the_previous_file_and_reports_failed(broker, service, agents, setup, tmp_path):
    settings, app, restarts = setup
    settings = settings.model_copy(update={"config_unit": ["broken.service"]})
    app.parent.mkdir(parents=True)
    app.write_text('{"fps": 60}\n')
    agents(settings)
    service.wait("unit-1", Kind.STATE)
    service.publish("unit-1", Kind.CONFIG_DESIRED, {"v": 1, "version": 7, "config": {"fps": 1}})
    report = service.wait("unit-1", Kind.CONFIG_REPORTED)[0]
    assert report["status"] == "failed" and report["version"] == 7 and "restart failed" in report["error"]
    assert app.read_text() == '{"fps": 60}\n'
    assert restarts.read_text().split() == ["broken.service", "broken.service"]


def test_invalid_desired_configs_are_reported_failed(broker, service, agents, tmp_path):
    agents(fast_settings(tmp_path, broker.url))  # no app_config_path on this unit
    service.wait("unit-1", Kind.STATE)
    service.publish("unit-1", Kind.CONFIG_DESIRED, {"v": 1, "version": 1, "config": {"a": 1}})
    report = service.wait("unit-1", Kind.CONFIG_REPORTED)[0]
    assert report["status"] == "failed" and "app_config_path" in report["error"]
    cmd = service.command("unit-1", "config_update", {"config": [1, 2]})
    assert service.wait_final("unit-1", cmd)["status"] == "rejected"


def test_write_atomic_keeps_mode_and_replaces_in_one_step(tmp_path):
    target = tmp_path / "app.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    inode = target.stat().st_ino
    write_atomic(target, b"new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o640
    assert target.stat().st_ino != inode  # renamed over, never written in place
    assert [p.name for p in tmp_path.iterdir()] == ["app.json"]
