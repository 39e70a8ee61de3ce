"""Start-up errors as the `fleet` command shows them: one line saying what is wrong and how to fix it.

Parts raise StartupError where they know the context (which port, which option); `explain` also turns the known
kinds of start-up failure that reach the top unexplained into one. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError

USAGE = 2  # a bad option or setting
ENVIRONMENT = 1  # the machine or a server the command needs is not as required

# OSError numbers that say the environment is not as the command needs it (not that the code is wrong).
_ENVIRONMENT_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EADDRINUSE,
    errno.EADDRNOTAVAIL,
}


class StartupError(Exception):
    """A command cannot start: `problem` says what is wrong, `fix` how to put it right; exit code 2 or 1."""

    def __init__(self, problem: str, fix: str, exit_code: int = ENVIRONMENT) -> None:
        super().__init__(f"{problem} — {fix}")
        self.problem = problem
        self.fix = fix
        self.exit_code = exit_code


def path_reason(exc: OSError) -> str:
    """Why a path cannot be used, in words: `mkdir a/b` where `a` is a file says "File exists" or "Not a directory"."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "part of the path is a file"
    return exc.strerror or str(exc)


def give(option: str, value: str) -> str:
    """How to set `option` to `value`: `pass --mqtt-port 0`, or `set FLEET_WS_PORT=0` for an environment variable."""
    return f"pass {option} {value}" if option.startswith("-") else f"set {option}={value}"


def listen_error(what: str, host: str, port: int, exc: OSError, port_option: str, host_option: str) -> StartupError:
    """A listening socket that could not be bound: in use, not permitted, or an address this machine lacks."""
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"{what} port {port} is in use",
            f"{give(port_option, '0')} for a free one, or stop the program that holds it",
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StartupError(
            f"not permitted to listen on {what} port {port}",
            f"choose a port above 1023 ({give(port_option, '0')} picks a free one)",
        )
    if isinstance(exc, socket.gaierror):
        return StartupError(
            f"cannot listen on {host!r} for {what}: no such host name",
            f"{give(host_option, '127.0.0.1')} (this machine only) or 0.0.0.0 (every interface)",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"cannot listen on {host!r} for {what}: not an address of this machine",
            f"{give(host_option, '127.0.0.1')} (this machine only) or 0.0.0.0 (every interface)",
        )
    return StartupError(
        f"cannot listen on {host}:{port} for {what}: {exc.strerror or exc}", f"check {host_option} and {port_option}"
    )


def safe_url(url: str) -> str:
    """`url` without its password, for messages."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}"))


def settings_error(exc: ValidationError, flags: dict[str, str] | None = None, prefix: str = "FLEET_") -> StartupError:
    """A pydantic ValidationError of a settings class as one line naming each option and FLEET_* variable.

    Never shows the values: some settings are secrets (tokens, URLs with a password)."""
    flags = flags or {}
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        msg = str(err["msg"]).removeprefix("Value error, ")
        field = str(err["loc"][0]) if err["loc"] else ""
        if not field:
            problems.append(msg)
            continue
        names = [flags[field]] if field in flags else []
        problems.append(f"{' / '.join([*names, prefix + field.upper()])}: {msg}")
    return StartupError(
        "bad setting " + "; ".join(problems),
        "correct the option, or the environment variable if you did not pass one",
        USAGE,
    )


def database_url_error(exc: Exception, url: str) -> StartupError:
    """A --database-url SQLAlchemy cannot use: unparsable, a bad port, an unknown dialect or a missing driver."""
    return StartupError(
        f"--database-url {safe_url(url)} cannot be used: {exc}",
        "pass a URL such as postgresql://user:pass@host/db or sqlite:////path/fleet.db",
        USAGE,
    )


def database_error(exc: BaseException, url: str | None) -> StartupError | None:
    """A database that cannot be reached or opened (SQLAlchemy's OperationalError); None for other errors."""
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError):
        return None
    return unreachable_database(exc, url)


def unreachable_database(exc: OperationalError, url: str | None) -> StartupError:
    """The start-up error for a database SQLAlchemy could not reach or open."""
    shown = f" {safe_url(url)}" if url else ""
    reason = str(exc.orig or exc).strip().splitlines()[0]
    if (url or "").startswith("sqlite"):
        fix = "check that --data-dir / --database-url names a directory this user can write"
    else:
        fix = "check --database-url (FLEET_DATABASE_URL) and that the database server is running and reachable"
    return StartupError(f"cannot connect to the database{shown}: {reason}", fix)


def explain(exc: BaseException, flags: dict[str, str] | None = None) -> StartupError | None:
    """The start-up error `exc` stands for, or None when it is not a known kind of start-up failure (a bug)."""
    if isinstance(exc, StartupError):
        return exc
    if "pydantic" in sys.modules:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError) and exc.title.endswith("Settings"):  # not a payload model's
            return settings_error(exc, flags)
    if "sqlalchemy" in sys.modules and (error := database_error(exc, None)) is not None:
        return error
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return StartupError(
            f"cannot use{where}: {exc.strerror or exc}",
            "check the path or port named in the options, and this user's permissions",
        )
    return None
