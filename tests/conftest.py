"""Shared fixtures: real Mosquitto and PostgreSQL, skipped with a reason off-CI when absent."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.services import FreshDatabase, Mosquitto, have_mosquitto, postgres_available, require

# Dashboard passwords at scrypt N=2^14, not OWASP's 2^17: hundreds of logins and users (tests/fleet_service/
# test_password_rehash.py runs at the real cost).
os.environ.setdefault("FLEET_PASSWORD_HASH_COST", "14")


@pytest.fixture
def mosquitto_factory(tmp_path) -> Iterator:
    """Start Mosquitto subprocesses with extra config lines; all stopped at teardown."""
    require(have_mosquitto(), "the mosquitto binary is not installed (apt install mosquitto)")
    started: list[Mosquitto] = []

    def start(extra_config: str = "", name: str = "mosquitto") -> Mosquitto:
        m = Mosquitto(workdir=tmp_path / f"{name}{len(started)}", extra_config=extra_config)
        started.append(m)
        return m.start()

    yield start
    for m in started:
        m.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database for this test, dropped afterwards."""
    reason = postgres_available()
    require(reason is None, reason or "")
    with FreshDatabase() as url:
        yield url
