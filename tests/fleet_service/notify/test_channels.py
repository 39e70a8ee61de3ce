"""Channel CRUD over the real API: bad input is a 422 naming the field and stores nothing; secrets are shown
once and never again (not by GET, not in the audit log, not in the service's log); viewers read, admins write."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.support.auth import token_for
from tests.support.receiver import Receiver
from tests.support.stack import StackThread, settings_for

URL = "http://127.0.0.1:9/hook"
GOOD = {"name": "ops", "kind": "webhook", "config": {"url": URL}}

BAD = [  # (body, what the 422 must name)
    ({**GOOD, "config": {"url": "ftp://example.com/x"}}, "config.url"),
    ({**GOOD, "config": {"url": "http://"}}, "config.url"),
    ({**GOOD, "config": {}}, "config.url"),
    ({**GOOD, "config": {"url": URL, "verify": False}}, "config.verify"),
    ({**GOOD, "secrets": {"secret": "mine"}}, "secrets.secret"),
    ({**GOOD, "kind": "pager"}, "kind"),
    ({**GOOD, "severities": ["fatal"]}, "severities"),
    ({**GOOD, "severities": []}, "severities"),
    ({**GOOD, "tags": ["has space"]}, "tags"),
    ({**GOOD, "group_wait_s": -1}, "group_wait_s"),
    ({**GOOD, "name": ""}, "name"),
    ({**GOOD, "colour": "red"}, "colour"),
    ({"name": "chat", "kind": "slack", "secrets": {"url": "not a url"}}, "secrets.url"),
    ({"name": "chat", "kind": "slack", "config": {"url": URL}}, "config.url"),
]


@pytest.fixture
def stack(tmp_path):
    with StackThread(settings_for(tmp_path)) as running:
        yield running


def channels(api: httpx.Client) -> list[dict]:
    r = api.get("/api/notification-channels")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_bad_channels_are_refused_naming_the_field_and_nothing_is_stored(stack):
    with stack.client() as api:
        for body, field in BAD:
            r = api.post("/api/notification-channels", json=body)
            assert r.status_code == 422, (body, r.text)
            assert field in r.text, (field, r.text)
        assert channels(api) == []
        made = api.post("/api/notification-channels", json={**GOOD, "tags": ["stage"]}).json()
        before = api.get(f"/api/notification-channels/{made['id']}").json()
        for body, field in [
            *BAD[:5],
            ({**GOOD, "kind": "slack", "secrets": {"url": URL}}, "kind"),
            ({**GOOD, "tags": ["ok", "not ok"]}, "tags"),
        ]:
            r = api.put(f"/api/notification-channels/{made['id']}", json=body)
            assert r.status_code == 422, (body, r.text)
            assert field in r.text, (field, r.text)
        assert api.get(f"/api/notification-channels/{made['id']}").json() == before
        slack = api.post("/api/notification-channels", json={"name": "c", "kind": "slack", "secrets": {"url": URL}})
        r = api.put(
            f"/api/notification-channels/{slack.json()['id']}",
            json={"name": "c", "kind": "slack", "rotate_secret": True},
        )
        assert r.status_code == 422 and "rotate_secret" in r.text
        assert api.get("/api/notification-channels/nope").status_code == 404
        assert api.put("/api/notification-channels/nope", json=GOOD).status_code == 404
        assert api.delete("/api/notification-channels/nope").status_code == 404
        assert api.post("/api/notification-channels/nope/test").status_code == 404
        assert api.get("/api/notification-channels/nope/deliveries").status_code == 404


def test_defaults_and_a_whole_update(stack):
    with stack.client() as api:
        made = api.post("/api/notification-channels", json=GOOD).json()
        assert made["severities"] == ["info", "warning", "critical"] and made["tags"] == []
        assert made["group_wait_s"] == 30 and made["enabled"] is True and made["created_by"]
        r = api.put(
            f"/api/notification-channels/{made['id']}",
            json={**GOOD, "name": "night", "severities": ["critical"], "tags": ["b", "a", "a"], "group_wait_s": 0},
        )
        assert r.status_code == 200, r.text
        assert r.json()["secret"] is None  # not rotated: not shown
        got = api.get(f"/api/notification-channels/{made['id']}").json()
        assert (got["name"], got["severities"], got["tags"], got["group_wait_s"]) == (
            "night",
            ["critical"],
            ["a", "b"],
            0,
        )
        assert api.delete(f"/api/notification-channels/{made['id']}").status_code == 204
        assert channels(api) == []


def test_secrets_are_shown_once_kept_by_put_and_never_read_back_or_logged(stack, caplog):
    caplog.set_level(logging.DEBUG)
    with Receiver() as receiver, stack.client() as api:
        r = api.post("/api/notification-channels", json={**GOOD, "config": {"url": receiver.url}})
        assert r.status_code == 201
        channel = r.json()
        first = channel["secret"]
        assert channel["secret_set"] is True and channel["secrets_set"] == ["secret"]
        other = api.post("/api/notification-channels", json={**GOOD, "config": {"url": receiver.url}}).json()
        assert other["secret"] != first  # random per channel
        smtp_like = api.post(
            "/api/notification-channels", json={"name": "chat", "kind": "slack", "secrets": {"url": receiver.url}}
        ).json()

        listed = api.get("/api/notification-channels").text
        one = api.get(f"/api/notification-channels/{channel['id']}")
        assert first not in listed and first not in one.text and "secret" not in one.json()
        assert one.json()["secret_set"] is True and one.json()["password_set"] is False

        # a PUT without secrets keeps the signing key: the next message is signed with the one shown at create
        kept = api.put(f"/api/notification-channels/{channel['id']}", json={**GOOD, "config": {"url": receiver.url}})
        assert kept.status_code == 200 and kept.json()["secret"] is None
        assert api.post(f"/api/notification-channels/{channel['id']}/test").json()["ok"]
        assert receiver.received[-1].signed_by(first)
        # ... and the Slack URL stays without being given again
        same = {"name": "chat 2", "kind": "slack"}
        assert api.put(f"/api/notification-channels/{smtp_like['id']}", json=same).json()["secrets_set"] == ["url"]
        assert api.post(f"/api/notification-channels/{smtp_like['id']}/test").json()["ok"]

        rotated = api.put(
            f"/api/notification-channels/{channel['id']}",
            json={**GOOD, "config": {"url": receiver.url}, "rotate_secret": True},
        ).json()
        second = rotated["secret"]
        assert second and second != first
        assert api.post(f"/api/notification-channels/{channel['id']}/test").json()["ok"]
        assert receiver.received[-1].signed_by(second) and not receiver.received[-1].signed_by(first)
        assert second not in api.get(f"/api/notification-channels/{channel['id']}").text

        audit = api.get("/api/audit", params={"limit": 500})
        assert audit.status_code == 200, audit.text
        entries = [e for e in audit.json()["items"] if "/api/notification-channels" in e["path"]]
        assert len(entries) >= 7 and any(e["target"] == channel["id"] for e in entries)
        for secret in (first, second, other["secret"], receiver.url):
            assert secret not in audit.text
            assert secret not in caplog.text


def test_viewers_read_channels_and_deliveries_but_may_not_change_or_test_them(stack):
    with stack.client() as api:
        channel = api.post("/api/notification-channels", json=GOOD).json()
    viewer_token = token_for(stack, "viewer", "channel-viewer")
    operator_token = token_for(stack, "operator", "channel-operator")
    with stack.client(viewer_token) as viewer, stack.client(operator_token) as operator:
        assert [c["id"] for c in channels(viewer)] == [channel["id"]]
        assert channel["secret"] not in viewer.get("/api/notification-channels").text
        assert viewer.get(f"/api/notification-channels/{channel['id']}/deliveries").status_code == 200
        assert viewer.get("/api/notifications").status_code == 200
        for client in (viewer, operator):
            assert client.post("/api/notification-channels", json=GOOD).status_code == 403
            assert client.post(f"/api/notification-channels/{channel['id']}/test").status_code == 403
            assert client.put(f"/api/notification-channels/{channel['id']}", json=GOOD).status_code == 403
            assert client.delete(f"/api/notification-channels/{channel['id']}").status_code == 403
        assert len(channels(viewer)) == 1
        assert viewer.get(f"/api/notification-channels/{channel['id']}/deliveries").json()["total"] == 0
