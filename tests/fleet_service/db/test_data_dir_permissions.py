"""The data directory holds password hashes, tokens, every unit's logs and the TURN secret: only the service's user
may enter it (0700) or read a file in it (0600), whatever the umask of the shell that started `fleet up`."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_service.settings import open_database
from tests.support.services import free_port, wait_for
from tests.support.stack import StackThread, settings_for

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def open_umask():
    """The usual interactive umask, under which files are created world-readable unless the code says otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture(autouse=True)
def stored_turn_secret(monkeypatch):
    """Embedded mode keeps a generated TURN secret in the data directory when none is configured."""
    for name in ("FLEET_TURN_PROVIDER", "FLEET_TURN_SECRETS"):
        monkeypatch.delenv(name, raising=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in directory.iterdir()}


def test_a_new_data_dir_is_0700_and_the_database_and_secret_files_in_it_0600(tmp_path, open_umask):
    settings = settings_for(tmp_path)
    with StackThread(settings) as stack:
        assert stack.client().get("/api/devices").status_code == 200  # the database is in use, WAL and all
        files = modes(settings.data_dir)
        assert mode(settings.data_dir) == 0o700
        assert {"fleet.db", "fleet.db-wal", "fleet.db-shm", "turn_secret"} <= files.keys(), files
        assert set(files.values()) == {0o600}, {n: oct(m) for n, m in files.items()}


def test_an_open_data_dir_of_an_earlier_version_is_tightened_with_a_log_line(tmp_path, open_umask, caplog):
    settings = settings_for(tmp_path)
    with StackThread(settings):
        pass
    data = settings.data_dir
    data.chmod(0o755)  # as earlier versions left it
    for path in data.iterdir():
        path.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="fleet_service")
    with StackThread(settings) as stack:
        assert stack.client().get("/api/devices").status_code == 200  # the same database, still usable
        assert mode(data) == 0o700
        assert set(modes(data).values()) == {0o600}, modes(data)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(data) in m and "0755" in m and "0700" in m for m in said), said
    assert any("fleet.db" in m and "0644" in m and "0600" in m for m in said), said


def test_fleet_up_under_an_open_umask_creates_nothing_others_can_read(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    proc = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            'umask 022 && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "fleet_cli.main",
            "up",
            "--data-dir",
            str(data),
            "--http-port",
            str(free_port()),
            "--mqtt-port",
            "0",
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "FLEET_ADMIN_TOKEN": "t" * 32},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: (data / "fleet.db-wal").exists() and (data / "turn_secret").exists(),
            timeout=60,
            what="fleet up using its data directory",
        )
        assert mode(data) == 0o700
        assert set(modes(data).values()) == {0o600}, modes(data)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_a_sqlite_database_outside_the_data_dir_is_created_0600_with_its_wal(tmp_path, open_umask):
    url = f"sqlite:///{tmp_path / 'db' / 'fleet.db'}"
    engine = open_database(url)
    try:
        with engine.connect():
            files = modes(tmp_path / "db")
            assert {"fleet.db", "fleet.db-wal", "fleet.db-shm"} <= files.keys(), files
            assert set(files.values()) == {0o600}, files
            assert mode(tmp_path / "db") == 0o700
    finally:
        engine.dispose()
