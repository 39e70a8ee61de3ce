"""`fleet agent install` and root: the sudoers rule grants exactly what the agent runs through `sudo -n`, nothing
the agent user could change, and nothing visudo rejects (or without visudo at all).

Every test installs below a temporary image root (`--root`) whose own /etc/passwd and /etc/group say who the agent
user is; the real /etc is never touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent import install as installer
from agent import privileged
from agent.cli import add_agent_options
from agent.config import load_settings, split_command
from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
AGENT_UID = 4242  # not the uid running the tests, so files the tests make are not the agent's
SYSTEMCTL = shutil.which("systemctl") or "/usr/bin/systemctl"
COMMAND_OPTIONS = ("restart_command", "check_command", "reboot_command", "post_update_command", "plugin_command")

needs_visudo = pytest.mark.skipif(
    not shutil.which("visudo", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    and os.environ.get("CI") != "true",
    reason="visudo is not installed (Debian package sudo)",
)


def image(tmp_path: Path, *, uid: int = AGENT_UID, gid: int = AGENT_UID, groups: str = "") -> Path:
    """An image root whose /etc/passwd and /etc/group define the agent user."""
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        f"root:x:0:0:root:/root:/bin/sh\nfleet-agent:x:{uid}:{gid}::/var/lib/fleet-agent:/usr/sbin/nologin\n"
    )
    (root / "etc/group").write_text(f"root:x:0:\nfleet-agent:x:{AGENT_UID}:\n{groups}")
    return root


def program(root: Path, path: str, body: str = "#!/bin/sh\nexit 0\n", dir_mode: int = 0o755) -> Path:
    """A root-owned (here: the test user's) executable at `path` of the image."""
    host = root / path.lstrip("/")
    host.parent.mkdir(parents=True, exist_ok=True)
    host.parent.chmod(dir_mode)
    host.write_text(body)
    host.chmod(0o755)
    return host


def run(root: Path, privilege: str = "sudo", user: str = "fleet-agent", **options) -> list[Path]:
    values = {
        "device_id": "unit-7",
        "secret": "s3cret-value",
        "unit": ["recorder.service", "web.service"],
        "repo": "/opt/recorder",
        **options,
    }
    return installer.install(
        values, root=root, user=user, exec_path="/usr/bin/fleet agent", privilege=privilege, start=False
    )


def installed(root: Path) -> list[str]:
    """What the installer wrote below the image's /etc (the passwd and group files are the test's own)."""
    etc = root / "etc"
    return sorted(str(p.relative_to(etc)) for p in etc.rglob("*") if p.name not in ("passwd", "group"))


def granted(rule: str) -> set[tuple[str, ...]]:
    """The argument vectors a sudoers rule (as the installer writes it) allows, read as sudo reads them."""
    spec = rule.split("NOPASSWD:", 1)[1]
    commands: set[tuple[str, ...]] = set()
    words: list[str] = []
    word, escaped = "", False
    for ch in spec:
        if escaped:
            escaped = False
            if ch != "\n":
                word += ch
        elif ch == "\\":
            escaped = True
        elif ch in " \t\n,":
            if word:
                words.append(word)
                word = ""
            if ch == ",":
                commands.add(tuple(words))
                words = []
        else:
            word += ch
    words += [word] if word else []
    if words:
        commands.add(tuple(words))
    return commands


def run_through_sudo(config: Path) -> set[tuple[str, ...]]:
    """What the installed agent runs through `sudo`: each configured command line, per unit where it has {unit}."""
    settings = load_settings(config)
    out = set()
    for option in COMMAND_OPTIONS:
        line = getattr(settings, option)
        if not line:
            continue
        for argv in [split_command(line, unit=u) for u in settings.unit] if "{unit}" in line else [split_command(line)]:
            if argv[0] == "sudo":
                assert argv[1] == "-n", argv  # never waits for a password
                out.add(tuple(argv[2:]))
    return out


@needs_visudo
def test_the_rule_grants_exactly_the_commands_the_agent_runs_through_sudo(tmp_path):
    root = image(tmp_path)
    rebuild = "/usr/local/sbin/rebuild-recorder"
    program(root, rebuild)
    written = run(
        root,
        restart_command="sudo -n systemctl restart {unit}",
        post_update_command=f"sudo -n {rebuild}",
        app_config_path="/etc/recorder/config.json",
    )
    rule = root / "etc/sudoers.d/fleet-agent"
    assert rule in written and stat.S_IMODE(rule.stat().st_mode) == 0o440
    assert sorted(p.name for p in rule.parent.iterdir()) == ["fleet-agent"]  # no temp file left beside it

    runs = run_through_sudo(root / "etc/fleet-agent/agent.toml")
    assert runs == {
        (SYSTEMCTL, "restart", "recorder.service"),
        (SYSTEMCTL, "restart", "web.service"),
        (SYSTEMCTL, "reboot"),
        (rebuild,),
    }
    assert granted(rule.read_text()) == runs  # the agent's `systemctl is-active` check runs without sudo
    assert "ALL=(root) NOPASSWD:" in rule.read_text()
    assert subprocess.run([privileged.find_visudo(), "-c", "-f", str(rule)], capture_output=True).returncode == 0
    unit = (root / "etc/systemd/system/fleet-agent.service").read_text().splitlines()
    assert "NoNewPrivileges=no" in unit


def test_commands_the_agent_runs_without_sudo_get_no_grant(tmp_path):
    root = image(tmp_path)
    stale = root / "etc/sudoers.d/fleet-agent"  # left by an earlier install that granted them
    stale.parent.mkdir(parents=True)
    stale.write_text("fleet-agent ALL=(root) NOPASSWD: /usr/local/sbin/restart-recorder\n")
    program(root, "/usr/local/sbin/restart-recorder")
    run(root, restart_command="/usr/local/sbin/restart-recorder {unit}", reboot_command="/usr/local/sbin/reboot-now")

    assert not stale.exists()
    assert run_through_sudo(root / "etc/fleet-agent/agent.toml") == set()
    settings = load_settings(root / "etc/fleet-agent/agent.toml")
    assert settings.restart_command == "/usr/local/sbin/restart-recorder {unit}"
    unit = (root / "etc/systemd/system/fleet-agent.service").read_text().splitlines()
    assert "NoNewPrivileges=yes" in unit and "CapabilityBoundingSet=" in unit  # nothing needs to gain privileges


def _group_member(root: Path) -> dict:
    sbin = program(root, "/usr/local/sbin/restart-recorder", dir_mode=0o775).parent
    (root / "etc/group").write_text(f"staff:x:{sbin.stat().st_gid}:root,fleet-agent\n")
    return {"restart_command": "sudo -n /usr/local/sbin/restart-recorder {unit}"}


def _primary_group(root: Path) -> dict:
    sbin = program(root, "/usr/local/sbin/restart-recorder", dir_mode=0o775).parent
    gid = sbin.stat().st_gid
    (root / "etc/passwd").write_text(f"fleet-agent:x:{AGENT_UID}:{gid}::/var/lib/fleet-agent:/usr/sbin/nologin\n")
    return {"restart_command": "sudo -n /usr/local/sbin/restart-recorder {unit}"}


def _unit_supplementary_group(root: Path) -> dict:
    sbin = program(root, "/usr/local/sbin/restart-recorder", dir_mode=0o775).parent
    (root / "etc/group").write_text(f"adm:x:{sbin.stat().st_gid}:\n")  # the unit adds adm, no member list needed
    return {"restart_command": "sudo -n /usr/local/sbin/restart-recorder {unit}"}


def _owned_by_the_agent(root: Path) -> dict:
    (root / "etc/passwd").write_text(f"fleet-agent:x:{os.getuid()}:{AGENT_UID}::/:/usr/sbin/nologin\n")
    program(root, "/usr/local/sbin/restart-recorder")
    return {"restart_command": "sudo -n /usr/local/sbin/restart-recorder {unit}"}


def _writable_by_everyone(root: Path) -> dict:
    program(root, "/usr/local/sbin/reboot-now", dir_mode=0o1777)  # sticky or not: others may add files there
    return {"reboot_command": "sudo -n /usr/local/sbin/reboot-now"}


def _in_the_checkout(root: Path) -> dict:
    program(root, "/opt/recorder/bin/restart")  # owned by root: still the agent updates (rewrites) the checkout
    return {"restart_command": "sudo -n /opt/recorder/bin/restart {unit}"}


def _in_the_checkout_not_there_yet(root: Path) -> dict:
    return {"restart_command": "sudo -n /opt/recorder/bin/restart {unit}"}


def _in_the_app_config_directory(root: Path) -> dict:
    return {"app_config_path": "/etc/recorder/config.json", "reboot_command": "sudo -n /etc/recorder/reboot"}


def _link_into_the_checkout(root: Path) -> dict:
    program(root, "/opt/recorder/restart")
    (root / "usr/local/sbin").mkdir(parents=True)
    (root / "usr/local/sbin/restart-recorder").symlink_to("/opt/recorder/restart")  # absolute: inside the image
    return {"restart_command": "sudo -n /usr/local/sbin/restart-recorder {unit}"}


def _directory_link_into_the_checkout(root: Path) -> dict:
    program(root, "/opt/recorder/bin/restart")
    (root / "usr/local").mkdir(parents=True)
    (root / "usr/local/sbin").symlink_to("../../opt/recorder/bin")
    return {"restart_command": "sudo -n /usr/local/sbin/restart {unit}"}


def _script_argument_in_the_checkout(root: Path) -> dict:
    return {"restart_command": "sudo -n /bin/sh /opt/recorder/restart.sh {unit}"}


def _interpreter_script_by_relative_name(root: Path) -> dict:
    return {"post_update_command": "sudo -n /usr/bin/python3 build.py"}  # runs in the checkout


def _relative_program(root: Path) -> dict:
    return {"post_update_command": "sudo -n ./build.sh"}


def _shell_with_inline_code(root: Path) -> dict:
    return {"restart_command": "sudo -n /bin/sh -ec 'systemctl restart {unit}'"}


def _python_module(root: Path) -> dict:
    return {"post_update_command": "sudo -n /usr/bin/python3 -m build"}  # imports from the checkout


def _interpreter_of_a_script_in_the_checkout(root: Path) -> dict:
    program(root, "/usr/local/sbin/restart-recorder", body="#!/opt/recorder/venv/bin/python3\nprint('hi')\n")
    return {"restart_command": "sudo -n /usr/local/sbin/restart-recorder {unit}"}


@pytest.mark.parametrize(
    "setup",
    [
        _group_member,
        _primary_group,
        _unit_supplementary_group,
        _owned_by_the_agent,
        _writable_by_everyone,
        _in_the_checkout,
        _in_the_checkout_not_there_yet,
        _in_the_app_config_directory,
        _link_into_the_checkout,
        _directory_link_into_the_checkout,
        _script_argument_in_the_checkout,
        _interpreter_script_by_relative_name,
        _relative_program,
        _shell_with_inline_code,
        _python_module,
        _interpreter_of_a_script_in_the_checkout,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_privileged_command_the_agent_user_could_change_is_refused_and_nothing_is_written(tmp_path, setup):
    root = image(tmp_path)
    options = setup(root)
    with pytest.raises(ConfigError) as refused:
        run(root, **options)
    option = next(iter(options.keys() - {"app_config_path"}))
    assert option in str(refused.value), refused.value
    assert installed(root) == []


@needs_visudo
@pytest.mark.parametrize("dir_mode", [0o755, 0o775])
def test_a_root_owned_program_outside_what_the_agent_may_write_is_granted(tmp_path, dir_mode):
    # Group-writable is fine when the agent user is in no such group: the controls of the refusals above.
    root = image(tmp_path, groups="adm:x:4:\nsystemd-journal:x:5:\n")
    program(root, "/usr/local/sbin/restart-recorder", dir_mode=dir_mode)
    run(root, restart_command="sudo -n /usr/local/sbin/restart-recorder {unit}")
    rule = (root / "etc/sudoers.d/fleet-agent").read_text()
    assert ("/usr/local/sbin/restart-recorder", "web.service") in granted(rule)


@pytest.mark.parametrize(
    "options",
    [
        {"reboot_command": "sudo -n /sbin/shutdown -r 'now\nfleet-agent ALL=(ALL) NOPASSWD: ALL'"},
        {"reboot_command": "sudo -n /sbin/shutdown -r '*'"},
        {"reboot_command": "sudo -n /sbin/shutdown -r '^.*$'"},
        {"reboot_command": "sudo -n /sbin/shutdown -r ''"},
        {"reboot_command": "sudo -n /sbin/shutdown -r 'now!'"},
        {"reboot_command": "sudo -u recorder /sbin/reboot"},
        {"reboot_command": "sudo -E /sbin/reboot"},
        {"journal_command": "sudo -n journalctl -f -o json"},
    ],
)
def test_what_a_sudoers_rule_cannot_grant_exactly_is_refused(tmp_path, options):
    root = image(tmp_path)
    with pytest.raises(ConfigError) as refused:
        run(root, **options)
    assert next(iter(options)) in str(refused.value)
    assert installed(root) == []


def test_a_user_name_sudoers_would_misread_is_refused(tmp_path):
    root = image(tmp_path)
    with pytest.raises(ConfigError, match="user"):
        run(root, user="fleet-agent ALL=(ALL) NOPASSWD: ALL\n#")
    assert installed(root) == []


def test_settings_that_do_not_validate_are_a_one_line_refusal(tmp_path):
    root = image(tmp_path)
    with pytest.raises(ConfigError, match="reboot_command.*quotation"):
        run(root, reboot_command="sudo -n '/sbin/reboot")
    assert installed(root) == []


def test_polkit_mode_refuses_commands_through_sudo(tmp_path):
    root = image(tmp_path)
    with pytest.raises(ConfigError, match="reboot_command"):
        run(root, privilege="polkit", reboot_command="sudo -n /usr/bin/systemctl reboot")
    assert installed(root) == []


@needs_visudo
def test_a_rule_visudo_rejects_is_never_installed(tmp_path, monkeypatch):
    root = image(tmp_path)
    monkeypatch.setattr(
        installer, "render_sudoers", lambda settings, user: f"{user} ALL=(root) NOPASSWD {SYSTEMCTL} reboot\n"
    )  # no colon
    with pytest.raises(ConfigError, match="visudo") as refused:
        run(root)
    assert "syntax error" in str(refused.value)
    assert installed(root) == []


@needs_visudo
def test_check_sudoers_runs_the_real_visudo(tmp_path):
    visudo = privileged.find_visudo()
    privileged.check_sudoers(visudo, f"fleet-agent ALL=(root) NOPASSWD: {SYSTEMCTL} reboot\n")
    with pytest.raises(ConfigError, match="visudo"):
        privileged.check_sudoers(visudo, "fleet-agent ALL=(root) NOPASSWD: reboot\n")  # not a full path


def _install_args(root: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_agent_options(parser)
    installer.add_install_options(parser)
    return parser.parse_args(
        [
            "--root",
            str(root),
            "--device-id",
            "unit-7",
            "--secret",
            "s3cret-value",
            "--unit",
            "recorder.service",
            "--no-start",
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "privilege, extra, refused",
    [
        ("sudo", [], True),
        ("polkit", [], False),
        (
            "sudo",
            ["--restart-command", "/usr/bin/systemctl restart {unit}", "--reboot-command", "/usr/bin/true"],
            False,
        ),
    ],
)
def test_without_visudo_a_sudoers_rule_is_refused(tmp_path, monkeypatch, capsys, privilege, extra, refused):
    root = image(tmp_path)
    empty = tmp_path / "no-visudo-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(privileged, "VISUDO_DIRS", (), raising=False)
    code = installer.run_install(_install_args(root, "--privilege", privilege, *extra))
    err = capsys.readouterr().err
    if refused:
        assert code == 1 and "visudo" in err and "sudo" in err and "polkit" in err, err
        assert installed(root) == []
    else:
        assert code == 0, err
        assert not (root / "etc/sudoers.d").exists()


def test_the_command_line_refuses_with_one_line_and_exit_1(tmp_path):
    root = image(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "install",
            "--root",
            str(root),
            "--device-id",
            "unit-7",
            "--secret",
            "x",
            "--unit",
            "recorder.service",
            "--repo",
            "/opt/recorder",
            "--no-start",
            "--restart-command",
            "sudo -n /opt/recorder/restart {unit}",
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "restart_command" in proc.stderr and "/opt/recorder" in proc.stderr and "Traceback" not in proc.stderr
    assert installed(root) == []
