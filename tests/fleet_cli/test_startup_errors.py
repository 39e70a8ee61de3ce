"""Start-up failures as a new user meets them: the real `fleet` console script, one or two lines, no traceback.

Each case runs the installed script next to this interpreter and checks the exit code (2: a bad option or setting,
1: the environment), that stderr is short and holds no traceback, and that it names the problem and the fix.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleet_cli import main as cli_main
from tests.support.services import free_port, wait_for

FLEET = Path(sys.executable).with_name("fleet")
# A port nothing listens on; connections to it are refused at once.
CLOSED = "127.0.0.1:1"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["FLEET_MQTT_HOST"] = "127.0.0.1"  # never listen on every interface from a test
    env.update(extra)
    return env


def fleet(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    assert FLEET.exists(), f"the console script {FLEET} is not installed (pip install -e .)"
    return subprocess.run([str(FLEET), *args], capture_output=True, text=True, timeout=60, env=_env(**env), cwd=cwd)


def up(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`fleet up` on loopback with a data directory in tmp_path; later options win."""
    return fleet(tmp_path, "up", "--host", "127.0.0.1", "--data-dir", str(tmp_path / "data"), *args, **env)


def agent(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`fleet agent` for unit venue-1 with a state directory in tmp_path and no relay port; later options win."""
    common = ["--device-id", "venue-1", "--broker-url", f"mqtt://{CLOSED}", "--relay-port", "0"]
    return fleet(tmp_path, "agent", *common, "--state-dir", str(tmp_path / "state"), *args)


def assert_startup_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit `code`, at most three lines on stderr (the last one the error), no traceback; return stderr."""
    err = proc.stderr.strip()
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = err.splitlines()
    assert 1 <= len(lines) <= 3, f"{len(lines)} lines on stderr:\n{err}"
    assert "error:" in lines[-1], err
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    return err


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_fleet_up_with_the_mqtt_port_taken_says_so_and_how_to_get_a_free_one(tmp_path, taken_port):
    proc = up(tmp_path, "--http-port", "0", "--mqtt-port", str(taken_port))
    err = assert_startup_error(proc, 1, f"MQTT port {taken_port} is in use", "--mqtt-port 0")
    assert err.startswith("fleet: error: "), err
    assert proc.stdout == ""


def test_a_failed_first_start_does_not_use_up_the_admin_token(tmp_path, taken_port):
    assert_startup_error(up(tmp_path, "--http-port", "0", "--mqtt-port", str(taken_port)), 1, "--mqtt-port 0")

    argv = [str(FLEET), "up", "--host", "127.0.0.1", "--data-dir", str(tmp_path / "data"), "--http-port", "0"]
    proc = subprocess.Popen(
        [*argv, "--mqtt-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("fleet: ready"):
                break
        assert "admin API token" in "".join(lines), "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_fleet_up_with_the_http_port_taken(tmp_path, taken_port):
    proc = up(tmp_path, "--http-port", str(taken_port), "--mqtt-port", "0")
    assert_startup_error(proc, 1, f"HTTP port {taken_port} is in use", "--http-port 0")


@pytest.mark.parametrize("where", ["under-a-file", "a-file"])
def test_fleet_up_with_an_unusable_data_dir(tmp_path, where):
    # A regular file in the path stops root as well as anyone else (chmod would not stop root).
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    data_dir = blocker / "sub" if where == "under-a-file" else blocker
    proc = up(tmp_path, "--http-port", "0", "--mqtt-port", "0", "--data-dir", str(data_dir))
    assert_startup_error(proc, 1, f"data directory {data_dir}", "--data-dir")


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (["--http-port", "abc"], {}, ["--http-port", "invalid int value", "fleet up --help"]),
        ([], {"FLEET_HTTP_PORT": "-5"}, ["--http-port", "FLEET_HTTP_PORT", "greater than or equal to 0"]),
        ([], {"FLEET_MQTT_PORT": "70000"}, ["--mqtt-port", "FLEET_MQTT_PORT", "less than or equal to 65535"]),
        ([], {"FLEET_TURN_PROVIDER": "twilio"}, ["FLEET_TURN_PROVIDER", "'hmac' or 'cloudflare'"]),
        ([], {"FLEET_TURN_URLS": "http://turn.example"}, ["FLEET_TURN_URLS", "not an ICE URL"]),
        ([], {"FLEET_LOG_LEVEL": "verbose"}, ["--log-level", "FLEET_LOG_LEVEL", "not a level"]),
    ],
)
def test_fleet_up_with_a_bad_setting_exits_2(tmp_path, args, env, needles):
    assert_startup_error(up(tmp_path, *args, **env), 2, *needles)
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_fleet_service_with_an_unreachable_database_fails_at_once(tmp_path):
    proc = fleet(
        tmp_path,
        "service",
        "--http-port",
        "0",
        "--broker-url",
        f"mqtt://{CLOSED}",
        "--database-url",
        f"postgresql://fleet:hunter2@{CLOSED}/fleet",
    )
    err = assert_startup_error(proc, 1, "cannot connect to the database", CLOSED, "--database-url")
    assert "hunter2" not in err


@pytest.mark.parametrize("url", ["http://_fleet_service:hunter2@host:1883", "mqtt://_fleet_service:hunter2@host:x"])
def test_fleet_service_with_a_malformed_broker_url_exits_2(tmp_path, url):
    proc = fleet(tmp_path, "service", "--http-port", "0", "--broker-url", url, "--data-dir", str(tmp_path / "d"))
    err = assert_startup_error(proc, 2, "--broker-url", "FLEET_BROKER_URL")
    assert "hunter2" not in err


def test_fleet_service_without_a_broker_url_points_to_fleet_up(tmp_path):
    proc = fleet(tmp_path, "service", "--http-port", "0", "--data-dir", str(tmp_path / "d"))
    assert_startup_error(proc, 2, "--broker-url", "fleet up")


def test_fleet_service_keeps_retrying_an_unreachable_broker_and_says_so(tmp_path):
    """Documented choice: a broker down at start is not fatal (replicas must survive broker restarts), but the
    operator is told at once which broker is unreachable and what to check."""
    port = free_port()
    err_file = tmp_path / "stderr"
    argv = [
        str(FLEET),
        "service",
        "--host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--data-dir",
        str(tmp_path / "d"),
        "--broker-url",
        f"mqtt://_fleet_service:hunter2@{CLOSED}",
    ]
    with err_file.open("w") as err_out:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err_out, text=True, env=_env(), cwd=tmp_path)
    try:
        warning = wait_for(
            lambda: next((line for line in err_file.read_text().splitlines() if "fleet: warning:" in line), None),
            timeout=30,
            what="broker warning",
        )
        assert f"MQTT broker at {CLOSED}" in warning and "unreachable" in warning and "--broker-url" in warning
        assert proc.poll() is None  # still serving, retrying the broker in the background
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 503 and health.json()["broker"] != "connected"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = err_file.read_text()
    assert proc.returncode == 0 and "Traceback" not in text and "hunter2" not in text, text


def test_fleet_broker_with_its_port_taken(tmp_path, taken_port):
    proc = fleet(
        tmp_path,
        "broker",
        "--host",
        "127.0.0.1",
        "--mqtt-port",
        str(taken_port),
        "--database-url",
        f"sqlite:///{tmp_path / 'fleet.db'}",
    )
    assert_startup_error(proc, 1, f"MQTT port {taken_port} is in use", "--mqtt-port 0")


def test_fleet_broker_with_an_unreachable_database(tmp_path):
    proc = fleet(tmp_path, "broker", "--mqtt-port", "0", "--database-url", f"postgresql://{CLOSED}/fleet")
    assert_startup_error(proc, 1, "cannot connect to the database", CLOSED, "--database-url")


def test_fleet_broker_with_a_bad_setting(tmp_path):
    proc = fleet(tmp_path, "broker", "--database-url", f"sqlite:///{tmp_path / 'fleet.db'}", FLEET_MQTT_PORT="abc")
    assert_startup_error(proc, 2, "--mqtt-port", "FLEET_MQTT_PORT", "valid integer")


def test_fleet_agent_with_a_missing_secret_file(tmp_path):
    missing = tmp_path / "no-such-secret"
    proc = agent(tmp_path, "--secret-file", str(missing))
    assert_startup_error(proc, 2, f"cannot read secret file {missing}", "--secret-file")


def test_fleet_agent_with_a_bad_broker_url(tmp_path):
    err = assert_startup_error(
        agent(tmp_path, "--secret", "s3cret", "--broker-url", "http://host"),
        2,
        "broker_url",
        "mqtt://host:port",
        "--broker-url",
    )
    assert "s3cret" not in err


def test_fleet_agent_with_an_unusable_state_dir(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    proc = agent(tmp_path, "--secret", "s3cret", "--state-dir", str(blocker / "state"))
    assert_startup_error(proc, 1, f"state directory {blocker / 'state'}", "--state-dir")


def test_fleet_debug_shows_the_traceback_of_a_known_error(tmp_path, taken_port):
    proc = up(tmp_path, "--http-port", str(taken_port), "--mqtt-port", "0", FLEET_DEBUG="1")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "OSError" in proc.stderr, proc.stderr


def test_a_genuine_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise RuntimeError("a bug, not a start-up problem")

    from fleet_service.cli import serve as service_cli

    monkeypatch.setattr(service_cli, "_up", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli_main.main(["up"])
