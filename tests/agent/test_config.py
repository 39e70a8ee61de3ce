"""Settings: CLI > FLEET_* env > TOML file > defaults; validation; the secret stays secret."""

from __future__ import annotations

import pytest

from agent.config import load_settings, split_command
from agent.errors import ConfigError


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path, monkeypatch):
    for name in ("FLEET_DEVICE_ID", "FLEET_UNIT", "FLEET_KEEPALIVE", "FLEET_METRICS_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "agent.toml"
    config.write_text(
        'device-id = "from-file"\nunit = ["a.service"]\nkeepalive = 11\nmetrics_interval = 4\nheartbeat-interval = 9\n'
    )
    s = load_settings(config)
    assert (s.device_id, s.unit, s.keepalive, s.metrics_interval, s.heartbeat_interval) == (
        "from-file",
        ["a.service"],
        11,
        4.0,
        9.0,
    )
    assert s.restart_command == "systemctl restart {unit}" and s.reconnect_max_delay == 60

    monkeypatch.setenv("FLEET_KEEPALIVE", "12")
    monkeypatch.setenv("FLEET_UNIT", "b.service, c.service")
    s = load_settings(config)
    assert s.keepalive == 12 and s.unit == ["b.service", "c.service"] and s.device_id == "from-file"

    s = load_settings(config, keepalive=13, device_id="from-cli")
    assert s.keepalive == 13 and s.device_id == "from-cli" and s.metrics_interval == 4.0


def test_an_agent_table_is_accepted(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\ndevice_id = "u2"\nbroker_url = "mqtts://broker.example:8884"\n')
    s = load_settings(config)
    assert (s.device_id, s.host, s.port, s.tls) == ("u2", "broker.example", 8884, True)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"device_id": "Bad Id"}, "device_id"),
        ({"device_id": "u1", "broker_url": "http://x"}, "broker_url"),
        ({"device_id": "u1", "broker_url": "mqtt://u:pw@host"}, "password"),
        ({"device_id": "u1", "restart_command": "systemctl restart"}, "{unit}"),
        ({"device_id": "u1", "reboot_command": "'unbalanced"}, "cannot split"),
        ({"device_id": "u1", "heartbeat_interval": 0}, "heartbeat_interval"),
        ({"device_id": "u1", "no_such_option": 1}, "no_such_option"),
    ],
)
def test_invalid_settings_say_what_is_wrong(overrides, fragment):
    with pytest.raises(ConfigError, match="invalid agent settings") as err:
        load_settings(None, **overrides)
    assert fragment in str(err.value)


def test_unreadable_or_invalid_config_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("device_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_the_secret_comes_from_the_option_a_file_or_the_systemd_credential(tmp_path, monkeypatch):
    s = load_settings(None, device_id="u1", secret="hunter2")
    assert s.password() == "hunter2" and "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    (tmp_path / "secret").write_text("from-file\n")
    assert load_settings(None, device_id="u1", secret_file=tmp_path / "secret").password() == "from-file"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "agent-secret").write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_settings(None, device_id="u1").password() == "from-systemd"
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_settings(None, device_id="u1", secret_file=tmp_path / "nope").password()


def test_commands_are_split_without_a_shell():
    argv = split_command("sudo -n systemctl restart {unit}", unit="rec; rm -rf /")
    assert argv == ["sudo", "-n", "systemctl", "restart", "rec; rm -rf /"]
    assert split_command("tool --json '{\"a\": 1}'") == ["tool", "--json", '{"a": 1}']
