"""Browser tests of the dashboard: a real `fleet up` process, simulated units over MQTT, headless Chromium.

One `fleet up` with a few hundred simulated units (simulator.fleet, in this process on its own event
loop) serves the whole session; each test gets a fresh browser context and signs in as a real user.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.services import require, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_TOKEN = "dashboard-test-admin-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SIM_UNITS = 200
USERS = {"operator": ("olga", "operator-pass-1"), "viewer": ("vera", "viewer-pass-1"), "admin": ("ada", "admin-pass-1")}


@dataclass
class FleetProcess:
    """`fleet up` as a user runs it, on free ports; `restart()` brings it back on the same ports and data."""

    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)  # FLEET_* variables for this process only
    http_port: int = 0
    mqtt_port: int = 0
    url: str = ""
    proc: subprocess.Popen | None = None
    starts: int = 0
    _log: Path = field(init=False)

    def start(self) -> FleetProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        env["FLEET_ADMIN_TOKEN"] = ADMIN_TOKEN
        env.update(self.settings)
        self.starts += 1
        self._log = self.workdir / f"fleet-up-{self.starts}.log"
        cmd = [
            sys.executable,
            "-m",
            "fleet_cli.main",
            "up",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--mqtt-port",
            str(self.mqtt_port),
            "--data-dir",
            str(self.workdir / "data"),
        ]
        with open(self._log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        text = wait_for(self._banner, timeout=60, interval=0.1, what="the `fleet: ready` line of fleet up")
        self.url = re.search(r"(http://127\.0\.0\.1:\d+)", text).group(1)
        self.http_port = int(self.url.rsplit(":", 1)[1])
        self.mqtt_port = int(re.search(r"embedded MQTT broker on port (\d+)", text).group(1))
        wait_for(lambda: httpx.get(f"{self.url}/health", timeout=5).status_code == 200, timeout=30, what="health")
        return self

    def _banner(self) -> str | None:
        text = self._log.read_text()
        if self.proc.poll() is not None:
            raise AssertionError(f"fleet up exited with {self.proc.returncode}:\n{text[-3000:]}")
        return text if "fleet: ready" in text else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        """Everything this process printed so far (all starts)."""
        return "".join(p.read_text() for p in sorted(self.workdir.glob("fleet-up-*.log")))

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)


class LoopThread:
    """An asyncio loop in a background thread, for the simulated units."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="sim-loop")
        self._thread.start()

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def start_fleet(workdir: Path, settings: dict[str, str] | None = None) -> FleetProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    fleet = FleetProcess(workdir, settings or {}).start()
    with fleet.api() as api:
        for role, (name, password) in USERS.items():
            r = api.post("/api/users", json={"username": name, "password": password, "role": role})
            assert r.status_code == 201, r.text
    return fleet


@pytest.fixture(scope="package")
def chromium_path() -> str:
    require(os.path.exists(CHROMIUM), f"{CHROMIUM} is not installed (apt install chromium)")
    return CHROMIUM


# Package scope, not session: the sync Playwright API keeps an event loop running in the main thread, which
# would break every asyncio test collected after this package.
@pytest.fixture(scope="package")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="package")
def fleet(tmp_path_factory, chromium_path) -> Iterator[FleetProcess]:
    fleet = start_fleet(tmp_path_factory.mktemp("fleet"))
    yield fleet
    fleet.stop()


@dataclass
class Sim:
    """The running simulation, driven from test code."""

    simulation: Any
    loop: LoopThread

    def kill(self, device_id: str) -> None:
        """Drop the unit's connection the way a power cut does (the broker publishes its Will)."""
        self.loop.call(self.simulation.kill(device_id))

    def start_unit(self, device_id: str) -> None:
        self.loop.loop.call_soon_threadsafe(self.simulation.start_unit, device_id)


@pytest.fixture(scope="package")
def sim(fleet, tmp_path_factory) -> Iterator[Sim]:
    """SIM_UNITS simulated units (ids sim-00001...), tag `simulated`, all online."""
    from simulator.enroll import SecretCache, ensure_via_api, unit_ids
    from simulator.fleet import SimOptions, Simulation

    cache = SecretCache(tmp_path_factory.mktemp("sim") / "secrets.json", fleet.url)
    secrets = ensure_via_api(fleet.url, ADMIN_TOKEN, "sim", unit_ids("sim", SIM_UNITS), cache)
    options = SimOptions(
        heartbeat_interval=10, metrics_interval=4, log_interval=20, command_seconds=0.3, reboot_seconds=1.0, seed=7
    )
    loop = LoopThread()

    async def make() -> Simulation:
        s = Simulation(f"mqtt://127.0.0.1:{fleet.mqtt_port}", secrets, options)
        await s.start()
        return s

    simulation = loop.call(make())
    assert loop.call(simulation.wait_online(90), timeout=100) == SIM_UNITS
    with fleet.api() as api:
        wait_for(
            lambda: api.get("/api/devices", params={"limit": 1}).json()["summary"]["online"] >= SIM_UNITS,
            timeout=60,
            interval=0.5,
            what="every simulated unit online in the API",
        )
    yield Sim(simulation, loop)
    loop.call(simulation.stop(), timeout=60)
    loop.close()


@dataclass
class Enrolled:
    id: str
    secret: str
    port: int


@pytest.fixture(scope="package")
def enroll(fleet) -> Callable[..., Enrolled]:
    """Enroll a unit through the API (for tests that drive a unit by hand with RawUnit)."""

    def do(device_id: str, tags: list[str] | None = None) -> Enrolled:
        with fleet.api() as api:
            r = api.post("/api/devices", json={"id": device_id, "tags": tags or []})
            assert r.status_code == 201, r.text
        return Enrolled(device_id, r.json()["secret"], fleet.mqtt_port)

    return do


SHELL_UNIT = "term-ui-1"


@pytest.fixture(scope="package")
def shell_unit(fleet, enroll, tmp_path_factory) -> Iterator[str]:
    """A real agent process that allows remote shells (/bin/sh), enrolled in the fleet and online: its id."""
    from tests.fleet_service.terminal.support import shell_options

    procs = run_agent(fleet, enroll(SHELL_UNIT, ["terminal"]), tmp_path_factory.mktemp("agents"), *shell_options())
    yield SHELL_UNIT
    procs.stop_all()


def run_agent(fleet: FleetProcess, unit: Enrolled, workdir: Path, *options: str):
    """A real agent process for an enrolled unit, online before this returns; stop it with `.stop_all()`."""
    from tests.support.agent_process import PYTHON_M_AGENT, AgentProcesses

    procs = AgentProcesses(workdir)
    common = ("--keepalive", "5", "--heartbeat-interval", "1", "--relay-port", "0")
    procs.start(unit.port, unit.id, unit.secret, *common, *options, entry=PYTHON_M_AGENT)
    with fleet.api() as api:
        wait_online(api, unit.id, timeout=30)
    return procs


@pytest.fixture
def open_page(browser, fleet):
    """`open_page(role)` -> a signed-in page in a fresh context; JavaScript errors on the page fail the test."""
    from playwright.sync_api import expect

    contexts = []
    errors: list[str] = []

    def do(
        role: str | None = "operator",
        width: int = 1400,
        height: int = 900,
        base: FleetProcess | None = None,
        color_scheme: str = "light",
        timezone_id: str | None = None,
    ):
        target = base or fleet
        context = browser.new_context(
            viewport={"width": width, "height": height}, color_scheme=color_scheme, timezone_id=timezone_id
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(target.url + "/")
        if role is not None:
            name, password = USERS[role]
            page.fill("#login-user", name)
            page.fill("#login-password", password)
            page.click(".login-form button[type=submit]")
            expect(page.locator("#who")).to_contain_text(name)
        return page

    yield do
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page, name: str, full_page: bool = True) -> Path:
    """Save a screenshot under test-artifacts/ (kept by CI; current copies live in docs/screenshots)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_online(api: httpx.Client, device_id: str, online: bool = True, timeout: float = 15) -> None:
    wait_for(
        lambda: api.get(f"/api/devices/{device_id}").json()["online"] is online,
        timeout=timeout,
        interval=0.1,
        what=f"{device_id} online={online} in the API",
    )


__all__ = [
    "ADMIN_TOKEN",
    "FleetProcess",
    "SHELL_UNIT",
    "SIM_UNITS",
    "USERS",
    "Sim",
    "screenshot",
    "start_fleet",
    "wait_online",
]
