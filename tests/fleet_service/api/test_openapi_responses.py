"""Every JSON answer of the running service matches the response schema its own `/openapi.json` serves.

A real service on SQLite with enrolled and claimed units, one reporting metrics and logs over MQTT, commands, a
rollout, a user, an API token, a claim token, config and the clustered brokers' auth calls: every operation in
`/openapi.json` is called over HTTP (the test fails on one it did not call) and each body is validated against the
schema of its status code. The response schemas forbid
keys they do not declare (`additionalProperties: false`, checked below), so a key added to or dropped from an
answer without its model fails here. The event stream and the Prometheus text are checked for their media type.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema_rs
import pytest

from fleet_service.terminal.audit import end_row, start_row
from fleet_service.terminal.models import TerminalSession
from fleet_service.terminal.recording import Recorder, store_chunk
from protocol.ids import new_id, now_ms
from protocol.topics import Kind, topic
from tests.fleet_service.stack_on import stack_on
from tests.support.auth import add_user, login
from tests.support.receiver import Receiver
from tests.support.services import wait_for
from tests.support.unit import RawUnit

BROKER_TOKEN = "schema-broker-token-0123456789abcdef"
NOT_JSON = {
    "/metrics": "text/plain",
    "/api/events": "text/event-stream",
    "/api/terminal-sessions/{session_id}/recording": "application/x-asciicast",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # TURN configured, so its routes answer credentials
        mp.setenv("FLEET_TURN_SECRETS", "schema-turn-secret")
        mp.setenv("FLEET_TURN_URLS", "stun:127.0.0.1:3478,turn:127.0.0.1:3478?transport=udp")
        mp.setenv("FLEET_ALERT_EVAL_INTERVAL_S", "0.3")  # an alert fires within a moment
        mp.setenv("FLEET_BROKER_AUTH_TOKEN", BROKER_TOKEN)  # the clustered brokers' auth routes answer
        with stack_on("sqlite", tmp_path_factory.mktemp("openapi-responses")) as running:
            yield running


class Checker:
    """Validates answers against the served schema and remembers which operations were seen."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api
        self.spec = api.get("/openapi.json").json()
        self.templates = [
            (re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), path) for path in self.spec["paths"]
        ]
        self.seen: set[tuple[str, str]] = set()

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        path = path.split("?", 1)[0]
        matches = [t for rx, t in self.templates if rx.match(path) and method in self.spec["paths"][t]]
        assert matches, f"{method.upper()} {path} is not in /openapi.json"
        template = min(matches, key=lambda t: t.count("{"))  # /api/devices/claim before /api/devices/{device_id}
        return template, self.spec["paths"][template][method]

    def call(self, method: str, path: str, expect: int, client: httpx.Client | None = None, **kw) -> Any:
        r = (client or self.api).request(method.upper(), path, **kw)
        assert r.status_code == expect, f"{method.upper()} {path}: {r.status_code} {r.text[:500]}"
        template, op = self.operation(method, path)
        self.seen.add((method, template))
        if expect == 204:
            return None
        answer = op["responses"].get(str(expect))
        assert answer is not None, f"{method.upper()} {template} does not document status {expect}"
        content = answer.get("content", {})
        assert "application/json" in content, f"{method.upper()} {template}: no JSON schema for {expect}"
        schema = content["application/json"]["schema"]
        assert schema, f"{method.upper()} {template}: an empty (untyped) response schema"
        self.assert_strict(schema, f"{method.upper()} {template}")
        body = r.json()
        validator = jsonschema_rs.validator_for({**schema, "components": self.spec["components"]})
        errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(body)]
        assert not errors, f"{method.upper()} {path} answered outside its schema:\n" + "\n".join(errors[:10])
        return body

    def assert_strict(self, schema: Any, where: str, seen: set[str] | None = None) -> None:
        """Every object the schema names (a model) forbids undeclared keys; free-form dicts are not models."""
        seen = set() if seen is None else seen
        if isinstance(schema, dict):
            ref = schema.get("$ref")
            if ref and ref not in seen:
                seen.add(ref)
                model = self.spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
                assert model.get("additionalProperties") is False, f"{where}: {ref} allows undeclared keys"
                self.assert_strict(model, where, seen)
            for value in schema.values():
                self.assert_strict(value, where, seen)
        elif isinstance(schema, list):
            for value in schema:
                self.assert_strict(value, where, seen)


def _reporting_unit(stack, check: Checker, device_id: str, secret: str) -> RawUnit:
    unit = RawUnit(stack.mqtt_port, device_id, secret).connect()
    unit.birth()
    now = now_ms()
    for i in range(3):
        unit.publish(
            Kind.METRICS,
            {
                "v": 1,
                "ts": now - 2000 + i * 1000,
                "cpu_percent": 12.5 + i,
                "mem_percent": 40,
                "mem_used_bytes": 1000 + i,
                "temp_c": 51.0,
                "services": {"recorder": "active"},
                "extra": {"fps": 25},
            },
        )
    unit.publish(
        Kind.LOGS,
        {
            "v": 1,
            "records": [
                {
                    "id": f"rec-{i}",
                    "ts": now - 1000 + i,
                    "level": "warning" if i else "info",
                    "source": "recorder",
                    "msg": f"line {i}",
                }
                for i in range(3)
            ],
        },
    )
    wait_for(
        lambda: (
            check.api.get(f"/api/devices/{device_id}/logs").json()["items"]
            and check.api.get(f"/api/devices/{device_id}/status").json()["metrics"]
        ),
        timeout=15,
        what="metrics and logs stored",
    )
    return unit


def _terminal_session(engine, device_id: str) -> str:
    sid = new_id()
    recorder = Recorder(sid, 80, 24, "schema", "xterm", 1 << 20)
    recorder.output(b"$ echo hi\r\nhi\r\n")
    start_row(
        engine, TerminalSession(id=sid, device_id=device_id, actor="token:schema", role="admin", started_at=now_ms())
    )
    store_chunk(engine, recorder.finish())
    end_row(engine, sid, exit_status=0, close_reason="exited", close_message="", recording_bytes=recorder.size)
    return sid


def _broker_auth_calls(check: Checker, device_id: str, secret: str) -> None:
    """Each clustered broker's questions about a unit, allowed and refused, as that broker sends them."""
    c = check.call
    broker = {"headers": {"Authorization": f"Bearer {BROKER_TOKEN}"}}
    own, other = topic(device_id, Kind.METRICS), topic("schema-2", Kind.METRICS)
    login = {"username": device_id, "password": secret, "clientid": device_id}
    c("post", "/api/broker-auth/emqx/authn", 200, json=login, **broker)
    c("post", "/api/broker-auth/emqx/authz", 200, json={**login, "topic": own, "action": "publish"}, **broker)
    c("post", "/api/broker-auth/go-auth/user", 200, json=login, **broker)
    c("post", "/api/broker-auth/go-auth/user", 403, json={**login, "password": "wrong"}, **broker)
    c("post", "/api/broker-auth/go-auth/superuser", 403, json={"username": device_id}, **broker)
    c("post", "/api/broker-auth/go-auth/acl", 200, json={**login, "topic": own, "acc": 2}, **broker)
    verne = {"username": device_id, "client_id": device_id, "mountpoint": ""}
    c("post", "/api/broker-auth/vernemq/register", 200, json={**verne, "password": secret}, **broker)
    c("post", "/api/broker-auth/vernemq/publish", 200, json={**verne, "topic": own, "qos": 1}, **broker)
    c("post", "/api/broker-auth/vernemq/publish", 200, json={**verne, "topic": other, "qos": 1}, **broker)
    asked = [{"topic": topic(device_id, Kind.CMD), "qos": 1}, {"topic": topic("schema-2", Kind.CMD), "qos": 1}]
    c("post", "/api/broker-auth/vernemq/subscribe", 200, json={**verne, "topics": asked[:1]}, **broker)
    c("post", "/api/broker-auth/vernemq/subscribe", 200, json={**verne, "topics": asked}, **broker)


def test_every_answer_matches_its_schema(stack):
    with stack.client() as api, Receiver() as receiver:
        check = Checker(api)
        c = check.call
        # units: enrolled by an admin, claimed by themselves; one reports over MQTT
        secret = c("post", "/api/devices", 201, json={"id": "schema-1", "name": "Front", "tags": ["schema"]})["secret"]
        c("post", "/api/devices", 201, json={"id": "schema-2", "tags": ["schema", "other"]})
        claim = c("post", "/api/claim-tokens", 201, json={"tags": ["claimed"], "ttl_s": 3600})
        c("get", "/api/claim-tokens", 200)
        c("get", "/api/claim-tokens?state=used", 200)
        with httpx.Client(base_url=stack.url) as anonymous:
            c("post", "/api/devices/claim", 201, client=anonymous, json={"token": claim["token"], "id": "schema-3"})
        unit = _reporting_unit(stack, check, "schema-1", secret)
        try:
            c("get", "/api/devices", 200)
            c("get", "/api/devices?status=online&sort=-last_seen&limit=2", 200)
            c("get", "/api/devices/schema-1", 200)
            c("get", "/api/devices/schema-1/status", 200)
            c("patch", "/api/devices/schema-2", 200, json={"name": "Back", "tags": ["schema"]})
            c("post", "/api/devices/schema-3/rotate-secret", 200)
            c("get", "/api/devices/schema-1/logs?limit=2", 200)
            c("get", "/api/devices/schema-1/logs?level=warning", 200)
            c("get", "/api/devices/schema-1/metrics", 200)
            c("get", "/api/devices/schema-1/metrics?step=60", 200)

            # commands
            cmd = c("post", "/api/devices/schema-1/commands", 202, json={"name": "ping"})
            c("post", "/api/devices/schema-2/restart", 202, json={"unit": "recorder.service"})
            c("post", "/api/devices/schema-2/reboot", 202)
            queued = c("post", "/api/devices/schema-2/update", 202, json={"ref": "v1.2.3"})
            c("get", "/api/devices/schema-2/commands", 200)
            c("get", f"/api/commands/{cmd['id']}", 200)
            c("post", f"/api/commands/{queued['id']}/cancel", 200)

            # rollouts
            rollout = c(
                "post", "/api/rollouts", 201, json={"command": "ping", "tag": "schema", "batch_size": 1, "pause_s": 600}
            )
            c("post", "/api/rollouts", 201, json={"command": "ping", "device_ids": ["schema-2"], "name": "one"})
            c("post", "/api/rollouts", 201, json={"command": "ping", "filter": {"tag": "schema"}, "batch_percent": 100})
            c("get", "/api/rollouts", 200)
            c("get", f"/api/rollouts/{rollout['id']}", 200)
            c("get", f"/api/rollouts/{rollout['id']}?units=failed", 200)
            c("post", f"/api/rollouts/{rollout['id']}/pause", 200)
            c("post", f"/api/rollouts/{rollout['id']}/resume", 200)
            c("post", f"/api/rollouts/{rollout['id']}/cancel", 200)

            # alerts: a rule the reporting unit breaks, a silence over it, the alert acknowledged; a channel
            # that hears of it (the silence suppresses the notification) and is tested
            hook = {"name": "schema", "kind": "webhook", "config": {"url": receiver.url}, "group_wait_s": 0}
            channel = c("post", "/api/notification-channels", 201, json=hook)
            c("get", "/api/alert-rules", 200)
            warm = {
                "name": "warm",
                "kind": "metric",
                "field": "temp_c",
                "op": ">",
                "threshold": 10,
                "device_id": "schema-1",
                "severity": "critical",  # as created: the alert may fire before the PUT below lands
            }
            rule = c("post", "/api/alert-rules", 201, json=warm)
            c("get", f"/api/alert-rules/{rule['id']}", 200)
            c("put", f"/api/alert-rules/{rule['id']}", 200, json={**warm, "clear_threshold": 5})
            silence = c("post", "/api/silences", 201, json={"device_id": "schema-1", "duration_s": 600, "comment": "x"})
            c("get", "/api/silences", 200)
            c("get", "/api/silences?active=true", 200)
            c("get", f"/api/silences/{silence['id']}", 200)
            wait_for(lambda: api.get("/api/alerts").json()["items"], timeout=15, what="an alert")
            alert = c("get", "/api/alerts?state=open&unit=schema-1&severity=critical", 200)["items"][0]
            c("get", f"/api/alerts?tag=schema&rule={rule['id']}&since=2020-01-01T00:00:00Z", 200)
            c("get", f"/api/alerts/{alert['id']}", 200)
            c("get", "/api/alerts?state=open&sort=triage", 200)
            c("get", "/api/alerts/summary?device_id=schema-1,schema-2", 200)
            c("post", f"/api/alerts/{alert['id']}/ack", 200)
            c("get", "/api/notification-channels", 200)
            c("get", f"/api/notification-channels/{channel['id']}", 200)
            c("put", f"/api/notification-channels/{channel['id']}", 200, json={**hook, "rotate_secret": True})
            c("post", f"/api/notification-channels/{channel['id']}/test", 200)
            c("get", f"/api/notification-channels/{channel['id']}/deliveries?limit=5", 200)
            wait_for(lambda: api.get("/api/notifications").json()["items"], timeout=15, what="an outbox row")
            c("get", f"/api/notifications?channel={channel['id']}&state=suppressed&alert={alert['id']}", 200)
            c("get", "/api/notifications", 200)
            c("delete", f"/api/silences/{silence['id']}", 200)
            c("delete", f"/api/alert-rules/{rule['id']}", 204)

            # config
            c("get", "/api/config/schema", 200)
            c("put", "/api/config/groups/schema", 200, json={"log_level": "info", "x": {"y": [1, 2.5]}})
            c("get", "/api/config/groups", 200)
            c("get", "/api/config/groups/schema", 200)
            c("get", "/api/tags", 200, params={"prefix": "sch", "limit": 10})
            c("put", "/api/devices/schema-1/config", 200, json={"log_level": "debug"}, headers={"If-Match": '"1"'})
            c("get", "/api/devices/schema-1/config", 200)
            c("put", "/api/config/groups/other", 200, json={"a": 1})
            c("delete", "/api/config/groups/other", 200)

            # people and credentials
            c("post", "/api/users", 201, json={"username": "schema-op", "password": "long enough pw", "role": "viewer"})
            c("patch", "/api/users/schema-op", 200, json={"role": "operator"})
            c("get", "/api/users", 200)
            c("post", "/api/tokens", 201, json={"role": "viewer", "name": "schema"})
            c("get", "/api/tokens", 200)
            c("get", "/api/audit", 200)
            c("get", "/api/audit?failed=false&limit=5", 200)
            c("get", "/api/me", 200)
            password = add_user(stack, "schema-admin", "admin")
            with httpx.Client(base_url=stack.url) as browser:
                c(
                    "post",
                    "/api/auth/login",
                    200,
                    client=browser,
                    json={"username": "schema-admin", "password": password},
                )
            session = login(stack, "schema-admin", password)
            c("get", "/api/me", 200, client=session.client)
            c("get", "/api/auth/session", 200, client=session.client)
            with httpx.Client(base_url=stack.url) as nobody:
                c("get", "/api/auth/session", 200, client=nobody)

            # remote terminal sessions: a finished one's row and recording, as the bridge leaves them
            sid = _terminal_session(stack.ctx.engine, "schema-1")
            c("get", "/api/terminal-sessions", 200)
            c("get", "/api/terminal-sessions?device_id=schema-1&limit=5", 200)
            c("get", f"/api/terminal-sessions/{sid}", 200)
            cast = api.get(f"/api/terminal-sessions/{sid}/recording")
            assert cast.status_code == 200 and cast.headers["content-type"] == "application/x-asciicast", cast.text
            assert api.get(f"/api/terminal-sessions/{'f' * 32}/recording").status_code == 404

            _broker_auth_calls(check, "schema-1", secret)

            # what is left: deleting, signing out (204, no body)
            viewer_token = c("post", "/api/tokens", 201, json={"role": "viewer", "name": "gone"})
            c("delete", f"/api/tokens/{viewer_token['id']}", 204)
            c("delete", "/api/users/schema-op", 204)
            spare = c("post", "/api/claim-tokens", 201, json={"tags": ["spare"], "ttl_s": 60})
            c("delete", f"/api/claim-tokens/{spare['id']}", 204)
            c("delete", f"/api/notification-channels/{channel['id']}", 204)
            c("delete", "/api/devices/schema-3", 204)
            c("post", "/api/auth/logout", 204, client=session.client, headers={"X-CSRF-Token": session.csrf_token})

            # system
            c("get", "/health", 200)
            c("get", "/api/relay/health", 200)
            c("get", "/api/turn-credentials", 200)
            c("get", "/turn-credentials?ttl=600", 200)
            for path, media in NOT_JSON.items():
                _, op = check.operation("get", path)
                assert list(op["responses"]["200"]["content"]) == [media], path
                check.seen.add(("get", path))
            assert api.get("/metrics").headers["content-type"].startswith("text/plain")
        finally:
            unit.stop_clean()

    methods = {"get", "post", "put", "patch", "delete"}
    every = {(m, p) for p, ops in check.spec["paths"].items() for m in ops if m in methods}
    assert every - check.seen == set(), "operations in /openapi.json not called"
