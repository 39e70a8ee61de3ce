"""`fleet forward UNIT LOCALPORT:REMOTEPORT` as an operator runs it: a subprocess listening on a local port, each
connection carried to the unit's loopback server through the real service, broker and agent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest
from websockets.sync.client import connect

from tests.fleet_service.terminal.unit_web import PAGE
from tests.support.stack import ADMIN_TOKEN

pytestmark = pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)


class Forward:
    def __init__(self, fleet, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        env["FLEET_TOKEN"] = ADMIN_TOKEN
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet_cli.main", "forward", *args, "--api-url", fleet.stack.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )

    def address(self) -> tuple[str, int]:
        line = self.proc.stdout.readline()
        match = re.match(r"forwarding (\S+):(\d+) -> ", line)
        assert match, f"unexpected first line {line!r}; stderr {self.proc.stderr.read() if self.proc.poll() else ''}"
        return match.group(1), int(match.group(2))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        return self.proc.wait(10)


def test_fleet_forward_serves_the_page_and_a_websocket(fleet, agents, web):
    agents(fleet, "cli-fwd", "--allow-remote-port", str(web.http_port), "--allow-remote-port", str(web.ws_port))
    page = Forward(fleet, "cli-fwd", f"0:{web.http_port}")
    echo = Forward(fleet, "cli-fwd", f"0:{web.ws_port}", "--bind", "127.0.0.1")
    try:
        host, port = page.address()
        assert host == "127.0.0.1"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(3):  # each on the same kept-alive local connection
                r = client.get("/page")
                assert r.status_code == 200 and r.content == PAGE
            r = client.post("/form", content=b"x" * 100_000)
            assert r.status_code == 201 and r.content == b"you sent: " + b"x" * 100_000
        _, ws_port = echo.address()
        with connect(f"ws://127.0.0.1:{ws_port}/echo", max_size=None) as ws:
            ws.send(b"\x00\x01echo me\xff")
            assert ws.recv(timeout=15) == b"\x00\x01echo me\xff"
        assert web.seen[0]["headers"]["Host"] == f"127.0.0.1:{port}"  # a raw stream: what the client sent
    finally:
        codes = page.stop(), echo.stop()
    assert codes == (0, 0), (codes, page.proc.stderr.read())
    rows = fleet.api.get("/api/terminal-sessions", params={"device_id": "cli-fwd"}).json()["items"]
    assert {r["kind"] for r in rows} == {"forward"} and len(rows) >= 2


def test_fleet_forward_names_a_bad_port_spec(fleet):
    r = subprocess.run(
        [sys.executable, "-m", "fleet_cli.main", "forward", "u", "80:99999", "--token", "t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "[LOCALPORT:]REMOTEPORT" in r.stderr
