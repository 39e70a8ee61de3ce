"""A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port, clustering off,
routing everything to a receiver that does nothing; and a recording HTTP receiver that answers what it is told,
for the statuses and headers a real Alertmanager cannot be made to produce on demand."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.support.services import free_port, require

BINARY = "prometheus-alertmanager"

CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


def require_alertmanager() -> str:
    path = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else None)
    require(path is not None, f"{BINARY} is not installed (apt install prometheus-alertmanager)")
    assert path is not None
    return path


@dataclass
class Alertmanager:
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, attempts: int = 3) -> Alertmanager:
        binary = require_alertmanager()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text(CONFIG)
        for attempt in range(attempts):
            with (self.workdir / "alertmanager.log").open("wb") as log:
                self.proc = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.path={self.workdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--cluster.listen-address=",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._ready(timeout=20):
                return self
            self.stop()
            if attempt < attempts - 1:
                self.port = free_port()  # another process may have taken the port meanwhile
        raise RuntimeError(f"alertmanager did not become ready: {self.log()}")

    def _ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.workdir / "alertmanager.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts; `filters` become label matchers (`filter=name="value"`)."""
        params = [("filter", f'{name}="{value}"') for name, value in filters.items()]
        r = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=5)
        r.raise_for_status()
        return r.json()


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any


class RecordingReceiver:
    """An HTTP server that records each request and answers `status` (settable between requests)."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[Request] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.requests.append(Request(self.path, dict(self.headers.items()), json.loads(raw or b"null")))
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'"answered by the recording receiver"')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> RecordingReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
