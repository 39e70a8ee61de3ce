"""A remote shell through the real service, broker (embedded amqtt and the managed Mosquitto) and agent process.

The operator's WebSocket opens a session; the agent starts a shell on a PTY as the remote user; keystrokes,
resizes and the exit status travel the session topics; the audit row and the asciinema recording are written.
"""

from __future__ import annotations

import json

import pytest

from tests.fleet_service.terminal.support import Term, remote_user, shell_options


def _agent_log(tmp_path, device_id: str) -> str:
    return (tmp_path / f"{device_id}.log").read_text(errors="replace")


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_a_shell_on_the_unit_echoes_resizes_and_exits_with_its_status(fleet, agents, tmp_path):
    agents(fleet, "term-unit", *shell_options())
    term = Term.open(fleet.stack.url, "term-unit", cols=80, rows=24)
    try:
        opened = term.wait_event("opened")
        assert opened["unit"] == "term-unit" and opened["user"] == remote_user()
        term.send(b"echo hello-$((6*7))\n")
        term.wait_output(b"hello-42")

        mark = len(term.output)
        term.resize(101, 33)
        term.send(b"stty size\n")
        term.wait_output(b"33 101", after=mark)

        term.send(b"id -un\n")
        term.wait_output(remote_user().encode() + b"\r\n", after=mark)

        term.send(b"exit 3\n")
        exit_event = term.wait_event("exit")
        assert exit_event["status"] == 3 and exit_event["reason"] == "exited", exit_event
        code, _reason = term.wait_closed()
        assert code == 1000
    finally:
        term.close()

    rows = fleet.api.get("/api/terminal-sessions", params={"device_id": "term-unit"}).json()
    assert rows["total"] == 1, rows
    row = rows["items"][0]
    assert row["actor"] == "bootstrap:admin" or row["actor"].endswith("admin"), row
    assert row["exit_status"] == 3 and row["close_reason"] == "exited" and row["ended_at"]
    assert row["remote_user"] == remote_user() and row["bytes_in"] > 30 and row["bytes_out"] > 30
    assert row["recording_available"] is True

    r = fleet.api.get(f"/api/terminal-sessions/{row['id']}/recording")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-asciicast")
    lines = r.text.splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] == 80 and header["height"] == 24 and header["timestamp"] > 0
    events = [json.loads(line) for line in lines[1:]]
    assert all(isinstance(e, list) and len(e) == 3 and e[1] in ("o", "r") for e in events)
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    assert ["r", "101x33"] in [e[1:] for e in events]
    assert "hello-42" in "".join(e[2] for e in events if e[1] == "o")
    assert "Traceback" not in _agent_log(tmp_path, "term-unit")
