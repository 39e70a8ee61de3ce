"""`fleet agent [--config FILE] [options]` and `fleet agent install ...`; every option also reads FLEET_<OPTION>."""

from __future__ import annotations

import argparse
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any

from agent.config import AgentSettings
from agent.errors import AgentError
from fleet_cli.errors import USAGE, StartupError, path_reason

# One line of help for the agent's main options; the rest are documented in agent/README.md.
_HELP = {
    "broker_url": "mqtt://host:port or mqtts://host:port",
    "device_id": "this unit's id (also the MQTT username and client id)",
    "secret": "the unit's secret (prefer --secret-file: the command line is visible to other users)",
    "secret_file": "file holding the unit's secret",
    "state_dir": "outbox, remembered command ids, applied config version",
    "unit": "systemd unit to watch and restart (repeatable)",
    "restart_command": "command line to restart a unit, with {unit} (default: systemctl restart {unit})",
    "check_command": "command line telling whether a unit is active (default: systemctl is-active {unit})",
    "reboot_command": "command line to reboot (default: systemctl reboot)",
    "repo": "git checkout of the recorder software to update",
    "post_update_command": "command run in the checkout after each checkout (update and rollback)",
    "health_url": "URL that must answer 2xx after an update",
    "log_unit": "systemd unit whose journal to forward (repeatable)",
    "log_file": "plain log file to forward (repeatable)",
    "heartbeat_interval": "seconds between heartbeats (default 30)",
    "metrics_interval": "seconds between metrics samples (default 10)",
    "keepalive": "MQTT keepalive in seconds (default 30)",
    "relay_port": "loopback port of the recorder's signalling WebSocket and /turn-credentials (default 8765; 0: off)",
    "relay_origin": "browser origin allowed on the relay port besides loopback pages (repeatable)",
    "api_url": "fleet service base URL (https://host:port) to fetch TURN credentials from",
    "turn_file": "JSON file kept filled with fresh TURN credentials for the recorder (mode 0640)",
    "turn_ttl": "seconds of TURN credential validity to ask for (default: the service's)",
    "allow_remote_shell": "allow remote shells through the fleet service (default off; the desired config's "
    "remote_shell overrides it)",
    "remote_user": "unprivileged user remote shells run as (default: the agent's own user)",
    "remote_shell_idle_timeout": "seconds without input before a remote shell is closed (default 900)",
    "remote_shell_max_duration": "seconds a remote shell may last (default 28800)",
    "remote_shell_max_sessions": "remote shells open at once (default 2)",
    "allow_remote_port": "a loopback port the fleet service may forward to (repeatable; default none; the desired "
    "config's remote_ports overrides it)",
    "remote_port_max_sessions": "forwarded connections open at once (default 16)",
}


def _option_names() -> list[tuple[str, bool]]:
    """(field name, repeatable) for every AgentSettings field."""
    out = []
    for name, field in AgentSettings.model_fields.items():
        repeatable = "list" in str(field.annotation) or typing.get_origin(field.annotation) is list
        out.append((name, repeatable))
    return out


def _is_switch(name: str) -> bool:
    return AgentSettings.model_fields[name].annotation is bool


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: an option not given stays absent, so env, file and defaults apply (and a sub-parser cannot
    # overwrite what the parent parser read).
    for name, repeatable in _option_names():
        flag = "--" + name.replace("_", "-")
        help_text = _HELP.get(name, f"see agent/README.md (env FLEET_{name.upper()})")
        if repeatable:
            parser.add_argument(flag, dest=name, action="append", default=argparse.SUPPRESS, help=help_text)
        elif _is_switch(name):  # `--allow-remote-shell` alone means true; `--allow-remote-shell false` works too
            parser.add_argument(
                flag, dest=name, nargs="?", const="true", default=argparse.SUPPRESS, metavar="BOOL", help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=help_text)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "agent", help="run the unit agent", description="Run the unit agent (presence, logs, metrics, commands)."
    )
    parser.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file (env FLEET_CONFIG)")
    add_agent_options(parser)
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="agent_command", metavar="{install}")
    install = sub.add_parser("install", help="install the agent as a hardened systemd service on this unit")
    add_agent_options(install)
    from agent.install import add_install_options, run_install

    add_install_options(install)
    install.set_defaults(func=run_install)


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name, _ in _option_names() if getattr(args, name, None) is not None}


def skip_unused_imports() -> None:
    """In the agent's own process only: paho imports dnspython for SRV lookups the agent never makes (~3 MB RSS)."""
    if "paho.mqtt.client" not in sys.modules and "dns" not in sys.modules:
        sys.modules["dns"] = None  # type: ignore[assignment]  # `import dns.resolver` -> ImportError


def run(args: argparse.Namespace) -> int:
    skip_unused_imports()
    from agent.config import load_settings
    from agent.runner import Agent

    config = getattr(args, "config", None) or os.environ.get("FLEET_CONFIG")
    try:
        settings = load_settings(config, **cli_overrides(args))
        agent = Agent(settings)
    except AgentError as exc:  # bad settings, an unreadable secret or config file
        raise StartupError(str(exc), _fix(str(exc)), USAGE) from exc
    except OSError as exc:  # only Agent() touches the disk (load_settings reports files as ConfigError)
        raise _path_error(exc, settings.state_dir) from exc
    agent.run_forever()
    return 0


def _fix(message: str) -> str:
    """How to fix a ConfigError: name the options its message is about."""
    names = [name for name, _ in _option_names() if re.search(rf"(?<![\w.]){name}(?:\.\d+)?: ", message)]
    if "secret file" in message:
        names.append("secret_file")
    if "config file" in message:
        names.append("config")
    flags = ", ".join(f"--{name.replace('_', '-')} (FLEET_{name.upper()})" for name in dict.fromkeys(names))
    return f"correct {flags or 'the agent options'}; see `fleet agent --help`"


def _path_error(exc: OSError, state_dir: Path) -> StartupError:
    """A configured path the agent cannot use: say which option, when it is the state directory."""
    path = Path(exc.filename) if exc.filename else None
    reason = path_reason(exc)
    if path is not None and path.is_relative_to(state_dir):
        return StartupError(
            f"state directory {state_dir} cannot be used: {reason}",
            "pass --state-dir (FLEET_STATE_DIR) a directory this user can create and write",
        )
    return StartupError(f"cannot use {path or 'a file'}: {reason}", "check the paths in the agent's settings")
