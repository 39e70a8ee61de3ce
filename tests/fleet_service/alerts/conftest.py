"""Alert tests run the evaluator every 0.2 s (the service reads FLEET_* settings not given explicitly)."""

import pytest


@pytest.fixture(autouse=True)
def fast_evaluator(monkeypatch):
    monkeypatch.setenv("FLEET_ALERT_EVAL_INTERVAL_S", "0.2")
    monkeypatch.setenv("FLEET_ALERT_LEASE_S", "3")
