"""The unit's own web server for the port forward tests, on the test's loopback (which is the agent's loopback).

HTTP (a page, a POST that answers its body, a chunked answer, a 5 MB download, an answer that ends with the
connection, the headers it saw) on one port, and a WebSocket echo (the `websockets` package) on another. Every
request's headers are kept, so a test can check what the unit saw.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from websockets.sync.server import ServerConnection, serve

PAGE = b"<!doctype html><title>recorder</title><h1>recorder web ui</h1>"
LARGE = random.Random(15).randbytes(5 * 1024 * 1024)
LARGE_SHA256 = hashlib.sha256(LARGE).hexdigest()
# A hostile unit's page: its script tries to act as the operator who opened it. It reads the dashboard's
# /api/me on its own origin (relative) and on the dashboard's (the ?dash= address), and reports what it got.
PROBE_PAGE = b"<!doctype html><title>probe</title><h1 id=probe>probing</h1><script src=probe.js></script>"
PROBE_JS = b"""
(async () => {
  const out = {origin: location.origin, cookie: document.cookie};
  const dash = new URLSearchParams(location.search).get("dash");
  for (const [name, url] of [["relative", "/api/me"], ["dashboard", dash + "/api/me"]]) {
    try {
      const r = await fetch(url, {credentials: "include"});
      out[name] = {status: r.status, body: (await r.text()).slice(0, 200)};
    } catch (e) {
      out[name] = {error: String(e)};
    }
  }
  document.getElementById("probe").textContent = JSON.stringify(out);
  document.title = "probed";
})();
"""
CHUNKS = [b"first chunk;", b"second chunk;", b"third and last"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: UnitWeb.HTTP

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _seen(self) -> None:
        self.server.owner.seen.append({"path": self.path, "method": self.command, "headers": dict(self.headers)})

    def _answer(self, body: bytes, ctype: str = "text/html", status: int = 200, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._seen()
        if self.path == "/" or self.path.startswith("/page"):
            self._answer(PAGE, extra={"Set-Cookie": "unit_pref=dark; Path=/"})
        elif self.path.startswith("/probe.js"):
            self._answer(PROBE_JS, "text/javascript")
        elif self.path.startswith("/probe"):
            self._answer(PROBE_PAGE)
        elif self.path == "/tossing":  # a cookie for the parent domain: every other unit's origin would get it
            self._answer(b"tossed", "text/plain", extra={"Set-Cookie": "tossed=1; Domain=localhost; Path=/"})
        elif self.path == "/headers":
            self._answer(json.dumps(dict(self.headers)).encode(), "application/json")
        elif self.path == "/large":
            self._answer(LARGE, "application/octet-stream")
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in CHUNKS:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/until-close":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"the body ends when the connection does")
            self.close_connection = True
        else:
            self._answer(b"not here", "text/plain", 404)

    def do_POST(self) -> None:
        self._seen()
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self._answer(b"you sent: " + body, "text/plain", 201)


class UnitWeb:
    class HTTP(ThreadingHTTPServer):
        daemon_threads = True
        owner: UnitWeb

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.ws_seen: list[dict] = []
        self.http = UnitWeb.HTTP(("127.0.0.1", 0), _Handler)
        self.http.owner = self
        self.http_port = self.http.server_address[1]
        self.ws = serve(self._echo, "127.0.0.1", 0, max_size=None)
        self.ws_port = self.ws.socket.getsockname()[1]
        self._threads = [
            threading.Thread(target=self.http.serve_forever, daemon=True),
            threading.Thread(target=self.ws.serve_forever, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def agent_options(self) -> tuple[str, ...]:
        """The agent options that let it forward both ports."""
        return ("--allow-remote-port", str(self.http_port), "--allow-remote-port", str(self.ws_port))

    def _echo(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        self.ws_seen.append({"path": conn.request.path, "headers": dict(conn.request.headers.raw_items())})
        for message in conn:
            conn.send(message)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.ws.shutdown()
