"""agent/install.sh installs a pinned, verified artifact.

It used to run `pip install --upgrade edge-fleet`: whatever an index served under that name, latest version,
unchecked. The script runs for real here, with a stand-in Python whose venv records what pip and the agent were
asked to do instead of doing it (the script must run as root; nothing is written outside tmp_path).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.services import require

SCRIPT = Path(__file__).resolve().parents[2] / "agent" / "install.sh"
WHEEL = "edge_fleet-0.1.0-py3-none-any.whl"
STUB_PYTHON = """#!/bin/sh
echo "python $*" >> "$STUB_LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin"
    cat > "$3/bin/pip" <<'EOF'
#!/bin/sh
for last in "$@"; do :; done
case "$last" in *.whl) echo "pip $* sha256=$(sha256sum "$last" | cut -d' ' -f1)" >> "$STUB_LOG" ;;
                *) echo "pip $*" >> "$STUB_LOG" ;; esac
EOF
    printf '#!/bin/sh\\necho "agent $*" >> "$STUB_LOG"\\n' > "$3/bin/python"
    chmod +x "$3/bin/pip" "$3/bin/python"
fi
"""


@pytest.fixture
def setup(tmp_path):
    require(os.geteuid() == 0, "agent/install.sh must run as root")
    stub = tmp_path / "python3"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    wheel = tmp_path / "dist" / WHEEL
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK\x03\x04 a wheel of the release" * 100)
    return tmp_path, wheel, hashlib.sha256(wheel.read_bytes()).hexdigest()


def _install(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    full = {
        "PATH": os.environ["PATH"],
        "PYTHON": str(tmp_path / "python3"),
        "STUB_LOG": str(log),
        "FLEET_AGENT_PREFIX": str(tmp_path / "prefix"),
        **env,
    }
    done = subprocess.run(
        ["sh", str(SCRIPT), "--device-id", "r58-hall-a"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return done, log.read_text().splitlines() if log.exists() else []


def test_the_published_wheel_is_installed_from_the_verified_copy(setup):
    tmp_path, wheel, digest = setup
    done, calls = _install(tmp_path, FLEET_AGENT_SOURCE=str(wheel), FLEET_AGENT_SHA256=digest.upper())
    assert done.returncode == 0, done.stderr
    assert calls[0] == f"python -m venv {tmp_path}/prefix/venv"
    pip = [c for c in calls if c.startswith("pip ")]
    assert len(pip) == 1 and pip[0].startswith("pip install --quiet /") and f"/{WHEEL} sha256={digest}" in pip[0]
    assert "--upgrade" not in pip[0] and "edge-fleet" not in pip[0]
    assert calls[-1].startswith("agent -m agent install --exec") and calls[-1].endswith("--device-id r58-hall-a")


def test_with_a_hashed_requirements_file_every_dependency_is_checked_too(setup):
    tmp_path, wheel, digest = setup
    requirements = tmp_path / "agent-requirements.txt"
    requirements.write_text("paho-mqtt==2.1.0 --hash=sha256:" + "0" * 64 + "\n")
    done, calls = _install(
        tmp_path, FLEET_AGENT_SOURCE=str(wheel), FLEET_AGENT_SHA256=digest, FLEET_AGENT_REQUIREMENTS=str(requirements)
    )
    assert done.returncode == 0, done.stderr
    pip = [c for c in calls if c.startswith("pip ")]
    assert pip[0] == f"pip install --quiet --require-hashes --no-deps -r {requirements}"
    assert pip[1].startswith("pip install --quiet --no-deps /") and pip[1].endswith(f"sha256={digest}")


@pytest.mark.parametrize(
    "case,message",
    [
        ("no digest", "set FLEET_AGENT_SHA256"),
        ("wrong digest", "refusing to install it"),
        ("not hex", "not 64 hex digits"),
        ("another version", "pinned to version 0.1.0"),
        ("plain http", "a file or an https:// URL"),
        ("default source missing", "cannot read"),
    ],
)
def test_anything_but_the_pinned_wheel_with_its_digest_is_refused_before_pip_runs(setup, case, message):
    tmp_path, wheel, digest = setup
    other = tmp_path / "dist" / "edge_fleet-0.2.0-py3-none-any.whl"
    other.write_bytes(wheel.read_bytes())
    env = {
        "no digest": {"FLEET_AGENT_SOURCE": str(wheel)},
        "wrong digest": {"FLEET_AGENT_SOURCE": str(wheel), "FLEET_AGENT_SHA256": "ab" * 32},
        "not hex": {"FLEET_AGENT_SOURCE": str(wheel), "FLEET_AGENT_SHA256": "zz" * 32},
        "another version": {"FLEET_AGENT_SOURCE": str(other), "FLEET_AGENT_SHA256": digest},
        "plain http": {"FLEET_AGENT_SOURCE": f"http://example.invalid/{WHEEL}", "FLEET_AGENT_SHA256": digest},
        "default source missing": {"FLEET_AGENT_SHA256": digest},  # ./edge_fleet-0.1.0-... in the cwd
    }[case]
    done, calls = _install(tmp_path, **env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert message in done.stderr
    assert calls == []  # no venv, no pip, no agent install
