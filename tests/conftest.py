"""Shared fixtures: real Mosquitto and PostgreSQL, skipped with a reason off-CI when absent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import FreshDatabase, Mosquitto, have_mosquitto, postgres_available, require


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
