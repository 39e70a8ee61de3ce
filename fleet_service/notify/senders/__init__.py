"""One module per channel kind. Each exposes:

- `check_config(config: dict, secrets: dict) -> tuple[dict, dict]`: the validated public config and the
  write-only secrets, or `fleet_service.errors.Invalid` with a message naming the field;
- `async send(channel: Channel, message: Message, timeout_s: float) -> SendResult`: one attempt, never raises
  for a receiver's failure (that is a `SendResult(ok=False, ...)`);
- `REFRESH_S: float | None`: when set, the dispatcher re-sends this channel's open alerts that often (an
  Alertmanager forgets an alert it is not told about again).
"""

from __future__ import annotations

import importlib
from types import ModuleType

KINDS = ("webhook", "slack", "email", "alertmanager")


def sender(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise KeyError(kind)
    return importlib.import_module(f"fleet_service.notify.senders.{kind}")
