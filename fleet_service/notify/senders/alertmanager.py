"""Push alerts to a Prometheus Alertmanager: `POST {url}/api/v2/alerts`, one entry per alert.

An Alertmanager knows an alert by its label set, so the labels hold only what stays the same for the alert's
whole life: `alertname` (the rule's name as it was when the alert fired, made label-safe), `rule_id`,
`device_id`, `severity` and `fleet_alert_id` (a unit that fires again after resolving is a new alert); test
notifications add `test="true"`. What changes (the value, the unit's name, acknowledged or not) goes in the
annotations, which every push replaces.

A firing alert is sent with `endsAt` = now + HOLD_S, and the dispatcher sends open alerts again every REFRESH_S:
an Alertmanager keeps the alert firing while we keep telling it, and resolves it by itself about HOLD_S after
we stop (the service is down, the alert was deleted). A resolved alert is sent with `endsAt` = its resolve time.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from fleet_service.errors import Invalid
from fleet_service.notify.message import AlertItem, Channel, Message, SendResult

log = logging.getLogger(__name__)

REFRESH_S: float | None = 60
HOLD_S = 4 * 60  # four refreshes: a few failed pushes or a restart of the service do not end an alert

FIELDS = {"url", "username"}
SECRETS = {"password", "bearer_token"}
_WORD = re.compile(r"[A-Za-z0-9]+")


# --- configuration -----------------------------------------------------------------------------------------------


def check_config(config: dict[str, Any], secrets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The stored public config and the write-only secrets (`password` for basic auth or `bearer_token`),
    or Invalid naming the field. `secrets` is the whole set the channel will have."""
    for name in config:
        if name not in FIELDS:
            raise Invalid(f"{name}: unknown field for an Alertmanager channel (known: {', '.join(sorted(FIELDS))})")
    for name, value in secrets.items():
        if name not in SECRETS:
            raise Invalid(f"{name}: unknown secret for an Alertmanager channel (known: password, bearer_token)")
        if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
            raise Invalid(f"{name}: must be a non-empty line of text")
    username = config.get("username")
    if username is not None and (not isinstance(username, str) or not username or ":" in username):
        raise Invalid("username: must be a non-empty name without ':' (or left out)")
    if username is not None and "password" not in secrets:
        raise Invalid("password: required with a username")
    if username is None and "password" in secrets:
        raise Invalid("username: a password is given but no username")
    if username is not None and "bearer_token" in secrets:
        raise Invalid("bearer_token: use either a username and password or a bearer token, not both")
    return {"url": _base_url(config.get("url")), "username": username}, dict(secrets)


def _base_url(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 2000:
        raise Invalid("url: the Alertmanager's base URL is required (http:// or https://)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("url: must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise Invalid("url: put no credentials in the URL; use username and the write-only password")
    if parts.query or parts.fragment:
        raise Invalid("url: must have no query or fragment (the API path is added to it)")
    try:
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError:
        raise Invalid("url: the port must be from 1 to 65535") from None
    return value.rstrip("/")


# --- the alerts --------------------------------------------------------------------------------------------------


def alert_name(rule_name: str, rule_id: str) -> str:
    """A label-safe CamelCase form of the rule's name (`Unit offline` -> `UnitOffline`)."""
    plain = unicodedata.normalize("NFKD", rule_name).encode("ascii", "ignore").decode()
    name = "".join(w[0].upper() + w[1:] for w in _WORD.findall(plain))
    if not name:
        name = "FleetRule" + "".join(w[0].upper() + w[1:] for w in _WORD.findall(rule_id))
    return "Alert" + name if name[0].isdigit() else name


def rfc3339(value: str) -> str:
    """An ISO 8601 time as Alertmanager's RFC 3339 UTC with milliseconds (a time without zone is UTC)."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _utc(moment)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(message: Message, alert: AlertItem, hold_until: str) -> dict[str, Any]:
    alone = replace(message, alerts=(alert,), dashboard_url=None)  # the title and line this alert has alone
    labels = {
        "alertname": alert_name(alert.rule_name, alert.rule_id),
        "rule_id": alert.rule_id,
        "device_id": alert.device_id,
        "severity": alert.severity,
        "fleet_alert_id": str(alert.id),
    }
    if message.test:
        labels["test"] = "true"
    if alert.resolved_at:
        ends = rfc3339(alert.resolved_at)
    else:  # a resolved message without the time: now; a firing one: held for HOLD_S
        ends = _utc(datetime.now(UTC)) if message.status == "resolved" else hold_until
    entry: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": alone.title(),
            "description": alone.text().splitlines()[1].removeprefix("- "),
            "device_name": alert.device_name,
            "tags": ", ".join(alert.tags),
            "state": alert.state,
        },
        "startsAt": rfc3339(alert.fired_at),
        "endsAt": ends,
    }
    if message.dashboard_url:
        entry["generatorURL"] = f"{message.dashboard_url.rstrip('/')}/#/units/{quote(alert.device_id, safe='')}"
    return entry


def alerts_body(message: Message) -> list[dict[str, Any]]:
    """The JSON list for `POST /api/v2/alerts`."""
    hold_until = _utc(datetime.now(UTC) + timedelta(seconds=HOLD_S))
    return [_entry(message, alert, hold_until) for alert in message.alerts]


# --- sending -----------------------------------------------------------------------------------------------------


def _auth(channel: Channel) -> tuple[httpx.BasicAuth | None, dict[str, str]]:
    if channel.config.get("username"):
        return httpx.BasicAuth(channel.config["username"], channel.secrets.get("password", "")), {}
    token = channel.secrets.get("bearer_token")
    return None, ({"Authorization": f"Bearer {token}"} if token else {})


async def send(channel: Channel, message: Message, timeout_s: float) -> SendResult:
    url = channel.config["url"] + "/api/v2/alerts"
    try:
        body = alerts_body(message)
    except ValueError as exc:  # a time that is not ISO 8601: the same next time
        return SendResult(ok=False, error=f"cannot build the alerts: {exc}", retry=False)
    auth, headers = _auth(channel)
    try:
        async with httpx.AsyncClient(timeout=timeout_s, auth=auth, headers=headers) as client:
            response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        result = SendResult(ok=False, error=f"{type(exc).__name__}: {exc}", retry=True)
    else:
        result = _answer(response)
    if not result.ok:
        log.info("alertmanager channel %s: not sent (retry: %s): %s", channel.id, result.retry, result.error)
    return result


def _answer(response: httpx.Response) -> SendResult:
    code = response.status_code
    if 200 <= code < 300:
        return SendResult(ok=True, status_code=code)
    error = f"HTTP {code}: {' '.join(response.text.split())[:300]}"
    retry = not (400 <= code < 500) or code in (408, 429)
    return SendResult(ok=False, status_code=code, error=error, retry=retry)
