"""`fleet agent install`: config file, root-only secret, hardened systemd unit, narrow sudoers (or polkit) rule."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.config import CREDENTIAL_NAME, AgentSettings, split_command
from agent.errors import AgentError, ConfigError

SERVICE = "fleet-agent.service"
CONFIG_DIR = Path("/etc/fleet-agent")
STATE_DIR = Path("/var/lib/fleet-agent")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9@._:\\-]{1,255}$")


def add_install_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="/", help="install below this directory (for images and tests)")
    parser.add_argument("--user", default="fleet-agent", help="system user the agent runs as")
    parser.add_argument("--exec", dest="exec_path", default=None,
                        help="command line that starts the agent (default: this Python with -m agent, which loads "
                             "only the agent's modules; `/path/to/fleet agent` works too)")
    parser.add_argument("--privilege", choices=("sudo", "polkit"), default="sudo",
                        help="how the agent may restart units and reboot: a sudoers rule (default) or a polkit rule")
    parser.add_argument("--no-start", action="store_true", help="write files only; do not enable or start")


def run_install(args: argparse.Namespace) -> int:
    from agent.cli import cli_overrides

    values = cli_overrides(args)
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
    """Write every file (below `root`); on the real root also create the user and enable the service."""
    secret = values.pop("secret", None)
    secret_file = values.pop("secret_file", None)
    if secret is None and secret_file is not None:
        secret = Path(secret_file).read_text().strip()
    if not secret:
        raise ConfigError("install needs --secret or --secret-file (the secret printed by `fleet device add`)")
    values.setdefault("state_dir", str(STATE_DIR))
    if privilege == "sudo":
        values.setdefault("restart_command", "sudo -n " + _absolute("systemctl restart {unit}"))
        values.setdefault("reboot_command", "sudo -n " + _absolute("systemctl reboot"))
    settings = AgentSettings(**values, secret=secret)  # validates before anything is written
    for unit in settings.unit:
        if not _UNIT_NAME.fullmatch(unit):
            raise ConfigError(f"unit name {unit!r} has characters a sudoers rule cannot carry")

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
    if privilege == "sudo":
        rule = root / "etc/sudoers.d/fleet-agent"
        written.append(_write(rule, render_sudoers(settings, user), 0o440))
        if shutil.which("visudo"):
            subprocess.run(["visudo", "-cq", "-f", str(rule)], check=True)
    else:
        written.append(_write(root / "etc/polkit-1/rules.d/50-fleet-agent.rules", render_polkit(settings, user), 0o644))
    if real and start:
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "enable", "--now", SERVICE], check=True)
    return written


def ensure_user(user: str, home: Path) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--home-dir", str(home), "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            check=True,
        )


def render_config(settings: AgentSettings, keys: list[str]) -> str:
    lines = ["# fleet agent settings; FLEET_* environment variables and command-line options override these.",
             "# The secret is not here: systemd passes /etc/fleet-agent/secret as a credential."]
    for key in sorted(set(keys) - {"secret", "secret_file"}):
        lines.append(f"{key} = {_toml(getattr(settings, key))}")
    return "\n".join(lines) + "\n"


def render_unit(settings: AgentSettings, user: str, exec_path: str, privilege: str) -> str:
    writable = [str(settings.state_dir)]
    if settings.repo:
        writable.append(str(settings.repo))
    if settings.app_config_path:
        writable.append(str(Path(settings.app_config_path).parent))
    if settings.turn_file:
        writable.append(str(Path(settings.turn_file).parent))
    git_safe = f"GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0={settings.repo}" \
        if settings.repo else ""
    # sudo must gain privileges, which NoNewPrivileges forbids; with polkit nothing setuid runs at all.
    nnp = "NoNewPrivileges=yes\nCapabilityBoundingSet=\n" if privilege == "polkit" else (
        "# NoNewPrivileges would stop the sudoers rule from working; use --privilege polkit to have both.\n"
        "NoNewPrivileges=no\n"
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
SupplementaryGroups=systemd-journal adm
# The agent reads the secret from $CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME}; the file itself stays root-only.
ExecStart={exec_path} --config {CONFIG_DIR}/agent.toml
LoadCredential={CREDENTIAL_NAME}:{CONFIG_DIR}/secret
Environment=PYTHONUNBUFFERED=1 {git_safe}
Restart=always
RestartSec=5
TimeoutStopSec=20
{state}{nnp}ProtectSystem=strict
ReadWritePaths={' '.join(writable)}
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


def render_sudoers(settings: AgentSettings, user: str) -> str:
    """Exactly the configured restart commands (one per unit) and the reboot command; nothing else."""
    commands = []
    for unit in settings.unit:
        commands.append(_sudo_command(split_command(settings.restart_command, unit=unit)))
    commands.append(_sudo_command(split_command(settings.reboot_command)))
    body = ", \\\n    ".join(dict.fromkeys(c for c in commands if c))
    return (
        "# Written by `fleet agent install`: the agent may run exactly these commands as root.\n"
        f"Defaults:{user} !requiretty, !lecture\n"
        f"{user} ALL=(root) NOPASSWD: \\\n    {body}\n"
    )


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


def _sudo_command(argv: list[str]) -> str:
    if argv and argv[0] == "sudo":  # the configured line is `sudo -n CMD ...`: the rule names CMD
        argv = argv[1:]
        while argv and argv[0].startswith("-"):
            argv = argv[1:]
    if not argv:
        return ""
    return " ".join(_sudo_escape(a) for a in [_which(argv[0]), *argv[1:]])


def _absolute(command: str) -> str:
    argv = command.split(" ", 1)
    return " ".join([_which(argv[0]), *argv[1:]])


def _which(program: str) -> str:
    if program.startswith("/"):
        return program
    return shutil.which(program) or f"/usr/bin/{program}"


def _sudo_escape(arg: str) -> str:
    return re.sub(r"([\\,:=\s])", r"\\\1", arg)


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


def _write(path: Path, text: str, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path
