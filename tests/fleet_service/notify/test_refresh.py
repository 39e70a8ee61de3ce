"""A channel kind whose sender sets REFRESH_S (Alertmanager forgets alerts it is not told about again) gets its
open, non-silenced alerts re-sent that often by the dispatching replica, one message per rule, each logged as an
attempt. The webhook kind stands in here, with REFRESH_S set for the test."""

from __future__ import annotations

import time

from fleet_service.notify.senders import webhook as webhook_sender
from tests.fleet_service.alerts.support import fast_settings, wait_alert
from tests.fleet_service.notify.support import hot_rule, metrics, online_unit, webhook
from tests.support.receiver import Receiver
from tests.support.services import wait_for
from tests.support.stack import StackThread


def test_open_alerts_are_sent_again_every_refresh_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(webhook_sender, "REFRESH_S", 0.5)
    with Receiver() as receiver, StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        hot_rule(api)
        channel = webhook(api, receiver, group_wait_s=0)
        hot, quiet = online_unit(stack, api, "hot"), online_unit(stack, api, "hushed")
        api.post("/api/silences", json={"device_id": "hushed", "duration_s": 600})
        metrics(hot, temp_c=90.0)
        metrics(quiet, temp_c=90.0)
        wait_alert(api, "the silenced alert", unit="hushed")
        wait_for(lambda: len(receiver.received) >= 4, timeout=15, what="the notification and refreshes")
        bodies = receiver.bodies()
        assert all(b["status"] == "firing" for b in bodies)
        assert {a["device_id"] for b in bodies for a in b["alerts"]} == {"hot"}  # the silenced unit: never
        assert sum(b["notification_id"] is not None for b in bodies) == 1  # the notification itself, once
        log = api.get(f"/api/notification-channels/{channel['id']}/deliveries", params={"limit": 500}).json()
        assert {a["purpose"] for a in log["items"]} == {"notification", "refresh"}
        metrics(hot, temp_c=50.0)
        wait_alert(api, "resolved", unit="hot", state="resolved")
        time.sleep(0.5)
        settled = len(receiver.received)
        time.sleep(1.5)  # nothing open: nothing refreshed
        assert len(receiver.received) == settled
        assert receiver.bodies()[-1]["status"] == "resolved"
        hot.stop_clean()
        quiet.stop_clean()
