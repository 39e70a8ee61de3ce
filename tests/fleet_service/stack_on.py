"""A running service on SQLite or on a fresh PostgreSQL database, for module-scoped fixtures (the root
`postgres_url` fixture is per test)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.support.services import FreshDatabase, postgres_available, require
from tests.support.stack import StackThread, settings_for


@contextmanager
def stack_on(database: str, tmp: Path, **overrides) -> Iterator[StackThread]:
    """`database` is "sqlite" or "postgres"; without a PostgreSQL server the latter is skipped (failed in CI)."""
    with ExitStack() as resources:
        if database == "postgres":
            reason = postgres_available()
            require(reason is None, reason or "")
            overrides["database_url"] = resources.enter_context(FreshDatabase())
        yield resources.enter_context(StackThread(settings_for(tmp, **overrides)))
