"""Sub-commands of the service side, one module per noun: `up` and `service`, `device`, `token`, `simulate`,
`user`, `mosquitto`.

Kept import-light: FastAPI, SQLModel and friends load only when a command runs.
"""

from __future__ import annotations

import argparse

from fleet_service.cli import device, mosquitto, serve, simulate, token, user


def register(sub: argparse._SubParsersAction) -> None:
    """Add the service's sub-commands, in the order `fleet --help` lists them."""
    serve.register(sub)
    device.register(sub)
    token.register(sub)
    simulate.register(sub)
    user.register(sub)
    mosquitto.register(sub)
