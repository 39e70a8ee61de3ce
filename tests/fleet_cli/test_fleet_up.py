"""`fleet up` as a user runs it: a real process, real ports, the admin token printed once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from tests.support.services import wait_for


def _start(data_dir, extra_env=None) -> tuple[subprocess.Popen, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet_cli.main",
            "up",
            "--http-port",
            "0",
            "--mqtt-port",
            "0",
            "--host",
            "127.0.0.1",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("fleet: ready"):
            break
    return proc, lines


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


def test_fleet_up_serves_and_prints_the_admin_token_once(tmp_path):
    proc, lines = _start(tmp_path / "data")
    try:
        text = "".join(lines)
        url = re.search(r"(http://127\.0\.0\.1:\d+)", text).group(1)
        token = re.search(r"^\s+(flt_\S+)$", text, re.M).group(1)
        assert re.search(r"embedded MQTT broker on port \d+", text)
        health = wait_for(lambda: (r := httpx.get(f"{url}/health")).status_code == 200 and r.json(), what="health")
        assert health == {"status": "ok", "service": "fleet", "broker": "connected", "database": "ok"}
        assert httpx.get(f"{url}/api/devices").status_code == 401
        r = httpx.get(f"{url}/api/devices", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["total"] == 0
        assert "<title>" in httpx.get(url + "/").text
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out

    proc, lines = _start(tmp_path / "data")  # second start: same data, no new token printed
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+)", "".join(lines)).group(1)
        wait_for(lambda: httpx.get(f"{url}/health").status_code == 200, what="health after restart")
        assert httpx.get(f"{url}/api/devices", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        out = "".join(lines) + _stop(proc)
    assert "flt_" not in out
