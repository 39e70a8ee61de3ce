"""Settings of the embedded broker (`FLEET_*` environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.payloads import MAX_PAYLOAD_BYTES


class BrokerSettings(BaseSettings):
    """Listeners, limits and the credential source of the embedded amqtt broker."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    mqtt_host: str = "0.0.0.0"
    mqtt_port: int = Field(default=1883, ge=0, le=65535)
    ws_port: int | None = Field(default=None, ge=0, le=65535)
    mqtts_port: int = Field(default=8883, ge=0, le=65535)
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    max_payload_bytes: int = Field(default=MAX_PAYLOAD_BYTES, gt=0)
    keepalive_factor: float = Field(default=1.5, ge=1.0)
    max_connections: int = Field(default=10_000, ge=0)
    max_queued_messages: int = Field(default=100_000, gt=0)  # per session, offline or not keeping up
    max_inflight_messages: int = Field(default=100, gt=0, le=60_000)  # unacknowledged QoS>0 per connection
    session_expiry_s: int | None = Field(default=7 * 24 * 3600, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    auth_failures_per_minute: int = Field(default=30, ge=0)
    data_dir: Path = Path("fleet-data")
    database_url: str = ""  # default: the service's SQLite file in data_dir
    service_secret: SecretStr | None = None  # None disables the service account

    @model_validator(mode="after")
    def _defaults(self) -> BrokerSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'fleet.db').resolve()}"
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile must be given together")
        return self

    @property
    def service_password(self) -> str | None:
        """The service account's password, or None when the account is disabled."""
        return self.service_secret.get_secret_value() or None if self.service_secret else None

    @property
    def tls_enabled(self) -> bool:
        return self.tls_certfile is not None

    @property
    def max_packet_bytes(self) -> int:
        """Any packet beyond this closes the connection before it is buffered (room for topic and headers)."""
        return self.max_payload_bytes + 64 * 1024


def load_settings(**overrides: Any) -> BrokerSettings:
    """Settings from the environment, with explicit overrides (CLI options, tests) taking precedence."""
    return BrokerSettings(**overrides)
