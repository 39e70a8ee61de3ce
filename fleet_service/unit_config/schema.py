"""What a desired config may hold: a JSON object within a size limit, known recorder keys with their types.

Unknown keys pass through untouched (the recorder software may know more than we do); a known key with the
wrong type or out of range is refused with a message naming the key, so nothing wrong is ever published.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fleet_service.errors import Invalid
from protocol.payloads import LOG_LEVELS

MAX_CONFIG_BYTES = 64 * 1024
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


class ConfigInvalid(Invalid):
    """The config is refused; the message says what is wrong."""


@dataclass(frozen=True)
class Setting:
    type: type
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    max_length: int = 200
    int_items: bool = False  # a list of integers between `minimum` and `maximum` (else of non-empty strings)

    def check(self, key: str, value: Any) -> None:
        if not _is_type(value, self.type):
            raise ConfigInvalid(f"{key} must be {_TYPE_WORDS[self.type]} ({self.help}), got {json.dumps(value)}")
        if isinstance(value, list):
            self._check_items(key, value)
            return
        if self.minimum is not None and value < self.minimum:
            raise ConfigInvalid(f"{key} must be at least {self.minimum:g}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigInvalid(f"{key} must be at most {self.maximum:g}, got {value}")
        if self.choices and value not in self.choices:
            raise ConfigInvalid(f"{key} must be one of {', '.join(self.choices)}, got {json.dumps(value)}")
        if isinstance(value, str):
            if len(value) > self.max_length:
                raise ConfigInvalid(f"{key} is longer than {self.max_length} characters")
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise ConfigInvalid(f"{key} must look like {self.help}, got {json.dumps(value)}")

    def _check_items(self, key: str, value: list[Any]) -> None:
        if not self.int_items:
            if not all(isinstance(v, str) and 0 < len(v) <= 200 for v in value):
                raise ConfigInvalid(f"{key} must be a list of non-empty strings")
            return
        low, high = self.minimum, self.maximum
        for v in value:
            if not _is_type(v, int) or (low is not None and v < low) or (high is not None and v > high):
                raise ConfigInvalid(f"{key} must be a list of integers from {low:g} to {high:g} ({self.help})")
        if len(value) > 64:
            raise ConfigInvalid(f"{key} may list at most 64 entries")


def _is_type(value: Any, expected: type) -> bool:
    if isinstance(value, bool):  # JSON true/false is never a number here
        return expected is bool
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


KNOWN: dict[str, Setting] = {
    "recording_enabled": Setting(bool, "record continuously"),
    "video_bitrate_kbps": Setting(int, "video bitrate in kbit/s", minimum=100, maximum=100_000),
    "audio_bitrate_kbps": Setting(int, "audio bitrate in kbit/s", minimum=16, maximum=1_024),
    "resolution": Setting(str, "output resolution", choices=("720p", "1080p", "1440p", "2160p")),
    "framerate": Setting(float, "frames per second", minimum=1, maximum=120),
    "segment_duration_s": Setting(int, "length of a recording file in seconds", minimum=1, maximum=86_400),
    "retention_days": Setting(int, "days recordings are kept on the unit", minimum=0, maximum=3_650),
    "min_free_disk_percent": Setting(float, "free disk below which old recordings are deleted", minimum=0, maximum=100),
    "log_level": Setting(str, "recorder log level", choices=LOG_LEVELS),
    "timezone": Setting(
        str, "an IANA time zone such as Europe/Oslo", pattern=r"[A-Za-z_+\-]+(/[A-Za-z0-9_+\-]+)*", max_length=64
    ),
    "upload_url": Setting(str, "an http(s) URL for finished recordings", pattern=r"https?://\S+", max_length=2048),
    "webrtc_enabled": Setting(bool, "publish live video over WebRTC"),
    "camera_inputs": Setting(list, "names of the camera inputs to record"),
    "remote_shell": Setting(bool, "allow remote shells on the unit (overrides the agent's allow_remote_shell)"),
    "remote_shell_admin_only": Setting(bool, "only admins may open a remote shell on the unit"),
    "remote_ports": Setting(
        list,
        "loopback ports of the unit that may be forwarded (overrides the agent's allow_remote_port)",
        minimum=1,
        maximum=65535,
        int_items=True,
    ),
    "remote_ports_admin_only": Setting(bool, "only admins may forward a port of the unit"),
}

# Keys that decide who may open a shell or forward a port on a unit: only an admin may set, change or drop them.
ADMIN_KEYS = ("remote_shell", "remote_shell_admin_only", "remote_ports", "remote_ports_admin_only")


def admin_keys_changed(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """The admin-only keys whose value differs between two versions of one config document."""
    old, new = before or {}, after or {}
    return [key for key in ADMIN_KEYS if old.get(key, _ABSENT) != new.get(key, _ABSENT)]


_ABSENT = object()


def validate_config(config: Any, what: str = "the config") -> dict[str, Any]:
    """Return `config` when it may be stored and published; raise ConfigInvalid otherwise."""
    if not isinstance(config, dict):
        raise ConfigInvalid(f"{what} must be a JSON object, got {type(config).__name__}")
    try:
        text = json.dumps(config, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise ConfigInvalid(f"{what} contains NaN or Infinity, which JSON does not allow") from None
    size = len(text.encode())
    if size > MAX_CONFIG_BYTES:
        raise ConfigInvalid(f"{what} is {size} bytes; at most {MAX_CONFIG_BYTES} are allowed")
    for key, value in config.items():
        setting = KNOWN.get(key)
        if setting is not None:
            setting.check(key, value)
    return config


def describe() -> dict[str, dict[str, Any]]:
    """The known keys for the API and the dashboard."""
    out: dict[str, dict[str, Any]] = {}
    for key, s in KNOWN.items():
        entry: dict[str, Any] = {
            "type": {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}[s.type],
            "help": s.help,
        }
        if s.minimum is not None:
            entry["minimum"] = s.minimum
        if s.maximum is not None:
            entry["maximum"] = s.maximum
        if s.choices:
            entry["choices"] = list(s.choices)
        if s.type is list:
            entry["items"] = "integer" if s.int_items else "string"
        out[key] = entry
    return out
