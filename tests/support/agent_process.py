"""The real agent as a separate process, started the way users start it; all stopped at teardown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# `fleet agent` (the console script's path) or `python -m agent` (what the installed systemd unit runs).
FLEET_AGENT = ("-m", "fleet_cli.main", "agent")
PYTHON_M_AGENT = ("-m", "agent")


class AgentProcesses:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(
        self, mqtt_port: int, device_id: str, secret: str, *options: str, entry: tuple[str, ...] = FLEET_AGENT
    ) -> subprocess.Popen:
        """Run an agent for `device_id` (secret in a file, own state dir, stderr in `<id>.log`)."""
        secret_file = self.workdir / f"{device_id}.secret"
        secret_file.write_text(secret)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        cmd = [
            sys.executable,
            *entry,
            "--broker-url",
            f"mqtt://127.0.0.1:{mqtt_port}",
            "--device-id",
            device_id,
            "--secret-file",
            str(secret_file),
            "--state-dir",
            str(self.workdir / f"state-{device_id}"),
            *options,
        ]
        with (self.workdir / f"{device_id}.log").open("ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
