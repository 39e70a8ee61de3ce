"""A real coturn `turnserver` plus `turnutils_peer` on loopback, for allocation tests."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import free_port, wait_port

REALM = "fleet.test"


@dataclass
class Coturn:
    """turnserver in TURN REST API mode (`use-auth-secret`) with the given static-auth-secrets."""

    workdir: Path
    secrets: list[str]
    port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A private-ish relay range; coturn skips ports that happen to be busy.
        self.min_port = random.randrange(50000, 59000, 100)
        self.max_port = self.min_port + 99

    def command(self) -> list[str]:
        return [
            shutil.which("turnserver") or "turnserver",
            "-n",  # ignore /etc/turnserver.conf
            "-L", "127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}",
            f"--min-port={self.min_port}",
            f"--max-port={self.max_port}",
            "--allow-loopback-peers",  # tests only: the peer is on loopback
            "--use-auth-secret",
            *[f"--static-auth-secret={s}" for s in self.secrets],
            f"--realm={REALM}",
            "--fingerprint",
            "--no-tls", "--no-dtls", "--no-cli", "--no-rfc5780",
            f"--userdb={self.workdir / 'turndb'}",
            f"--pidfile={self.workdir / 'turnserver.pid'}",
            f"--log-file={self.workdir / 'turnserver.log'}",
            "--simple-log",
        ]  # fmt: skip

    def start(self) -> Coturn:
        self.workdir.mkdir(parents=True, exist_ok=True)
        server = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(server)
        peer = subprocess.Popen(
            [shutil.which("turnutils_peer") or "turnutils_peer", "-L", "127.0.0.1", "-p", str(self.peer_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(peer)
        try:
            wait_port(self.port)  # turnserver listens on TCP and UDP at the same port
            self._wait_peer_echo()
        except (TimeoutError, OSError):
            self.stop()
            raise RuntimeError(f"coturn did not start (exit {server.poll()}): {self.log()[-2000:]}") from None
        return self

    def _wait_peer_echo(self, timeout: float = 5.0) -> None:
        """turnutils_peer echoes UDP datagrams: one answered probe means it is ready."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.1)
            while time.monotonic() < deadline:
                sock.sendto(b"ping", ("127.0.0.1", self.peer_port))
                try:
                    if sock.recv(64) == b"ping":
                        return
                except OSError:
                    pass
        raise TimeoutError("turnutils_peer did not echo")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self) -> str:
        # Without --simple-log coturn puts a date into the file name; the glob finds either.
        logs = sorted(self.workdir.glob("turnserver*.log"))
        return "\n".join(p.read_text(errors="replace") for p in logs)

    def uclient(self, username: str, credential: str) -> subprocess.CompletedProcess[str]:
        """One real allocation + 1 relayed packet to the echo peer with turnutils_uclient."""
        args = [
            shutil.which("turnutils_uclient") or "turnutils_uclient",
            "-L", "127.0.0.1", "-p", str(self.port),
            "-e", "127.0.0.1", "-r", str(self.peer_port),
            "-n", "1", "-z", "5", "-m", "1", "-c",
            "-u", username, "-w", credential,
            "127.0.0.1",
        ]  # fmt: skip
        return subprocess.run(args, capture_output=True, text=True, timeout=30)
