"""TURN credentials for the recorder, fetched with the unit's own secret so the recorder never holds it.

`TurnFetcher` asks the fleet service (`GET {api_url}/api/turn-credentials`, HTTP Basic with the device id
and secret), caches the answer, and refreshes it once half its TTL has passed: on a background thread when
`turn_file` is set (the file is rewritten atomically after every refresh), otherwise when a local caller
asks (`get()`, used by the relay bridge's `/turn-credentials`). Failures back off between the reconnect
delay bounds (longer after a 401, at least `Retry-After` after a 429) and never stop the agent.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent import __version__
from agent.config import AgentSettings
from agent.errors import AgentError
from agent.files import write_atomic

log = logging.getLogger(__name__)

__all__ = ["FILE_MODE", "TurnCredentials", "TurnFetcher", "TurnUnavailable"]

FILE_MODE = 0o640  # the recorder reads it through the file's group; nobody else may
REQUEST_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 64 * 1024
MIN_REFRESH_S = 1.0

_EXPLAIN = {
    401: "the fleet service refused this unit's credentials (401): check the device id and secret",
    403: "the fleet service does not allow this unit to fetch TURN credentials (403)",
    429: "the fleet service is rate limiting TURN credential requests (429)",
    502: "the fleet service's TURN provider failed (502)",
    503: "the fleet service cannot issue TURN credentials (503)",
}


class TurnUnavailable(AgentError):
    """No usable TURN credentials; the message says why (safe to show to a local caller)."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class TurnCredentials:
    """One answer of the service; `ttl` counts from `fetched` (monotonic), so clock skew does not matter."""

    ice_servers: list[dict[str, Any]]
    expires_at: str
    ttl: int
    fetched: float

    def left(self, now: float | None = None) -> float:
        return self.fetched + self.ttl - (time.monotonic() if now is None else now)

    def body(self, now: float | None = None) -> dict[str, Any]:
        """The service's shape, with `ttl` as the seconds still left."""
        return {"iceServers": self.ice_servers, "expiresAt": self.expires_at, "ttl": max(0, int(self.left(now)))}


class TurnFetcher:
    """Fetches, caches and refreshes this unit's TURN credentials; thread-safe, one request at a time."""

    def __init__(self, settings: AgentSettings) -> None:
        if not settings.api_url:
            raise TurnUnavailable("no api_url configured")
        self.settings = settings
        query = f"?ttl={settings.turn_ttl}" if settings.turn_ttl else ""
        self.url = f"{settings.api_url}/api/turn-credentials{query}"
        self.file = settings.turn_file
        self.fetches = 0
        self._cached: TurnCredentials | None = None
        self._error: TurnUnavailable | None = None
        self._failures = 0
        self._retry_at = 0.0  # monotonic; no request before this after a failure
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._file_error: str | None = None

    # Public ---------------------------------------------------------------------------

    def start(self) -> None:
        """Keep `turn_file` fresh on a background thread; without a file, fetching waits for a caller."""
        if self.file is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="agent-turn", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def get(self) -> dict[str, Any]:
        """Credentials for a local caller, refreshed first when half their TTL has passed; or TurnUnavailable."""
        with self._lock:
            cached = self._cached
            now = time.monotonic()
            if (cached is None or cached.left(now) < cached.ttl / 2) and now >= self._retry_at:
                self._refresh_locked()
                cached = self._cached
            now = time.monotonic()
            if cached is not None and cached.left(now) > 0:
                return cached.body(now)
            raise self._error or TurnUnavailable("no TURN credentials fetched yet")

    # Background refresh ---------------------------------------------------------------

    def _due(self) -> float:
        if self._error is not None or self._cached is None:
            return self._retry_at
        return self._cached.fetched + max(MIN_REFRESH_S, self._cached.ttl / 2)

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                if time.monotonic() >= self._due():
                    self._refresh_locked()
                delay = self._due() - time.monotonic()
            self._stopping.wait(max(0.05, delay))

    # Fetching (caller holds the lock) ---------------------------------------------------

    def _refresh_locked(self) -> None:
        try:
            creds = self._fetch()
        except TurnUnavailable as exc:
            self._failed(exc)
            return
        recovered = self._error is not None or self._cached is None
        self._cached, self._error, self._failures, self._retry_at = creds, None, 0, 0.0
        level = logging.INFO if recovered else logging.DEBUG
        log.log(
            level,
            "TURN credentials fetched (valid %d s, next refresh in %.0f s)",
            creds.ttl,
            max(MIN_REFRESH_S, creds.ttl / 2),
        )
        if self.file is not None:
            self._write_file(creds)

    def _failed(self, exc: TurnUnavailable) -> None:
        s = self.settings
        self._failures += 1
        ceiling = min(s.reconnect_max_delay, s.reconnect_min_delay * (2 ** min(self._failures - 1, 30)))
        delay = random.uniform(ceiling / 2, ceiling)
        if exc.status == 401:
            delay = max(delay, s.auth_retry_delay)  # a wrong secret is not fixed by asking again soon
        if exc.retry_after:
            delay = max(delay, exc.retry_after)
        self._retry_at = time.monotonic() + delay
        level = logging.WARNING if self._error is None or str(self._error) != str(exc) else logging.DEBUG
        self._error = exc
        log.log(level, "TURN credentials unavailable: %s; retrying in %.0f s", exc, delay)

    def _fetch(self) -> TurnCredentials:
        import urllib.error
        import urllib.request  # only units that use TURN pay for it

        password = self.settings.password()
        if not password:
            raise TurnUnavailable("no secret configured for this unit")
        token = base64.b64encode(f"{self.settings.device_id}:{password}".encode()).decode()
        request = urllib.request.Request(
            self.url, headers={"Accept": "application/json", "User-Agent": f"fleet-agent/{__version__}"}
        )
        request.add_unredirected_header("Authorization", f"Basic {token}")  # never sent on to a redirect target
        self.fetches += 1
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S, context=self._tls()) as answer:
                raw = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read(4096)
            except OSError:
                body = b""
            finally:
                exc.close()
            raise _http_error(exc.code, body, exc.headers.get("Retry-After")) from None
        except urllib.error.URLError as exc:
            raise TurnUnavailable(f"cannot reach the fleet service at {self._where()}: {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise TurnUnavailable(f"request to the fleet service at {self._where()} failed: {exc}") from None
        return _parse(raw, started)

    def _tls(self) -> Any:
        if urlsplit(self.url).scheme != "https" or self.settings.ca_file is None:
            return None
        import ssl

        return ssl.create_default_context(cafile=str(self.settings.ca_file))

    def _where(self) -> str:
        return urlsplit(self.url).netloc

    def _write_file(self, creds: TurnCredentials) -> None:
        assert self.file is not None
        try:
            write_atomic(self.file, json.dumps(creds.body(), indent=2).encode() + b"\n", FILE_MODE)
        except OSError as exc:
            reason = f"{exc.strerror or exc}"
            if reason != self._file_error:
                log.error("cannot write the TURN file %s: %s", self.file, reason)
            self._file_error = reason
            return
        if self._file_error is not None:
            log.info("TURN file %s written again", self.file)
        self._file_error = None


def _http_error(status: int, body: bytes, retry_after: str | None) -> TurnUnavailable:
    reason = _EXPLAIN.get(status, f"the fleet service answered HTTP {status}")
    detail = _detail(body)
    if detail and status != 401:
        reason = f"{reason}: {detail}"
    wait: float | None = None
    if retry_after and retry_after.strip().isdigit():
        wait = float(retry_after.strip())
        reason = f"{reason}; retry after {int(wait)} s"
    return TurnUnavailable(reason, status=status, retry_after=wait)


def _detail(body: bytes) -> str:
    """The service's own `detail` message (FastAPI errors), printable and short; nothing else of the body."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(detail, str):
        return ""
    return "".join(ch for ch in detail if ch.isprintable())[:200]


def _parse(raw: bytes, fetched: float) -> TurnCredentials:
    unexpected = TurnUnavailable("the fleet service sent an unexpected TURN answer")
    if len(raw) > MAX_ANSWER_BYTES:
        raise unexpected
    try:
        body = json.loads(raw)
    except ValueError:
        raise unexpected from None
    servers = body.get("iceServers") if isinstance(body, dict) else None
    ttl = body.get("ttl") if isinstance(body, dict) else None
    expires_at = body.get("expiresAt") if isinstance(body, dict) else None
    if (
        not isinstance(servers, list)
        or not servers
        or not all(isinstance(s, dict) and s.get("urls") for s in servers)
        or not isinstance(ttl, int)
        or isinstance(ttl, bool)
        or ttl < 1
        or not isinstance(expires_at, str)
    ):
        raise unexpected
    return TurnCredentials(ice_servers=servers, expires_at=expires_at, ttl=ttl, fetched=fetched)
