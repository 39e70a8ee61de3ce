"""A real HTTP receiver for notification tests: a threaded `http.server` on a loopback port that records every
POST (headers and the exact body bytes) and answers with scripted status codes."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.services import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("x-fleet-signature", ""))


class Receiver:
    """`answers` are used in order, then `default` for every later request. `stop()` and `start()` again on the
    same port make a receiver that is down for a while."""

    def __init__(self, answers: list[int] | None = None, default: int = 200, port: int | None = None) -> None:
        self.answers = list(answers or [])
        self.default = default
        self.port = port or free_port()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    status = outer.answers.pop(0) if outer.answers else outer.default
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    outer.received.append(Received(self.path, headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="receiver").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.json() for r in self.received]

    def accepted(self) -> list[Received]:
        """The requests answered 2xx: what the receiver took."""
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]
