"""Sharing a ledger: threads on one manager, processes on one database file,
the GIL released during storage work, and managers that cross os.fork()."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from creditgate import InsufficientCredits, LocalCreditManager, StorageError

THREADS = 8
PROCESSES = 4


def test_threads_never_overdraw_a_strict_deduct(manager: LocalCreditManager) -> None:
    manager.add_credits("shared", 150)
    attempts_per_thread = 25

    def worker(t: int) -> tuple[int, int]:
        ok = denied = 0
        for j in range(attempts_per_thread):
            try:
                manager.deduct_credits("shared", 1, idempotency_key=f"t{t}-{j}")
                ok += 1
            except InsufficientCredits:
                denied += 1
        return ok, denied

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))
    assert sum(ok for ok, _ in results) == 150
    assert sum(denied for _, denied in results) == THREADS * attempts_per_thread - 150
    assert manager.get_balance("shared") == 0
    assert len(manager.transactions("shared", limit=1000)) == 151
    assert manager.audit().ok


def test_threads_charge_one_request_once(manager: LocalCreditManager, paid_key: str) -> None:
    def charge(_: int) -> bool:
        return manager.record_usage(paid_key, tokens=1000, request_id="same-request").replayed

    with ThreadPoolExecutor(THREADS) as pool:
        replayed = list(pool.map(charge, range(THREADS)))
    assert replayed.count(False) == 1
    assert manager.get_balance("alice") == 4999


def test_concurrent_holds_are_bounded_by_available(manager: LocalCreditManager, paid_key: str) -> None:
    manager.deduct_credits("alice", 4900)  # 100 left

    def hold(_: int) -> bool:
        try:
            manager.reserve(paid_key, credits=30)
            return True
        except InsufficientCredits:
            return False

    with ThreadPoolExecutor(THREADS) as pool:
        granted = list(pool.map(hold, range(THREADS)))
    assert granted.count(True) == 3
    assert manager.account("alice").available == 10


def _process_worker(url: str, worker: int, attempts: int) -> tuple[int, int]:
    """Runs in a spawned process: delivers the shared webhook, then deducts."""
    m = LocalCreditManager(url)
    m.record_payment("shared", "pay-shared", 500)  # every process delivers the same webhook
    ok = denied = 0
    for j in range(attempts):
        try:
            m.deduct_credits("shared", 100, idempotency_key=f"p{worker}-{j}")
            ok += 1
        except InsufficientCredits:
            denied += 1
    return ok, denied


def test_processes_share_one_database_file(db_url: str) -> None:
    attempts = 20  # 4 x 20 x 100 credits asked for, 5,000 paid
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap(_process_worker, [(db_url, w, attempts) for w in range(PROCESSES)])
    assert sum(ok for ok, _ in results) == 50
    assert sum(denied for _, denied in results) == PROCESSES * attempts - 50
    m = LocalCreditManager(db_url)
    assert m.get_balance("shared") == 0
    purchases = [e for e in m.transactions("shared", limit=1000) if e.kind == "purchase"]
    assert len(purchases) == 1 and purchases[0].amount == 5000
    assert m.audit().ok


# Holds SQLite's write lock until a line arrives on stdin. In another process:
# within one process, two copies of SQLite (Python's and the one linked into
# creditgate) do not see each other's POSIX locks.
LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


@pytest.mark.sqlite_only("holds SQLite's file lock from another process")
def test_gil_is_released_while_storage_blocks(db_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_BUSY_TIMEOUT_MS", "5000")
    m = LocalCreditManager(db_url)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = threading.Event()
        finished: dict[str, float] = {}

        def write() -> None:
            started.set()
            m.add_credits("u", 1)  # waits for the lock in busy_timeout, inside Rust
            finished["at"] = time.monotonic()

        writer = threading.Thread(target=write)
        writer.start()
        started.wait()
        # This thread keeps running Python meanwhile: it could not if the
        # writer held the GIL while blocked.
        window_start = time.monotonic()
        spins = 0
        while time.monotonic() < window_start + 0.5:
            spins += 1
        assert time.monotonic() - window_start < 1.5
        assert "at" not in finished, "the write should still be waiting for the lock"
        released_at = time.monotonic()
        holder.stdin.write("commit\n")
        holder.stdin.flush()
        writer.join(10)
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert finished["at"] >= released_at
    assert spins > 10_000
    assert m.get_balance("u") == 1


def _fork() -> int:
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process with threads forks; this test
        # checks exactly that case.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_manager_keeps_working_in_forked_children(manager: LocalCreditManager) -> None:
    manager.add_credits("u", 100)
    manager.metrics()  # the parent has used its pool before forking
    children = []
    for child in range(3):
        pid = _fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                for j in range(10):
                    manager.deduct_credits("u", 1, idempotency_key=f"child{child}-{j}")
                code = 0 if manager.audit().ok else 2
            finally:
                os._exit(code)
        children.append(pid)
    # The parent keeps using its own connections meanwhile.
    for j in range(10):
        manager.deduct_credits("u", 1, idempotency_key=f"parent-{j}")
    assert [_exit_code(pid) for pid in children] == [0, 0, 0]
    assert manager.get_balance("u") == Decimal(60)
    assert manager.audit().ok


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_children_forked_right_after_a_call_work(manager: LocalCreditManager, paid_key: str) -> None:
    # gunicorn --preload: the parent verifies, forks at once, and each child
    # verifies and charges. With r2d2's pool threads parked in parking_lot's
    # process-wide table, a child crashed (SIGSEGV) or spun when it started
    # its first thread; the pool now has no threads. A child that hangs is
    # killed by its alarm, so this fails rather than hangs.
    codes = []
    for round in range(20):
        manager.verify_api_key_credits(paid_key)
        pid = _fork()
        if pid == 0:
            code = 1
            try:
                signal.alarm(30)
                manager.verify_api_key_credits(paid_key)
                manager.record_usage(paid_key, tokens=1000, request_id=f"child-{round}")
                code = 0
            finally:
                os._exit(code)
        codes.append(_exit_code(pid))
    assert codes == [0] * 20
    assert manager.get_balance("alice") == Decimal(5000 - 20)
    assert manager.audit().ok


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_an_in_memory_database_cannot_follow_a_fork() -> None:
    m = LocalCreditManager("sqlite:///:memory:")
    m.add_credits("u", 5)
    pid = _fork()
    if pid == 0:
        code = 1
        try:
            m.get_balance("u")
        except StorageError as e:
            code = 0 if "fork" in str(e) else 3
        finally:
            os._exit(code)
    assert _exit_code(pid) == 0
    assert m.get_balance("u") == 5
