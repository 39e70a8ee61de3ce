"""What the service's sub-commands share: the database options, settings built from the options given, and the
database the command line names. Passwords and secrets are never options here."""

from __future__ import annotations

import argparse
import getpass
import os

from fleet_cli.options import overrides

SERVICE_OPTIONS = ["host", "http_port", "data_dir", "database_url", "admin_token", "replica_id"]


def db_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (SQLite database) [FLEET_DATA_DIR]")
    p.add_argument("--database-url", help="SQLAlchemy URL, e.g. postgresql://... [FLEET_DATABASE_URL]")


def settings(args: argparse.Namespace, extra: list[str]):
    """The service settings: the options the command has and the user gave, the rest from FLEET_* or defaults."""
    from fleet_service.settings import load_settings

    return load_settings(**overrides(args, SERVICE_OPTIONS + extra))


def open_engine(args: argparse.Namespace):
    """The database the command line names (--database-url, or the SQLite file in --data-dir)."""
    from fleet_service.settings import open_database

    return open_database(settings(args, []).database_url)


def audit(engine, route: str, target: str) -> None:
    """Write a command line change to the audit log (method `CLI`, status 0), so out-of-band changes stay visible."""
    from fleet_service.auth.audit import record

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid())
    record(
        engine,
        actor=f"cli:{who}",
        role="admin",
        method="CLI",
        route=route,
        path="",
        target=target,
        status=0,
        source_ip="",
    )
