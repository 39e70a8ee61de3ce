"""What the agent runs as root through `sudo -n`, the sudoers rule that allows exactly that, and the checks that
the agent user cannot change what runs as root.

Root for the agent user, and nothing more than it needs: the sudoers rule names exactly the argument vectors that
the configured command lines run through `sudo -n` (a command the agent runs without sudo gets no rule at all).
A program run as root, the interpreter of its `#!` line and every path among its arguments must be out of the
agent user's reach: not owned by it, not writable by its groups or by everyone, not in a directory it may write
(the checkout it updates, its state, app config and TURN file directories), checked along every directory and
symbolic link of the path. The rule must pass `visudo -cf` before it is installed; without visudo there is no rule.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentSettings, split_command
from agent.errors import ConfigError

SUPPLEMENTARY_GROUPS = ("systemd-journal", "adm")  # the unit's SupplementaryGroups=
VISUDO_DIRS = ("/usr/sbin", "/sbin")  # searched after PATH: a non-root PATH often lacks them
COMMAND_OPTIONS = ("restart_command", "check_command", "reboot_command", "post_update_command", "plugin_command")
_PER_UNIT = ("restart_command", "check_command")  # run once per configured unit, {unit} filled in
# What the installer puts into a sudoers rule: no wildcard (* ? [), regular expression (^...$), quote, comment,
# negation or control character, so the rule means exactly the argument it names; \\ , : = and space are escaped.
_SUDOERS_WORD = re.compile(r"^[A-Za-z0-9@%_+=:,./\\ -]+$")
_PROGRAM = re.compile(r"^/[A-Za-z0-9@%_+=:,./-]*[^/]$")
_PLAIN = re.compile(r"^[A-Za-z0-9@%_+=:,./{}-]+$")
# Programs that run code named on their command line: (name, short options / long options taking code, not a file).
_INTERPRETERS = (
    (re.compile(r"(ba|da|z|k|mk|a)?sh|busybox"), "c", ()),
    (re.compile(r"python[0-9.]*"), "cm", ()),
    (re.compile(r"(perl|ruby)[0-9.]*"), "eE", ()),
    (re.compile(r"node(js)?"), "ep", ("--eval", "--print")),
    (re.compile(r"php[0-9.]*"), "r", ()),
    (re.compile(r"env"), "S", ("--split-string",)),
)


@dataclass(frozen=True)
class Privileged:
    """One argument vector the agent runs as root through `sudo -n`."""

    option: str
    argv: tuple[str, ...]  # what root runs: the program (absolute path) and its arguments
    cwd: str  # where the agent runs it (the checkout for the post-update hook)


@dataclass(frozen=True)
class AgentUser:
    name: str
    uid: int | None  # None: the user does not exist yet (the installer creates it; it owns nothing then)
    gids: frozenset[int]  # its primary group, groups listing it, and the unit's supplementary groups


def privileged_commands(settings: AgentSettings) -> list[Privileged]:
    """Every argument vector the agent runs through `sudo -n`, as it runs them (per unit where {unit} is filled)."""
    found: dict[tuple[str, ...], Privileged] = {}
    for option in COMMAND_OPTIONS:
        line = getattr(settings, option)
        if not line:
            continue
        runs = [split_command(line, unit=u) for u in settings.unit] if option in _PER_UNIT else [split_command(line)]
        cwd = str(settings.repo) if option == "post_update_command" and settings.repo else "/"
        for argv in runs:
            rest = _after_sudo(option, argv)
            if rest is not None:
                _check_words(option, rest)
                found.setdefault(tuple(rest), Privileged(option, tuple(rest), cwd))
    if _after_sudo("journal_command", split_command(settings.journal_command)) is not None:
        raise ConfigError(
            "journal_command cannot run through sudo: the agent appends --unit and cursor options, "
            "which no exact sudoers rule names; the unit reads the journal as a systemd-journal member"
        )
    return list(found.values())


def agent_user(root: Path, name: str) -> AgentUser:
    """Who the agent runs as, from the passwd and group files below `root`."""
    uid = gid = None
    for fields in _records(root / "etc/passwd"):
        if fields[0] == name and len(fields) > 3:
            uid, gid = int(fields[2]), int(fields[3])
    gids = {gid} if gid is not None else set()
    for fields in _records(root / "etc/group"):
        if len(fields) > 3 and (fields[0] in SUPPLEMENTARY_GROUPS or name in fields[3].split(",")):
            gids.add(int(fields[2]))
    return AgentUser(name, uid, frozenset(gids))


def agent_writable_dirs(settings: AgentSettings) -> list[str]:
    """The directories the unit lets the agent write (ReadWritePaths=): its state, the checkout it updates, the
    app config's and the TURN file's directories."""
    writable = [str(settings.state_dir)]
    if settings.repo:
        writable.append(str(settings.repo))
    if settings.app_config_path:
        writable.append(str(Path(settings.app_config_path).parent))
    if settings.turn_file:
        writable.append(str(Path(settings.turn_file).parent))
    return writable


def refuse_what_the_agent_could_change(
    privileged: list[Privileged], settings: AgentSettings, root: Path, agent: AgentUser
) -> None:
    """ConfigError naming the option when the agent user could change what one of these commands runs as root."""
    trees = set()
    for tree in agent_writable_dirs(settings):
        trees.add(posixpath.normpath(tree))
        trees.add(_walk(root, tree)[1])
    for command in privileged:
        for path in _paths_run_by(command, root):
            reason = _why_the_agent_could_change(root, path, agent, sorted(trees))
            if reason:
                raise ConfigError(
                    f"{command.option}: refusing to let {agent.name} run {' '.join(command.argv)!r} as root: "
                    f"{reason}. Install it root-owned (e.g. in /usr/local/sbin, mode 0755) outside what the agent "
                    "may write, or run the command without sudo"
                )


def find_visudo() -> str:
    found = shutil.which("visudo", path=os.pathsep.join([os.environ.get("PATH", ""), *VISUDO_DIRS]))
    if found is None:
        raise ConfigError(
            "visudo not found, and a sudoers rule is never installed unchecked: install the sudo "
            "package (apt-get install sudo), use --privilege polkit, or configure no command with sudo"
        )
    return found


def check_sudoers(visudo: str, text: str) -> None:
    """`visudo -cf` on the rule in a private temporary file; ConfigError with visudo's words when it fails."""
    with tempfile.TemporaryDirectory(prefix="fleet-agent-sudoers.") as tmp:
        path = Path(tmp) / "fleet-agent"
        path.write_text(text)
        visudo_check(visudo, path)


def visudo_check(visudo: str, path: Path) -> None:
    """`visudo -cf` on a rule file (the temporary file before it replaces the rule, too)."""
    proc = subprocess.run([visudo, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        said = " / ".join(line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip())
        raise ConfigError(f"the generated sudoers rule fails `visudo -cf` ({said}); nothing was installed")


def render_sudoers(settings: AgentSettings, user: str) -> str:
    """Exactly the argument vectors the agent runs through `sudo -n` (restart per unit, reboot, hooks); nothing else."""
    body = ", \\\n    ".join(" ".join(_sudo_escape(a) for a in c.argv) for c in privileged_commands(settings))
    return (
        "# Written by `fleet agent install`: the agent may run exactly these commands as root.\n"
        f"Defaults:{user} !requiretty, !lecture\n"
        f"{user} ALL=(root) NOPASSWD: \\\n    {body}\n"
    )


def _after_sudo(option: str, argv: list[str]) -> list[str] | None:
    """The argv `sudo` runs as root when the command line starts with sudo, else None."""
    if not argv or posixpath.basename(argv[0]) != "sudo":
        return None
    rest = list(argv[1:])
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag == "--":
            break
        if flag not in ("-n", "--non-interactive"):
            raise ConfigError(
                f"{option}: sudo option {flag} is not supported; write `sudo -n PROGRAM ARGS...`, "
                "which the rule allows as root exactly"
            )
    if not rest:
        raise ConfigError(f"{option}: names no program after sudo")
    return rest


def sudo_absolute(line: str) -> str:
    """`sudo [-n] prog args` -> `sudo -n /abs/prog args`: the agent runs the very path the rule names."""
    try:
        argv = shlex.split(line)
    except ValueError:
        return line  # AgentSettings says what is wrong with it
    if not argv or posixpath.basename(argv[0]) != "sudo":
        return line
    i = 1
    while i < len(argv) and argv[i] in ("-n", "--non-interactive"):
        i += 1
    if i < len(argv) and argv[i] == "--":
        i += 1
    if i >= len(argv) or argv[i].startswith("-"):
        return line  # refused later, with the reason
    program = argv[i] if "/" in argv[i] else _which(argv[i])
    normal = [argv[0], "-n", program, *argv[i + 1 :]]
    if normal == argv:
        return line
    return " ".join(a if _PLAIN.fullmatch(a) else shlex.quote(a) for a in normal)


def _check_words(option: str, argv: list[str]) -> None:
    if not argv[0].startswith("/"):
        raise ConfigError(f"{option}: the program sudo runs must be an absolute path, not {argv[0]!r}")
    if not _PROGRAM.fullmatch(argv[0]):
        raise ConfigError(
            f"{option}: program path {argv[0]!r} has characters the installer does not put into a sudoers rule"
        )
    for arg in argv[1:]:
        if not _SUDOERS_WORD.fullmatch(arg):
            raise ConfigError(
                f"{option}: argument {arg!r} is empty or has characters (wildcards, quotes, control "
                "characters...) that a sudoers rule would not match literally"
            )


def _paths_run_by(command: Privileged, root: Path) -> list[str]:
    """The files whose content decides what runs as root: the program, the interpreter of its #! line, every
    argument that is a path (relative ones in the command's working directory) and an interpreter's script."""
    program, args = command.argv[0], command.argv[1:]
    paths = [program, *_shebang(root, program)]
    name = posixpath.basename(program)
    interpreter = next(((short, long) for pattern, short, long in _INTERPRETERS if pattern.fullmatch(name)), None)
    for arg in args:
        if interpreter is not None:
            short, long = interpreter
            inline = arg.split("=", 1)[0] in long or (
                arg.startswith("-") and not arg.startswith("--") and any(c in short for c in arg[1:])
            )
            if inline:
                raise ConfigError(
                    f"{command.option}: {name} {arg} runs code from its command line, which the "
                    "installer cannot check; put the commands in a root-owned script"
                )
        if "/" in arg or (interpreter is not None and not arg.startswith("-")):
            paths.append(posixpath.join(command.cwd, arg))
    return paths


def _shebang(root: Path, program: str, depth: int = 0) -> list[str]:
    """The interpreter (and its path argument) of a `#!` script, and theirs in turn."""
    host = _host(root, _walk(root, program)[1])
    if not host.is_file():  # not there (yet), or nothing to read (never open a FIFO)
        return []
    try:
        with open(host, "rb") as fh:
            first = fh.readline(256)
    except OSError:  # not readable: nothing to follow
        return []
    if not first.startswith(b"#!") or depth > 4:
        return []
    words = first[2:].decode("utf-8", "replace").split()
    paths = [w for w in words if w.startswith("/")]
    return paths + [p for w in paths[:1] for p in _shebang(root, w, depth + 1)]


def _why_the_agent_could_change(root: Path, path: str, agent: AgentUser, trees: list[str]) -> str | None:
    """Why the agent user could change what `path` (on the unit) is: an entry on the way it owns or may write,
    or a place inside a directory the unit lets it write; None when it cannot."""
    entries, resolved = _walk(root, path)
    literal = posixpath.normpath(path)
    for entry in [literal, resolved, *entries]:
        tree = next((t for t in trees if entry == t or entry.startswith(t.rstrip("/") + "/")), None)
        if tree is not None:
            via = "" if entry == literal or literal.startswith(entry + "/") else f" (through {entry})"
            return f"{path}{via} is inside {tree}, which the agent may write"
    for entry in entries:
        try:
            st = os.lstat(_host(root, entry))
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        if agent.uid is not None and st.st_uid == agent.uid:
            return f"{entry} belongs to {agent.name}"
        if st.st_mode & stat.S_IWOTH:
            return f"everyone may write {entry}"
        if st.st_mode & stat.S_IWGRP and st.st_gid in agent.gids:
            return f"{entry} is writable by group {st.st_gid}, which {agent.name} is in"
    return None


def _walk(root: Path, path: str) -> tuple[list[str], str]:
    """Every entry that decides what `path` (on the unit, below `root`) is: each directory on the way, each
    symbolic link and what it leads to; and the resolved path."""
    entries, current, links = ["/"], "/", 0
    todo = [p for p in path.split("/") if p not in ("", ".")]
    while todo:
        part = todo.pop(0)
        if part == "..":
            current = posixpath.dirname(current)
            continue
        candidate = posixpath.join(current, part)
        entries.append(candidate)
        host = _host(root, candidate)
        if os.path.islink(host):
            links += 1
            if links > 40:
                raise ConfigError(f"too many symbolic links on the way to {path}")
            target = os.readlink(host)
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            current = "/" if target.startswith("/") else current
            continue
        current = candidate
    return entries, current


def _host(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _records(path: Path) -> list[list[str]]:
    """The colon-separated records of a passwd or group file (none when it is missing or a record is broken)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        fields = line.split(":")
        if len(fields) > 3 and fields[2].isdigit() and (path.name == "group" or fields[3].isdigit()):
            out.append(fields)
    return out


def absolute(command: str) -> str:
    """`systemctl reboot` -> `/usr/bin/systemctl reboot`: the program by its full path, as the rule names it."""
    argv = command.split(" ", 1)
    return " ".join([_which(argv[0]), *argv[1:]])


def _which(program: str) -> str:
    if program.startswith("/"):
        return program
    return shutil.which(program) or f"/usr/bin/{program}"


def _sudo_escape(arg: str) -> str:
    return re.sub(r"([\\,:=\s])", r"\\\1", arg)
