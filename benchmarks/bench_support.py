"""What the fleet benchmarks share: Mosquitto with unit credentials, a fresh database, bulk units, processes.

Every benchmark starts its own parts on loopback (free ports, temporary directories, a fresh PostgreSQL
database) and removes them when it ends. Nothing here is imported by the product.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from fleet_service.db.engine import make_engine, migrate  # noqa: E402
from fleet_service.devices.models import Device  # noqa: E402
from fleet_service.devices.tags import store_tags  # noqa: E402
from fleet_service.mosquitto.acl import acl_text  # noqa: E402
from fleet_service.mosquitto.admin import password_hash  # noqa: E402
from fleet_service.mosquitto.models import BrokerCredential  # noqa: E402
from protocol.ids import SERVICE_USERNAME, new_secret, now_ms  # noqa: E402
from protocol.secrets import hash_secret  # noqa: E402
from tests.support.services import FreshDatabase, Mosquitto, free_port, postgres_available  # noqa: E402

SERVICE_SECRET = "benchmark-service-secret"
ADMIN_TOKEN = "benchmark-admin-token-0123456789abcdef"


def clean_env() -> dict[str, str]:
    """The environment for child processes, without FLEET_* settings of whoever runs the benchmark."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    """A migrated, empty database: a fresh PostgreSQL database (dropped afterwards) or a SQLite file."""
    if kind == "postgres":
        reason = postgres_available()
        if reason:
            raise SystemExit(reason)
        with FreshDatabase() as url:
            engine = make_engine(url)
            migrate(engine)
            engine.dispose()
            yield url
        return
    url = f"sqlite:///{directory / 'fleet.db'}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url


def insert_units(url: str, ids: list[str]) -> str:
    """Insert enrolled units in bulk and return their secret.

    For speed every unit gets the SAME random secret, hashed once (scrypt for the service and embedded broker,
    PBKDF2 for Mosquitto): fine for a benchmark, never for a fleet.
    """
    secret = new_secret()
    service_hash, broker_hash, now = hash_secret(secret), password_hash(secret), now_ms()
    template = Device(id="x", tags=["simulated"], secret_hash=service_hash, created_at=now).model_dump()
    engine: Engine = make_engine(url)
    with engine.begin() as conn:
        for start in range(0, len(ids), 2000):
            chunk = ids[start : start + 2000]
            conn.execute(insert(Device), [{**template, "id": i} for i in chunk])
            store_tags(conn, {i: template["tags"] for i in chunk})
            conn.execute(
                insert(BrokerCredential),
                [{"device_id": i, "password_hash": broker_hash, "updated_at": now} for i in chunk],
            )
    engine.dispose()
    return secret


def start_mosquitto(directory: Path, unit_secret: str | None, ids: list[str], extra: str = "") -> Mosquitto:
    """Mosquitto 2 as the scaled mode runs it: password file (service + units) and the per-unit ACL."""
    passwd = directory / "passwd"
    lines = [f"{SERVICE_USERNAME}:{password_hash(SERVICE_SECRET)}"]
    if unit_secret is not None:
        unit_hash = password_hash(unit_secret)
        lines += [f"{i}:{unit_hash}" for i in ids]
    passwd.write_text("\n".join(lines) + "\n")
    (directory / "acl").write_text(acl_text())
    config = (
        f"allow_anonymous false\npassword_file {passwd}\nacl_file {directory / 'acl'}\n"
        "message_size_limit 262144\n" + extra
    )
    return Mosquitto(workdir=directory / "mosquitto", extra_config=config).start()


def service_url(port: int) -> str:
    return f"mqtt://{SERVICE_USERNAME}:{SERVICE_SECRET}@127.0.0.1:{port}"


def write_secrets_cache(path: Path, target: str, ids: list[str], secret: str) -> None:
    """Pre-fill `fleet simulate`'s secrets cache so it enrolls nothing."""
    from simulator.enroll import SecretCache

    cache = SecretCache(path, target)
    cache.secrets.update(dict.fromkeys(ids, secret))
    cache.save()


class Proc:
    """A child process (`python -m fleet_cli.main ...`) whose output goes to a log file; stopped on exit."""

    def __init__(self, name: str, args: list[str], directory: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = directory / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet_cli.main", *args],
            cwd=directory,
            env={**clean_env(), **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 1e6

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_fleet(
    embedded: bool,
    tmp: Path,
    url: str,
    http_port: int,
    unit_secret: str,
    ids: list[str],
    mosquitto_extra: str = "",
    env: dict[str, str] | None = None,
) -> tuple[Proc, Mosquitto | None, int]:
    """`fleet up` (embedded) or Mosquitto + `fleet service`; returns the service, Mosquitto (or None), MQTT port."""
    if embedded:
        mqtt_port = free_port()
        service = Proc(
            "service",
            [
                "up",
                "--data-dir",
                str(tmp),
                "--database-url",
                url,
                "--http-port",
                str(http_port),
                "--mqtt-port",
                str(mqtt_port),
                "--admin-token",
                ADMIN_TOKEN,
            ],
            tmp,
            env=env,
        )
        return service, None, mqtt_port
    mosquitto = start_mosquitto(tmp, unit_secret, ids, mosquitto_extra)
    service = Proc(
        "service",
        [
            "service",
            "--broker-url",
            service_url(mosquitto.port),
            "--database-url",
            url,
            "--http-port",
            str(http_port),
            "--admin-token",
            ADMIN_TOKEN,
            "--replica-id",
            "bench",
        ],
        tmp,
    )
    return service, mosquitto, mosquitto.port


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the service at {url} did not answer within {timeout}s")


def scrape(api: httpx.Client) -> dict[str, float]:
    """The service's Prometheus text as {series: value} (labels kept in the key)."""
    out: dict[str, float] = {}
    for line in api.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary_ms(values_s: list[float]) -> str:
    if not values_s:
        return "no samples"
    ms = [v * 1000 for v in values_s]
    return (
        f"p50 {percentile(ms, 50):.1f} ms, p95 {percentile(ms, 95):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms (n={len(ms)})"
    )


__all__ = [
    "ADMIN_TOKEN",
    "Proc",
    "ROOT",
    "SERVICE_SECRET",
    "clean_env",
    "database",
    "free_port",
    "insert_units",
    "percentile",
    "scrape",
    "service_url",
    "start_mosquitto",
    "summary_ms",
    "wait_http",
    "workdir",
    "write_secrets_cache",
]
