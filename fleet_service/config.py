"""Settings of the fleet service (`FLEET_*` environment variables), built by a function tests can call."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.ids import SERVICE_USERNAME

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    data_dir: Path = Path("fleet-data")
    database_url: str = ""  # default: SQLite file in data_dir
    host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    mqtt_host: str = "0.0.0.0"  # embedded broker only: units connect from the venue network
    mqtt_port: int = Field(default=1883, ge=0, le=65535)  # embedded broker only
    broker_url: str = ""  # external broker: mqtt://user:pass@host:port
    replica_id: str = Field(default_factory=socket.gethostname)
    shared_subscriptions: bool | None = None  # default: on for an external broker, off for amqtt
    admin_token: str | None = None
    service_secret: str | None = None  # the embedded broker's service account password
    dev_mode: bool = False

    ingest_batch_max: int = 1000
    ingest_batch_interval_ms: int = 100
    ingest_queue_max: int = 200_000
    ingest_queue_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)  # units wait beyond this
    unit_messages_per_s: float = Field(default=50.0, gt=0)  # each unit's ingest budget (burst: 10 s of it)
    unit_bytes_per_s: float = Field(default=512 * 1024, gt=0)
    unit_clock_window_s: float = Field(default=90 * 86_400, gt=0)  # a unit's ts older than this, or more than
    unit_clock_ahead_s: float = Field(default=600, gt=0)  # this far ahead, is replaced by the receive time
    log_rows_per_unit: int = Field(default=5_000_000, ge=0)  # a unit's oldest log rows go past this (0: no cap)
    presence_timeout_s: float = 100.0  # no heartbeat for this long -> offline (second line behind the Will)
    presence_check_interval_s: float = 5.0
    log_retention_days: int = 30  # 0 keeps logs forever
    metric_retention_days: int = 14  # 0 keeps metric samples forever
    events_buffer: int = 10_000
    max_request_bytes: int = 1_048_576

    # security (issue 5): dashboard sessions, brute-force limits, a managed Mosquitto
    cookie_secure: bool = False  # Secure cookie even on plain HTTP (set it behind a TLS-terminating proxy)
    session_idle_s: int = 8 * 3600
    session_max_age_s: int = 7 * 24 * 3600
    auth_window_s: float = 300.0  # failed logins/unit auths are counted over this window
    auth_failures_per_user: int = 5  # failed logins per source IP and username in the window, then 429
    auth_failures_per_source: int = 20  # failed logins / unit auths / claims per source IP, then 429
    mosquitto_password_file: Path | None = None  # managed Mosquitto: the service writes these two files
    mosquitto_acl_file: Path | None = None
    mosquitto_pid_file: Path | None = None  # ... and sends SIGHUP to this PID to reload them

    # issue 11: unauthenticated noise is counted, not stored; the audit log has a retention
    unauthenticated_changes_per_source: int = Field(default=30, ge=1)  # per auth_window_s; then 429, not audited
    audit_retention_days: int = Field(default=365, ge=0)  # 0 keeps audit entries forever

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if value:
            try:
                BrokerTarget(value)
            except ValueError:  # its message would show the URL, password included
                raise ValueError("must look like mqtt[s]://user:pass@host:port") from None
        return value

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSettings:
        if not self.database_url:
            self.database_url = _default_database_url(self.data_dir)
        if (self.mosquitto_password_file is None) != (self.mosquitto_acl_file is None):
            raise ValueError("FLEET_MOSQUITTO_PASSWORD_FILE and FLEET_MOSQUITTO_ACL_FILE go together")
        return self

    @property
    def mosquitto_managed(self) -> bool:
        return self.mosquitto_password_file is not None and self.mosquitto_acl_file is not None

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def uses_data_dir(self) -> bool:
        """Embedded mode keeps its TURN secret there; the default database is a SQLite file there."""
        return self.embedded or self.database_url == _default_database_url(self.data_dir)

    @property
    def use_shared_subscriptions(self) -> bool:
        if self.shared_subscriptions is not None:
            return self.shared_subscriptions
        return not self.embedded

    # connection caps (issue 11 item 14): beyond http_max_connections uvicorn answers 503; a request must be
    # received (head and body) within http_read_timeout_s of its first byte or the connection is closed
    http_max_connections: int = Field(default=1000, ge=2)
    http_read_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    events_streams_per_identity: int = Field(default=10, ge=1)  # concurrent GET /api/events per credential
    relay_sockets_per_identity: int = Field(default=32, ge=1)  # concurrent relay WebSockets per credential
    # security headers (issue 11 item 15): /docs, /redoc and /openapi.json for signed-in callers (auth), anyone
    # (public) or nobody (off)
    api_docs: Literal["off", "auth", "public"] = "auth"


def _default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'fleet.db').resolve()}"


class BrokerTarget:
    """Where and as whom the service connects to MQTT."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
        self.tls = parts.scheme == "mqtts"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if self.tls else 1883)  # ValueError when it is not a number
        self.username = unquote(parts.username) if parts.username else SERVICE_USERNAME
        self.password = unquote(parts.password) if parts.password else None

    def __repr__(self) -> str:  # never shows the password
        return f"BrokerTarget({'mqtts' if self.tls else 'mqtt'}://{self.username}@{self.host}:{self.port})"


def load_settings(**overrides) -> ServiceSettings:
    return ServiceSettings(**overrides)


def open_database(url: str) -> Engine:
    """The engine of a migrated database; StartupError (one line, no password) when the URL is unusable or the
    database cannot be reached, so a service fails at start rather than serving without one."""
    from sqlalchemy.exc import ArgumentError

    from fleet_cli.errors import StartupError, database_error, database_url_error, path_reason
    from fleet_service.db import make_engine, migrate

    try:
        engine = make_engine(url)
    except OSError as exc:  # the directory of a SQLite file cannot be created
        raise StartupError(
            f"cannot create the directory of the database {url}: {path_reason(exc)}",
            "pass --data-dir (or --database-url) a place this user can write",
        ) from exc
    except (ArgumentError, ValueError, ImportError) as exc:  # unparsable, a bad port, an unknown driver
        raise database_url_error(exc, url) from exc
    try:
        migrate(engine)
    except Exception as exc:
        engine.dispose()
        error = database_error(exc, url)
        if error is None:
            raise
        raise error from exc
    return engine
