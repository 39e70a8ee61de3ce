"""Desired app config: validate, write the JSON file atomically, restart dependent units, report what was applied."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from agent.config import AgentSettings
from agent.errors import CommandError, ConfigError
from agent.files import write_atomic
from agent.process import Outcome
from agent.store import Store
from protocol.payloads import ConfigDesired, ConfigReported, ConfigStatus

log = logging.getLogger(__name__)

APPLIED_KEY = "config.applied_version"
ATTEMPTED_KEY = "config.attempted_version"
MAX_CONFIG_BYTES = 256 * 1024


class ConfigApplier:
    """Applies desired configs; the attempted version is remembered so a re-delivered retained one is skipped."""

    def __init__(
        self,
        settings: AgentSettings,
        store: Store,
        restart_units: Callable[[list[str]], list[Outcome]],
        report: Callable[[ConfigReported], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.restart_units = restart_units
        self.report = report
        self.latest: ConfigDesired | None = None

    @property
    def applied_version(self) -> int | None:
        value = self.store.get(APPLIED_KEY)
        return int(value) if value is not None else None

    def on_desired(self, desired: ConfigDesired) -> None:
        """A `config/desired` message (often the retained one again on reconnect)."""
        self.latest = desired
        attempted = self.store.get(ATTEMPTED_KEY)
        if attempted is not None and int(attempted) == desired.version:
            log.debug("desired config version %s already handled", desired.version)
            return
        try:
            self.apply(desired.version, desired.config)
        except CommandError as exc:
            log.warning("desired config version %s not applied: %s", desired.version, exc)

    def apply_command(self, args: dict[str, Any]) -> str:
        """The `config_update` command: apply args.config (or the latest desired config) now, even if seen."""
        if "config" in args:
            version = args.get("version", self.latest.version if self.latest else 0)
            return self.apply(version, args["config"])
        if self.latest is None:
            raise CommandError("no desired config received yet and no args.config given")
        return self.apply(self.latest.version, self.latest.config)

    def apply(self, version: Any, config: Any) -> str:
        """Validate, write, restart; report applied or failed. Returns a summary, raises CommandError on failure."""
        self.store.put(ATTEMPTED_KEY, str(version) if isinstance(version, int) else "-1")
        try:
            data = self._validate(version, config)
            summary = self._write_and_restart(data)
        except (ConfigError, CommandError, OSError) as exc:
            error = str(exc) if not isinstance(exc, OSError) else f"cannot write the app config: {exc}"
            self._report(version, "failed", error, config)
            raise CommandError(error) from None
        self.store.put(APPLIED_KEY, str(version))
        self._report(version, "applied", None, config)
        log.info("applied config version %s", version)
        return summary

    def _validate(self, version: Any, config: Any) -> bytes:
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ConfigError("version must be a non-negative integer")
        if not isinstance(config, dict):
            raise ConfigError("config must be a JSON object")
        if self.settings.app_config_path is None:
            raise ConfigError("no app_config_path configured on this unit")
        try:
            data = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config cannot be written as JSON: {exc}") from None
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config of {len(data)} bytes exceeds {MAX_CONFIG_BYTES}")
        return data

    def _write_and_restart(self, data: bytes) -> str:
        path = self.settings.app_config_path
        assert path is not None
        previous = path.read_bytes() if path.exists() else None
        # No mode: the unit's umask decides (0640 under the installed unit's UMask=0027); an existing file keeps
        # its mode less the umask, so it never becomes wider. Never a fixed, world-readable 0644.
        write_atomic(path, data)
        lines = [f"wrote {path} ({len(data)} bytes)"]
        failure = self._restart(lines)
        if failure is None:
            return "\n".join(lines)
        # Put the old file back so the units run on a config they are known to accept.
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, previous)
        lines.append(f"restored the previous {path}")
        self._restart(lines)
        raise CommandError(f"{failure}; previous config restored\n" + "\n".join(lines))

    def _restart(self, lines: list[str]) -> str | None:
        for outcome in self.restart_units(self.settings.config_units):
            lines.append(outcome.describe())
            if not outcome.ok:
                return f"restart failed: {' '.join(outcome.argv)} exited {outcome.exit_code}"
        return None

    def _report(self, version: Any, status: ConfigStatus, error: str | None, config: Any) -> None:
        safe_version = version if isinstance(version, int) and not isinstance(version, bool) and version >= 0 else 0
        self.report(
            ConfigReported(
                version=safe_version,
                status=status,
                error=error[-2000:] if error else None,
                config=config if isinstance(config, dict) and status == "applied" else {},
            )
        )
