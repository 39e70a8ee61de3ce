"""`fleet agent install`: config file, root-only secret, hardened systemd unit, narrow sudoers (or polkit) rule.

What may run as root, and the checks that the agent user cannot change it, are in `agent.privileged`. The sudoers
rule must pass `visudo -cf` before it replaces /etc/sudoers.d/fleet-agent (0440, atomically); without visudo there
is no rule. Every check runs before the first file is written.
"""

from __future__ import annotations

import argparse
import json
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.config import CREDENTIAL_NAME, AgentSettings
from agent.errors import AgentError, ConfigError
from agent.files import write_atomic
from agent.privileged import (
    COMMAND_OPTIONS,
    SUPPLEMENTARY_GROUPS,
    absolute,
    agent_user,
    agent_writable_dirs,
    check_sudoers,
    find_visudo,
    privileged_commands,
    refuse_what_the_agent_could_change,
    render_sudoers,
    sudo_absolute,
    visudo_check,
)

SERVICE = "fleet-agent.service"
CONFIG_DIR = Path("/etc/fleet-agent")
STATE_DIR = Path("/var/lib/fleet-agent")
SUDOERS_FILE = "etc/sudoers.d/fleet-agent"  # below the root; sudo ignores the dotted temp files beside it
_UNIT_NAME = re.compile(r"^[A-Za-z0-9@._:\\-]{1,255}$")
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def add_install_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="/", help="install below this directory (for images and tests)")
    parser.add_argument("--user", default="fleet-agent", help="system user the agent runs as")
    parser.add_argument(
        "--exec",
        dest="exec_path",
        default=None,
        help="command line that starts the agent (default: this Python with -m agent, which loads "
        "only the agent's modules; `/path/to/fleet agent` works too)",
    )
    parser.add_argument(
        "--privilege",
        choices=("sudo", "polkit"),
        default="sudo",
        help="how the agent may restart units and reboot: a sudoers rule (default) or a polkit rule",
    )
    parser.add_argument("--no-start", action="store_true", help="write files only; do not enable or start")


def run_install(args: argparse.Namespace) -> int:
    values = {name: getattr(args, name) for name in AgentSettings.model_fields if getattr(args, name, None) is not None}
    try:
        written = install(
            values,
            root=Path(args.root),
            user=args.user,
            exec_path=args.exec_path or f"{sys.executable} -m agent",
            privilege=args.privilege,
            start=not args.no_start,
        )
    except (AgentError, OSError, subprocess.CalledProcessError) as exc:
        print(f"fleet agent install: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def install(
    values: dict[str, Any], *, root: Path, user: str, exec_path: str, privilege: str = "sudo", start: bool = True
) -> list[Path]:
    """Check everything, then write every file (below `root`); on the real root also create the user and enable
    the service. A failed check (ConfigError) leaves the system as it was."""
    settings, secret = checked_settings(values, user, privilege)
    privileged = privileged_commands(settings)
    if privileged and privilege != "sudo":
        raise ConfigError(
            f"{privileged[0].option}: with --privilege polkit the agent runs with NoNewPrivileges, "
            "where sudo cannot work; drop `sudo -n` (the polkit rule allows the restarts and reboot)"
        )
    refuse_what_the_agent_could_change(privileged, settings, root, agent_user(root, user))
    sudoers = visudo = None
    if privileged:
        sudoers = render_sudoers(settings, user)
        visudo = find_visudo()
        check_sudoers(visudo, sudoers)

    real = root.resolve() == Path("/")
    if real:
        ensure_user(user, STATE_DIR)
        if settings.state_dir.parent != Path("/var/lib"):  # otherwise systemd's StateDirectory= makes it
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            shutil.chown(settings.state_dir, user, user)
    etc = root / str(CONFIG_DIR).lstrip("/")
    written = [
        _write(etc / "agent.toml", render_config(settings, list(values)), 0o644),
        _write(etc / "secret", secret + "\n", 0o400),
        _write(root / "etc/systemd/system" / SERVICE, render_unit(settings, user, exec_path, privilege), 0o644),
    ]
    rule = root / SUDOERS_FILE
    if sudoers is not None:
        assert visudo is not None
        written.append(_write(rule, sudoers, 0o440, check=lambda tmp: visudo_check(visudo, tmp)))
    elif rule.exists():  # an earlier install's grant for commands that no longer run through sudo
        rule.unlink()
        print(f"removed {rule}: no configured command runs through sudo")
    if privilege == "polkit":
        written.append(_write(root / "etc/polkit-1/rules.d/50-fleet-agent.rules", render_polkit(settings, user), 0o644))
    if real and start:
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "enable", "--now", SERVICE], check=True)
    return written


def checked_settings(values: dict[str, Any], user: str, privilege: str) -> tuple[AgentSettings, str]:
    """The agent's settings and secret from the install options, validated; nothing is written yet."""
    if not _USER_NAME.fullmatch(user):
        raise ConfigError(f"user name {user!r} is not a plain system user name (a-z, 0-9, _ and -)")
    secret = values.pop("secret", None)
    secret_file = values.pop("secret_file", None)
    if secret is None and secret_file is not None:
        secret = Path(secret_file).read_text().strip()
    if not secret:
        raise ConfigError("install needs --secret or --secret-file (the secret printed by `fleet device add`)")
    values.setdefault("state_dir", str(STATE_DIR))
    if privilege == "sudo":
        values.setdefault("restart_command", "sudo -n " + absolute("systemctl restart {unit}"))
        values.setdefault("reboot_command", "sudo -n " + absolute("systemctl reboot"))
    for option in COMMAND_OPTIONS:
        if isinstance(values.get(option), str):
            values[option] = sudo_absolute(values[option])
    try:
        settings = AgentSettings(**values, secret=secret)  # validates before anything is written
    except ValidationError as exc:
        said = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()[:8])
        raise ConfigError(f"invalid agent settings: {said}") from None
    for unit in settings.unit:
        if not _UNIT_NAME.fullmatch(unit):
            raise ConfigError(f"unit name {unit!r} has characters a sudoers rule cannot carry")
    return settings, secret


def ensure_user(user: str, home: Path) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--home-dir", str(home), "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            check=True,
        )


def render_config(settings: AgentSettings, keys: list[str]) -> str:
    lines = [
        "# fleet agent settings; FLEET_* environment variables and command-line options override these.",
        "# The secret is not here: systemd passes /etc/fleet-agent/secret as a credential.",
    ]
    for key in sorted(set(keys) - {"secret", "secret_file"}):
        lines.append(f"{key} = {_toml(getattr(settings, key))}")
    return "\n".join(lines) + "\n"


def render_unit(settings: AgentSettings, user: str, exec_path: str, privilege: str) -> str:
    writable = agent_writable_dirs(settings)
    git_safe = (
        f"GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0={settings.repo}"
        if settings.repo
        else ""
    )
    # sudo must gain privileges, which NoNewPrivileges forbids; with polkit, or when no configured command runs
    # through sudo, nothing setuid runs at all.
    nnp = (
        "NoNewPrivileges=yes\nCapabilityBoundingSet=\n"
        if privilege == "polkit" or not privileged_commands(settings)
        else (
            "# NoNewPrivileges would stop the sudoers rule from working; use --privilege polkit to have both.\n"
            "NoNewPrivileges=no\n"
        )
    )
    state_dir = Path(settings.state_dir)
    state = ""
    if state_dir.parent == Path("/var/lib"):
        state = f"StateDirectory={state_dir.name}\nStateDirectoryMode=0750\n"
    return f"""[Unit]
Description=Fleet agent (presence, logs, metrics, commands) for this recorder
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
User={user}
Group={user}
SupplementaryGroups={" ".join(SUPPLEMENTARY_GROUPS)}
# The agent reads the secret from $CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME}; the file itself stays root-only.
ExecStart={exec_path} --config {CONFIG_DIR}/agent.toml
LoadCredential={CREDENTIAL_NAME}:{CONFIG_DIR}/secret
Environment=PYTHONUNBUFFERED=1 {git_safe}
Restart=always
RestartSec=5
TimeoutStopSec=20
{state}{nnp}ProtectSystem=strict
ReadWritePaths={" ".join(writable)}
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0027
MemoryMax=128M
CPUWeight=20
Nice=10

[Install]
WantedBy=multi-user.target
"""


def render_polkit(settings: AgentSettings, user: str) -> str:
    units = json.dumps(sorted(set(settings.unit)))
    return f"""// Written by `fleet agent install`: {user} may restart exactly these units and reboot.
polkit.addRule(function(action, subject) {{
    if (subject.user != {json.dumps(user)}) return polkit.Result.NOT_HANDLED;
    if (action.id == "org.freedesktop.systemd1.manage-units" &&
        action.lookup("verb") == "restart" && {units}.indexOf(action.lookup("unit")) >= 0)
        return polkit.Result.YES;
    if (action.id == "org.freedesktop.login1.reboot" || action.id == "org.freedesktop.login1.reboot-multiple-sessions")
        return polkit.Result.YES;
    return polkit.Result.NOT_HANDLED;
}});
"""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return '""'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def _write(path: Path, text: str, mode: int, check: Any = None) -> Path:
    write_atomic(path, text.encode(), mode, check)
    return path
