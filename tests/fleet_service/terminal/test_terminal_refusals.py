"""Who may not open a remote shell, and the sessions that end on their own: each with the reason the operator sees.

Real service on the embedded broker, real agent processes.
"""

from __future__ import annotations

import signal

import pytest

from tests.fleet_service.terminal.support import Term, refused, remote_user, shell_options
from tests.support.auth import add_user, login, token_for
from tests.support.services import wait_for

pytestmark = pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)


def _row(fleet, device_id: str) -> dict:
    rows = fleet.api.get("/api/terminal-sessions", params={"device_id": device_id}).json()["items"]
    assert rows, f"no session row for {device_id}"
    return rows[0]


def test_a_unit_that_does_not_allow_it_refuses_with_the_reason(fleet, agents):
    agents(fleet, "term-off")  # no --allow-remote-shell
    code, reason = refused(fleet.stack.url, "term-off")
    assert code == 4410 and "remote shell is disabled on this unit" in reason, (code, reason)
    row = _row(fleet, "term-off")
    assert row["close_reason"] == "disabled" and row["ended_at"] and not row["recording_available"]


def test_the_desired_config_turns_it_on_and_off(fleet, agents):
    agents(fleet, "term-cfg", "--remote-user", remote_user())  # off on the unit itself
    r = fleet.api.put("/api/devices/term-cfg/config", json={"remote_shell": True})
    assert r.status_code == 200, r.text
    term = Term.open(fleet.stack.url, "term-cfg")  # the agent follows its desired config
    try:
        term.wait_event("opened")
        term.send(b"exit\n")
        assert term.wait_event("exit")["status"] == 0
    finally:
        term.close()
    assert fleet.api.put("/api/devices/term-cfg/config", json={"remote_shell": False}).status_code == 200
    code, reason = refused(fleet.stack.url, "term-cfg")  # refused by the service, before the unit is asked
    assert code == 4410 and "remote_shell: false" in reason, (code, reason)
    bad = fleet.api.put("/api/devices/term-cfg/config", json={"remote_shell": "yes"})
    assert bad.status_code == 422 and "remote_shell" in bad.text


def test_viewers_never_and_operators_not_where_the_unit_is_admin_only(fleet, agents):
    agents(fleet, "term-roles", *shell_options())
    viewer = token_for(fleet.stack, "viewer", "term-viewer")
    code, reason = refused(fleet.stack.url, "term-roles", viewer)
    assert code == 4403 and "operator role" in reason

    operator = token_for(fleet.stack, "operator", "term-operator")
    term = Term.open(fleet.stack.url, "term-roles", operator)
    try:
        assert term.wait_event("opened")["user"]
    finally:
        term.close()

    r = fleet.api.put("/api/devices/term-roles/config", json={"remote_shell_admin_only": True})
    assert r.status_code == 200, r.text
    code, reason = refused(fleet.stack.url, "term-roles", operator)
    assert code == 4403 and "admins only" in reason, (code, reason)
    term = Term.open(fleet.stack.url, "term-roles")  # the admin still may
    try:
        term.wait_event("opened")
    finally:
        term.close()


def test_an_operator_cannot_change_who_may_open_a_shell(fleet, agents):
    fleet.enroll("term-guard")
    operator = token_for(fleet.stack, "operator", "term-guard-op")
    headers = {"Authorization": f"Bearer {operator}"}
    for body in ({"remote_shell": True}, {"remote_shell_admin_only": False}):
        r = fleet.api.put("/api/devices/term-guard/config", json=body, headers=headers)
        assert r.status_code == 403 and "admin" in r.json()["detail"], r.text
        r = fleet.api.put("/api/config/groups/some-tag", json=body, headers=headers)
        assert r.status_code == 403 and "admin" in r.json()["detail"], r.text
    r = fleet.api.put("/api/devices/term-guard/config", json={"log_level": "info"}, headers=headers)
    assert r.status_code == 200, r.text  # the other keys stay the operator's


def test_a_cookie_from_another_origin_is_refused(fleet, agents):
    agents(fleet, "term-origin", *shell_options())
    password = add_user(fleet.stack, "term-op", "operator")
    browser = login(fleet.stack, "term-op", password)
    cookie = {"Cookie": f"fleet_session={browser.client.cookies['fleet_session']}"}
    code, reason = refused(fleet.stack.url, "term-origin", "", {**cookie, "Origin": "https://evil.example"})
    assert code == 4403 and "cross-origin" in reason
    same = Term.open(fleet.stack.url, "term-origin", "", {**cookie, "Origin": fleet.stack.url})
    try:
        assert same.wait_event("opened")
    finally:
        same.close()
        browser.client.close()


def test_the_units_session_limit_and_an_offline_unit(fleet, agents):
    proc = agents(fleet, "term-limit", *shell_options("--remote-shell-max-sessions", "1"))
    first = Term.open(fleet.stack.url, "term-limit")
    try:
        first.wait_event("opened")
        code, reason = refused(fleet.stack.url, "term-limit")
        assert code == 4429 and "at most 1 remote shell" in reason, (code, reason)
    finally:
        first.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    code, reason = refused(fleet.stack.url, "term-limit")
    assert code == 4409 and "offline" in reason


def test_a_user_that_does_not_exist_is_named(fleet, agents):
    agents(fleet, "term-nouser", "--allow-remote-shell", "--remote-user", "no-such-user-here")
    code, reason = refused(fleet.stack.url, "term-nouser")
    assert code == 4422 and "'no-such-user-here' does not exist" in reason, (code, reason)


def test_an_idle_session_is_closed(fleet, agents):
    agents(fleet, "term-idle", *shell_options("--remote-shell-idle-timeout", "1.5"))
    term = Term.open(fleet.stack.url, "term-idle")
    try:
        term.wait_event("opened")
        event = term.wait_event("exit", timeout=10)
        assert event["reason"] == "idle" and "no input for 1.5 s" in event["message"], event
        code, reason = term.wait_closed()
        assert code == 1000 and "no input" in reason
    finally:
        term.close()
    assert _row(fleet, "term-idle")["close_reason"] == "idle"


def test_the_agent_stopping_closes_the_session_with_a_reason(fleet, agents):
    proc = agents(fleet, "term-stop", *shell_options())
    term = Term.open(fleet.stack.url, "term-stop")
    try:
        term.wait_event("opened")
        term.send(b"sleep 600\n")
        proc.send_signal(signal.SIGTERM)
        event = term.wait_event("exit", timeout=15)
        assert event["reason"] == "agent_stopping" and "the agent on the unit is stopping" in event["message"]
        code, _ = term.wait_closed()
        assert code == 4409
    finally:
        term.close()
    assert proc.wait(10) == 0
    assert _row(fleet, "term-stop")["close_reason"] == "agent_stopping"


def test_a_session_ends_at_its_maximum_length_even_while_used(fleet, agents):
    agents(fleet, "term-max", *shell_options("--remote-shell-max-duration", "2.5"))
    term = Term.open(fleet.stack.url, "term-max")
    try:
        term.wait_event("opened")
        for _ in range(8):  # typing keeps it from being idle; it still ends
            term.send(b"true\n")
            term.pump(0.5)
            if any(e.get("type") == "exit" for e in term.events):
                break
        event = term.wait_event("exit", timeout=10)
        assert event["reason"] == "max_duration" and "maximum length of 2.5 s" in event["message"], event
    finally:
        term.close()


def test_a_failed_audit_write_ends_the_session_on_the_unit_too(fleet, agents, monkeypatch):
    """No shell may run unaudited, nor be left running on the unit: the unit allows one session, so a session
    leaked by a failed audit write would refuse the next one with 4429."""
    import fleet_service.terminal.bridge as bridge

    agents(fleet, "term-audit", *shell_options("--remote-shell-max-sessions", "1"))
    real = bridge.start_row

    def broken(engine, row):
        raise OSError("the database is away")

    monkeypatch.setattr(bridge, "start_row", broken)
    code, _ = refused(fleet.stack.url, "term-audit")
    assert code not in (None, 1000), code  # the operator is told it failed; no shell runs without its row
    monkeypatch.setattr(bridge, "start_row", real)
    wait_for(lambda: not fleet.stack.ctx.terminals.sessions, timeout=10, what="the session released on the service")
    term = Term.open(fleet.stack.url, "term-audit")
    try:
        assert term.wait_event("opened")  # the unit holds no leaked session
        term.send(b"exit 3\n")
        assert term.wait_event("exit")["status"] == 3
    finally:
        term.close()
