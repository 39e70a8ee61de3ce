"""`python -m agent [--config FILE] ...`: the agent alone, without loading the other parts' CLI modules."""

import argparse
import logging
import os
import sys

from agent.cli import register, skip_unused_imports


def main(argv: list[str] | None = None) -> int:
    skip_unused_imports()
    parser = argparse.ArgumentParser(prog="python -m")  # sub-commands read "python -m agent ..."
    parser.add_argument("--log-level", default=os.environ.get("FLEET_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["agent", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
