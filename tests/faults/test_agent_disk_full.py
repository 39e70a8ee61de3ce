"""Item: the agent's disk fills up: no line is read past without being kept, and what must go is counted exactly.

The state directory is a 2 MiB tmpfs filled to the last byte. Lines the outbox cannot store wait in the file
they came from (the follower does not move on); while the broker is away and the disk is full, the oldest
records not yet handed over are dropped to make room, and the unit reports exactly how many.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_process import AgentProcesses
from tests.support.faults import AGENT_OPTIONS, FleetUpProcess, LineWriter, wait_online, wait_tallies
from tests.support.services import require, wait_for


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root or CAP_SYS_ADMIN, as in CI)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    require(done.returncode == 0, f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): run as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system to the last `leave` bytes (0: completely)."""
    filler = disk / "filler"
    with filler.open("wb") as fh:
        chunk = b"\0" * 4096
        try:
            while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave:
                fh.write(chunk)
                fh.flush()
        except OSError:
            pass
    return filler


def outbox_state(state_dir: Path) -> tuple[int, int]:
    """(log records waiting in the agent's outbox, records it dropped) read from its own database."""
    db = sqlite3.connect(f"file:{state_dir / 'agent.db'}?mode=ro", uri=True, timeout=5)
    try:
        (waiting,) = db.execute("SELECT COUNT(*) FROM logs").fetchone()
        row = db.execute("SELECT value FROM meta WHERE key = 'outbox.dropped'").fetchone()
        return int(waiting), int(row[0]) if row else 0
    finally:
        db.close()


def enroll(fleet: FleetUpProcess, unit: str) -> str:
    with fleet.client() as api:
        return api.post("/api/devices", json={"id": unit}).json()["secret"]


@pytest.mark.slow
def test_a_full_disk_holds_lines_back_and_loses_none(tmp_path, small_disk):
    fleet = FleetUpProcess(tmp_path / "fleet").start()
    agents = AgentProcesses(tmp_path)
    writer = LineWriter(tmp_path / "unit-1.lines", "unit-1", rate=0)
    state = small_disk / "state"
    try:
        secret = enroll(fleet, "unit-1")
        agents.start(
            fleet.mqtt_port, "unit-1", secret, "--log-file", str(writer.path), "--state-dir", str(state), *AGENT_OPTIONS
        )
        with fleet.client() as api:
            wait_online(api, ["unit-1"])
        writer.write_now(10)
        assert wait_tallies(fleet.database_url, {"unit-1": 10}, timeout=30)[0].stored == 10
        filler = fill(small_disk)
        writer.write_now(2200)
        time.sleep(3)  # the agent reads, cannot store, and holds the lines back in their file
        assert outbox_state(state)[1] == 0  # nothing dropped: nothing had to be
        filler.unlink()  # room again: everything held back goes through
        tallies = wait_tallies(fleet.database_url, {"unit-1": writer.sent}, timeout=60)
        wait_for(lambda: outbox_state(state)[0] == 0, timeout=20, what="the outbox empty: every ack applied")
    finally:
        agents.stop_all()
        fleet.stop()
    t = tallies[0]
    print(t.line())
    assert (t.lost, t.doubled, t.reported_dropped) == (0, 0, 0), t.missing[:20]


@pytest.mark.slow
def test_a_full_disk_with_the_service_away_drops_oldest_first_and_counts_exactly(tmp_path, small_disk):
    fleet = FleetUpProcess(tmp_path / "fleet").start()
    secret = enroll(fleet, "unit-1")
    fleet.stop()  # the broker is away while the disk fills
    agents = AgentProcesses(tmp_path)
    writer = LineWriter(tmp_path / "unit-1.lines", "unit-1", rate=0)
    state = small_disk / "state"
    try:
        agents.start(
            fleet.mqtt_port, "unit-1", secret, "--log-file", str(writer.path), "--state-dir", str(state), *AGENT_OPTIONS
        )
        wait_for(lambda: (state / "agent.db").exists(), what="the agent's outbox created")
        time.sleep(1)  # its follower has opened the file (it starts at the end of an existing one)
        fill(small_disk, leave=384 * 1024)
        for _ in range(10):
            writer.write_now(1000)  # ~40 KB each time; together several times what the disk can hold
        wait_for(
            lambda: sum(outbox_state(state)) == writer.sent,
            timeout=60,
            interval=0.5,
            what="every line stored or counted as dropped",
        )
        waiting, dropped = outbox_state(state)
        assert dropped > 0 and waiting > 0
        fleet.start()
        tallies = wait_tallies(
            fleet.database_url,
            {"unit-1": writer.sent},
            timeout=60,
            settled=lambda t: t.stored + t.reported_dropped >= t.sent,
        )
    finally:
        agents.stop_all()
        fleet.stop()
    t = tallies[0]
    print(t.line())
    assert t.doubled == 0
    assert t.reported_dropped == dropped and t.stored == writer.sent - dropped  # exact
    assert t.missing == list(range(dropped))  # the oldest went first
