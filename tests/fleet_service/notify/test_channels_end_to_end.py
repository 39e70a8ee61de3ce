"""The e-mail and Alertmanager channels driven the way an operator uses them: created through the API, fed by a
unit crossing a rule over the real broker, received by a real SMTP server and a real Alertmanager."""

from __future__ import annotations

import pytest

from tests.fleet_service.alerts.support import fast_settings
from tests.fleet_service.notify.support import hot_rule, metrics, online_unit, outbox
from tests.support.alertmanager import Alertmanager
from tests.support.services import wait_for
from tests.support.smtp import PASSWORD, USER, Certificate, SmtpServer, make_certificate
from tests.support.stack import StackThread


@pytest.fixture
def certificate(tmp_path) -> Certificate:
    return make_certificate(tmp_path)


def test_an_alert_is_mailed_through_starttls_with_a_login_and_its_resolution_threads_under_it(tmp_path, certificate):
    smtp = SmtpServer(certificate).start()
    try:
        with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
            rule = hot_rule(api)
            body = {
                "name": "night shift",
                "kind": "email",
                "group_wait_s": 0,
                "config": {
                    "host": "localhost",
                    "port": smtp.port,
                    "security": "starttls",
                    "username": USER,
                    "from": "fleet@venue.test",
                    "to": ["ops@venue.test", "oncall@venue.test"],
                    "ca_file": str(certificate.cert),
                },
                "secrets": {"password": PASSWORD},
            }
            r = api.post("/api/notification-channels", json=body)
            assert r.status_code == 201, r.text
            channel = r.json()
            assert channel["password_set"] is True and PASSWORD not in r.text
            assert PASSWORD not in api.get(f"/api/notification-channels/{channel['id']}").text

            unit = online_unit(stack, api, "mail-1", name="Main stage")
            metrics(unit, temp_c=93.0)
            fired = smtp.wait_for(1, timeout=15)[0]
            assert fired.authenticated_as == USER
            assert sorted(fired.rcpt_tos) == ["oncall@venue.test", "ops@venue.test"]
            assert fired.message["From"] == "fleet@venue.test"
            assert fired.message["Subject"].startswith("[FIRING] warning: " + rule["name"])
            assert "- Main stage (mail-1): 93, since " in fired.message.get_content()

            metrics(unit, temp_c=50.0)
            resolved = smtp.wait_for(2, timeout=15)[1]
            assert resolved.message["Subject"].startswith("[RESOLVED]")
            assert resolved.message["In-Reply-To"] == fired.message["Message-ID"]
            # the receiver may hold the mail a moment before the service stores "delivered"
            wait_for(
                lambda: all(n["state"] == "delivered" for n in outbox(api, channel=channel["id"])),
                timeout=10,
                what="both notifications stored as delivered",
            )
            rows = outbox(api, channel=channel["id"])
            assert sorted((n["status"], n["state"], n["attempts"]) for n in rows) == [
                ("firing", "delivered", 1),
                ("resolved", "delivered", 1),
            ]
            assert len(smtp.received) == 2  # nothing doubled
            unit.stop_clean()
    finally:
        smtp.stop()


def test_an_alert_is_pushed_to_alertmanager_and_leaves_it_when_resolved(tmp_path):
    manager = Alertmanager(tmp_path / "alertmanager").start()
    try:
        with StackThread(fast_settings(tmp_path)) as stack, stack.client() as api:
            rule = hot_rule(api)
            r = api.post(
                "/api/notification-channels",
                json={"name": "site am", "kind": "alertmanager", "group_wait_s": 0, "config": {"url": manager.url}},
            )
            assert r.status_code == 201, r.text
            unit = online_unit(stack, api, "am-1")
            metrics(unit, temp_c=92.0)
            found = wait_for(lambda: manager.alerts(device_id="am-1"), timeout=15, what="the alert in Alertmanager")
            assert len(found) == 1
            labels = found[0]["labels"]
            assert (labels["rule_id"], labels["severity"], labels["device_id"]) == (rule["id"], "warning", "am-1")
            assert found[0]["status"]["state"] == "active"

            metrics(unit, temp_c=50.0)

            def gone() -> bool:
                return all(a["status"]["state"] != "active" for a in manager.alerts(device_id="am-1"))

            wait_for(gone, timeout=15, what="the alert resolved in Alertmanager")
            unit.stop_clean()
    finally:
        manager.stop()
