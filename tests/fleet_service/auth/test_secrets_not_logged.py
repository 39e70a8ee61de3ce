"""No secret, token or password ever reaches a log: every record at DEBUG is captured and searched.

The scenario covers what handles secrets: enrollment, rotation, claim tokens, unit MQTT and HTTP logins
(right and wrong), operator logins (right, wrong, a password typed as the username), API tokens (valid and
made up), sessions and CSRF tokens, TURN credentials, the broker's service account, and the CLI.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import httpx
import pytest

from fleet_service.settings import BrokerTarget
from protocol.topics import Kind
from tests.support.auth import basic, bearer
from tests.support.managed_mosquitto import accepts
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN
from tests.support.unit import RawUnit

TURN_SECRET = "turn-static-auth-secret-never-logged"
CLIENT_SIDE_LOGGERS = ("httpcore", "httpx")


@pytest.fixture(autouse=True)
def turn_configured(monkeypatch):
    monkeypatch.setenv("FLEET_TURN_SECRETS", TURN_SECRET)
    monkeypatch.setenv("FLEET_TURN_URLS", "turn:127.0.0.1:3478?transport=udp")


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_no_secret_appears_in_any_log(fleet, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = [ADMIN_TOKEN, TURN_SECRET]
    service_password = BrokerTarget(fleet.stack.ctx.settings.broker_url).password  # the one in use
    secrets.append(service_password)
    api = fleet.api

    first = fleet.enroll("log-unit")
    rotated = api.post("/api/devices/log-unit/rotate-secret").json()["secret"]
    secrets += [first, rotated]
    token = api.post("/api/tokens", json={"role": "operator", "name": "logged"}).json()["token"]
    claim = api.post("/api/claim-tokens", json={"ttl_s": 600}).json()["token"]
    secrets += [token, claim]
    with httpx.Client(base_url=fleet.stack.url, timeout=15) as anonymous:
        claimed = anonymous.post("/api/devices/claim", json={"token": claim, "id": "claimed-unit"}).json()["secret"]
        anonymous.post("/api/devices/claim", json={"token": claim, "id": "claimed-again"})  # refused, logged
        secrets.append(claimed)

        password = "operator password 1"
        api.post("/api/users", json={"username": "lara", "password": password, "role": "operator"})
        anonymous.post("/api/auth/login", json={"username": "lara", "password": "wrong password 2"})
        anonymous.post("/api/auth/login", json={"username": "typed-password-3", "password": "x"})
        session = anonymous.post("/api/auth/login", json={"username": "lara", "password": password})
        csrf = session.json()["csrf_token"]
        cookie = anonymous.cookies["fleet_session"]
        anonymous.patch("/api/devices/log-unit", json={"name": "x"})  # CSRF refusal, logged
        anonymous.patch("/api/devices/log-unit", json={"name": "y"}, headers={"X-CSRF-Token": csrf})
        secrets += [password, "wrong password 2", "typed-password-3", csrf, cookie]

        made_up = "flt_" + "m" * 43
        anonymous.get("/api/me", headers=bearer(made_up))
        anonymous.get("/api/me", headers=basic("log-unit", "wrong-unit-secret-4"))
        turn = anonymous.get("/api/turn-credentials", headers=basic("log-unit", rotated))
        assert turn.status_code == 200, turn.text
        credential = turn.json()["iceServers"][0]["credential"]
        secrets += [made_up, "wrong-unit-secret-4", credential]

    unit = RawUnit(fleet.mqtt_port, "log-unit", rotated).connect()
    unit.birth()
    unit.publish(Kind.HEARTBEAT, {"v": 1, "ts": 1, "seq": 1})
    unit.stop_clean()
    assert accepts(fleet.mqtt_port, "log-unit", first) != 0  # the old secret
    assert accepts(fleet.mqtt_port, "log-unit", "wrong-mqtt-secret-5") != 0
    secrets.append("wrong-mqtt-secret-5")
    assert api.delete("/api/devices/claimed-unit").status_code == 204
    wait_for(lambda: accepts(fleet.mqtt_port, "claimed-unit", claimed) != 0, timeout=5, what="revoked unit refused")

    env = {**os.environ, "FLEET_DATABASE_URL": fleet.stack.settings.database_url, "FLEET_LOG_LEVEL": "DEBUG"}
    cli = subprocess.run(
        [sys.executable, "-m", "fleet_cli.main", "user", "add", "mia", "--role", "viewer", "--password-stdin"],
        input="cli password 6\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    secrets.append("cli password 6")

    # The test's own HTTP client logs the responses it receives (secrets included) at DEBUG: not the service's.
    records = [r for r in caplog.records if not r.name.startswith(CLIENT_SIDE_LOGGERS)]
    assert any("failed login" in r.getMessage() for r in records)  # the failures were logged ...
    assert any("failed authentication" in r.getMessage() for r in records)
    assert any("refused claim" in r.getMessage() for r in records)
    handler = logging.StreamHandler()
    logged = "\n".join(handler.format(r) + repr(r.args) for r in records)
    out, err = capfd.readouterr()
    places = {"log records": logged, "stdout/stderr": out + err, "CLI stderr": cli.stderr + cli.stdout}
    if fleet.mosquitto is not None:
        places["mosquitto log"] = fleet.mosquitto.broker.log()
    for secret in secrets:
        assert secret
        for where, text in places.items():
            assert secret not in text, f"a secret ({secret[:4]}...) appears in the {where}"  # ... without secrets
