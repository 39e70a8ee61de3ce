"""`fleet device add` checks tags by the same rule as the API: a bad one is refused and nothing is stored."""

from __future__ import annotations

from sqlmodel import Session, select

from fleet_cli.main import main
from fleet_service.db.engine import make_engine
from fleet_service.devices.models import Device
from fleet_service.devices.tags import units_with_tag
from protocol.secrets import verify_secret


def test_a_bad_tag_is_refused_and_nothing_is_stored(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["device", "add", "unit-1", "--tag", "venue a", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "invalid tag(s) ['venue a']" in err and "letters, digits" in err

    assert main(["device", "add", "unit-1", "--tag", "venue_a", "--tag", "venue_a", "--data-dir", str(data)]) == 0
    engine = make_engine(f"sqlite:///{data / 'fleet.db'}")
    try:
        with Session(engine) as db:
            assert [(d.id, d.tags) for d in db.exec(select(Device)).all()] == [("unit-1", ["venue_a"])]
            assert db.exec(units_with_tag("venue_a")).all() == ["unit-1"]
    finally:
        engine.dispose()


def test_an_enrolled_id_is_refused_and_its_secret_kept(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["device", "add", "unit-1", "--data-dir", str(data)]) == 0
    first = capsys.readouterr().out
    assert main(["device", "add", "unit-1", "--name", "again", "--data-dir", str(data)]) == 1
    assert "a unit with id 'unit-1' already exists" in capsys.readouterr().err
    engine = make_engine(f"sqlite:///{data / 'fleet.db'}")
    try:
        with Session(engine) as db:
            device = db.get(Device, "unit-1")
            assert device is not None and device.name == ""
            assert verify_secret(first.strip().splitlines()[-1], device.secret_hash)
    finally:
        engine.dispose()
