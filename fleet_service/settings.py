"""Settings of the fleet service (`FLEET_*` environment variables), built by a function tests can call."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
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
    service_secret: SecretStr | None = None  # the embedded broker's service account password

    ingest_batch_max: int = 1000
    # decode and write in this many worker processes (PostgreSQL only), a unit's messages always in the same one;
    # 1 writes in the service's own process
    ingest_processes: int = Field(default=1, ge=1, le=16)
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
    # metric history: raw samples, then per-minute and per-hour rollups (0 keeps a tier forever)
    metric_raw_retention_h: int = Field(default=48, ge=0)
    metric_1m_retention_days: int = Field(default=30, ge=0)
    metric_1h_retention_days: int = Field(default=730, ge=0)
    metric_retention_days: int | None = Field(default=None, ge=0)  # deprecated: raw samples, in days (see _defaults)
    partitions_ahead_days: int = Field(default=3, ge=1, le=60)  # PostgreSQL: daily partitions made this far ahead
    alert_retention_days: int = Field(default=90, ge=0)  # resolved alerts and their history; 0 keeps them forever
    alert_eval_interval_s: float = Field(default=10.0, gt=0, le=3600)  # the units with a condition under way
    alert_full_eval_interval_s: float = Field(default=60.0, gt=0, le=86400)  # every rule over every unit
    alert_wake_delay_s: float = Field(default=0.25, ge=0, le=60)  # and over the units a live event named, this soon
    alert_lease_s: float = Field(default=30.0, gt=0, le=3600)  # a silent evaluator's replica takes over after this
    # notifications: the dispatcher (one replica at a time) and delivery with retries (exponential backoff, full
    # jitter: a random wait up to min(cap, base * 2^(attempt-1)))
    notify_interval_s: float = Field(default=1.0, gt=0, le=60)  # due rows are looked for this often
    notify_lease_s: float = Field(default=15.0, gt=0, le=3600)  # a silent dispatcher's replica takes over after this
    notify_send_timeout_s: float = Field(default=10.0, gt=0, le=300)  # one attempt
    notify_retry_base_s: float = Field(default=2.0, gt=0, le=3600)
    notify_retry_cap_s: float = Field(default=600.0, gt=0, le=86_400)
    notify_max_attempts: int = Field(default=12, ge=1, le=1000)  # then the notification is failed ...
    notify_max_age_s: float = Field(default=86_400.0, gt=0)  # ... or when it is this old
    public_url: str = ""  # the dashboard's address as operators reach it, for links in notifications
    events_buffer: int = Field(default=10_000, ge=1, le=10_000_000)  # live events held for resuming streams
    max_request_bytes: int = 1_048_576

    # security: dashboard sessions, brute-force limits, a managed Mosquitto
    cookie_secure: bool = False  # Secure cookie even on plain HTTP (set it behind a TLS-terminating proxy)
    session_idle_s: int = 8 * 3600
    session_max_age_s: int = 7 * 24 * 3600
    auth_window_s: float = 300.0  # failed logins/unit auths are counted over this window
    auth_failures_per_user: int = 5  # failed logins per source IP and username in the window, then 429
    auth_failures_per_source: int = 20  # failed logins / unit auths / claims per source IP, then 429
    # managed Mosquitto. "files": the service writes the units' password and ACL files and sends SIGHUP to the PID
    # in the PID file; "dynsec": the dynamic security plugin holds the units' passwords, managed over the network
    # at FLEET_MOSQUITTO_DYNSEC_URL (no shared files or PID namespace; the ACL file only for `mosquitto sync`)
    mosquitto_auth: Literal["files", "dynsec"] = "files"
    mosquitto_password_file: Path | None = None
    mosquitto_acl_file: Path | None = None
    mosquitto_pid_file: Path | None = None
    # the units' listener, where the service keeps the dynamic security plugin (mqtt[s]://host:port); the older
    # `?dynsec=URL` on FLEET_BROKER_URL is still read when this is not set (deprecated)
    mosquitto_dynsec_url: str = ""

    # HTTP auth for clustered brokers (EMQX, VerneMQ, mosquitto-go-auth; docs/scaling.md): the shared secret they
    # call /api/broker-auth/... with. Unset, those routes answer 404.
    broker_auth_token: SecretStr | None = None
    broker_auth_cache_s: int = Field(default=0, ge=0, le=3600)  # VerneMQ may cache allowed answers this long

    # unauthenticated noise is counted, not stored; the audit log has a retention
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

    @field_validator("broker_auth_token")
    @classmethod
    def _broker_auth_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None  # FLEET_BROKER_AUTH_TOKEN= (empty) leaves the routes off
        if value is not None and len(value.get_secret_value()) < 24:
            raise ValueError(
                "must be at least 24 characters (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @field_validator("proxy_origin")
    @classmethod
    def _proxy_origin(cls, value: str | None) -> str | None:
        if not value:
            return None
        from fleet_service.terminal.unit_origin import parse_origin_setting

        parse_origin_setting(value)  # its ValueError names what is wrong
        return value.strip().lower()

    @field_validator("mosquitto_dynsec_url")
    @classmethod
    def _dynsec_url(cls, value: str) -> str:
        if value:
            try:
                BrokerTarget(value)
            except ValueError:
                raise ValueError("must look like mqtt[s]://host:port") from None
        return value

    @model_validator(mode="after")
    def _defaults(self) -> ServiceSettings:
        if not self.database_url:
            self.database_url = _default_database_url(self.data_dir)
        if self.ingest_processes > 1 and not self.database_url.startswith("postgresql"):
            raise ValueError(
                "ingest_processes: more than one ingest process needs PostgreSQL (FLEET_DATABASE_URL=postgresql://...);"
                " SQLite has one writer at a time"
            )
        # The older FLEET_METRIC_RETENTION_DAYS kept every sample that long; it still sets the raw window when
        # FLEET_METRIC_RAW_RETENTION_H is not given.
        if self.metric_retention_days is not None and "metric_raw_retention_h" not in self.model_fields_set:
            self.metric_raw_retention_h = self.metric_retention_days * 24
        if self.mosquitto_auth == "dynsec":
            self._check_plugin_auth()
        elif (self.mosquitto_password_file is None) != (self.mosquitto_acl_file is None):
            raise ValueError("FLEET_MOSQUITTO_PASSWORD_FILE and FLEET_MOSQUITTO_ACL_FILE go together")
        return self

    def _check_plugin_auth(self) -> None:
        if not self.mosquitto_dynsec_url:
            raise ValueError(
                "FLEET_MOSQUITTO_AUTH=dynsec needs FLEET_MOSQUITTO_DYNSEC_URL (mqtts://host:port of the units' "
                "listener, where the dynamic security plugin is loaded)"
            )
        for name, value in (("PASSWORD_FILE", self.mosquitto_password_file), ("PID_FILE", self.mosquitto_pid_file)):
            if value is not None:
                raise ValueError(
                    f"FLEET_MOSQUITTO_{name} is not used with FLEET_MOSQUITTO_AUTH=dynsec (the dynamic security "
                    "plugin holds the units' passwords and needs no reload): unset it"
                )

    @property
    def mosquitto_plugin_auth(self) -> bool:
        """The dynamic security plugin holds the units' credentials (FLEET_MOSQUITTO_AUTH=dynsec)."""
        return self.mosquitto_auth == "dynsec"

    @property
    def mosquitto_managed(self) -> bool:
        """The service writes a Mosquitto's password and ACL files (FLEET_MOSQUITTO_AUTH=files, the default)."""
        return (
            not self.mosquitto_plugin_auth
            and self.mosquitto_password_file is not None
            and self.mosquitto_acl_file is not None
        )

    @property
    def service_account_secret(self) -> str | None:
        """The service account's MQTT password: FLEET_SERVICE_SECRET, else the one in FLEET_BROKER_URL."""
        if self.service_secret is not None and self.service_secret.get_secret_value():
            return self.service_secret.get_secret_value()
        return BrokerTarget(self.broker_url).password if self.broker_url else None

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

    # connection caps: beyond http_max_connections uvicorn answers 503; a request must be
    # received (head and body) within http_read_timeout_s of its first byte or the connection is closed
    http_max_connections: int = Field(default=1000, ge=2)
    http_read_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    events_streams_per_identity: int = Field(default=10, ge=1)  # concurrent GET /api/events per credential
    relay_sockets_per_identity: int = Field(default=32, ge=1)  # concurrent relay WebSockets per credential
    terminal_sockets_per_identity: int = Field(default=4, ge=1)  # concurrent terminal WebSockets per credential
    forward_streams_per_identity: int = Field(default=32, ge=1)  # port forward sockets + proxied requests at once

    # remote terminals: the unit's output in flight per session, how long a unit has to answer, recordings
    terminal_window_bytes: int = Field(default=256 * 1024, ge=16 * 1024, le=16 * 1024 * 1024)
    terminal_open_timeout_s: float = Field(default=10.0, gt=0, le=300)
    terminal_recording_max_bytes: int = Field(default=32 * 1024 * 1024, ge=64 * 1024)  # per session; then cut
    terminal_recording_retention_days: int = Field(default=90, ge=0)  # 0 keeps recordings as long as their rows
    # where browsers get a unit's web UI: https://*.units.example.com (wildcard DNS to this service); unset, a
    # service reached by a loopback name uses http://*.localhost:PORT and any other name has none
    proxy_origin: str | None = None
    # security headers: /docs, /redoc and /openapi.json for signed-in callers (auth), anyone
    # (public) or nobody (off)
    api_docs: Literal["off", "auth", "public"] = "auth"

    # TURN credentials (FLEET_TURN_*): handed as given to turn_service, which checks them and names a bad one
    turn_provider: str | None = None  # hmac (coturn's shared secret, the default) or cloudflare
    turn_secrets: SecretStr | None = None  # a,b,c or a JSON array; embedded hmac without any: one kept in data_dir
    turn_urls: str | None = None
    turn_ttl: str | None = None
    turn_max_ttl: str | None = None
    turn_cloudflare_key_id: str | None = None
    turn_cloudflare_api_token: SecretStr | None = None
    turn_cloudflare_base_url: str | None = None
    turn_request_timeout: str | None = None
    turn_rate_per_minute: str | None = None
    turn_rate_burst: str | None = None

    def turn_values(self) -> dict[str, str]:
        """The FLEET_TURN_* settings that were given, by turn_service's field names."""
        values = {
            name.removeprefix("turn_"): getattr(self, name)
            for name in type(self).model_fields
            if name.startswith("turn_")
        }
        return {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in values.items()
            if value is not None
        }


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


class _PasswordCost(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    password_hash_cost: str = ""


def password_hash_cost() -> str:
    """FLEET_PASSWORD_HASH_COST as given ("" when unset), read at each use: the command line hashes passwords
    without the service's settings, and a bad value must fail only where a password is hashed."""
    return _PasswordCost().password_hash_cost.strip()


def open_database(url: str) -> Engine:
    """The engine of a migrated database; StartupError (one line, no password) when the URL is unusable or the
    database cannot be reached, so a service fails at start rather than serving without one."""
    from sqlalchemy.exc import ArgumentError

    from fleet_cli.errors import StartupError, database_error, database_url_error, path_reason
    from fleet_service.db.engine import make_engine, migrate

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
