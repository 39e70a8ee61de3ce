"""`fleet` command line. Each part registers its own sub-commands; heavy imports happen only when one runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from fleet_cli.errors import explain

# Modules exposing `register(subparsers)`; each sets `func` on the parsers it adds.
PARTS = ("fleet_service.cli", "broker.cli", "agent.cli", "fleet_cli.shell", "fleet_cli.forward")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the usage block it prints first would bury the message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} — see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fleet", description="Fleet manager for edge video recorders")
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
    try:
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    except ValueError:
        parser.error(f"--log-level {args.log_level!r} is not a level (DEBUG, INFO, WARNING or ERROR; FLEET_LOG_LEVEL)")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A known start-up failure is one line saying what and how to fix it; a bug keeps its traceback, and
        # FLEET_DEBUG=1 shows the traceback of a start-up failure too.
        error = explain(exc, option_flags(parser, args))
        if error is None or os.environ.get("FLEET_DEBUG", "") not in ("", "0"):
            raise
        print(f"fleet: error: {error}", file=sys.stderr)
        return error.exit_code


def option_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """Setting name -> the option that sets it, for the (sub-)command that ran, e.g. mqtt_host -> --host."""
    flags: dict[str, str] = {}
    current: argparse.ArgumentParser | None = parser
    while current is not None:
        chosen = None
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(args, action.dest, None) or "")
            elif action.option_strings and action.dest not in flags:
                flags[action.dest] = max(action.option_strings, key=len)
        current = chosen
    return flags


if __name__ == "__main__":
    sys.exit(main())
