"""Shared fixtures for the Python tests: a fresh ledger per test, and an
environment without creditgate settings so every test is hermetic.

The ledger is a SQLite file, or with ``CREDITGATE_TEST_BACKEND=postgres`` a
fresh database on the server at ``CREDITGATE_TEST_POSTGRES_URL`` (a role
allowed to CREATE DATABASE), created and dropped (WITH FORCE) through
``psql``; scripts/test-python.sh starts a throwaway server (scripts/pg.sh).
Tests marked ``sqlite_only`` are skipped on PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from creditgate import Event, LocalCreditManager

BACKEND = os.environ.get("CREDITGATE_TEST_BACKEND", "").lower() or "sqlite"
if BACKEND not in ("sqlite", "postgres", "postgresql"):
    raise RuntimeError(f"CREDITGATE_TEST_BACKEND must be sqlite or postgres, got {BACKEND!r}")
IS_POSTGRES = BACKEND != "sqlite"

_databases = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): the test depends on SQLite; skipped on PostgreSQL")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not IS_POSTGRES:
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "SQLite-specific"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


def server_url() -> str:
    url = os.environ.get("CREDITGATE_TEST_POSTGRES_URL", "")
    if not url:
        # A misconfigured run must fail, not skip.
        raise RuntimeError("CREDITGATE_TEST_BACKEND=postgres needs CREDITGATE_TEST_POSTGRES_URL (see scripts/pg.sh)")
    return url


def with_database(url: str, db: str) -> str:
    """`url` with its database name replaced by `db`."""
    base, sep, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{db}{sep}{query}"


def psql(url: str, sql: str) -> None:
    """Runs `sql` on `url` with psql, failing loudly."""
    r = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode != 0:
        raise RuntimeError(f"psql failed ({r.returncode}): {r.stderr.strip()}")


# Every variable `LocalCreditManager()` reads (Config::from_env).
SETTINGS_ENV = (
    "DATABASE_URL",
    "MIN_CREDITS_API_KEY",
    "CREDITS_PER_USD",
    "CREDITS_PER_1K_TOKENS",
    "API_KEY_PREFIX",
    "API_KEY_PEPPER",
    "MAX_ACTIVE_KEYS_PER_USER",
    "MAX_ACTIVE_HOLDS_PER_USER",
    "CREDITGATE_BUSY_TIMEOUT_MS",
    "CREDITGATE_POOL_SIZE",
    "CREDITGATE_SQLITE_SYNCHRONOUS",
    "CREDITGATE_LOW_BALANCE_THRESHOLDS",
    "CREDITGATE_CURRENCY_RATES",
    "CREDITGATE_WEBHOOK_KEY",
    "CREDITGATE_WEBHOOK_ALLOWED_HOSTS",
)


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    if not IS_POSTGRES:
        # An absolute path: SQLAlchemy's four slashes (the file of `db_path`).
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    admin = server_url()
    name = f"cg_py_{os.getpid()}_{next(_databases)}_{uuid.uuid4().hex[:8]}"
    psql(admin, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin, name)
    finally:
        # FORCE: managers of the test may still hold pooled connections.
        psql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def host_sql(db_url: str) -> Callable[[str], None]:
    """Runs SQL (several statements) on the ledger's database, as the host
    application would: on SQLite with Python's sqlite3, opened and closed
    before any ledger opens the file in this process (two SQLite libraries
    must not share one open file in one process)."""

    def run(sql: str) -> None:
        if IS_POSTGRES:
            psql(db_url, sql)
        else:
            path = db_url[len("sqlite:///") :]
            with contextlib.closing(sqlite3.connect(path)) as conn, conn:
                conn.executescript(sql)

    return run


@pytest.fixture
def manager(db_url: str) -> LocalCreditManager:
    return LocalCreditManager(db_url)


@pytest.fixture
def paid_key(manager: LocalCreditManager) -> str:
    """A key of user "alice", who paid $5 (5,000 credits)."""
    manager.record_payment("alice", "pay_fixture", 500)
    return manager.create_api_key("alice").secret


_markers = itertools.count()


def settled_events(m: LocalCreditManager, page_size: int = 100) -> list[Event]:
    """Every event so far, read in pages of ``page_size``, markers left out.
    On PostgreSQL an event shows once every older transaction of the server
    has finished: a marker event written now shows only after everything
    committed before it."""
    marker = f"zz-marker-{next(_markers)}"
    m.add_credits(marker, 1, kind="purchase")
    out: list[Event] = []
    deadline = time.monotonic() + 60
    while not any(e.user_id == marker for e in out):
        assert time.monotonic() < deadline, "the marker event never showed"
        page = m.events(after=out[-1].id if out else 0, limit=page_size)
        if not page:
            time.sleep(0.005)
        out.extend(page)
    return [e for e in out if not e.user_id.startswith("zz-marker-")]
