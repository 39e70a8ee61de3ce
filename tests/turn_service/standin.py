"""A local HTTP stand-in for Cloudflare's TURN key API, speaking its documented request/response shapes."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY_ID = "0123456789abcdef0123456789abcdef"
API_TOKEN = "cf-api-token-DO-NOT-LEAK-7f3a"
# Sent in every error/odd body: it must never show up in our exceptions or logs.
BODY_MARKER = "UPSTREAM-BODY-MARKER-9b1c"

_GENERATE = re.compile(rf"^/v1/turn/keys/{KEY_ID}/credentials/generate-ice-servers$")
_REVOKE = re.compile(rf"^/v1/turn/keys/{KEY_ID}/credentials/(?P<username>[^/]+)/revoke$")


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CloudflareStandIn:
    """`mode` picks the answer to generate-ice-servers: ok, error (500), badjson, badshape, hang."""

    mode: str = "ok"
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    issued: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._release = threading.Event()  # set at stop, so hanging handlers end
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                standin._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps shutdown() (and so each test's teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def generate_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/generate-ice-servers")]

    def start(self) -> CloudflareStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append(Recorded(req.path, {k.lower(): v for k, v in req.headers.items()}, body))
        if req.headers.get("Authorization") != f"Bearer {API_TOKEN}":
            return self._reply(req, 401, {"errors": [{"message": f"bad token {BODY_MARKER}"}]})
        if match := _REVOKE.match(req.path):
            with self._lock:
                self.revoked.append(match["username"])
            return self._reply(req, 204, None)
        if not _GENERATE.match(req.path):
            return self._reply(req, 404, {"errors": [{"message": "not found"}]})
        try:
            ttl = json.loads(body)["ttl"]
            assert req.headers.get("Content-Type") == "application/json"
            assert isinstance(ttl, int) and 0 < ttl <= 172800
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._reply(req, 400, {"errors": [{"message": "bad request"}]})
        if self.delay:
            self._release.wait(self.delay)
        if self.mode == "hang":
            self._release.wait(10)
        if self.mode == "error":
            return self._reply(req, 500, {"errors": [{"message": f"internal {BODY_MARKER} {API_TOKEN}"}]})
        if self.mode == "badjson":
            return self._reply_raw(req, 201, f"<html>{BODY_MARKER}".encode())
        if self.mode == "badshape":
            return self._reply(req, 201, {"iceServers": [{"urls": ["stun:stun.cloudflare.com:3478"]}]})
        with self._lock:
            self.issued += 1
            n = self.issued
        self._reply(
            req,
            201,
            {
                "iceServers": [
                    {"urls": ["stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53"]},
                    {
                        "urls": [
                            "turn:turn.cloudflare.com:3478?transport=udp",
                            "turn:turn.cloudflare.com:3478?transport=tcp",
                            "turns:turn.cloudflare.com:5349?transport=tcp",
                        ],
                        "username": f"cf-user-{n}",
                        "credential": f"cf-cred-{n}",
                    },
                ]
            },
        )

    def _reply(self, req: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        self._reply_raw(req, status, b"" if payload is None else json.dumps(payload).encode())

    def _reply_raw(self, req: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        try:
            req.send_response(status)
            if data:
                req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data)
        except OSError:
            pass  # the client gave up (timeout test)
