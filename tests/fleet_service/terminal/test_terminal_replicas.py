"""Two service replicas on Mosquitto and PostgreSQL: a terminal works whichever replica holds the WebSocket, each
replica receives only the frames of its own sessions, and every replica serves every session's row and recording."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fleet_service.terminal.support import Term, shell_options
from tests.fleet_service.terminal.unit_web import PAGE
from tests.support.agent_process import PYTHON_M_AGENT, AgentProcesses
from tests.support.auth import add_user, login
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for


@pytest.fixture
def replicas(tmp_path, mosquitto_factory, postgres_url):
    base = {"database_url": postgres_url, **settings_overrides(tmp_path / "mosquitto-files")}
    settings_a = settings_for(tmp_path / "a", replica_id="replica-a", **base)
    settings_b = settings_for(tmp_path / "b", replica_id="replica-b", **base)
    broker = start_managed_mosquitto(tmp_path, mosquitto_factory, settings_a)
    with StackThread(settings_a) as a, StackThread(settings_b) as b:
        wait_for(lambda: a.ctx.link.connected.is_set() and b.ctx.link.connected.is_set(), what="both connected")
        yield a, b, broker


def _dropped(stack: StackThread) -> float:
    with stack.client() as api:
        text = api.get("/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("fleet_terminal_dropped_total"))


def test_sessions_on_both_replicas_at_once(replicas, tmp_path):
    a, b, broker = replicas
    with a.client() as api:
        secret = api.post("/api/devices", json={"id": "term-rep"}).json()["secret"]
    wait_for(lambda: accepts(broker.unit_port, "term-rep", secret) == 0, timeout=5, what="unit accepted")
    agents = AgentProcesses(tmp_path)
    agents.start(
        broker.unit_port, "term-rep", secret, "--heartbeat-interval", "1", *shell_options(), entry=PYTHON_M_AGENT
    )
    try:
        with b.client() as api_b:
            wait_for(lambda: api_b.get("/api/devices/term-rep/status").json()["online"], timeout=20, what="online")
        on_a, on_b = Term.open(a.url, "term-rep"), Term.open(b.url, "term-rep")
        try:
            on_a.wait_event("opened")
            on_b.wait_event("opened")
            on_a.send(b"echo from-$((1+1))-a\n")
            on_b.send(b"echo from-$((2+1))-b\n")
            on_a.wait_output(b"from-2-a")
            on_b.wait_output(b"from-3-b")
            assert b"from-3-b" not in on_a.output and b"from-2-a" not in on_b.output
            assert len(a.ctx.terminals.sessions) == 1 and len(b.ctx.terminals.sessions) == 1
            on_a.send(b"exit 4\n")
            on_b.send(b"exit 5\n")
            assert on_a.wait_event("exit")["status"] == 4
            assert on_b.wait_event("exit")["status"] == 5
        finally:
            on_a.close()
            on_b.close()
        # Neither replica was handed the other's frames: nothing was dropped as "no such session here".
        assert _dropped(a) == 0 and _dropped(b) == 0

        # Rows and recordings are in the database: the replica that did not hold a session serves it too.
        with a.client() as api_a, b.client() as api_b:
            rows = wait_for(
                lambda: (
                    (r := api_a.get("/api/terminal-sessions").json()["items"]) and all(x["ended_at"] for x in r) and r
                ),
                what="both rows ended",
            )
            assert {r["replica"]: r["exit_status"] for r in rows} == {"replica-a": 4, "replica-b": 5}
            held_by_a = next(r for r in rows if r["replica"] == "replica-a")
            cast = api_b.get(f"/api/terminal-sessions/{held_by_a['id']}/recording")
            assert cast.status_code == 200
            events = [json.loads(line) for line in cast.text.splitlines()[1:]]
            assert "from-2-a" in "".join(e[2] for e in events if e[1] == "o")
    finally:
        agents.stop_all()


def test_a_units_web_ui_opened_on_one_replica_works_on_the_other(replicas, tmp_path, web):
    """The ticket and the cookie live in the database: the replica behind the load balancer's next pick honours
    them, and signing out on one replica ends the unit origin's cookie on the other."""
    a, b, broker = replicas
    with a.client() as api:
        secret = api.post("/api/devices", json={"id": "web-rep"}).json()["secret"]
    wait_for(lambda: accepts(broker.unit_port, "web-rep", secret) == 0, timeout=5, what="unit accepted")
    agents = AgentProcesses(tmp_path)
    agents.start(
        broker.unit_port, "web-rep", secret, "--heartbeat-interval", "1", *web.agent_options(), entry=PYTHON_M_AGENT
    )
    browser = login(a, "web-rep-op", add_user(a, "web-rep-op", "operator"))
    try:
        with b.client() as api_b:
            wait_for(lambda: api_b.get("/api/devices/web-rep/status").json()["online"], timeout=20, what="online")
        r = browser.client.get(f"/api/devices/web-rep/proxy/{web.http_port}/page")  # replica A mints the ticket
        assert r.status_code == 303, r.text
        target = urlsplit(r.headers["location"])
        with httpx.Client(base_url=b.url, timeout=15, headers={"Host": target.netloc}) as on_b:
            assert on_b.get(f"{target.path}?{target.query}").status_code == 303  # replica B redeems it
            page = on_b.get("/page")
            assert page.status_code == 200 and page.content == PAGE
            assert browser.request("POST", "/api/auth/logout").status_code in (200, 204)  # on replica A
            assert on_b.get("/page").status_code == 401
    finally:
        browser.client.close()
        agents.stop_all()
