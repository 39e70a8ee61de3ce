"""Commands end to end through Mosquitto: statuses, real restart subprocesses, unknown, expired, duplicate ids."""

from __future__ import annotations

import time

from protocol.ids import now_ms
from protocol.topics import Kind
from tests.agent.conftest import fast_settings, script

RECORDER = """
import sys, time, pathlib
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "a") as fh:
    fh.write(sys.argv[3] + "\\n")
print("restarted", sys.argv[3])
"""


def _restart_settings(tmp_path, broker, delay: float = 0.0, **kw):
    log = tmp_path / "restarts.log"
    cmd = script(tmp_path / "restart.py", RECORDER) + f" {log} {delay} {{unit}}"
    kw.setdefault("unit", ["rec.service", "web.service"])
    return log, fast_settings(tmp_path, broker.url, restart_command=cmd, **kw)


def statuses(service, cmd_id):
    return [r["status"] for r in service.results("unit-1", cmd_id)]


def test_restart_reports_accepted_running_succeeded_with_output(broker, service, agents, tmp_path):
    log, settings = _restart_settings(tmp_path, broker)
    agents(settings)
    service.wait("unit-1", Kind.STATE)
    cmd = service.command("unit-1", "restart")
    final = service.wait_final("unit-1", cmd)
    assert final["status"] == "succeeded" and final["exit_code"] == 0
    assert "restarted rec.service" in final["output"] and "restarted web.service" in final["output"]
    assert statuses(service, cmd) == ["accepted", "running", "succeeded"]
    assert log.read_text().split() == ["rec.service", "web.service"]

    one = service.command("unit-1", "restart", {"unit": "web.service"})
    assert service.wait_final("unit-1", one)["status"] == "succeeded"
    assert log.read_text().split()[-1] == "web.service"


def test_failing_restart_reports_exit_code_and_bad_args_are_rejected(broker, service, agents, tmp_path):
    agents(
        fast_settings(
            tmp_path,
            broker.url,
            unit=["rec.service"],
            restart_command=script(tmp_path / "fail.py", "import sys\nprint('boom')\nsys.exit(3)\n") + " {unit}",
        )
    )
    service.wait("unit-1", Kind.STATE)
    cmd = service.command("unit-1", "restart")
    final = service.wait_final("unit-1", cmd)
    assert final["status"] == "failed" and final["exit_code"] == 3 and "boom" in final["output"]

    other = service.command("unit-1", "restart", {"unit": "sshd.service"})
    rejected = service.wait_final("unit-1", other)
    assert rejected["status"] == "rejected" and "not one of the configured units" in rejected["output"]
    bad_ref = service.command("unit-1", "update", {"ref": "--upload-pack=evil"})
    assert service.wait_final("unit-1", bad_ref)["status"] == "rejected"


def test_unknown_expired_and_malformed_commands_are_not_run(broker, service, agents, tmp_path):
    log, settings = _restart_settings(tmp_path, broker)
    agents(settings)
    service.wait("unit-1", Kind.STATE)
    unknown = service.command("unit-1", "rm -rf /")
    expired = service.command("unit-1", "restart", expires_at=now_ms() - 1000)
    service.publish("unit-1", Kind.CMD, {"v": 1, "id": "broken-1", "name": "ping"})  # no ts
    assert service.wait_final("unit-1", unknown)["status"] == "rejected"
    assert service.wait_final("unit-1", expired)["status"] == "expired"
    malformed = service.wait_final("unit-1", "broken-1")
    assert malformed["status"] == "rejected" and "ts" in malformed["output"]
    ping = service.command("unit-1", "ping", expires_at=now_ms() + 60_000)
    assert service.wait_final("unit-1", ping)["output"] == "pong"
    assert statuses(service, unknown) == ["rejected"] and statuses(service, expired) == ["expired"]
    assert not log.exists()


def test_a_command_id_runs_once_even_across_agent_restarts(broker, service, agents, tmp_path):
    log, settings = _restart_settings(tmp_path, broker)
    agent = agents(settings)
    service.wait("unit-1", Kind.STATE)
    cmd = service.command("unit-1", "restart", {"unit": "rec.service"})
    service.wait_final("unit-1", cmd)
    service.command("unit-1", "restart", {"unit": "rec.service"}, cmd_id=cmd)  # redelivery
    agent.stop()
    agents(settings)  # a new process with the same state dir
    service.wait("unit-1", Kind.STATE, lambda b: b["online"], count=2)
    service.command("unit-1", "restart", {"unit": "rec.service"}, cmd_id=cmd)
    ping = service.command("unit-1", "ping")
    service.wait_final("unit-1", ping)  # processed after the duplicate
    time.sleep(0.3)
    assert log.read_text().split() == ["rec.service"]
    assert statuses(service, cmd) == ["accepted", "running", "succeeded"]


def test_a_long_command_does_not_block_heartbeats_and_the_next_waits_its_turn(broker, service, agents, tmp_path):
    log, settings = _restart_settings(tmp_path, broker, delay=2.0, unit=["rec.service"])
    agents(settings)
    service.wait("unit-1", Kind.STATE)
    slow = service.command("unit-1", "restart")
    service.wait("unit-1", Kind.CMD_RESULT, lambda b: b["id"] == slow and b["status"] == "running")
    before = len(service.of("unit-1", Kind.HEARTBEAT))
    ping = service.command("unit-1", "ping")
    service.wait("unit-1", Kind.CMD_RESULT, lambda b: b["id"] == ping and b["status"] == "accepted")
    time.sleep(1.2)
    assert len(service.of("unit-1", Kind.HEARTBEAT)) >= before + 2
    assert statuses(service, slow) == ["accepted", "running"]  # still running while heartbeats flow
    service.wait_final("unit-1", slow)
    service.wait_final("unit-1", ping)
    order = [(r["id"], r["status"]) for r in service.of("unit-1", Kind.CMD_RESULT)]
    assert order.index((slow, "succeeded")) < order.index((ping, "running"))


def test_reboot_runs_the_configured_command(broker, service, agents, tmp_path):
    marker = tmp_path / "rebooted"
    agents(
        fast_settings(
            tmp_path,
            broker.url,
            reboot_command=script(tmp_path / "reboot.py", f"open({str(marker)!r}, 'w').write('x')\n"),
        )
    )
    service.wait("unit-1", Kind.STATE)
    assert service.wait_final("unit-1", service.command("unit-1", "reboot"))["status"] == "succeeded"
    assert marker.exists()
