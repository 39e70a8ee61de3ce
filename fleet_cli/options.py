"""Helpers shared by the parts' CLI modules: options that fall back to `FLEET_<OPTION>` via settings."""

from __future__ import annotations

import argparse
from typing import Any


def overrides(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options the user actually gave; the rest come from FLEET_* env vars or defaults."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value != []:
            out[name] = value
    return out
