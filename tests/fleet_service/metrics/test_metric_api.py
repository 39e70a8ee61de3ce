"""GET /api/devices/{id}/metrics reads the tier that fits the range and step, says which, and its buckets agree with
the samples (through a running service, on SQLite and PostgreSQL)."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from fleet_service.db.engine import make_engine, migrate
from fleet_service.devices.enrollment import enroll
from fleet_service.metrics import rollups
from fleet_service.metrics.models import MINUTE
from protocol.ids import now_ms
from tests.fleet_service.metrics.samples import random_samples
from tests.support.stack import StackThread, settings_for

UNIT = "chart-1"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@pytest.fixture(scope="module")
def charted(request, tmp_path_factory):
    """A service whose unit has 8 days of samples: one a minute, and every 10 s in the last 3 hours."""
    kind = request.param
    tmp_path = tmp_path_factory.mktemp(f"charts-{kind}")
    if kind == "postgres":
        from tests.support.services import FreshDatabase, postgres_available, require

        reason = postgres_available()
        require(reason is None, reason or "")
        fresh = FreshDatabase()
        url = fresh.__enter__()
        request.addfinalizer(lambda: fresh.__exit__(None, None, None))
    else:
        url = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = make_engine(url)
    migrate(engine)
    enroll(engine, UNIT)
    rng = random.Random(7)
    now = now_ms()
    old = random_samples(rng, UNIT, now - 8 * DAY_MS, 8 * 1440 - 200, every_ms=60_000)
    recent = random_samples(rng, UNIT, now - 3 * HOUR_MS, 3 * 360 - 6)
    samples = [s | {"received_at": s["ts"], "services": {}, "extra": {}} for s in old + recent]
    for i in range(0, len(samples), 5000):
        with Session(engine) as s:
            rollups.store(s, samples[i : i + 5000])
            s.commit()
    engine.dispose()
    with StackThread(settings_for(tmp_path, database_url=url)) as stack, stack.client() as api:
        yield api, samples, now, url


def series(api, since: int, until: int, step: int | None = None) -> dict:
    params = {"since": since, "until": until, "limit": 5000} | ({"step": step} if step else {})
    r = api.get(f"/api/devices/{UNIT}/metrics", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def averages(samples: list[dict], since: int, until: int, step_ms: int, field: str = "cpu_percent") -> dict:
    groups: dict[int, list[float]] = {}
    for s in samples:
        if since <= s["ts"] <= until and s[field] is not None:
            groups.setdefault(s["ts"] // step_ms * step_ms, []).append(s[field])
    return {ts: sum(v) / len(v) for ts, v in groups.items()}


pytestmark = pytest.mark.parametrize("charted", ["sqlite", "postgres"], indirect=True)


@pytest.mark.parametrize(
    ("span", "step", "tier", "used"),
    [
        (15 * 60_000, 10, "raw", 10),  # the dashboard's ranges: 15 min, 1 h, 24 h, 7 d
        (HOUR_MS, 30, "raw", 30),
        (DAY_MS, 600, "1m", 600),
        (7 * DAY_MS, 3600, "1h", 3600),
        (7 * DAY_MS, 600, "1m", 600),
        (DAY_MS, 90, "raw", 90),  # not a whole number of minutes: raw while a day of it fits the budget
        (3 * DAY_MS, 90, "1m", 120),  # three days of raw would not; and it starts before the raw window
    ],
)
def test_the_tier_follows_range_and_step(charted, span, step, tier, used):
    api, samples, now, _ = charted
    body = series(api, now - span, now, step)
    assert (body["tier"], body["step"]) == (tier, used)
    assert body["points"] and len(body["points"]) <= span // (used * 1000) + 1
    step_ms = used * 1000
    want = averages(samples, now - span, now, step_ms)
    got = {p["ts"]: p["cpu_percent"] for p in body["points"]}
    inner = [ts for ts in want if now - span + step_ms <= ts < now - step_ms]  # whole buckets: tiers round edges
    assert inner and all(got[ts] == pytest.approx(want[ts], abs=1e-3) for ts in inner)


def test_an_old_short_range_is_read_from_the_minute_rollups(charted):
    api, samples, now, _ = charted
    since = now - 3 * DAY_MS
    body = series(api, since, since + HOUR_MS, 10)
    assert (body["tier"], body["step"]) == ("1m", 60)  # the raw samples of three days ago are past their window
    minutes = {m for s in samples if since - 60_000 < (m := s["ts"] // 60_000 * 60_000) <= since + HOUR_MS}
    assert len(body["points"]) == len(minutes)


def test_a_week_at_ten_minute_steps_reads_at_most_a_week_of_minute_rows(charted):
    api, _, now, url = charted
    body = series(api, now - 7 * DAY_MS, now, 600)
    assert body["tier"] == "1m"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(func.count())
                .select_from(MINUTE.table)
                .where(MINUTE.table.c.device_id == UNIT, MINUTE.table.c.bucket > now - 7 * DAY_MS - 60_000)
            ).scalar_one()
    finally:
        engine.dispose()
    assert rows <= 7 * 1440 + 1
    assert sum(p["samples"] for p in body["points"]) >= rows  # every minute row of the range was read


def test_without_a_step_the_raw_samples_come_back(charted):
    api, samples, now, _ = charted
    body = series(api, now - 10 * 60_000, now)
    assert body["tier"] == "raw" and body["step"] is None
    assert [p["ts"] for p in body["points"]] == sorted(s["ts"] for s in samples if s["ts"] >= now - 10 * 60_000)
