"""A program that writes as fast as it can (`cat /dev/urandom | base64`) never grows memory: not on the agent, not in
the broker, not in the service. While the operator does not read, the flow stops at one window; while it reads
as fast as it can, megabytes pass and memory stays where it was."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.fleet_service.terminal.support import Term, shell_options
from tests.support.services import wait_for

MB = 1024 * 1024


class Peak:
    """The highest RSS of some processes above where each started."""

    def __init__(self, **procs: psutil.Process) -> None:
        self.procs = procs
        self.base = {name: p.memory_info().rss for name, p in procs.items()}
        self.growth = dict.fromkeys(procs, 0)

    def sample(self) -> None:
        for name, p in self.procs.items():
            self.growth[name] = max(self.growth[name], p.memory_info().rss - self.base[name])


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_an_output_flood_stays_within_the_window(fleet, agents):
    proc = agents(fleet, "term-flood", *shell_options())
    hub = fleet.stack.ctx.terminals
    window = hub.window
    term = Term.open(fleet.stack.url, "term-flood")
    try:
        term.wait_event("opened")
        session = next(iter(hub.sessions.values()))
        watched = {"agent": psutil.Process(proc.pid), "service": psutil.Process()}
        if fleet.mosquitto is not None:
            watched["broker"] = psutil.Process(fleet.mosquitto.broker.proc.pid)
        peak = Peak(**watched)
        term.send(b"cat /dev/urandom | base64\n")

        # The operator does not read: the flow stops once a window (and what the sockets hold) is out.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert session.received - session.consumed <= window
            peak.sample()
            time.sleep(0.2)
        held = session.received
        time.sleep(1.5)
        assert session.received == held, "the unit kept sending while nobody read"

        # The operator reads as fast as it can: megabytes flow, within the window at every moment.
        start = session.consumed
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            for _ in range(50):
                term.pump(0.05)
                del term.output[:]  # the test keeps nothing: only the processes under test may hold memory
            assert session.received - session.consumed <= window
            peak.sample()
        moved = session.consumed - start
        assert moved > 4 * MB, f"only {moved} bytes passed in 6 s"

        term.send(b"\x03")  # ^C ends the flood
        term.send(b"exit 0\n")
        deadline = time.monotonic() + 20
        while not any(e.get("type") == "exit" for e in term.events):
            assert time.monotonic() < deadline, "the shell did not exit after ^C"
            term.pump(0.2)
            del term.output[:]
    finally:
        term.close()

    print(f"moved {moved} bytes in 6 s; peak RSS growth {peak.growth}")
    assert peak.growth["agent"] < 12 * MB, peak.growth
    assert peak.growth["service"] < 64 * MB, peak.growth
    assert peak.growth.get("broker", 0) < 32 * MB, peak.growth
    row = wait_for(
        lambda: (r := fleet.api.get("/api/terminal-sessions").json()["items"]) and r[0]["ended_at"] and r[0],
        what="the session's row",
    )
    assert row["bytes_out"] > 4 * MB and row["recording_bytes"] > 0
