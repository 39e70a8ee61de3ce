"""Agent settings: CLI > FLEET_* environment > TOML config file > defaults."""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from agent.errors import ConfigError
from protocol.errors import ProtocolError
from protocol.ids import check_device_id

# Name of the systemd credential (LoadCredential=) the installed unit passes the secret in.
CREDENTIAL_NAME = "agent-secret"

ENV_PREFIX = "FLEET_"
_USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$")
StrList = list[str]


class AgentSettings(BaseModel):
    """Everything the agent needs; field names are the CLI option names with `_` for `-`.

    A plain pydantic model read by load_settings() (pydantic-settings alone costs the agent ~3 MB of RSS).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    # Connection
    broker_url: str = "mqtt://127.0.0.1:1883"
    device_id: str
    secret: SecretStr | None = None
    secret_file: Path | None = None
    ca_file: Path | None = None
    keepalive: int = Field(default=30, ge=2, le=3600)
    reconnect_min_delay: float = Field(default=1.0, gt=0)
    reconnect_max_delay: float = Field(default=60.0, gt=0)
    auth_retry_delay: float = Field(default=300.0, gt=0)

    # Local state (outbox, remembered command ids, applied config version)
    state_dir: Path = Path("/var/lib/fleet-agent")
    outbox_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    ack_timeout: float = Field(default=20.0, gt=0)  # s to wait for the service's end-to-end ack before resending

    # Units, and the command lines that act on them (never run through a shell)
    unit: StrList = Field(default_factory=list)
    restart_command: str = "systemctl restart {unit}"
    check_command: str = "systemctl is-active {unit}"
    reboot_command: str = "systemctl reboot"
    command_timeout: float = Field(default=300.0, gt=0)

    # Git update
    repo: Path | None = None
    post_update_command: str | None = None
    health_url: str | None = None
    health_timeout: float = Field(default=60.0, gt=0)
    software_version: str | None = None

    # App config written by config_update / config/desired
    app_config_path: Path | None = None
    config_unit: StrList | None = None

    # Telemetry
    heartbeat_interval: float = Field(default=30.0, gt=0)
    metrics_interval: float = Field(default=10.0, gt=0)
    disk_path: StrList = Field(default_factory=lambda: ["/"])
    thermal_dir: Path = Path("/sys/class/thermal")
    plugin_command: str | None = None
    plugin_url: str | None = None
    plugin_timeout: float = Field(default=5.0, gt=0)

    # Logs
    log_unit: StrList = Field(default_factory=list)
    log_file: StrList = Field(default_factory=list)
    journal_command: str = "journalctl -f -o json"
    log_batch_records: int = Field(default=200, ge=1, le=1000)
    log_batch_interval: float = Field(default=2.0, gt=0)
    file_poll_interval: float = Field(default=1.0, gt=0)

    # Signalling relay for the recorder: a WebSocket on 127.0.0.1 bridged to relay/down|up (0 disables)
    relay_port: int = Field(default=8765, ge=0, le=65535)
    relay_origin: StrList = Field(default_factory=list)

    # TURN credentials fetched from the fleet service for the recorder (file and/or the relay port)
    api_url: str | None = None
    turn_file: Path | None = None
    turn_ttl: int | None = Field(default=None, ge=1)

    # Remote terminal through the fleet service (off unless allowed here or by the desired config's remote_shell)
    allow_remote_shell: bool = False
    remote_user: str | None = None  # default: the agent's own user (an agent running as root needs one)
    remote_shell_command: str | None = None  # default: the remote user's login shell
    remote_shell_idle_timeout: float = Field(default=900.0, gt=0)
    remote_shell_max_duration: float = Field(default=8 * 3600.0, gt=0)
    remote_shell_max_sessions: int = Field(default=2, ge=1, le=32)
    # Port forwarding to 127.0.0.1:PORT on the unit (none unless listed here or in the desired config's remote_ports)
    allow_remote_port: list[int] = Field(default_factory=list)
    remote_port_max_sessions: int = Field(default=16, ge=1, le=256)

    @field_validator("remote_user")
    @classmethod
    def _remote_user(cls, value: str | None) -> str | None:
        if value is not None and not _USER_NAME.fullmatch(value):
            raise ValueError("remote_user must be a user name (letters, digits, '.', '_' and '-')")
        if value == "root":
            raise ValueError("remote_user must not be root: remote shells run as an unprivileged user")
        return value

    @field_validator("allow_remote_port")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"allow_remote_port {port} is not a port number (1..65535)")
        return sorted(set(value))

    @field_validator(
        "unit", "log_unit", "log_file", "disk_path", "config_unit", "relay_origin", "allow_remote_port", mode="before"
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # FLEET_UNIT="a.service,b.service" as well as TOML arrays and repeated CLI options.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        try:
            return check_device_id(value)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("broker_url must look like mqtt://host:port or mqtts://host:port")
        if parts.password:
            raise ValueError("broker_url must not carry a password; use secret or secret_file")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("api_url must look like https://host[:port] (the fleet service's base URL)")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("api_url must not carry credentials, a query or a fragment")
        return value.rstrip("/")

    @field_validator("relay_origin")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"relay_origin {origin!r} must look like http(s)://host[:port]")
        return [origin.rstrip("/") for origin in value]

    @field_validator("restart_command", "check_command")
    @classmethod
    def _unit_command(cls, value: str) -> str:
        _check_argv(value)
        if "{unit}" not in value:
            raise ValueError("command must contain the placeholder {unit}")
        return value

    @field_validator(
        "reboot_command", "journal_command", "post_update_command", "plugin_command", "remote_shell_command"
    )
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None:
            _check_argv(value)
        return value

    @model_validator(mode="after")
    def _delays(self) -> AgentSettings:
        if self.reconnect_min_delay > self.reconnect_max_delay:
            raise ValueError("reconnect_min_delay must not exceed reconnect_max_delay")
        return self

    # Derived values -----------------------------------------------------------------

    @property
    def host(self) -> str:
        return urlsplit(self.broker_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.broker_url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.broker_url).scheme == "mqtts"

    @property
    def restart_units(self) -> list[str]:
        return list(self.unit)

    @property
    def config_units(self) -> list[str]:
        """Units restarted after an app config change (default: every configured unit)."""
        return list(self.unit if self.config_unit is None else self.config_unit)

    def password(self) -> str | None:
        """The device secret from `secret`, `secret_file` or the systemd credential; None when absent."""
        if self.secret is not None:
            return self.secret.get_secret_value()
        path = self.secret_file
        if path is None and os.environ.get("CREDENTIALS_DIRECTORY"):
            candidate = Path(os.environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
            path = candidate if candidate.exists() else None
        if path is None:
            return None
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """Read the agent's TOML file; keys may use `-` or `_`; an `[agent]` table is accepted too."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    if isinstance(data.get("agent"), dict):
        data = data["agent"]
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> AgentSettings:
    """Build settings from overrides (CLI), FLEET_* env, then the TOML file; raise ConfigError."""
    values = read_config_file(Path(config_file)) if config_file else {}
    values.update(env_values())
    values.update(overrides)
    try:
        return AgentSettings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def env_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`FLEET_<FIELD>` variables (any case) for the agent's fields; lists may be comma-separated."""
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    return {
        name: env[ENV_PREFIX + name.upper()] for name in AgentSettings.model_fields if ENV_PREFIX + name.upper() in env
    }


def split_command(command: str, **fields: str) -> list[str]:
    """Split a configured command line with shlex, then fill `{unit}`-style placeholders per argument."""
    argv = shlex.split(command)
    for key, value in fields.items():
        argv = [arg.replace("{" + key + "}", value) for arg in argv]
    return argv


def _check_argv(value: str) -> None:
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot split command line: {exc}") from None
    if not argv:
        raise ValueError("command line is empty")


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:8]:
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid agent settings: " + "; ".join(parts)
