"""Plausible readings for simulated units: random-walk vitals and recorder-like log lines."""

from __future__ import annotations

import random
from typing import Any

GIB = 1024**3
RECORDER = "recorder.service"
_LEVELS = (("info", 0.84), ("warning", 0.1), ("error", 0.04), ("debug", 0.02))


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


class Vitals:
    """CPU, memory, disk, temperature and network counters of one unit, drifting like a busy recorder's."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.cores = rng.choice((4, 8))
        self.mem_total = rng.choice((4, 8)) * GIB
        self.disk_total = rng.choice((64, 128, 256, 512)) * 10**9
        self._cpu_mean = rng.uniform(15, 45)
        self.cpu = self._cpu_mean
        self._mem_mean = rng.uniform(30, 65)
        self.mem = self._mem_mean
        self.disk = rng.uniform(20, 75)
        self.temp = 45.0
        self._ambient = rng.uniform(28, 38)
        self.rx = rng.randrange(10**9, 10**11)
        self.tx = rng.randrange(10**9, 10**12)
        self._rx_rate = rng.uniform(20e3, 200e3)  # bytes/s: control traffic, camera feeds on the LAN side
        self._tx_rate = rng.uniform(250e3, 1.5e6)  # bytes/s: WebRTC publishing
        self._disk_rate = rng.uniform(0.5e6, 2.5e6)  # bytes/s written by the recorder
        self._last_ms: int | None = None
        self.services: dict[str, str] = {RECORDER: "active"}

    def sample(self, ts: int) -> dict[str, Any]:
        rng = self._rng
        dt = 0.0 if self._last_ms is None else max(0.0, (ts - self._last_ms) / 1000)
        self._last_ms = ts
        self.cpu = _clamp(self.cpu + rng.gauss(0, 4) + 0.2 * (self._cpu_mean - self.cpu), 1, 100)
        self.mem = _clamp(self.mem + rng.gauss(0, 0.6) + 0.1 * (self._mem_mean - self.mem), 5, 97)
        self.disk += 100 * self._disk_rate * dt / self.disk_total
        if self.disk > 90:  # retention removes the oldest recordings
            self.disk = rng.uniform(55, 65)
        self.temp = _clamp(self.temp + 0.3 * (self._ambient + 0.45 * self.cpu - self.temp) + rng.gauss(0, 0.5), 20, 105)
        self.rx += int(self._rx_rate * dt * rng.uniform(0.7, 1.3))
        self.tx += int(self._tx_rate * dt * rng.uniform(0.7, 1.3))
        self._drift_services()
        return {
            "v": 1,
            "ts": ts,
            "cpu_percent": round(self.cpu, 1),
            "mem_percent": round(self.mem, 1),
            "mem_used_bytes": int(self.mem_total * self.mem / 100),
            "disk_percent": round(self.disk, 2),
            "disk_free_bytes": int(self.disk_total * (100 - self.disk) / 100),
            "load1": round(self.cores * self.cpu / 100 * rng.uniform(0.8, 1.2), 2),
            "temp_c": round(self.temp, 1),
            "net_rx_bytes": self.rx,
            "net_tx_bytes": self.tx,
            "services": dict(self.services),
        }

    def _drift_services(self) -> None:
        state = self.services[RECORDER]
        if state == "failed" and self._rng.random() < 0.3:
            self.services[RECORDER] = "activating"
        elif state == "activating":
            self.services[RECORDER] = "active"
        elif state == "active" and self._rng.random() < 0.0005:
            self.services[RECORDER] = "failed"

    def restart(self, units: list[str]) -> None:
        for unit in units:
            self.services[unit] = "active"


class LogSource:
    """Batches of one to three log records with ids unique per unit (`prefix-n`), mostly info."""

    def __init__(self, rng: random.Random, prefix: str) -> None:
        self._rng = rng
        self._prefix = prefix
        self._n = 0

    def records(self, ts: int, vitals: Vitals) -> list[dict[str, Any]]:
        out = []
        for i in range(self._rng.choice((1, 1, 1, 2, 3))):
            self._n += 1
            level = self._level()
            source, msg = self._line(level, ts, vitals)
            out.append(
                {
                    "id": f"{self._prefix}-{self._n}",
                    "ts": ts - (2 - i) * 7,
                    "level": level,
                    "source": source,
                    "msg": msg,
                }
            )
        return out

    def _level(self) -> str:
        x = self._rng.random()
        for level, weight in _LEVELS:
            if x < weight:
                return level
            x -= weight
        return "info"

    def _line(self, level: str, ts: int, vitals: Vitals) -> tuple[str, str]:
        rng = self._rng
        cam = rng.randint(1, 4)
        if level == "error":
            return "recorder", rng.choice(
                (
                    f"camera {cam}: no signal on HDMI input",
                    f"camera {cam}: encoder error, restarting pipeline",
                    "webrtc: ICE failed for a viewer (no TURN relay reachable)",
                )
            )
        if level == "warning":
            return "recorder", rng.choice(
                (
                    f"camera {cam}: dropped {rng.randint(2, 40)} frames",
                    f"disk {vitals.disk:.0f}% full, retention will remove the oldest recordings",
                    f"cpu temperature {vitals.temp:.0f} C",
                )
            )
        if level == "debug":
            return "fleet-agent", f"heartbeat queue depth {rng.randint(0, 3)}"
        return rng.choice(
            (
                ("recorder", f"segment written: cam{cam}/{ts // 1000}.mp4 ({rng.uniform(20, 90):.1f} MB)"),
                ("recorder", f"webrtc: viewer {rng.randrange(16**6):06x} connected"),
                ("recorder", f"webrtc: viewer {rng.randrange(16**6):06x} left after {rng.randint(5, 3600)} s"),
                ("recorder", f"camera {cam}: 1920x1080 @ {rng.choice((25, 30, 50, 60))} fps"),
                ("fleet-agent", "configuration unchanged"),
            )
        )
