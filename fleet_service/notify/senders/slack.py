"""Chat through an incoming webhook: POST `{"text": ...}`, the shape Slack, Mattermost and Microsoft Teams
accept. The webhook URL is the credential, so it is kept with the write-only secrets (`secrets.url`)."""

from __future__ import annotations

import json
from typing import Any

from fleet_service.notify.message import Channel, Message, SendResult
from fleet_service.notify.senders.http_post import check_url, only_keys, post

REFRESH_S: float | None = None


def check_config(config: dict[str, Any], secrets: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    only_keys(config, set(), "config")
    only_keys(secrets, {"url"}, "secrets")
    return {}, {"url": check_url(secrets.get("url"), "secrets.url")}


async def send(channel: Channel, message: Message, timeout_s: float) -> SendResult:
    body = json.dumps({"text": message.text()}, ensure_ascii=False).encode()
    return await post(channel.secrets["url"], body, {"Content-Type": "application/json"}, timeout_s)
