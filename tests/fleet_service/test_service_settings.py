"""Settings read once by the service and handed down: the dynamic security listener, TURN, metric retention."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_service.mosquitto.dynsec import dynsec_target
from fleet_service.mosquitto.errors import MosquittoError
from fleet_service.settings import ServiceSettings
from fleet_service.signalling.turn import turn_settings

BROKER = "mqtt://_fleet_service:pw@mosquitto:1884"


def test_the_dynsec_listener_is_a_setting_of_its_own():
    settings = ServiceSettings(broker_url=BROKER, mosquitto_dynsec_url="mqtts://units.example:8883")
    target = dynsec_target(settings)
    assert target is not None and (target.host, target.port, target.tls) == ("units.example", 8883, True)
    assert dynsec_target(ServiceSettings(broker_url=BROKER)) is None


def test_the_deprecated_dynsec_query_on_the_broker_url_is_still_read(monkeypatch):
    monkeypatch.setenv("FLEET_BROKER_URL", BROKER + "?dynsec=mqtt://127.0.0.1:1885")
    target = dynsec_target(ServiceSettings())
    assert target is not None and (target.host, target.port, target.tls) == ("127.0.0.1", 1885, False)
    with pytest.raises(MosquittoError, match="dynsec= option of FLEET_BROKER_URL"):
        dynsec_target(ServiceSettings(broker_url=BROKER + "?dynsec=http://x"))
    newer = ServiceSettings(mosquitto_dynsec_url="mqtt://units.example:1883")
    assert dynsec_target(newer).host == "units.example"  # the setting wins over the query


def test_a_bad_dynsec_url_stops_the_settings(monkeypatch):
    monkeypatch.setenv("FLEET_MOSQUITTO_DYNSEC_URL", "https://units.example")
    with pytest.raises(ValidationError, match="mosquitto_dynsec_url"):
        ServiceSettings()


def test_the_file_mode_stays_the_default_and_the_plugin_mode_needs_only_urls(monkeypatch, tmp_path):
    files = ServiceSettings(
        broker_url=BROKER, mosquitto_password_file=tmp_path / "passwd", mosquitto_acl_file=tmp_path / "acl"
    )
    assert files.mosquitto_auth == "files" and files.mosquitto_managed and not files.mosquitto_plugin_auth
    monkeypatch.setenv("FLEET_MOSQUITTO_AUTH", "dynsec")
    monkeypatch.setenv("FLEET_MOSQUITTO_DYNSEC_URL", "mqtts://units.example:8883")
    plugin = ServiceSettings(broker_url=BROKER)
    assert plugin.mosquitto_plugin_auth and not plugin.mosquitto_managed
    # the ACL file alone is where `fleet mosquitto sync --offline` writes the broker's files
    assert ServiceSettings(broker_url=BROKER, mosquitto_acl_file=tmp_path / "acl").mosquitto_plugin_auth


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FLEET_MOSQUITTO_AUTH": "dynsec"}, "FLEET_MOSQUITTO_DYNSEC_URL"),
        ({"FLEET_MOSQUITTO_AUTH": "plugin"}, "mosquitto_auth"),
        (
            {
                "FLEET_MOSQUITTO_AUTH": "dynsec",
                "FLEET_MOSQUITTO_DYNSEC_URL": "mqtt://u:1",
                "FLEET_MOSQUITTO_PID_FILE": "/p",
            },
            "FLEET_MOSQUITTO_PID_FILE",
        ),
        (
            {
                "FLEET_MOSQUITTO_AUTH": "dynsec",
                "FLEET_MOSQUITTO_DYNSEC_URL": "mqtt://u:1",
                "FLEET_MOSQUITTO_PASSWORD_FILE": "/passwd",
            },
            "FLEET_MOSQUITTO_PASSWORD_FILE",
        ),
    ],
)
def test_the_plugin_mode_refuses_settings_it_cannot_honour(monkeypatch, env, named):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=named):
        ServiceSettings(broker_url=BROKER)


def test_turn_settings_come_from_the_service_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_TURN_URLS", "turn:127.0.0.1:3478?transport=udp")
    monkeypatch.setenv("FLEET_TURN_TTL", "900")
    monkeypatch.delenv("FLEET_TURN_SECRETS", raising=False)
    monkeypatch.delenv("FLEET_TURN_PROVIDER", raising=False)
    settings = ServiceSettings(data_dir=tmp_path, turn_secrets="a,b")
    turn = turn_settings(settings)
    assert turn.urls == ["turn:127.0.0.1:3478?transport=udp"] and turn.ttl == 900
    assert turn.accepted_secrets == ["a", "b"]
    embedded = turn_settings(ServiceSettings(data_dir=tmp_path), embedded=True)
    assert embedded.accepted_secrets == [(tmp_path / "turn_secret").read_text()]  # generated once, kept


def test_metric_tiers_keep_48_hours_of_samples_unless_the_older_setting_says_otherwise(monkeypatch):
    for name in ("FLEET_METRIC_RETENTION_DAYS", "FLEET_METRIC_RAW_RETENTION_H"):
        monkeypatch.delenv(name, raising=False)
    s = ServiceSettings()
    assert (s.metric_raw_retention_h, s.metric_1m_retention_days, s.metric_1h_retention_days) == (48, 30, 730)
    monkeypatch.setenv("FLEET_METRIC_RETENTION_DAYS", "14")  # the setting from before the tiers
    assert ServiceSettings().metric_raw_retention_h == 14 * 24
    monkeypatch.setenv("FLEET_METRIC_RAW_RETENTION_H", "6")  # the new one wins
    assert ServiceSettings().metric_raw_retention_h == 6
    monkeypatch.setenv("FLEET_METRIC_RAW_RETENTION_H", "-1")
    with pytest.raises(ValidationError, match="metric_raw_retention_h"):
        ServiceSettings()


def test_several_ingest_processes_need_postgresql(tmp_path):
    with pytest.raises(ValidationError, match="ingest_processes: more than one ingest process needs PostgreSQL"):
        ServiceSettings(data_dir=tmp_path, ingest_processes=2)  # the default database is a SQLite file
    with pytest.raises(ValidationError, match="ingest_processes"):
        ServiceSettings(data_dir=tmp_path, ingest_processes=0)
    ok = ServiceSettings(data_dir=tmp_path, database_url="postgresql://db/fleet", ingest_processes=2)
    assert ok.ingest_processes == 2
