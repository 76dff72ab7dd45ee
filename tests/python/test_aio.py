"""AsyncLocalCreditManager (creditgate.aio): the synchronous manager's
surface as coroutines, under a real event loop (``asyncio.run``), that never
block the loop: the same results and exception classes, no lost update under
200 concurrent awaits, and a loop that keeps ticking while a write waits on
an SQLite write lock held by another process."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_POSTGRES
from creditgate import (
    AsyncLocalCreditManager,
    CreditError,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidApiKey,
    InvalidArgument,
    LimitReached,
    LocalCreditManager,
    NotFound,
    StorageError,
)

HANG_GUARD = 60.0  # seconds: no await of these tests may take longer


def run(coro: Awaitable[Any]) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, HANG_GUARD)

    return asyncio.run(guarded())


def bare(sig: inspect.Signature) -> str:
    """A signature without its annotations: names, kinds and defaults."""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


# ----- the surface --------------------------------------------------------------


def test_same_methods_and_signatures_as_the_sync_manager() -> None:
    sync = LocalCreditManager("sqlite:///:memory:")
    am = AsyncLocalCreditManager.from_manager(sync)
    methods = [n for n in dir(sync) if not n.startswith("_") and callable(getattr(sync, n))]
    # docs/reference.md and backup, at least.
    assert {"verify_api_key_credits", "record_usage", "reserve", "settle", "report", "backup"} <= set(methods)
    for name in methods:
        method = getattr(am, name)
        assert inspect.iscoroutinefunction(method), name
        assert bare(inspect.signature(method)) == bare(inspect.signature(getattr(sync, name))), name
    # Cheap properties stay synchronous.
    assert am.database_url == sync.database_url == "sqlite:///:memory:"
    assert am.sync is sync
    assert am.pool_size == sync.pool_size == 1 and am.max_workers == 1


def test_constructor_takes_the_sync_arguments() -> None:
    own = {"max_workers"}
    sync_params = bare(inspect.signature(LocalCreditManager))
    async_params = inspect.signature(AsyncLocalCreditManager)
    shared = async_params.replace(parameters=[p for n, p in async_params.parameters.items() if n not in own])
    assert bare(shared) == sync_params
    am = AsyncLocalCreditManager("sqlite:///:memory:", min_credits_api_key=7, max_active_keys_per_user=3)
    eligibility = run(am.can_generate_api_key("u"))
    assert eligibility.required == 7  # the argument reached the ledger
    with pytest.raises(InvalidArgument):
        AsyncLocalCreditManager("sqlite:///:memory:", credits_per_usd=0)
    with pytest.raises(ValueError):
        AsyncLocalCreditManager.from_manager(LocalCreditManager("sqlite:///:memory:"), max_workers=0)
    with pytest.raises(TypeError):
        AsyncLocalCreditManager.from_manager("sqlite:///:memory:")  # type: ignore[arg-type]


# ----- the same results, the same errors -------------------------------------------

VOLATILE = {
    "prefix",
    "id",
    "grant_id",
    "entry_id",
    "hold_id",
    "key_id",
    "api_key_id",
    "created_at",
    "expires_at",
    "last_used_at",
    "secret",
}


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normal(value: Any, tag: str) -> Any:
    """A result as plain data, without ids and timestamps, the tag replaced."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: normal(v, tag) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return [normal(v, tag) for v in value]
    if isinstance(value, str):
        return UUID.sub("<id>", value.replace(tag, "T"))
    return value


Call = Callable[..., Awaitable[Any]]


async def scenario(call: Call, tag: str) -> list[Any]:
    """The same operations for user `<tag>-alice`; each outcome as data
    (a result, or the exception's class, code and message)."""
    user = f"{tag}-alice"
    out: list[Any] = []

    async def step(op: str, /, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await call(op, *args, **kwargs)
        except (CreditError, TypeError) as e:
            extra = (e.required, e.available) if isinstance(e, InsufficientCredits) else None
            out.append((op, type(e), getattr(e, "code", None), normal(str(e), tag), extra))
            return None
        out.append((op, normal(result, tag)))
        return result

    await step("create_api_key", user)  # 402: not paid yet
    await step("record_payment", user, f"{tag}-pay", 500, "usd")
    await step("record_payment", user, f"{tag}-pay", 500)  # replayed
    await step("record_payment", user, f"{tag}-pay", 900)  # conflict
    key = await step("create_api_key", user, "prod")
    await step("can_generate_api_key", user)
    await step("add_credits", user, Decimal("1.5"), kind="grant", idempotency_key="g1", metadata={"why": "promo"})
    await step("add_credits", user, 1.5)  # float: TypeError
    await step("add_credits", user, 1, kind="bogus")
    await step("deduct_credits", user, 10**6)  # insufficient
    await step("deduct_credits", user, "0.25", reference="r")
    secret = key.secret if key is not None else "missing"
    await step("verify_api_key_credits", secret)
    await step("verify_api_key_credits", secret, 10**6)
    await step("verify_api_key_credits", "sk_not_a_key_at_all")
    await step("authenticate_api_key", secret)
    await step("record_usage", secret, input_tokens=1200, output_tokens=34, request_id="req-1")
    await step("record_usage", secret, input_tokens=1200, output_tokens=34, request_id="req-1")
    await step("record_usage", secret, tokens=5, request_id="req-1")
    hold = await step("reserve", secret, tokens=2000, request_id="req-2")
    await step("account", user)
    if hold is not None:
        await step("settle", hold.hold_id, input_tokens=100, output_tokens=50)
        await step("release", hold.hold_id)
    await step("settle", "0190a0a0-0000-7000-8000-000000000000", tokens=1)
    await step("release", "not-an-id")
    await step("reverse_payment", f"{tag}-pay", 100, "refund", reversal_id=f"{tag}-re1")
    await step("reverse_payment", f"{tag}-nope")
    await step("import_api_key", user, secret=f"{tag}-legacy-key-0123456789", name="old")
    await step("create_api_key", user, "third")  # max_active_keys_per_user=3
    await step("create_api_key", user, "fourth")  # LimitReached
    keys = await step("list_api_keys", user)
    if keys:
        await step("revoke_api_key", keys[0].key_id, user_id="mallory")
        await step("revoke_api_key", keys[0].key_id, user_id=user)
    await step("transactions", user, limit=3)
    await step("transactions", user, limit=0)
    await step("get_balance", user)
    await step("account", user)
    await step("import_balance", f"{tag}-legacy-user", "12.5")
    await step("get_balance", f"{tag}-nobody")
    return out


def test_results_and_errors_match_the_sync_manager(db_url: str) -> None:
    sync = LocalCreditManager(db_url, max_active_keys_per_user=3)

    async def sync_call(op: str, /, *args: Any, **kwargs: Any) -> Any:
        return getattr(sync, op)(*args, **kwargs)

    async def main() -> tuple[list[Any], list[Any]]:
        async with AsyncLocalCreditManager(db_url, max_active_keys_per_user=3) as am:

            async def async_call(op: str, /, *args: Any, **kwargs: Any) -> Any:
                return await getattr(am, op)(*args, **kwargs)

            expected = await scenario(sync_call, "xsyncx")
            got = await scenario(async_call, "xasyncx")
            # Ledger-wide reads: the same ledger seen through both doors.
            await am.set_model_price("m1", 2, "3.5")
            assert await am.list_model_prices() == sync.list_model_prices() == {"m1": (Decimal(2), Decimal("3.5"))}
            assert (await am.report()).to_dict() == sync.report().to_dict()
            assert (await am.audit()).to_dict() == sync.audit().to_dict()
            assert (await am.audit()).ok
            # Counters are per manager: the async one counts what went through it.
            assert await am.metrics() == am.sync.metrics()
            assert (await am.metrics())["verify_ok_total"] == sync.metrics()["verify_ok_total"] > 0
            assert "creditgate_verify_ok_total" in await am.metrics_prometheus()
            await am.migrate()
            return expected, got

    expected, got = run(main())
    assert got == expected
    errors = {row[1] for row in expected if len(row) == 5}
    # Every error class of the scenario was raised, by both doors alike.
    assert errors == {
        InsufficientCredits,
        IdempotencyConflict,
        InvalidArgument,
        TypeError,
        InvalidApiKey,
        NotFound,
        LimitReached,
    }


@pytest.mark.sqlite_only("backup copies SQLite ledgers; on PostgreSQL it is InvalidArgument")
def test_backup(db_url: str, tmp_path: Path) -> None:
    async def main() -> int:
        async with AsyncLocalCreditManager(db_url) as am:
            await am.add_credits("u", 5)
            size: int = await am.backup(tmp_path / "copy.db")
            with pytest.raises(InvalidArgument):  # never overwrites
                await am.backup(str(tmp_path / "copy.db"))
            return size

    size = run(main())
    assert size == (tmp_path / "copy.db").stat().st_size > 0
    assert LocalCreditManager(f"sqlite:///{tmp_path / 'copy.db'}").get_balance("u") == 5


def test_schema_status_matches_the_sync_one(db_url: str) -> None:
    LocalCreditManager(db_url).add_credits("u", 5)
    status = run(AsyncLocalCreditManager.schema_status(db_url))
    assert status.to_dict() == LocalCreditManager.schema_status(db_url).to_dict()
    assert status.database_version == status.library_version >= 1 and status.pending == []
    assert not status.newer_than_library


def test_backup_on_postgres_is_the_sync_error(db_url: str, tmp_path: Path) -> None:
    if not IS_POSTGRES:
        pytest.skip("PostgreSQL only")

    async def main() -> None:
        async with AsyncLocalCreditManager(db_url) as am:
            with pytest.raises(InvalidArgument):
                await am.backup(tmp_path / "copy.db")

    run(main())


# ----- concurrency --------------------------------------------------------------------

CONCURRENT = 200


def creditgate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("creditgate")]


def test_200_concurrent_awaits_lose_nothing(db_url: str) -> None:
    async def main() -> tuple[list[Any], Decimal, int]:
        async with AsyncLocalCreditManager(db_url) as am:
            await am.record_payment("alice", "pay_1", 500)
            key = (await am.create_api_key("alice")).secret
            peak = 0

            async def charge(i: int) -> Any:
                nonlocal peak
                charge = await am.record_usage(key, input_tokens=i + 1, output_tokens=i % 7, request_id=f"r{i}")
                peak = max(peak, len(creditgate_threads()))
                return charge

            charges = await asyncio.gather(*(charge(i) for i in range(CONCURRENT)))
            # The same request ids again: all replayed, nothing charged twice.
            replays = await asyncio.gather(
                *(am.record_usage(key, input_tokens=i + 1, output_tokens=i % 7, request_id=f"r{i}") for i in range(50))
            )
            assert all(r.replayed for r in replays)
            entries = await am.transactions("alice", limit=1000)
            assert (await am.audit()).ok
            assert peak <= am.max_workers  # the executor is bounded by the pool
            return charges, await am.get_balance("alice"), len([e for e in entries if e.kind == "usage"])

    charges, balance, usage_entries = run(main())
    tokens = sum(i + 1 + i % 7 for i in range(CONCURRENT))
    assert usage_entries == CONCURRENT
    assert not any(c.replayed for c in charges)
    assert len({c.entry_id for c in charges}) == CONCURRENT
    assert sum(c.charged for c in charges) == Decimal(tokens) / 1000  # each ceil is exact at 1 credit/1k
    assert balance == Decimal(5000) - Decimal(tokens) / 1000
    # The lowest balance_after is what is left after the last charge: no update lost.
    assert min(c.balance for c in charges) == balance


def test_aclose_shuts_the_executor_down(db_url: str) -> None:
    async def main() -> AsyncLocalCreditManager:
        am = await AsyncLocalCreditManager.open(db_url)  # opened off the loop
        await asyncio.gather(*(am.add_credits("u", 1) for _ in range(20)))
        assert 1 <= len(creditgate_threads()) <= am.max_workers
        await am.aclose()
        await am.aclose()  # idempotent
        assert am.closed
        with pytest.raises(RuntimeError, match="closed"):
            await am.get_balance("u")
        return am

    am = run(main())
    assert not creditgate_threads()
    assert am.sync.get_balance("u") == 20  # the ledger itself stays usable


# ----- the loop is never blocked -------------------------------------------------------

# Holds SQLite's write lock for argv[2] seconds. In another process: within one
# process, two copies of SQLite (Python's and the one linked into creditgate)
# do not see each other's POSIX locks.
LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
print(f"committing {time.time()!r}", flush=True)
conn.execute("COMMIT")
conn.close()
"""
HOLD_SECONDS = 1.0


class Ticker:
    """Ticks every few milliseconds; records the longest gap between ticks,
    up to the moment it is stopped (so a stall at the end counts too)."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self.ticks = 0
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self._last = 0.0

    async def run(self) -> None:
        self._last = time.monotonic()
        self.started.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.005)
            self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        self.max_gap = max(self.max_gap, now - self._last)
        self.ticks += 1
        self._last = now

    def stop(self) -> None:
        self._tick()
        self._stop.set()


@pytest.mark.sqlite_only("holds SQLite's file lock from another process")
@pytest.mark.parametrize(("busy_timeout_ms", "outcome"), [(5000, "succeeds after release"), (400, "StorageError")])
def test_the_loop_keeps_running_while_a_write_waits_for_a_lock(
    db_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, busy_timeout_ms: int, outcome: str
) -> None:
    monkeypatch.setenv("CREDITGATE_BUSY_TIMEOUT_MS", str(busy_timeout_ms))

    async def main() -> dict[str, Any]:
        async with AsyncLocalCreditManager(db_url) as am:
            await am.add_credits("u", 10)  # the ledger exists, in WAL mode
            holder = await asyncio.create_subprocess_exec(
                sys.executable, "-c", LOCK_HOLDER, str(db_path), str(HOLD_SECONDS), stdout=asyncio.subprocess.PIPE
            )
            assert holder.stdout is not None
            try:
                assert (await holder.stdout.readline()).decode().strip() == "locked"
                ticker = Ticker()
                ticking = asyncio.create_task(ticker.run())
                await ticker.started.wait()
                result: dict[str, Any] = {}
                try:
                    # Reads go on under the write lock (WAL)...
                    result["read"] = await am.get_balance("u")
                    # ...the write waits for it, on the manager's thread.
                    await am.add_credits("u", 5, idempotency_key="during-lock")
                    result["write"] = "ok"
                except StorageError as e:
                    result["write"] = e
                result["done_at"] = time.time()
                ticker.stop()
                await ticking
                committing = (await holder.stdout.readline()).decode().split()
            finally:
                await holder.wait()
            assert committing[0] == "committing"
            result["committed_at"] = float(committing[1])
            result["max_gap"] = ticker.max_gap
            result["ticks"] = ticker.ticks
            result["balance"] = await am.get_balance("u")
            result["audit"] = (await am.audit()).ok
            return result

    r = run(main())
    print(f"busy_timeout={busy_timeout_ms}ms: loop max gap {r['max_gap'] * 1000:.1f} ms over {r['ticks']} ticks")
    assert r["read"] == 10
    # The loop never stalled for more than a quarter of the lock hold.
    assert r["max_gap"] < HOLD_SECONDS / 4
    assert r["ticks"] >= 2  # it ran while the write waited
    if outcome == "StorageError":
        assert isinstance(r["write"], StorageError) and r["write"].status_code == 503
        assert r["done_at"] < r["committed_at"], "gave up while the lock was still held"
        assert r["balance"] == 10
    else:
        assert r["write"] == "ok"
        assert r["done_at"] >= r["committed_at"], "the write could only commit after the holder released"
        assert r["balance"] == 15
    assert r["audit"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_executor(db_url: str) -> None:
    am = AsyncLocalCreditManager(db_url)
    run(am.add_credits("u", 1))  # the parent's executor has threads now
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            code = 0 if asyncio.run(asyncio.wait_for(am.add_credits("u", 1), 30)).balance_after >= 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert run(am.get_balance("u")) == 2
    am.close()
