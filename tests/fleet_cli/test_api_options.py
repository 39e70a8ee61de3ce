"""`fleet shell` and `fleet forward` find the fleet service and their token by one rule: the option, then
FLEET_API_URL / FLEET_TOKEN (else FLEET_ADMIN_TOKEN), and refuse an unusable address or a missing token alike."""

from __future__ import annotations

import argparse

import pytest

from fleet_cli.main import main
from fleet_cli.options import api_socket_base

COMMANDS = [["shell", "unit-1"], ["forward", "unit-1", "8080"]]


@pytest.fixture(autouse=True)
def no_api_environment(monkeypatch):
    for name in ("FLEET_API_URL", "FLEET_TOKEN", "FLEET_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("command", COMMANDS, ids=["shell", "forward"])
def test_a_missing_token_or_a_bad_address_is_refused_the_same_way(command, capsys):
    assert main(command) == 2
    assert f"fleet {command[0]}: needs --token (or FLEET_TOKEN)" in capsys.readouterr().err
    assert main([*command, "--token", "t0ken", "--api-url", "ftp://fleet.example"]) == 2
    assert f"fleet {command[0]}: --api-url must look like https://host[:port]" in capsys.readouterr().err


def test_options_then_the_environment_then_the_default(monkeypatch):
    def base(**given: str | None) -> tuple[str, str] | None:
        return api_socket_base(argparse.Namespace(**{"api_url": None, "token": None, **given}), "shell")

    monkeypatch.setenv("FLEET_ADMIN_TOKEN", "admin-token")
    assert base() == ("ws://127.0.0.1:8080", "admin-token")
    monkeypatch.setenv("FLEET_TOKEN", "env-token")
    monkeypatch.setenv("FLEET_API_URL", "https://fleet.example/base/")
    assert base() == ("wss://fleet.example/base", "env-token")
    assert base(api_url="http://10.0.0.5:9000", token="given") == ("ws://10.0.0.5:9000", "given")
