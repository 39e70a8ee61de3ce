"""A generic webhook: POST the message's JSON body (`Message.body()`), signed with the channel's secret.

Headers: `X-Fleet-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>` and `X-Fleet-Notification-Id`
(the outbox row: the same on every retry, so a receiver may de-duplicate on it)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from fleet_service.errors import Invalid
from fleet_service.notify.message import Channel, Message, SendResult
from fleet_service.notify.senders.http_post import check_url, only_keys, post

REFRESH_S: float | None = None


def check_config(config: dict[str, Any], secrets: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    only_keys(config, {"url"}, "config")
    if secrets:  # the signing key is the service's to make (and rotate)
        raise Invalid(f"secrets.{sorted(secrets)[0]}: a webhook takes no secrets (its signing key is generated)")
    return {"url": check_url(config.get("url"), "config.url")}, {}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def send(channel: Channel, message: Message, timeout_s: float) -> SendResult:
    body = json.dumps(message.body(), separators=(",", ":"), ensure_ascii=False, default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "fleet-service"}
    if channel.secret:
        headers["X-Fleet-Signature"] = sign(channel.secret, body)
    if message.notification_id is not None:
        headers["X-Fleet-Notification-Id"] = str(message.notification_id)
    return await post(channel.config["url"], body, headers, timeout_s)
