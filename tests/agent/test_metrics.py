"""Heartbeat and metrics: real psutil probes, unit states, the plugin hook with its time limit, broken sensors."""

from __future__ import annotations

import http.server
import sys
import threading
import time

import psutil

from agent.metrics import Probe
from protocol.topics import Kind
from tests.agent.conftest import fast_settings, script

STATE = (
    "import sys\nprint({'rec.service': 'active', 'web.service': 'failed'}[sys.argv[1]])\n"
    "sys.exit(0 if sys.argv[1] == 'rec.service' else 3)\n"
)


def _probe(tmp_path, **kw) -> Probe:
    return Probe(fast_settings(tmp_path, "mqtt://127.0.0.1:1", **kw), lambda: ("0.1.0", "v1.2"))


def test_a_sample_has_every_probe_and_unit_states(tmp_path):
    probe = _probe(
        tmp_path,
        unit=["rec.service", "web.service"],
        disk_path=["/", str(tmp_path)],
        check_command=script(tmp_path / "state.py", STATE) + " {unit}",
    )
    m = probe.sample()
    assert 0 <= m.mem_percent <= 100 and m.mem_used_bytes > 0 and 0 <= m.disk_percent <= 100
    assert m.disk_free_bytes > 0 and m.load1 is not None and m.net_rx_bytes is not None
    assert m.services == {"rec.service": "active", "web.service": "failed"}
    assert set(m.extra["disks"]) == {"/", str(tmp_path)} and m.extra["uptime_s"] > 0
    hb = probe.heartbeat(7)
    assert hb.seq == 7 and hb.uptime_s > 0 and hb.hostname and hb.software_version == "v1.2"


def test_plugin_output_is_merged_and_a_slow_or_broken_plugin_is_cut_off(tmp_path):
    good = _probe(tmp_path, plugin_command=script(tmp_path / "p.py", 'print(\'{"recording": true, "fps": 29.97}\')'))
    assert good.sample().extra["recording"] is True
    slow = _probe(tmp_path, plugin_timeout=0.3, plugin_command=f"{sys.executable} -c 'import time; time.sleep(30)'")
    started = time.monotonic()
    m = slow.sample()
    assert time.monotonic() - started < 5 and "recording" not in m.extra and m.mem_percent is not None
    broken = _probe(tmp_path, plugin_command=f"{sys.executable} -c 'print(\"[1, 2]\")'")
    assert "uptime_s" in broken.sample().extra


def test_plugin_url(tmp_path):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b'{"cameras": 2}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        probe = _probe(tmp_path, plugin_url=f"http://127.0.0.1:{server.server_address[1]}/stats")
        assert probe.sample().extra["cameras"] == 2
    finally:
        server.shutdown()
        server.server_close()


def test_a_broken_sensor_does_not_drop_the_sample(tmp_path, monkeypatch):
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("48500\n")

    def broken():
        raise OSError("no such device")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {}, raising=False)
    m = _probe(tmp_path, thermal_dir=tmp_path / "thermal").sample()
    assert m.mem_percent is None and m.cpu_percent is not None and m.temp_c == 48.5


def test_heartbeats_and_metrics_reach_the_broker(broker, service, agents, tmp_path):
    agents(fast_settings(tmp_path, broker.url, unit=["rec.service"]))
    hb = service.wait("unit-1", Kind.HEARTBEAT, count=2)
    assert hb[1]["seq"] == hb[0]["seq"] + 1 and hb[0]["agent_version"]
    m = service.wait("unit-1", Kind.METRICS)[0]
    assert m["services"] == {"rec.service": "active"} and m["cpu_percent"] is not None
