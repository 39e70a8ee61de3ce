"""Fixtures for turn_service: real coturn on loopback, a Cloudflare API stand-in, a clean environment."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.support.services import require
from tests.turn_service.coturn import Coturn
from tests.turn_service.standin import CloudflareStandIn

# Two secrets so one server covers rotation: credentials minted with either must work.
SECRET_A = "coturn-secret-a-4f1d9c2e7b"
SECRET_B = "coturn-secret-b-8e2a6d0f3c"


@pytest.fixture(autouse=True)
def _clean_turn_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLEET_TURN_* from the developer's or CI's shell must not leak into settings tests."""
    for name in list(os.environ):
        if name.upper().startswith("FLEET_TURN_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    for tool in ("turnserver", "turnutils_peer", "turnutils_uclient"):
        require(shutil.which(tool) is not None, f"{tool} is not installed (apt install coturn)")
    server = Coturn(workdir=tmp_path_factory.mktemp("coturn"), secrets=[SECRET_A, SECRET_B]).start()
    yield server
    server.stop()


@pytest.fixture
def standin() -> Iterator[CloudflareStandIn]:
    server = CloudflareStandIn().start()
    yield server
    server.stop()
