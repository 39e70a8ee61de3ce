"""Notification tests: a fast evaluator and notifier, retries within fractions of a second (the service reads
FLEET_* settings not given explicitly)."""

import pytest

FAST_NOTIFY = {
    "FLEET_ALERT_EVAL_INTERVAL_S": "0.2",
    "FLEET_ALERT_LEASE_S": "3",
    "FLEET_NOTIFY_INTERVAL_S": "0.2",
    "FLEET_NOTIFY_LEASE_S": "3",
    "FLEET_NOTIFY_SEND_TIMEOUT_S": "3",
    "FLEET_NOTIFY_RETRY_BASE_S": "0.1",
    "FLEET_NOTIFY_RETRY_CAP_S": "0.5",
    "FLEET_NOTIFY_MAX_ATTEMPTS": "5",
}


@pytest.fixture(autouse=True)
def fast_notifier(monkeypatch):
    for name, value in FAST_NOTIFY.items():
        monkeypatch.setenv(name, value)
