"""Shared fixtures for the Python tests: a fresh SQLite ledger file per test,
and an environment without creditgate settings so every test is hermetic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from creditgate import LocalCreditManager

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
def db_url(db_path: Path) -> str:
    # An absolute path: SQLAlchemy's four slashes.
    return f"sqlite:///{db_path}"


@pytest.fixture
def manager(db_url: str) -> LocalCreditManager:
    return LocalCreditManager(db_url)


@pytest.fixture
def paid_key(manager: LocalCreditManager) -> str:
    """A key of user "alice", who paid $5 (5,000 credits)."""
    manager.record_payment("alice", "pay_fixture", 500)
    return manager.create_api_key("alice").secret
