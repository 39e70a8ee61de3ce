"""turn_service imports only stdlib, httpx and pydantic(-settings): fleet_service wraps it, not the reverse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("fastapi", "starlette", "sqlmodel", "sqlalchemy", "fleet_service", "protocol", "agent", "broker")


def test_importing_turn_service_pulls_in_no_web_framework_or_sibling_package() -> None:
    code = "import sys, turn_service; print('\\n'.join(sorted(m.split('.')[0] for m in sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
        ).stdout.split()
    )
    assert "httpx" in loaded
    assert not loaded & set(FORBIDDEN)
