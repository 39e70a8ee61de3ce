"""`fleet` command line. Each part registers its own sub-commands; heavy imports happen only when one runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Modules exposing `register(subparsers)`; each sets `func` on the parsers it adds.
PARTS = ("fleet_service.cli", "broker.cli", "agent.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description="Fleet manager for edge video recorders")
    parser.add_argument("--log-level", default=os.environ.get("FLEET_LOG_LEVEL", "INFO"), help="logging level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in PARTS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a unit installs only the agent's dependencies
            logging.getLogger(__name__).debug("part %s unavailable: %s", name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
