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
        tmp_path,
        broker.url,
        unit=["rec.service", "web.service"],
        config_unit=["rec.service"],
        app_config_path=app,
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
        retained = wait_for(
            lambda: [m for m in late.messages if m[0] == "fleet/unit-1/config/reported"], what="retained report"
        )
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


@pytest.fixture
def umask():
    """Set the process umask for one test (as the agent's unit does with UMask=), restored afterwards."""
    previous: list[int] = []

    def set_umask(value: int) -> None:
        old = os.umask(value)
        previous[:] = previous or [old]

    yield set_umask
    if previous:
        os.umask(previous[0])


def test_the_app_config_is_created_with_the_units_umask_not_0644(broker, service, agents, setup, umask):
    settings, app, _ = setup
    umask(0o027)  # the installed unit's UMask=
    agents(settings)
    service.wait("unit-1", Kind.STATE)
    service.publish("unit-1", Kind.CONFIG_DESIRED, {"v": 1, "version": 1, "config": {"fps": 30}})
    assert service.wait("unit-1", Kind.CONFIG_REPORTED)[0]["status"] == "applied"
    assert json.loads(app.read_text()) == {"fps": 30}
    assert os.stat(app).st_mode & 0o777 == 0o640


@pytest.mark.parametrize(
    "mask, existing, expected",
    [
        (0o027, None, 0o640),  # new file: 0666 less the umask
        (0o077, None, 0o600),
        (0o027, 0o644, 0o640),  # a file an earlier version left world-readable is narrowed by the umask...
        (0o022, 0o600, 0o600),  # ...and one the operator made narrower is never widened
        (0o022, 0o664, 0o644),
    ],
)
def test_write_atomic_without_a_mode_follows_the_umask(tmp_path, umask, mask, existing, expected):
    target = tmp_path / "app.json"
    if existing is not None:
        target.write_text("old")
        os.chmod(target, existing)
    umask(mask)
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == expected
    assert [p.name for p in tmp_path.iterdir()] == ["app.json"]


def test_write_atomic_with_a_mode_sets_exactly_that_mode_whatever_the_umask(tmp_path, umask):
    umask(0o077)
    write_atomic(tmp_path / "turn.json", b"{}", 0o640)  # e.g. the TURN file the recorder's group reads
    assert (tmp_path / "turn.json").stat().st_mode & 0o777 == 0o640


def test_write_atomic_leaves_the_file_alone_when_the_check_fails(tmp_path):
    target = tmp_path / "rule"
    target.write_text("old")

    def refuse(tmp):
        assert tmp.read_bytes() == b"new" and tmp.parent == tmp_path
        raise ValueError("no")

    with pytest.raises(ValueError):
        write_atomic(target, b"new", 0o440, check=refuse)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["rule"]
