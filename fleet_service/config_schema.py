"""What a desired config may hold: a JSON object within a size limit, known recorder keys with their types.

Unknown keys pass through untouched (the recorder software may know more than we do); a known key with the
wrong type or out of range is refused with a message naming the key, so nothing wrong is ever published.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from protocol.payloads import LOG_LEVELS

MAX_CONFIG_BYTES = 64 * 1024
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


class ConfigInvalid(ValueError):
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

    def check(self, key: str, value: Any) -> None:
        if not _is_type(value, self.type):
            raise ConfigInvalid(f"{key} must be {_TYPE_WORDS[self.type]} ({self.help}), got {json.dumps(value)}")
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
        if isinstance(value, list) and not all(isinstance(v, str) and 0 < len(v) <= 200 for v in value):
            raise ConfigInvalid(f"{key} must be a list of non-empty strings")


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
    "min_free_disk_percent": Setting(float, "free disk below which old recordings are deleted", minimum=0,
                                     maximum=100),
    "log_level": Setting(str, "recorder log level", choices=LOG_LEVELS),
    "timezone": Setting(str, "an IANA time zone such as Europe/Oslo", pattern=r"[A-Za-z_+\-]+(/[A-Za-z0-9_+\-]+)*",
                        max_length=64),
    "upload_url": Setting(str, "an http(s) URL for finished recordings", pattern=r"https?://\S+", max_length=2048),
    "webrtc_enabled": Setting(bool, "publish live video over WebRTC"),
    "camera_inputs": Setting(list, "names of the camera inputs to record"),
}


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
        entry: dict[str, Any] = {"type": {bool: "boolean", int: "integer", float: "number", str: "string",
                                          list: "array"}[s.type], "help": s.help}
        if s.minimum is not None:
            entry["minimum"] = s.minimum
        if s.maximum is not None:
            entry["maximum"] = s.maximum
        if s.choices:
            entry["choices"] = list(s.choices)
        out[key] = entry
    return out
