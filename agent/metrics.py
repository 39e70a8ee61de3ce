"""Heartbeat and metrics samples from psutil; every probe catches its own errors."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from agent.config import AgentSettings
from agent.process import run_command
from protocol.ids import now_ms
from protocol.payloads import Heartbeat, Metrics

log = logging.getLogger(__name__)

_UNIT_STATES = {"active", "inactive", "failed", "activating", "deactivating", "reloading", "unknown", "maintenance"}


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return ""


def uptime_s() -> float:
    try:
        return max(0.0, time.time() - psutil.boot_time())
    except Exception:  # noqa: BLE001 - a platform psutil cannot read must not stop the heartbeat
        return 0.0


def ip_addresses() -> list[str]:
    ips = []
    try:
        for name, addrs in psutil.net_if_addrs().items():
            if name == "lo":
                continue
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6) and not a.address.startswith(("127.", "::1", "fe80")):
                    ips.append(a.address.split("%")[0])
    except Exception as exc:  # noqa: BLE001 - a platform psutil cannot read must not stop the heartbeat
        log.debug("ip probe failed: %s", exc)
    return ips[:64]


class Probe:
    """Collects one heartbeat or one metrics sample; nothing here raises."""

    def __init__(self, settings: AgentSettings, versions: Callable[[], tuple[str, str]]) -> None:
        self.settings = settings
        self.versions = versions  # -> (agent_version, software_version)
        self._failed: set[str] = set()
        self._safe(lambda: psutil.cpu_percent(None), "cpu")  # primes the non-blocking CPU counter

    def heartbeat(self, seq: int) -> Heartbeat:
        agent_version, software_version = self.versions()
        return Heartbeat(
            ts=now_ms(),
            seq=seq,
            uptime_s=uptime_s(),
            hostname=socket.gethostname()[:255],
            ips=ip_addresses(),
            software_version=software_version[:128],
            agent_version=agent_version[:64],
        )

    def sample(self) -> Metrics:
        values: dict[str, Any] = {"ts": now_ms()}
        extra: dict[str, Any] = {}
        values["cpu_percent"] = self._safe(lambda: psutil.cpu_percent(None), "cpu")
        mem = self._safe(psutil.virtual_memory, "memory")
        if mem is not None:
            values["mem_percent"] = mem.percent
            values["mem_used_bytes"] = int(mem.total - mem.available)
        disks = self._disks()
        if disks:
            first = disks.get(self.settings.disk_path[0]) or next(iter(disks.values()))
            values["disk_percent"] = first["percent"]
            values["disk_free_bytes"] = first["free_bytes"]
            if len(disks) > 1:
                extra["disks"] = disks
        load = self._safe(os.getloadavg, "load")
        values["load1"] = load[0] if load else None
        values["temp_c"] = self._safe(self._temperature, "temperature")
        net = self._safe(self._network, "network")
        if net:
            values["net_rx_bytes"], values["net_tx_bytes"] = net
        extra["uptime_s"] = round(uptime_s(), 1)
        services = {unit: self.unit_state(unit) for unit in self.settings.unit}
        plugin = self._plugin()
        if plugin:
            extra.update(plugin)
        finite = {k: v for k, v in values.items() if not (isinstance(v, float) and not math.isfinite(v))}
        return Metrics(**finite, services=services, extra=extra)

    def unit_state(self, unit: str) -> str:
        outcome = run_command(self.settings.check_command, min(10.0, self.settings.command_timeout), unit=unit)
        word = outcome.output.strip().splitlines()[-1].strip() if outcome.output.strip() else ""
        if word in _UNIT_STATES:
            return word
        if outcome.exit_code in (124, 127):
            return "unknown"
        return "active" if outcome.ok else "inactive"

    # Probes ---------------------------------------------------------------------------

    def _safe(self, probe: Callable[[], Any], name: str) -> Any:
        try:
            value = probe()
        except Exception as exc:  # noqa: BLE001 - one broken sensor must not drop the whole sample
            if name not in self._failed:
                self._failed.add(name)
                log.warning("%s probe failed (reported once): %s", name, exc)
            return None
        return value

    def _disks(self) -> dict[str, dict[str, Any]]:
        out = {}
        for path in self.settings.disk_path:
            usage = self._safe(partial(psutil.disk_usage, path), f"disk {path}")
            if usage is not None:
                out[path] = {"percent": usage.percent, "free_bytes": int(usage.free)}
        return out

    def _temperature(self) -> float | None:
        readings: list[float] = []
        sensors = getattr(psutil, "sensors_temperatures", None)
        if sensors is not None:
            for entries in sensors().values():
                readings.extend(e.current for e in entries if e.current is not None and -50 < e.current < 200)
        if not readings:
            for zone in sorted(self.settings.thermal_dir.glob("thermal_zone*/temp")):
                try:
                    value = int(zone.read_text().strip()) / 1000.0
                except (OSError, ValueError):
                    continue
                if -50 < value < 200:
                    readings.append(value)
        return round(max(readings), 1) if readings else None

    @staticmethod
    def _network() -> tuple[int, int]:
        rx = tx = 0
        for name, c in psutil.net_io_counters(pernic=True).items():
            if name != "lo":
                rx += c.bytes_recv
                tx += c.bytes_sent
        return rx, tx

    def _plugin(self) -> dict[str, Any] | None:
        s = self.settings
        if s.plugin_command:
            outcome = run_command(s.plugin_command, s.plugin_timeout)
            if not outcome.ok:
                self._note_plugin(f"plugin command exited {outcome.exit_code}: {outcome.output[-200:]}")
                return None
            return self._plugin_json(outcome.output)
        if s.plugin_url:
            import urllib.request  # only agents with a plugin URL pay for urllib

            try:
                with urllib.request.urlopen(s.plugin_url, timeout=s.plugin_timeout) as resp:
                    return self._plugin_json(resp.read(256 * 1024).decode("utf-8", "replace"))
            except Exception as exc:  # noqa: BLE001 - a broken plugin endpoint must not stop the metrics loop
                self._note_plugin(f"plugin URL failed: {exc}")
        return None

    def _plugin_json(self, text: str) -> dict[str, Any] | None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            self._note_plugin(f"plugin output is not JSON: {exc}")
            return None
        if not isinstance(data, dict):
            self._note_plugin("plugin output is not a JSON object")
            return None
        self._failed.discard("plugin")
        return data

    def _note_plugin(self, message: str) -> None:
        if "plugin" not in self._failed:
            self._failed.add("plugin")
            log.warning("%s (reported until it recovers)", message)
