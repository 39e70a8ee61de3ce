"""The long fault soak: real agents write numbered lines while parts of the fleet fail; every line is counted.

    python benchmarks/fault_soak.py [--units 10] [--rate 20] [--only NAME ...] [--scale 1.0] [--keep]

tests/faults runs short versions of these in CI; this runs them long. Every unit is a real `fleet agent` process
following a file that a thread fills with lines `<unit> n=<i>` at `--rate` lines/s; the agent keeps each log
batch until the service acknowledges it after its commit (fleet/{id}/ack) and sends again what is not
acknowledged, so no fault may lose or double a line. Scenarios (NAME for --only):

embedded — `fleet up` (broker + service + SQLite) as a child process:
  up-sigterm        SIGTERM of `fleet up`, started again at once
  up-sigkill        SIGKILL of `fleet up` 9 times, each just after a burst of lines
  up-down           `fleet up` (so the broker) away for 60 s
  agent-sigkill     `fleet up` away, the agents read on into their outboxes for 15 s, then SIGKILL of every agent;
                    `fleet up` and the agents started again
scaled — Mosquitto (persistence, autosave every 30 s as in deploy/; its password/ACL files managed by the service),
two `fleet service` replicas as child processes, a fresh PostgreSQL database (dropped afterwards):
  mosquitto-sigterm SIGTERM of Mosquitto, started again after 2 s
  mosquitto-sigkill SIGKILL of Mosquitto, started again after 2 s
  mosquitto-down    Mosquitto away for 60 s
  postgres-away     our database refuses connections for 20 s (ALLOW_CONNECTIONS false and its backends ended;
                    the shared server itself keeps running)
  replica-sigkill   SIGKILL of one replica while the other runs; started again after 15 s
  garbage-flood     one more unit floods bad payloads (deep JSON, huge ints, NaN, ...) for 30 s while the
                    others write

`--scale` multiplies every outage (and the flood). Each scenario has its own parts and its own units (ids
`<NAME>-NN`), so the rows are independent. Columns: sent (lines written), stored (distinct lines in the
database), lost (sent - stored), doubled (rows beyond the first for a line), reported-dropped (what the units said
they had to drop, device.logs_dropped), converge (seconds from the end of the fault, i.e. the failed part started
again, until every line written before that moment is stored; `>300` when it was not). Below the table a note per
scenario says how a stopped part ended (exit code and seconds after the signal: -9 after a SIGTERM means it had
not exited within 30 s, 10 s for Mosquitto, and was killed) and what the garbage unit's messages became. Agents run
with the fault suite's options (ack timeout 2 s, log batches every 0.2 s, keepalive 5 s, reconnect in 0.2-1 s).

Exits 1 when any row lost or doubled a line, or a scenario could not run; its logs are then kept (path printed).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import ADMIN_TOKEN, Proc, scrape  # noqa: E402

from fleet_service.settings import ServiceSettings  # noqa: E402
from protocol.topics import topic  # noqa: E402
from tests.faults.test_agent_disk_full import outbox_state  # noqa: E402
from tests.faults.test_bad_payloads import poison  # noqa: E402
from tests.support.agent_process import AgentProcesses  # noqa: E402
from tests.support.faults import (  # noqa: E402
    AGENT_OPTIONS,  # noqa: E402
    BurstLineWriter,
    FleetUpProcess,
    Tally,
    kill_process,
    set_database_connections,
    tally,
    wait_tallies,
)
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto  # noqa: E402
from tests.support.services import (  # noqa: E402
    PG_ADMIN_DSN,
    FreshDatabase,
    Mosquitto,
    free_port,
    have_mosquitto,
    postgres_available,
    wait_for,
)
from tests.support.unit import RawUnit  # noqa: E402

WARMUP_S = 5.0  # steady writing before the fault
TAIL_S = 5.0  # steady writing after the backlog is stored
CONVERGE_TIMEOUT_S = 300.0
FINAL_TIMEOUT_S = 120.0
SETTLE_S = 3.0  # after the last line is stored: time for a late duplicate to show
KILLS = 9
BURST = 300  # lines per unit just before each kill of `fleet up`
GARBAGE_RATE = 500.0  # bad messages/s from the flooding unit
REPLICAS = ("a", "b")
DROPPED = 'fleet_ingest_dropped_total{reason="'

logging.getLogger("fleet_service.mosquitto.admin").setLevel(logging.ERROR)  # "no PID file" before the first start


@dataclass
class Row:
    scenario: str
    tallies: list[Tally]
    converge_s: float | None  # None: the backlog was not stored within CONVERGE_TIMEOUT_S
    note: str = ""
    error: str = ""

    def total(self, field: str) -> int:
        return sum(getattr(t, field) for t in self.tallies)

    @property
    def failed(self) -> bool:
        return bool(self.error) or self.total("lost") > 0 or self.total("doubled") > 0


class Units:
    """The scenario's units: a line file, a writer thread and a real `fleet agent` process each."""

    def __init__(self, tmp: Path, prefix: str, count: int, rate: float) -> None:
        self.tmp = tmp
        self.agents = AgentProcesses(tmp)
        ids = [f"{prefix}-{i:02d}" for i in range(count)]
        self.writers = {unit: BurstLineWriter(tmp / f"{unit}.lines", unit, rate) for unit in ids}
        self.secrets: dict[str, str] = {}
        self.procs: dict[str, subprocess.Popen] = {}

    def enroll(self, api: httpx.Client, port: int | None = None) -> None:
        """Enroll every unit; with `port` (Mosquitto), wait until the broker accepts each one."""
        for unit in self.writers:
            self.secrets[unit] = enroll(api, unit, port)

    def start_agents(self, mqtt_port: int) -> None:
        for unit, writer in self.writers.items():
            self.procs[unit] = self.agents.start(
                mqtt_port, unit, self.secrets[unit], "--log-file", str(writer.path), *AGENT_OPTIONS
            )

    def wait_online(self, api: httpx.Client) -> None:
        """Every agent connected, so its follower has opened its (still empty) file at the start."""
        for unit in self.writers:
            wait_for(
                lambda u=unit: api.get(f"/api/devices/{u}/status").json().get("online"),
                timeout=60,
                interval=0.2,
                what=f"{unit} online",
            )
        time.sleep(1)

    def kill_agents(self, sig: int) -> None:
        for proc in self.procs.values():
            kill_process(proc, sig)

    def outboxes(self) -> int:
        """Log records waiting in all the agents' outboxes."""
        return sum(outbox_state(self.tmp / f"state-{unit}")[0] for unit in self.writers)

    def sent(self) -> dict[str, int]:
        return {unit: w.sent for unit, w in self.writers.items()}

    def stop(self) -> None:
        for w in self.writers.values():
            w.stop()
        self.agents.stop_all()


def enroll(api: httpx.Client, unit: str, port: int | None = None) -> str:
    r = api.post("/api/devices", json={"id": unit})
    r.raise_for_status()
    secret = r.json()["secret"]
    if port is not None:
        wait_for(lambda: accepts(port, unit, secret) == 0, timeout=30, interval=0.2, what=f"Mosquitto accepts {unit}")
    return secret


def measure(name: str, units: Units, database_url: str, fault: Callable[[], str | None]) -> Row:
    """Write, run the fault, time until the backlog is stored, write on, stop writing and count everything."""
    for w in units.writers.values():
        w.start()
    time.sleep(WARMUP_S)
    note = fault() or ""
    recovered = time.monotonic()
    backlog = units.sent()
    tallies = wait_tallies(database_url, backlog, timeout=CONVERGE_TIMEOUT_S)
    converge = time.monotonic() - recovered if all(t.stored == t.sent for t in tallies) else None
    time.sleep(TAIL_S)
    final = {unit: w.stop() for unit, w in units.writers.items()}
    wait_tallies(database_url, final, timeout=FINAL_TIMEOUT_S)
    time.sleep(SETTLE_S)
    return Row(name, [tally(database_url, unit, n) for unit, n in final.items()], converge, note)


# --- embedded: `fleet up` as a child process -------------------------------------------------------------------


@dataclass
class Embedded:
    fleet: FleetUpProcess
    units: Units
    scale: float


def outage(stop: Callable[[], str | None], start: Callable[[], object], seconds: float) -> str:
    """Stop a part, leave it away for `seconds`, start it again (the fault ends when it is back)."""
    said = stop()
    time.sleep(seconds)
    start()
    return f"away {seconds:g} s" + (f"; {said}" if said else "")


def timed_stop(what: str, stop: Callable[[], None], proc: Callable[[], subprocess.Popen | None]) -> str:
    """Stop a process and say how long it took and how it ended (-9: it had to be killed)."""
    began = time.monotonic()
    stop()
    p = proc()
    return f"{what} exited with {p.returncode if p else '?'} {time.monotonic() - began:.1f} s after the signal"


def stop_up(e: Embedded, sig: int) -> str:
    return timed_stop("fleet up", lambda: e.fleet.kill(sig), lambda: e.fleet.proc)


def up_sigterm(e: Embedded) -> str:
    return outage(lambda: stop_up(e, signal.SIGTERM), e.fleet.start, 0)


def up_sigkill(e: Embedded) -> str:
    for kill in range(KILLS):
        for w in e.units.writers.values():
            w.burst(BURST)  # the kill comes while batches are acknowledged by the broker, not yet committed
        time.sleep(0.1 + 0.1 * (kill % 5))
        e.fleet.kill(signal.SIGKILL)
        e.fleet.start()
        if kill < KILLS - 1:
            time.sleep(3 * e.scale)
    return f"{KILLS} kills, {BURST} lines per unit just before each"


def up_down(e: Embedded) -> str:
    return outage(lambda: stop_up(e, signal.SIGTERM), e.fleet.start, 60 * e.scale)


def agent_sigkill(e: Embedded) -> str:
    stopped = stop_up(e, signal.SIGTERM)
    time.sleep(15 * e.scale)
    waiting = e.units.outboxes()
    e.units.kill_agents(signal.SIGKILL)
    time.sleep(2 * e.scale)  # lines wait in their files meanwhile
    e.fleet.start()
    e.units.start_agents(e.fleet.mqtt_port)
    return f"{stopped}; {waiting} lines in the outboxes at the kill"


EMBEDDED: dict[str, Callable[[Embedded], str | None]] = {
    "up-sigterm": up_sigterm,
    "up-sigkill": up_sigkill,
    "up-down": up_down,
    "agent-sigkill": agent_sigkill,
}


def run_embedded(name: str, tmp: Path, args: argparse.Namespace) -> Row:
    fleet = FleetUpProcess(tmp / "fleet")
    units = Units(tmp, name, args.units, args.rate)
    try:
        fleet.start()
        with fleet.client() as api:
            units.enroll(api)
            units.start_agents(fleet.mqtt_port)
            units.wait_online(api)
        scenario = Embedded(fleet, units, args.scale)
        return measure(name, units, fleet.database_url, lambda: EMBEDDED[name](scenario))
    finally:
        units.stop()
        fleet.stop()


# --- scaled: Mosquitto + two `fleet service` replicas + PostgreSQL ----------------------------------------------


class ScaledFleet:
    """Mosquitto with the service managing its password/ACL files, and two replicas as child processes."""

    def __init__(self, tmp: Path, database_url: str, database_name: str) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.database_name = database_name
        self.settings = ServiceSettings(database_url=database_url, **settings_overrides(tmp / "mosquitto-files"))
        self.http_ports = {name: free_port() for name in REPLICAS}
        self.replicas: dict[str, Proc] = {}
        self.starts = dict.fromkeys(REPLICAS, 0)
        self.broker: Mosquitto | None = None
        self.broker_port = 0  # its first listener's (the units may have a listener of their own: unit_port)
        self.unit_port = 0

    def start(self) -> ScaledFleet:
        data = self.tmp / "mosquitto-data"
        data.mkdir(parents=True, exist_ok=True)
        persistence = f"persistence true\npersistence_location {data}/\nautosave_interval 30\nset_tcp_nodelay true\n"
        managed = start_managed_mosquitto(self.tmp, self._mosquitto, self.settings, persistence)
        self.broker, self.unit_port = managed.broker, managed.unit_port
        self.broker_port = managed.broker.port
        for name in REPLICAS:
            self.start_replica(name)
        return self

    def _mosquitto(self, extra_config: str) -> Mosquitto:
        """What the `mosquitto_factory` fixture does for tests."""
        self.broker = Mosquitto(workdir=self.tmp / "mosquitto", extra_config=extra_config)
        return self.broker.start()

    def kill_broker(self, sig: int) -> str:
        assert self.broker is not None and self.broker.proc is not None
        proc = self.broker.proc
        return timed_stop("Mosquitto", lambda: kill_process(proc, sig), lambda: proc)

    def start_broker(self) -> None:
        """Again on the same port with the same persistence file; the replicas signal the new PID."""
        assert self.broker is not None
        self.broker.start()
        assert self.broker.port == self.broker_port, "Mosquitto came back on another port"
        assert self.broker.proc is not None
        Path(self.settings.mosquitto_pid_file).write_text(f"{self.broker.proc.pid}\n")

    def url(self, name: str = "a") -> str:
        return f"http://127.0.0.1:{self.http_ports[name]}"

    def client(self, name: str = "a") -> httpx.Client:
        return httpx.Client(base_url=self.url(name), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=15)

    def start_replica(self, name: str) -> None:
        env = {
            "FLEET_MOSQUITTO_PASSWORD_FILE": str(self.settings.mosquitto_password_file),
            "FLEET_MOSQUITTO_ACL_FILE": str(self.settings.mosquitto_acl_file),
            "FLEET_MOSQUITTO_PID_FILE": str(self.settings.mosquitto_pid_file),
            "FLEET_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        proc = Proc(
            f"replica-{name}-{self.starts[name]}",
            [
                "service",
                "--broker-url",
                self.settings.broker_url,
                "--database-url",
                self.database_url,
                "--replica-id",
                f"replica-{name}",
                "--http-port",
                str(self.http_ports[name]),
                "--data-dir",
                str(self.tmp / f"data-{name}"),
            ],
            self.tmp,
            env=env,
        )
        self.starts[name] += 1
        self.replicas[name] = proc

        def healthy() -> bool:
            if not proc.alive():
                raise RuntimeError(f"replica {name} exited: {proc.tail()}")
            try:
                return httpx.get(f"{self.url(name)}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, interval=0.2, what=f"replica {name} healthy")

    def kill_replica(self, name: str) -> None:
        proc = self.replicas[name]
        kill_process(proc.proc, signal.SIGKILL)
        proc.stop()  # closes its log

    def dropped(self) -> Counter[str]:
        """Messages ingest dropped, by reason, on both replicas since they started."""
        total: Counter[str] = Counter()
        for name in REPLICAS:
            with self.client(name) as api:
                for series, value in scrape(api).items():
                    if series.startswith(DROPPED):
                        total[series[len(DROPPED) :].split('"')[0]] += int(value)
        return total

    def stop(self) -> None:
        for proc in self.replicas.values():
            proc.stop()
        if self.broker is not None:
            self.broker.stop()


@dataclass
class Scaled:
    name: str
    fleet: ScaledFleet
    units: Units
    scale: float


def mosquitto_restart(sig: int, seconds: float) -> Callable[[Scaled], str]:
    return lambda s: outage(lambda: s.fleet.kill_broker(sig), s.fleet.start_broker, seconds * s.scale)


def postgres_away(s: Scaled) -> str:
    ended = set_database_connections(PG_ADMIN_DSN, s.fleet.database_name, allow=False)
    try:
        time.sleep(20 * s.scale)
    finally:
        set_database_connections(PG_ADMIN_DSN, s.fleet.database_name, allow=True)
    alive = [name for name, proc in s.fleet.replicas.items() if proc.alive()]
    return f"refused {20 * s.scale:g} s, {ended} backends ended, replicas alive after: {','.join(alive) or 'none'}"


def replica_sigkill(s: Scaled) -> str:
    return "replica b " + outage(lambda: s.fleet.kill_replica("b"), lambda: s.fleet.start_replica("b"), 15 * s.scale)


def garbage_flood(s: Scaled) -> str:
    unit = f"{s.name}-garbage"
    with s.fleet.client() as api:
        secret = enroll(api, unit, s.fleet.unit_port)
    before = s.fleet.dropped()
    raw = RawUnit(s.fleet.unit_port, unit, secret).connect()
    raw.birth()
    payloads, sent, pending = poison(), 0, []
    started = time.monotonic()
    seconds = 30 * s.scale
    while (elapsed := time.monotonic() - started) < seconds:
        while sent < elapsed * GARBAGE_RATE:
            kind, data = payloads[sent % len(payloads)]
            pending.append(raw.client.publish(topic(unit, kind), data, qos=1))
            sent += 1
        for info in pending:
            info.wait_for_publish(30)
        pending = []
        time.sleep(0.01)
    raw.stop_clean()
    with contextlib.suppress(AssertionError):
        wait_for(
            lambda: (s.fleet.dropped() - before).total() >= sent,
            timeout=60,
            interval=1,
            what="every bad message counted",
        )
    dropped = s.fleet.dropped() - before
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()))
    return (
        f"unit {unit} sent {sent} bad messages in {seconds:g} s; the replicas dropped {dropped.total()} "
        f"({reasons or 'none'})"
    )


SCALED: dict[str, Callable[[Scaled], str | None]] = {
    "mosquitto-sigterm": mosquitto_restart(signal.SIGTERM, 2),
    "mosquitto-sigkill": mosquitto_restart(signal.SIGKILL, 2),
    "mosquitto-down": mosquitto_restart(signal.SIGTERM, 60),
    "postgres-away": postgres_away,
    "replica-sigkill": replica_sigkill,
    "garbage-flood": garbage_flood,
}
NAMES = [*EMBEDDED, *SCALED]


def run_scaled(name: str, tmp: Path, args: argparse.Namespace) -> Row:
    database = FreshDatabase()
    with database as url:
        fleet = ScaledFleet(tmp, url, database.name)
        units = Units(tmp, name, args.units, args.rate)
        try:
            fleet.start()
            with fleet.client() as api:
                units.enroll(api, fleet.unit_port)
                units.start_agents(fleet.unit_port)
                units.wait_online(api)
            scenario = Scaled(name, fleet, units, args.scale)
            return measure(name, units, url, lambda: SCALED[name](scenario))
        finally:
            units.stop()
            fleet.stop()


# --- the table ---------------------------------------------------------------------------------------------------

COLUMNS = ("scenario", "sent", "stored", "lost", "doubled", "reported-dropped", "converge (s)")


def cells(row: Row) -> tuple[str, ...]:
    if row.error:
        return (row.scenario, "-", "-", "-", "-", "-", "error")
    converge = f"{row.converge_s:.1f}" if row.converge_s is not None else f">{CONVERGE_TIMEOUT_S:.0f}"
    return (
        row.scenario,
        *(str(row.total(f)) for f in ("sent", "stored", "lost", "doubled", "reported_dropped")),
        converge,
    )


def table(rows: list[Row], header: bool = True) -> str:
    """Fixed widths, so the rows printed as they finish line up with the table at the end."""
    widths = [max(len(c) for c in [*NAMES, COLUMNS[0]]), *(max(len(c), 7) for c in COLUMNS[1:])]
    data = [COLUMNS, tuple("-" * w for w in widths)] if header else []
    data += [cells(r) for r in rows]
    out = []
    for line in data:
        cols = zip(line, widths, strict=True)
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cols)))
    return "\n".join(out)


def details(row: Row) -> str:
    out = [f"{row.scenario}: {row.note}" if row.note else ""]
    if row.error:
        out.append(f"{row.scenario}: ERROR {row.error}")
    for t in row.tallies:
        if t.lost or t.doubled:
            out.append(f"  {t.line()}; first missing: {t.missing[:10]}")
    return "\n".join(line for line in out if line)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[4:]),
    )
    parser.add_argument("--units", type=int, default=10, help="writing units per scenario (default 10)")
    parser.add_argument("--rate", type=float, default=20.0, help="lines/s per unit (default 20)")
    parser.add_argument(
        "--only", action="append", choices=NAMES, metavar="NAME", help="run only this scenario (repeatable)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every outage by this (default 1)")
    parser.add_argument(
        "--workdir",
        help="keep the scenarios' files here (default: a temporary directory, removed when every row passes)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the files even when every row passes")
    args = parser.parse_args()
    names = args.only or NAMES
    if any(n in SCALED for n in names):
        reason = postgres_available() or (None if have_mosquitto() else "the mosquitto binary is not installed")
        if reason:
            raise SystemExit(f"fault_soak: the scaled scenarios need PostgreSQL and Mosquitto: {reason}")

    rows: list[Row] = []
    started = time.monotonic()
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fault-soak-"))
    for name in names:
        tmp = root / name
        tmp.mkdir(parents=True, exist_ok=True)
        print(f"[{time.monotonic() - started:6.0f} s] {name} ...", flush=True)
        try:
            row = (run_embedded if name in EMBEDDED else run_scaled)(name, tmp, args)
        except Exception as exc:  # noqa: BLE001 (a scenario that could not run is a failed row, the soak goes on)
            (tmp / "error.txt").write_text(traceback.format_exc())
            row = Row(name, [], None, error=f"{type(exc).__name__}: {exc}"[:500])
        rows.append(row)
        print(table([row], header=False), flush=True)
        if details(row):
            print(details(row), flush=True)
    failed = [r for r in rows if r.failed]
    print()
    print(
        f"fault soak: {args.units} units x {args.rate:g} lines/s, outages x{args.scale:g}, "
        f"{time.monotonic() - started:.0f} s"
    )
    print(table(rows))
    for row in rows:
        if details(row):
            print(details(row))
    if failed or args.keep or args.workdir:
        print(f"files (agent, service, broker logs) kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if failed:
        print(f"FAILED: {', '.join(r.scenario for r in failed)} lost, doubled or could not run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
