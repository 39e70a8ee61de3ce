"""One running service with the broker-auth routes on (module-scoped: unit secrets are enrolled per test)."""

from __future__ import annotations

import pytest

from tests.fleet_service.broker_auth.shapes import SERVICE_SECRET, TOKEN
from tests.support.stack import StackThread, settings_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = settings_for(
        tmp_path_factory.mktemp("broker-auth"),
        broker_auth_token=TOKEN,
        service_secret=SERVICE_SECRET,
        auth_failures_per_source=100_000,
    )
    with StackThread(settings) as st:
        yield st
