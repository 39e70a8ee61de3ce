"""`fleet simulate`: N simulated units speaking the real protocol (the simulator package runs them; the service
side gives it the database to enroll them in)."""

from __future__ import annotations

import argparse

from fleet_service.cli.common import db_options, open_engine, settings


def register(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("simulate", help="N simulated units speaking the real protocol (demos, dashboards, load)")
    sim.add_argument("--devices", type=int, help="number of units, ids PREFIX-00001... (default 10) [FLEET_DEVICES]")
    sim.add_argument(
        "--broker-url", help="mqtt://host:port of the broker (default mqtt://127.0.0.1:1883) [FLEET_BROKER_URL]"
    )
    sim.add_argument("--prefix", help="device id prefix (default sim) [FLEET_PREFIX]")
    sim.add_argument(
        "--api-url", help="enroll missing units through this fleet API (else directly in the database) [FLEET_API_URL]"
    )
    sim.add_argument("--token", dest="admin_token", help="admin API token for --api-url [FLEET_ADMIN_TOKEN]")
    sim.add_argument("--secrets-file", help="cache of the units' secrets (default DATA_DIR/simulated-units.json)")
    sim.add_argument("--heartbeat-interval", type=float, help="seconds (default 30)")
    sim.add_argument("--metrics-interval", type=float, help="seconds (default 10)")
    sim.add_argument(
        "--log-interval", type=float, help="mean seconds between log batches per unit, 0 = none (default 60)"
    )
    sim.add_argument("--keepalive", type=int, help="MQTT keepalive in seconds (default 60)")
    sim.add_argument("--connect-rate", type=float, help="new connections per second (default 100, 0 = no limit)")
    sim.add_argument("--command-seconds", type=float, help="how long a simulated command runs (default 1)")
    sim.add_argument("--fail-update", action="append", default=[], help="unit id whose `update` fails (repeatable)")
    sim.add_argument("--fail-rate", type=float, help="fraction of `update` commands that fail (default 0)")
    sim.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    db_options(sim)
    sim.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from fleet_service.cli.simulated_units import enroll_in_database
    from simulator.fleet import run_simulation

    return run_simulation(args, enroll_in_database(lambda: open_engine(args)), settings(args, []).data_dir)
