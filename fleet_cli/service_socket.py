"""The WebSocket that `fleet shell` and `fleet forward` open on the fleet service (its address and token come from
`fleet_cli.options`), with the one message both print when the service cannot be reached."""

from __future__ import annotations

import sys
from typing import Any


def open_socket(url: str, token: str, command: str, **options: Any) -> Any:
    """The WebSocket to `url`, sending the token; None once stderr says the service cannot be reached (`fleet
    COMMAND: ...`). `options` go to websockets' connect (e.g. max_size)."""
    from websockets.exceptions import InvalidHandshake, InvalidURI
    from websockets.sync.client import connect

    try:
        return connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=15, **options)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        print(f"fleet {command}: cannot reach the fleet service: {exc}", file=sys.stderr, flush=True)
        return None
