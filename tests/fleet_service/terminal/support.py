"""A terminal WebSocket client for the tests, and the agent options of a unit that allows remote shells."""

from __future__ import annotations

import getpass
import json
import os
import time
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.stack import ADMIN_TOKEN


def remote_user() -> str:
    """Root runs the tests here: its shells drop to `nobody` (for real); anyone else gets their own user."""
    return "nobody" if os.geteuid() == 0 else getpass.getuser()


def shell_options(*extra: str) -> tuple[str, ...]:
    """A unit that allows remote shells, with /bin/sh (its prompt is `$ ` whoever runs the tests)."""
    return ("--allow-remote-shell", "--remote-user", remote_user(), "--remote-shell-command", "/bin/sh", *extra)


def terminal_url(base: str, device_id: str, **query: Any) -> str:
    url = base.replace("http://", "ws://") + f"/api/devices/{device_id}/terminal"
    if query:
        from urllib.parse import urlencode

        url += "?" + urlencode(query)
    return url


class Term:
    """One terminal WebSocket: output bytes gathered, text events kept, the close remembered."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.output = bytearray()
        self.events: list[dict[str, Any]] = []

    @classmethod
    def open(cls, base: str, device_id: str, token: str = ADMIN_TOKEN, headers: dict | None = None, **query) -> Term:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        conn = connect(
            terminal_url(base, device_id, **query), additional_headers={**auth, **(headers or {})}, open_timeout=10
        )
        return cls(conn)

    def pump(self, timeout: float) -> bool:
        """Read one message (False when the socket closed)."""
        try:
            message = self.conn.recv(timeout=timeout)
        except TimeoutError:
            return True
        except ConnectionClosed:
            return False
        if isinstance(message, bytes):
            self.output += message
        else:
            self.events.append(json.loads(message))
        return True

    def wait_event(self, kind: str, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("type") == kind:
                    return event
            if not self.pump(0.2):
                break
        for event in self.events:
            if event.get("type") == kind:
                return event
        raise AssertionError(
            f"no {kind} event; events {self.events}, close {self.close_info()}, output {self.text()[-500:]!r}"
        )

    def wait_output(self, needle: bytes, timeout: float = 15, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output[after:]:
            if time.monotonic() > deadline or not self.pump(0.2):
                raise AssertionError(
                    f"{needle!r} not in the output: {self.text()[-800:]!r} (close {self.close_info()})"
                )

    def send(self, data: bytes | str) -> None:
        self.conn.send(data)

    def resize(self, cols: int, rows: int) -> None:
        self.conn.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    def wait_closed(self, timeout: float = 15) -> tuple[int | None, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pump(0.2):
            pass
        return self.close_info()

    def close_info(self) -> tuple[int | None, str]:
        return self.conn.close_code, self.conn.close_reason or ""

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def close(self) -> None:
        self.conn.close()


def refused(base: str, device_id: str, token: str = ADMIN_TOKEN, headers: dict | None = None, **query) -> tuple:
    """Open a terminal expected to be refused: (close code, reason)."""
    term = Term.open(base, device_id, token, headers, **query)
    try:
        return term.wait_closed(20)
    finally:
        term.close()


AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def forward_url(base: str, device_id: str, port: int) -> str:
    """The port forward socket of a unit's loopback port."""
    return base.replace("http://", "ws://") + f"/api/devices/{device_id}/forward/{port}"
