"""Atomic file replacement: readers see the old or the new content, never a part, even across a power cut."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int | None = None, check: Callable[[Path], None] | None = None) -> None:
    """Write + fsync a temp file beside `path`, rename it over `path`, fsync the directory.

    `mode` given: exactly that mode (the temp file is created with it, so it is never wider on the way).
    `mode` None: what the process umask leaves of the existing file's mode, or of 0666 for a new file — as
    open(2) creates files; the agent's unit sets UMask=0027, so its app config becomes 0640, not world-readable.
    `check(temp_path)` runs on the complete temp file before the rename; if it raises, `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is not None:
        create = mode
    else:
        create = path.stat().st_mode & 0o777 if path.exists() else 0o666
    fd, tmp = _create_temp(path, create)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)  # the umask applied at creation must not narrow an explicit mode
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _create_temp(path: Path, mode: int) -> tuple[int, Path]:
    """A new file `.NAME.RANDOM.tmp` beside `path`, created with `mode` (the umask applies, as for any open)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")
