"""The Alertmanager sender against a real Alertmanager (checked through its own v2 API), a recording receiver for
statuses and headers, and its configuration check."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleet_service.errors import Invalid
from fleet_service.notify.message import Channel
from fleet_service.notify.senders import alertmanager as sender
from tests.support.alertmanager import Alertmanager, RecordingReceiver
from tests.support.notify_messages import alert_item, firing, iso, resolved
from tests.support.services import free_port, wait_for


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    server = Alertmanager(tmp_path_factory.mktemp("alertmanager")).start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    server = RecordingReceiver().start()
    yield server
    server.stop()


def channel(url: str, secrets: dict[str, str] | None = None, **config: Any) -> Channel:
    public, kept = sender.check_config({"url": url, **config}, secrets or {})
    return Channel(id="ch-am", name="Alertmanager", kind="alertmanager", config=public, secrets=kept)


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def by_alert_id(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["labels"]["fleet_alert_id"]: a for a in alerts}


async def test_firing_alerts_are_active_in_alertmanager_until_resolved(alertmanager: Alertmanager):
    fired_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    message = firing(
        alert_item(101, "cam-1", fired_at=fired_at),
        alert_item(102, "cam-2", value={"temp_c": 88}, fired_at=fired_at),
        dashboard_url="https://fleet.example.test/",
    )
    ch = channel(alertmanager.url)

    result = await sender.send(ch, message, timeout_s=10)

    assert result.ok, result.error
    assert result.status_code == 200
    alerts = wait_for(
        lambda: (
            (found := by_alert_id(alertmanager.alerts(rule_id="r-temp")))
            and all(a["status"]["state"] == "active" for a in found.values())
            and len(found) == 2
            and found
        ),
        what="both alerts active in Alertmanager",
    )
    first = alerts["101"]
    assert first["labels"] == {
        "alertname": "UnitTooHot",
        "rule_id": "r-temp",
        "device_id": "cam-1",
        "severity": "warning",
        "fleet_alert_id": "101",
    }
    assert first["annotations"]["summary"] == "[FIRING] warning: Unit too hot — Camera 1"
    assert first["annotations"]["description"].startswith("Camera 1 (cam-1): temp_c=91.5, since ")
    assert first["annotations"]["device_name"] == "Camera 1"
    assert alerts["102"]["annotations"]["description"].startswith("Camera 2 (cam-2): temp_c=88, since ")
    assert parse(first["startsAt"]) == fired_at
    hold = parse(first["endsAt"]) - datetime.now(UTC)
    assert timedelta(seconds=sender.HOLD_S - 30) < hold <= timedelta(seconds=sender.HOLD_S)
    assert first["generatorURL"] == "https://fleet.example.test/#/units/cam-1"

    result = await sender.send(ch, resolved(message), timeout_s=10)

    assert result.ok, result.error
    wait_for(lambda: alertmanager.alerts(rule_id="r-temp") == [], what="both alerts resolved")
    assert alertmanager.alerts(device_id="cam-1") == []


async def test_re_sending_keeps_one_alert_each_and_moves_its_end(alertmanager: Alertmanager):
    """The dispatcher re-sends open alerts every REFRESH_S: a changed value or an acknowledgement must update
    the same alert in Alertmanager (its identity is its labels), never add a second one."""
    message = firing(alert_item(201, "cam-3"), alert_item(202, "cam-4"))
    ch = channel(alertmanager.url)
    assert (await sender.send(ch, message, timeout_s=10)).ok
    before = wait_for(
        lambda: len(got := by_alert_id(alertmanager.alerts(device_id="cam-3"))) == 1 and got, what="cam-3"
    )

    later = replace(message.alerts[0], value={"temp_c": 95.0}, state="acknowledged")
    assert (await sender.send(ch, replace(message, alerts=(later, message.alerts[1])), timeout_s=10)).ok

    after = wait_for(
        lambda: (
            (got := by_alert_id(alertmanager.alerts(device_id="cam-3")))
            and "temp_c=95.0" in got["201"]["annotations"]["description"]
            and got
        ),
        what="the new value in Alertmanager",
    )
    assert list(after) == ["201"]
    assert after["201"]["fingerprint"] == before["201"]["fingerprint"]
    assert parse(after["201"]["endsAt"]) >= parse(before["201"]["endsAt"])
    assert after["201"]["annotations"]["state"] == "acknowledged"
    assert len(alertmanager.alerts(rule_id="r-temp", severity="warning")) == 2
    assert (await sender.send(ch, resolved(message), timeout_s=10)).ok


async def test_an_alertmanager_that_is_not_there_is_retried():
    result = await sender.send(channel(f"http://127.0.0.1:{free_port()}"), firing(alert_item(1, "cam-1")), 5)
    assert not result.ok and result.retry is True
    assert result.error


async def test_a_malformed_alert_refused_by_alertmanager_is_not_retried(alertmanager: Alertmanager):
    """A resolve time before the fire time: Alertmanager answers 400 and would answer it again."""
    fired = datetime.now(UTC) - timedelta(minutes=1)
    message = resolved(firing(alert_item(301, "cam-5", fired_at=fired)), at=fired - timedelta(minutes=10))

    result = await sender.send(channel(alertmanager.url), message, timeout_s=10)

    assert not result.ok and result.retry is False
    assert result.status_code == 400
    assert "start time must be before end time" in (result.error or "")


@pytest.mark.parametrize(
    ("status", "retry"), [(400, False), (401, False), (404, False), (408, True), (429, True), (500, True), (503, True)]
)
async def test_statuses_map_to_retry(receiver: RecordingReceiver, status: int, retry: bool):
    receiver.status = status
    result = await sender.send(channel(receiver.url), firing(alert_item(1, "cam-1")), timeout_s=5)
    assert (result.ok, result.status_code, result.retry) == (False, status, retry)


async def test_basic_auth_goes_in_the_header_and_never_in_the_log(
    receiver: RecordingReceiver, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    ch = channel(receiver.url + "/prefix/", {"password": "am-Basic-pa55-e1"}, username="fleet")
    receiver.status = 500
    assert not (await sender.send(ch, firing(alert_item(1, "cam-1")), timeout_s=5)).ok
    receiver.status = 200
    assert (await sender.send(ch, firing(alert_item(1, "cam-1")), timeout_s=5)).ok

    request = receiver.requests[-1]
    assert request.path == "/prefix/api/v2/alerts"
    assert request.headers["Authorization"] == "Basic ZmxlZXQ6YW0tQmFzaWMtcGE1NS1lMQ=="  # fleet:am-Basic-pa55-e1
    assert all("am-Basic-pa55-e1" not in r.getMessage() for r in caplog.records)


async def test_a_bearer_token_goes_in_the_header(receiver: RecordingReceiver):
    ch = channel(receiver.url, {"bearer_token": "tok-123-abc"})
    assert (await sender.send(ch, firing(alert_item(1, "cam-1")), timeout_s=5)).ok
    assert receiver.requests[-1].headers["Authorization"] == "Bearer tok-123-abc"


async def test_a_test_notification_is_marked_by_a_label(receiver: RecordingReceiver):
    message = replace(firing(alert_item(1, "cam-1"), notification_id=None), test=True)
    assert (await sender.send(channel(receiver.url), message, timeout_s=5)).ok
    (alert,) = receiver.requests[-1].body
    assert alert["labels"]["test"] == "true"
    assert alert["annotations"]["summary"].startswith("[TEST] ")


def test_alert_names_are_label_safe():
    assert sender.alert_name("Unit offline", "r1") == "UnitOffline"
    assert sender.alert_name("disk > 90 % on /var", "r1") == "Disk90OnVar"
    assert sender.alert_name("3 units down", "r1") == "Alert3UnitsDown"
    assert sender.alert_name("Überhitzung", "r1") == "Uberhitzung"
    assert sender.alert_name("!!!", "r-9") == "FleetRuleR9"


def test_timestamps_are_rfc3339_utc():
    assert sender.rfc3339("2026-01-02T03:04:05+02:00") == "2026-01-02T01:04:05.000Z"
    assert sender.rfc3339(iso(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))) == "2026-01-02T03:04:05.678Z"


def test_the_module_keeps_the_sender_contract():
    assert sender.REFRESH_S == 60
    assert sender.HOLD_S == 4 * sender.REFRESH_S


# --- configuration -----------------------------------------------------------------------------------------------


def test_the_url_is_normalised_and_secrets_stay_secret():
    public, secrets = sender.check_config(
        {"url": "https://am.example.test:9093/am/", "username": "u"}, {"password": "p"}
    )
    assert public == {"url": "https://am.example.test:9093/am", "username": "u"}
    assert secrets == {"password": "p"}
    public, secrets = sender.check_config({"url": "http://am:9093"}, {"bearer_token": "t"})
    assert public == {"url": "http://am:9093", "username": None}
    assert secrets == {"bearer_token": "t"}


@pytest.mark.parametrize(
    ("config", "secrets", "field"),
    [
        ({}, {}, "url"),
        ({"url": ""}, {}, "url"),
        ({"url": 5}, {}, "url"),
        ({"url": "ftp://am:9093"}, {}, "url"),
        ({"url": "am:9093"}, {}, "url"),
        ({"url": "http://"}, {}, "url"),
        ({"url": "http://u:secret@am:9093"}, {}, "url"),  # a password belongs in the write-only secret
        ({"url": "http://am:9093/?x=1"}, {}, "url"),
        ({"url": "http://am:9093/#top"}, {}, "url"),
        ({"url": "http://am:99999"}, {}, "url"),
        ({"url": "http://am:9093", "username": ""}, {"password": "p"}, "username"),
        ({"url": "http://am:9093", "username": "u"}, {}, "password"),
        ({"url": "http://am:9093"}, {"password": "p"}, "username"),
        ({"url": "http://am:9093", "username": "u"}, {"password": "p", "bearer_token": "t"}, "bearer_token"),
        ({"url": "http://am:9093"}, {"bearer_token": ""}, "bearer_token"),
        ({"url": "http://am:9093"}, {"token": "t"}, "token"),
        ({"url": "http://am:9093", "receiver": "x"}, {}, "receiver"),
    ],
)
def test_each_bad_field_is_named(config: dict[str, Any], secrets: dict[str, str], field: str):
    with pytest.raises(Invalid) as caught:
        sender.check_config(config, secrets)
    assert field in str(caught.value)
    assert ":secret@" not in str(caught.value)
