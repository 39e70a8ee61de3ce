"""Helpers shared by the parts' CLI modules: options that fall back to `FLEET_<OPTION>` via settings, and the
fleet service's address and token for the commands that talk to its API (`fleet shell`, `fleet forward`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import urlsplit

DEFAULT_API_URL = "http://127.0.0.1:8080"


def overrides(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options the user actually gave; the rest come from FLEET_* env vars or defaults."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value != []:
            out[name] = value
    return out


def add_api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help=f"the fleet service's base URL [FLEET_API_URL, default {DEFAULT_API_URL}]")
    parser.add_argument("--token", help="an operator or admin API token [FLEET_TOKEN, else FLEET_ADMIN_TOKEN]")


def api_socket_base(args: argparse.Namespace, command: str) -> tuple[str, str] | None:
    """The fleet service's base URL for WebSockets (ws:// or wss:// as its base URL says) and the token to send;
    None, with the reason on stderr, when the address is not usable or no token was given (exit 2)."""
    base = (args.api_url or os.environ.get("FLEET_API_URL") or DEFAULT_API_URL).rstrip("/")
    token = args.token or os.environ.get("FLEET_TOKEN") or os.environ.get("FLEET_ADMIN_TOKEN")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        print(f"fleet {command}: --api-url must look like https://host[:port]", file=sys.stderr)
        return None
    if not token:
        print(f"fleet {command}: needs --token (or FLEET_TOKEN): an operator or admin API token", file=sys.stderr)
        return None
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}{parts.path}", token
