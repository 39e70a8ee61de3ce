"""TURN settings, read from FLEET_TURN_* environment variables."""

from __future__ import annotations

import json
import re
import secrets
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from turn_service.errors import TurnConfigError

__all__ = ["CLOUDFLARE_MAX_TTL", "DEFAULT_MAX_TTL", "TurnSettings", "generate_secret", "load_settings"]

DEFAULT_MAX_TTL = 48 * 3600
CLOUDFLARE_MAX_TTL = 48 * 3600

# stun:host[:port], turn:host[:port][?transport=udp|tcp]; host may be a bracketed IPv6 literal.
_ICE_URL = re.compile(
    r"^(stun|stuns|turn|turns):(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?(\?transport=(udp|tcp))?$"
)


def _split_list(value: Any) -> Any:
    """Accept `a,b,c` or a JSON array from the environment, or a real list from Python."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("looks like a JSON array but is not valid JSON") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class TurnSettings(BaseSettings):
    """Everything turn_service needs; build it with `load_settings()` to get TurnConfigError on bad input."""

    model_config = SettingsConfigDict(env_prefix="FLEET_TURN_", extra="ignore", frozen=True)

    provider: Literal["hmac", "cloudflare"] = "hmac"
    # The first secret mints; all are accepted by `verify` (and by coturn, configured with the same list).
    secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ttl: int = Field(default=3600, ge=1)
    max_ttl: int = Field(default=DEFAULT_MAX_TTL, ge=1)
    cloudflare_key_id: str = ""
    cloudflare_api_token: SecretStr = SecretStr("")
    cloudflare_base_url: str = "https://rtc.live.cloudflare.com/v1"
    request_timeout: float = Field(default=10.0, gt=0)
    # Per-identity token bucket for TurnIssuer.issue; rate_per_minute=0 turns it off.
    rate_per_minute: float = Field(default=30.0, ge=0)
    rate_burst: int = Field(default=10, ge=1)

    @field_validator("provider", mode="before")
    @classmethod
    def _lower_provider(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("secrets", "urls", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("secrets")
    @classmethod
    def _no_empty_secret(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not s.get_secret_value().strip() for s in value):
            raise ValueError("secrets must not be empty strings")
        return [SecretStr(s.get_secret_value().strip()) for s in value]

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not _ICE_URL.match(url):
                raise ValueError(
                    f"not an ICE URL: {url!r} (expected e.g. stun:host:3478, turn:host:3478?transport=udp, "
                    "turns:host:5349?transport=tcp)"
                )
        return value

    @field_validator("cloudflare_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _ttl_within_max(self) -> TurnSettings:
        if self.ttl > self.max_ttl:
            raise ValueError(f"ttl ({self.ttl}) is larger than max_ttl ({self.max_ttl})")
        return self

    @property
    def minting_secret(self) -> str | None:
        return self.secrets[0].get_secret_value() if self.secrets else None

    @property
    def accepted_secrets(self) -> list[str]:
        return [s.get_secret_value() for s in self.secrets]


def load_settings(**overrides: Any) -> TurnSettings:
    """Read FLEET_TURN_* (keyword arguments win); raise TurnConfigError naming the bad variables."""
    try:
        return TurnSettings(**overrides)
    except ValidationError as exc:
        # Built from loc + msg only: pydantic's own str() would echo input values, i.e. secrets.
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            field = str(err["loc"][0]) if err["loc"] else ""
            name = f"FLEET_TURN_{field.upper()}" if field else "FLEET_TURN_*"
            problems.append(f"{name}: {err['msg']}")
        raise TurnConfigError("invalid TURN settings: " + "; ".join(problems)) from None


def generate_secret() -> str:
    """A fresh random static-auth-secret, e.g. for an embedded dev set-up that has none configured."""
    return secrets.token_urlsafe(32)
