"""What a notification says, independent of how it travels. Senders (`notify/senders/`) turn a `Message` into
a webhook body, a chat line, an e-mail or Alertmanager alerts; `body()` is the webhook's stable JSON schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1

Status = Literal["firing", "resolved"]


@dataclass(frozen=True)
class AlertItem:
    """One alert as a notification carries it (times are ISO 8601 UTC strings)."""

    id: int
    rule_id: str
    rule_name: str
    kind: str
    severity: str
    device_id: str
    device_name: str
    tags: tuple[str, ...]
    state: str  # firing | acknowledged | resolved
    value: Any
    fired_at: str
    resolved_at: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "kind": self.kind,
            "severity": self.severity,
            "device_id": self.device_id,
            "device_name": self.device_name,
            "tags": list(self.tags),
            "state": self.state,
            "value": self.value,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
        }


@dataclass(frozen=True)
class Message:
    """One notification: alerts of one rule that fired (or resolved) within one grouping window.
    `notification_id` is the outbox row (stable across retries: receivers may de-duplicate on it); None and
    `test=True` for the "send test notification" button."""

    notification_id: int | None
    status: Status
    rule_id: str
    rule_name: str
    severity: str
    alerts: tuple[AlertItem, ...]
    sent_at: str
    test: bool = False
    dashboard_url: str | None = None  # the service's public URL, when configured

    def body(self) -> dict[str, Any]:
        """The webhook payload (schema version 1; fields are only ever added)."""
        return {
            "version": SCHEMA_VERSION,
            "notification_id": self.notification_id,
            "status": self.status,
            "test": self.test,
            "rule": {"id": self.rule_id, "name": self.rule_name, "severity": self.severity},
            "alerts": [a.public() for a in self.alerts],
            "sent_at": self.sent_at,
            "dashboard_url": self.dashboard_url,
        }

    def title(self) -> str:
        """One line: `[FIRING] critical: Unit offline — 3 units` / `[RESOLVED] ... — cam-1`."""
        one = self.alerts[0] if len(self.alerts) == 1 else None
        who = (one.device_name or one.device_id) if one is not None else f"{len(self.alerts)} units"
        prefix = "[TEST] " if self.test else ""
        return f"{prefix}[{self.status.upper()}] {self.severity}: {self.rule_name} — {who}"

    def text(self) -> str:
        """The title and one line per alert: the chat message and the e-mail body."""
        lines = [self.title()]
        for a in self.alerts:
            name = f"{a.device_name} ({a.device_id})" if a.device_name and a.device_name != a.device_id else a.device_id
            when = f"resolved {a.resolved_at}" if a.resolved_at else f"since {a.fired_at}"
            lines.append(f"- {name}: {_value_text(a.value)}, {when}")
        if self.dashboard_url:
            lines.append(self.dashboard_url.rstrip("/") + "/#/alerts")
        return "\n".join(lines)


def _value_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "—"
    return "—" if value is None else str(value)


@dataclass(frozen=True)
class Channel:
    """Where to send: the stored channel with its write-only secrets (never logged, never returned by the API)."""

    id: str
    name: str
    kind: str  # webhook | slack | email | alertmanager
    config: dict[str, Any]
    secret: str | None = None  # the webhook's HMAC key
    secrets: dict[str, str] = field(default_factory=dict)  # e.g. {"password": ...} for SMTP


@dataclass(frozen=True)
class SendResult:
    """What one attempt did. `retry` False means another attempt cannot help (a 4xx other than 408/429, a
    receiver that refused the address)."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry: bool = True
