"""Log a bad message at most once per unit per minute; always count it."""

from __future__ import annotations

import logging
import time

from fleet_service.prometheus import Registry

log = logging.getLogger("fleet_service.ingest")


class BadMessageLog:
    def __init__(self, registry: Registry, interval_s: float = 60.0) -> None:
        self._registry = registry
        self._interval = interval_s
        self._last: dict[str, float] = {}

    def drop(self, reason: str, source: str, detail: str) -> None:
        self._registry.inc("fleet_ingest_dropped_total", reason=reason)
        now = time.monotonic()
        if now - self._last.get(source, -1e9) >= self._interval:
            self._last[source] = now
            if len(self._last) > 100_000:
                self._last.clear()
            log.warning("dropped message from %s (%s): %s", source, reason, detail[:300])
