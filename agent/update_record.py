"""The update in progress, on disk: what a restarted agent needs to finish an update that a crash interrupted.

One small JSON file in the state dir, replaced atomically and fsync'd (temp file, rename, directory fsync) at
every phase change, so after a crash or a power cut it holds the last phase that was entered, never a part.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from agent.files import write_atomic

log = logging.getLogger(__name__)

# Phases in order; the last two are final (nothing to finish). The update of a record in any other phase was
# interrupted: before "checkout" nothing had moved yet, from "checkout" on the previous commit is checked out again.
PHASES = ("fetch", "checkout", "hook", "restart", "health", "rollback", "done", "rolled_back")
FINAL = frozenset({"done", "rolled_back"})
DESCRIBED = {
    "fetch": "git fetch",
    "checkout": "checkout",
    "hook": "post-update hook",
    "restart": "restart",
    "health": "health check",
    "rollback": "rollback",
}


@dataclass
class UpdateRecord:
    ref: str
    previous: str  # the commit the unit was on; a rollback checks it out again
    branch: str | None  # the branch it was on, if any
    cmd_id: str | None = None  # the `update` command running it, when known
    target: str | None = None  # the commit `ref` resolved to (after the fetch)
    phase: str = "fetch"
    attempts: int = 0  # rollbacks tried after an interruption
    reason: str = ""  # why it is rolled back: what failed, or "interrupted" once the rollback after a crash is done
    interrupted_in: str = ""  # the phase the agent died in, kept across rollback attempts


class UpdateJournal:
    """Load, save and clear the one record; a record that cannot be read is logged and removed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> UpdateRecord | None:
        try:
            data = json.loads(self.path.read_bytes())
            names = {f.name for f in fields(UpdateRecord)}
            record = UpdateRecord(**{k: v for k, v in data.items() if k in names})
            if record.phase not in PHASES:
                raise ValueError(f"unknown phase {record.phase!r}")
            return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.error("cannot read the update record %s (%s); removing it", self.path, exc)
            self.clear()
            return None

    def save(self, record: UpdateRecord) -> None:
        write_atomic(self.path, json.dumps(asdict(record)).encode(), mode=0o600)

    def enter(self, record: UpdateRecord, phase: str) -> None:
        record.phase = phase
        self.save(record)

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
