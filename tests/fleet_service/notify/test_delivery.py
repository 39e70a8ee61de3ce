"""Alerts reach a real local HTTP receiver: signed, grouped, retried, refused, silenced. Each test counts what
the receiver took against what the outbox stored (lost and doubled must be 0)."""

from __future__ import annotations

import time

from tests.fleet_service.alerts.support import alerts, fast_settings, wait_alert
from tests.fleet_service.notify.support import hot_rule, metrics, online_unit, outbox, tally, webhook
from tests.support.receiver import Receiver
from tests.support.services import wait_for
from tests.support.stack import StackThread


def test_a_unit_crossing_a_rule_sends_one_signed_webhook_then_a_resolved_one(tmp_path):
    with Receiver() as receiver, StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        rule = hot_rule(api)
        channel = webhook(api, receiver, group_wait_s=0)
        secret = channel["secret"]
        assert secret and len(secret) >= 40
        unit = online_unit(stack, api, "hot-1", name="Stage left")
        metrics(unit, temp_c=91.0)
        wait_for(lambda: len(receiver.received) == 1, timeout=15, what="the firing webhook")
        time.sleep(1)  # nothing else comes while the unit stays hot
        assert len(receiver.received) == 1
        fired = receiver.received[0]
        assert fired.signed_by(secret)
        assert not fired.signed_by(secret + "x")
        assert fired.headers["content-type"] == "application/json"
        body = fired.json()
        assert body["status"] == "firing" and body["test"] is False and body["version"] == 1
        assert body["rule"] == {"id": rule["id"], "name": rule["name"], "severity": "warning"}
        assert [(a["device_id"], a["device_name"], a["value"]) for a in body["alerts"]] == [
            ("hot-1", "Stage left", 91.0)
        ]
        assert fired.headers["x-fleet-notification-id"] == str(body["notification_id"])

        metrics(unit, temp_c=50.0)
        wait_for(lambda: len(receiver.received) == 2, timeout=15, what="the resolved webhook")
        resolved = receiver.received[1]
        assert resolved.signed_by(secret)
        assert resolved.json()["status"] == "resolved"
        assert resolved.json()["alerts"][0]["state"] == "resolved" and resolved.json()["alerts"][0]["resolved_at"]
        assert resolved.json()["notification_id"] != body["notification_id"]
        # the receiver has the body before the sender stores "delivered": wait for the store, not the arrival
        wait_for(lambda: all(n["state"] == "delivered" for n in outbox(api)), timeout=10, what="both stored delivered")
        rows = outbox(api)
        assert [(n["status"], n["state"], n["attempts"]) for n in rows] == [
            ("resolved", "delivered", 1),
            ("firing", "delivered", 1),
        ]
        counts = tally(receiver, api, expected=2)
        assert (counts["lost"], counts["doubled"], counts["stored_delivered"]) == (0, 0, 2)
        unit.stop_clean()


def test_three_units_crossing_within_the_window_make_one_notification(tmp_path):
    with Receiver() as receiver, StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        hot_rule(api)
        webhook(api, receiver, group_wait_s=3)
        units = [online_unit(stack, api, f"trio-{i}") for i in range(3)]
        for unit in units:
            metrics(unit, temp_c=90.0)
        wait_for(lambda: len(alerts(api)) == 3, timeout=15, what="three alerts")
        wait_for(lambda: receiver.received, timeout=15, what="the grouped webhook")
        time.sleep(1)
        assert len(receiver.received) == 1
        body = receiver.received[0].json()
        assert sorted(a["device_id"] for a in body["alerts"]) == ["trio-0", "trio-1", "trio-2"]
        assert len(outbox(api)) == 1 and len(outbox(api)[0]["alert_ids"]) == 3
        counts = tally(receiver, api, expected=1)
        assert (counts["lost"], counts["doubled"]) == (0, 0)
        for unit in units:
            unit.stop_clean()


def test_a_receiver_failing_twice_gets_it_on_the_third_attempt(tmp_path):
    with Receiver(answers=[500, 503]) as receiver, StackThread(fast_settings(tmp_path)) as stack:
        with stack.client() as api:
            hot_rule(api)
            channel = webhook(api, receiver, group_wait_s=0)
            unit = online_unit(stack, api, "flaky")
            metrics(unit, temp_c=90.0)
            wait_for(lambda: [n for n in outbox(api) if n["state"] == "delivered"], timeout=20, what="delivered")
            time.sleep(1)
            assert [r.status for r in receiver.received] == [500, 503, 200]
            assert len({r.headers["x-fleet-notification-id"] for r in receiver.received}) == 1  # one notification
            (row,) = outbox(api)
            assert row["attempts"] == 3 and row["last_error"] is None
            assert [(a["attempt"], a["ok"], a["status_code"]) for a in row["attempt_log"]] == [
                (1, False, 500),
                (2, False, 503),
                (3, True, 200),
            ]
            log = api.get(f"/api/notification-channels/{channel['id']}/deliveries").json()
            assert log["total"] == 3 and [a["attempt"] for a in log["items"]] == [3, 2, 1]  # newest first
            assert api.get(f"/api/notification-channels/{channel['id']}/deliveries?limit=1").json()["items"][0]["ok"]
            counts = tally(receiver, api, expected=1)
            assert (counts["lost"], counts["doubled"], counts["stored_delivered"]) == (0, 0, 1)
            unit.stop_clean()


def test_a_receiver_refusing_with_400_fails_it_after_one_attempt(tmp_path):
    with Receiver(default=400) as receiver, StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        hot_rule(api)
        webhook(api, receiver, group_wait_s=0)
        unit = online_unit(stack, api, "refused")
        metrics(unit, temp_c=90.0)
        wait_for(lambda: outbox(api, state="failed"), timeout=15, what="failed")
        time.sleep(1.5)  # no retry comes
        assert len(receiver.received) == 1
        (row,) = outbox(api)
        assert row["state"] == "failed" and row["attempts"] == 1 and row["last_error"].startswith("HTTP 400")
        unit.stop_clean()


def test_a_silence_made_after_the_alert_fired_but_before_the_group_is_due_sends_nothing(tmp_path):
    with Receiver() as receiver, StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        hot_rule(api)
        webhook(api, receiver, group_wait_s=3)
        unit = online_unit(stack, api, "hushed")
        metrics(unit, temp_c=90.0)
        alert = wait_alert(api, "the alert")
        assert alert["silenced"] is False
        wait_for(lambda: outbox(api, state="grouping"), timeout=10, what="the group gathering")
        r = api.post("/api/silences", json={"device_id": "hushed", "duration_s": 600, "comment": "on the bench"})
        assert r.status_code == 201, r.text
        wait_for(lambda: outbox(api, state="suppressed"), timeout=15, what="suppressed")
        time.sleep(1)
        assert receiver.received == []
        (row,) = outbox(api)
        assert row["state"] == "suppressed" and r.json()["id"] in row["reason"] and row["alert_ids"] == [alert["id"]]
        assert row["attempts"] == 0 and row["attempt_log"] == []
        unit.stop_clean()


def test_a_silenced_unit_notifies_nobody(tmp_path):
    with Receiver() as receiver, StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        hot_rule(api)
        webhook(api, receiver, group_wait_s=0)
        silence = api.post("/api/silences", json={"device_id": "quiet", "duration_s": 600}).json()
        unit = online_unit(stack, api, "quiet")
        metrics(unit, temp_c=90.0)
        alert = wait_alert(api, "the silenced alert")
        assert alert["silenced"] is True
        wait_for(lambda: outbox(api), timeout=10, what="the suppressed row")
        time.sleep(1)
        assert receiver.received == []
        (row,) = outbox(api)
        assert row["state"] == "suppressed" and silence["id"] in row["reason"]
        metrics(unit, temp_c=50.0)  # its resolution follows no sent notification: nothing either
        wait_alert(api, "resolved", state="resolved")
        time.sleep(1)
        assert receiver.received == [] and len(outbox(api)) == 1
        unit.stop_clean()


def test_the_test_button_sends_at_once_and_is_logged(tmp_path):
    with Receiver() as receiver, StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        channel = webhook(api, receiver, enabled=False)  # a test works on a channel not yet enabled
        r = api.post(f"/api/notification-channels/{channel['id']}/test")
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["ok"] is True and result["status_code"] == 200 and result["error"] is None
        assert result["duration_ms"] >= 0
        (got,) = receiver.received
        assert got.signed_by(channel["secret"]) and got.json()["test"] is True
        assert "x-fleet-notification-id" not in got.headers
        (attempt,) = api.get(f"/api/notification-channels/{channel['id']}/deliveries").json()["items"]
        assert attempt["purpose"] == "test" and attempt["notification_id"] is None and attempt["ok"]
        receiver.stop()
        down = api.post(f"/api/notification-channels/{channel['id']}/test").json()
        assert down["ok"] is False and down["status_code"] is None and down["error"]
        assert api.get(f"/api/notification-channels/{channel['id']}/deliveries").json()["total"] == 2
        assert outbox(api) == []


def test_a_slack_channel_posts_text_to_its_secret_url(tmp_path):
    with Receiver() as receiver, StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
        hot_rule(api)
        r = api.post(
            "/api/notification-channels",
            json={"name": "chat", "kind": "slack", "group_wait_s": 0, "secrets": {"url": receiver.url}},
        )
        assert r.status_code == 201, r.text
        channel = r.json()
        assert channel["secret"] is None and channel["secrets_set"] == ["url"] and channel["config"] == {}
        assert receiver.url not in api.get(f"/api/notification-channels/{channel['id']}").text
        unit = online_unit(stack, api, "chatty")
        metrics(unit, temp_c=90.0)
        wait_for(lambda: receiver.received, timeout=15, what="the chat message")
        (got,) = receiver.received
        text = got.json()["text"]
        assert set(got.json()) == {"text"}
        assert text.startswith("[FIRING] warning: Temperature high") and "chatty" in text
        unit.stop_clean()
