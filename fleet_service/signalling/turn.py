"""TURN credentials inside the service: build the issuer from the service's FLEET_TURN_* settings and export its
counters."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from fleet_service.prometheus import Registry
from fleet_service.settings import ServiceSettings
from turn_service import TurnConfigError, TurnIssuer, TurnSettings, generate_secret, load_settings

log = logging.getLogger(__name__)
_LABELS = {
    "turn_credentials_issued_total": "provider",
    "turn_errors_total": "kind",
    "turn_upstream_requests_total": "operation",
    "turn_upstream_errors_total": "reason",
}


def _stored_secret(data_dir: Path) -> str:
    """Embedded mode: one generated coturn shared secret, kept in the data directory (mode 0600)."""
    path = data_dir / "turn_secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = generate_secret()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret


def turn_settings(settings: ServiceSettings, embedded: bool = False) -> TurnSettings:
    """turn_service's settings from the service's; TurnConfigError names a bad FLEET_TURN_* value."""
    values = settings.turn_values()
    provider = values.get("provider", "hmac").strip().lower() or "hmac"
    if embedded and provider == "hmac" and not values.get("secrets", "").strip():
        values["secrets"] = _stored_secret(settings.data_dir)
    return load_settings(**values)


def build_issuer(settings: ServiceSettings, embedded: bool) -> tuple[TurnIssuer | None, str]:
    """The issuer, or None and the reason TURN is off (shown to callers as a 503)."""
    try:
        return TurnIssuer(turn_settings(settings, embedded)), ""
    except TurnConfigError as exc:
        log.warning("TURN credentials are off: %s", exc)
        return None, f"TURN is not configured: {exc}"


# The issuer counts per identity ("device:cam-1", "user:alice", "token:ci"); /metrics shows only the kind of
# caller: anyone who may scrape it must not learn user or token names from it (nor get a series per unit).
_BY_IDENTITY = "turn_credentials_issued_by_identity_total"
_BY_KIND = "turn_credentials_issued_by_kind_total"
_KINDS = {"device": "unit", "user": "user", "token": "token", "bootstrap": "token"}


def caller_kind(identity: str) -> str:
    return _KINDS.get(identity.partition(":")[0], "other")


def register_metrics(registry: Registry, issuer: TurnIssuer) -> None:
    for name in (*_LABELS, _BY_KIND):
        registry.describe(f"fleet_{name}", "counter", name.replace("_", " "))

    def collect() -> Iterable[tuple[str, dict[str, str], float]]:
        for name, series in issuer.counters().items():
            if name == _BY_IDENTITY:
                by_kind: Counter[str] = Counter()
                for identity, value in series.items():
                    by_kind[caller_kind(identity)] += value
                for kind, value in by_kind.items():
                    yield f"fleet_{_BY_KIND}", {"kind": kind}, value
                continue
            label = _LABELS.get(name, "key")
            for key, value in series.items():
                yield f"fleet_{name}", {label: key}, value

    registry.collector(collect)
