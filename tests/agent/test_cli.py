"""`fleet agent` as a real process (SIGTERM -> clean offline, SIGKILL -> Will) and `fleet agent install` output."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_settings
from protocol.topics import Kind
from tests.agent.conftest import Service
from tests.support.services import mosquitto_passwd, require


def need_visudo() -> None:
    """The installer checks every sudoers rule with visudo and refuses to install without it."""
    require(
        bool(shutil.which("visudo") or Path("/usr/sbin/visudo").exists()),
        "visudo is not installed (apt install sudo): the installer refuses to write a sudoers rule without it",
    )


ROOT = Path(__file__).resolve().parents[2]


def fleet(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("FLEET_")}
    return subprocess.Popen(
        [sys.executable, "-m", "fleet_cli.main", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


@pytest.fixture
def secure_broker(mosquitto_factory, tmp_path):
    pw = tmp_path / "passwd"
    mosquitto_passwd(pw, {"unit-7": "s3cret-value", "svc": "svc-pass"})
    return mosquitto_factory(f"allow_anonymous true\npassword_file {pw}\n")


def _agent_process(broker, tmp_path: Path) -> subprocess.Popen:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "unit-7"\nstate_dir = "{tmp_path / "state"}"\nheartbeat_interval = 0.5\n')
    return fleet(
        "--log-level",
        "DEBUG",
        "agent",
        "--config",
        str(config),
        "--broker-url",
        broker.url,
        "--secret-file",
        str(secret),
        "--keepalive",
        "5",
    )


@pytest.mark.parametrize("sig, clean", [(signal.SIGTERM, True), (signal.SIGKILL, False)])
def test_the_agent_process_goes_offline_on_sigterm_and_by_will_on_sigkill(secure_broker, tmp_path, sig, clean):
    service = Service(secure_broker.port)
    proc = _agent_process(secure_broker, tmp_path)
    try:
        birth = service.wait("unit-7", Kind.STATE, lambda b: b["online"], timeout=20)[0]
        service.wait("unit-7", Kind.HEARTBEAT)
        proc.send_signal(sig)
        code = proc.wait(15)
        death = service.wait("unit-7", Kind.STATE, lambda b: not b["online"])[0]
        assert death["session"] == birth["session"]
        assert (death.get("ts") is not None) is clean  # a Will is written at connect time and has no ts
        output = proc.stdout.read()
        if clean:
            assert code == 0 and "stopping" in output
        assert "s3cret-value" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        service.close()


_SYS_TGKILL = {"x86_64": 234, "aarch64": 131, "armv7l": 268}


def _signal_thread(pid: int, tid: int, sig: int) -> None:
    """Deliver `sig` to one thread of another process (tgkill), as the kernel may pick any thread for kill()."""
    number = _SYS_TGKILL.get(platform.machine())
    require(number is not None, f"no tgkill syscall number known for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


def test_sigterm_stops_the_agent_whichever_thread_receives_it(secure_broker, tmp_path):
    """kill(pid, SIGTERM) may land on any thread that does not block it (e.g. when the main thread has a signal
    pending already); the agent must stop anyway, promptly."""
    service = Service(secure_broker.port)
    proc = _agent_process(secure_broker, tmp_path)
    try:
        service.wait("unit-7", Kind.STATE, lambda b: b["online"], timeout=20)
        service.wait("unit-7", Kind.HEARTBEAT)
        threads = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert threads, "the agent runs background threads"
        _signal_thread(proc.pid, threads[-1], signal.SIGTERM)
        assert proc.wait(10) == 0
        service.wait("unit-7", Kind.STATE, lambda b: not b["online"] and b.get("ts") is not None)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        service.close()


def test_bad_settings_exit_2_with_a_message(tmp_path):
    proc = fleet("agent", "--device-id", "Not Valid", "--secret", "hunter2")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "device_id" in out and "hunter2" not in out


def test_install_writes_config_secret_hardened_unit_and_a_narrow_sudoers_rule(tmp_path):
    need_visudo()
    proc = fleet(
        "agent",
        "install",
        "--root",
        str(tmp_path),
        "--device-id",
        "unit-7",
        "--secret",
        "s3cret-value",
        "--broker-url",
        "mqtts://fleet.example:8883",
        "--unit",
        "recorder.service",
        "--unit",
        "web.service",
        "--repo",
        "/opt/recorder",
        "--app-config-path",
        "/etc/recorder/config.json",
        "--heartbeat-interval",
        "20",
        "--exec",
        "/opt/fleet-agent/venv/bin/fleet agent",
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    etc = tmp_path / "etc"
    secret = etc / "fleet-agent" / "secret"
    assert secret.read_text() == "s3cret-value\n" and stat.S_IMODE(secret.stat().st_mode) == 0o400
    config = etc / "fleet-agent" / "agent.toml"
    assert "s3cret" not in config.read_text()
    settings = load_settings(config)
    assert settings.unit == ["recorder.service", "web.service"] and settings.heartbeat_interval == 20
    assert settings.restart_command.startswith("sudo -n /") and settings.state_dir == Path("/var/lib/fleet-agent")

    unit = (etc / "systemd" / "system" / "fleet-agent.service").read_text()
    for line in (
        "User=fleet-agent",
        "Restart=always",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/fleet-agent /opt/recorder /etc/recorder",
        "StateDirectory=fleet-agent",
        "LoadCredential=agent-secret:/etc/fleet-agent/secret",
        "ExecStart=/opt/fleet-agent/venv/bin/fleet agent --config /etc/fleet-agent/agent.toml",
    ):
        assert line in unit.splitlines(), line

    sudoers = etc / "sudoers.d" / "fleet-agent"
    assert stat.S_IMODE(sudoers.stat().st_mode) == 0o440
    rule = sudoers.read_text()
    systemctl = shutil.which("systemctl") or "/usr/bin/systemctl"
    for command in (f"{systemctl} restart recorder.service", f"{systemctl} restart web.service", f"{systemctl} reboot"):
        assert command in rule
    assert "ALL=(root) NOPASSWD:" in rule and rule.count(systemctl) == 3
    if shutil.which("visudo"):
        assert subprocess.run(["visudo", "-cq", "-f", str(sudoers)]).returncode == 0


def test_install_with_polkit_keeps_no_new_privileges(tmp_path):
    proc = fleet(
        "agent",
        "install",
        "--root",
        str(tmp_path),
        "--device-id",
        "unit-7",
        "--secret",
        "x",
        "--unit",
        "recorder.service",
        "--privilege",
        "polkit",
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    unit = (tmp_path / "etc/systemd/system/fleet-agent.service").read_text().splitlines()
    assert f"ExecStart={sys.executable} -m agent --config /etc/fleet-agent/agent.toml" in unit
    assert "NoNewPrivileges=yes" in unit and "CapabilityBoundingSet=" in unit
    rules = (tmp_path / "etc/polkit-1/rules.d/50-fleet-agent.rules").read_text()
    assert '["recorder.service"]' in rules and "restart" in rules
    assert not (tmp_path / "etc/sudoers.d").exists()
    assert load_settings(tmp_path / "etc/fleet-agent/agent.toml").restart_command == "systemctl restart {unit}"


def test_install_refuses_without_a_secret(tmp_path):
    proc = fleet("agent", "install", "--root", str(tmp_path), "--device-id", "unit-7")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "secret" in out and not (tmp_path / "etc").exists()


def test_install_lets_the_agent_write_its_turn_file(tmp_path):
    need_visudo()
    proc = fleet(
        "agent",
        "install",
        "--root",
        str(tmp_path),
        "--device-id",
        "unit-8",
        "--secret",
        "s3cret-value",
        "--broker-url",
        "mqtt://fleet.example:1883",
        "--api-url",
        "https://fleet.example",
        "--turn-file",
        "/run/recorder/turn.json",
        "--exec",
        "/usr/bin/fleet agent",
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    unit = (tmp_path / "etc" / "systemd" / "system" / "fleet-agent.service").read_text()
    assert "ReadWritePaths=/var/lib/fleet-agent /run/recorder" in unit.splitlines()
