"""Python side of the benchmarks (issue 6), side by side in one run.

    .venv/bin/python scripts/bench_python.py            # full run
    .venv/bin/python scripts/bench_python.py --quick    # smoke run (CI)

Compares creditgate's ``LocalCreditManager`` with a hand-written Python
``sqlite3`` implementation of the seed's ``LocalCreditManager`` (read the
balance, check, write it back, insert a transaction row, commit per call),
which is what a team writes without this library, and counts the updates that
baseline loses under threads. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from creditgate import LocalCreditManager


class SeedCreditManager:
    """The seed's hand-written manager: read-modify-write, commit per call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, credit_balance INTEGER NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS credit_transactions "
            "(id INTEGER PRIMARY KEY, user_id TEXT, amount INTEGER, created_at REAL)"
        )
        db.commit()
        db.close()

    def conn(self) -> sqlite3.Connection:
        c = getattr(self.local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30)
            c.execute("PRAGMA synchronous=FULL")
            self.local.conn = c
        return c

    def add_credits(self, user_id: str, amount: int) -> None:
        c = self.conn()
        c.execute("INSERT OR IGNORE INTO users (id, credit_balance) VALUES (?, 0)", (user_id,))
        c.execute("UPDATE users SET credit_balance = credit_balance + ? WHERE id = ?", (amount, user_id))
        c.commit()

    def deduct_credits(self, user_id: str, amount: int) -> bool:
        c = self.conn()
        (balance,) = c.execute("SELECT credit_balance FROM users WHERE id = ?", (user_id,)).fetchone()
        if balance < amount:
            return False
        c.execute("UPDATE users SET credit_balance = ? WHERE id = ?", (balance - amount, user_id))
        c.execute(
            "INSERT INTO credit_transactions (user_id, amount, created_at) VALUES (?, ?, ?)",
            (user_id, -amount, time.time()),
        )
        c.commit()
        return True

    def balance(self, user_id: str) -> int:
        (b,) = self.conn().execute("SELECT credit_balance FROM users WHERE id = ?", (user_id,)).fetchone()
        return int(b)


def timed(threads: int, per_thread: int, op: Callable[[int, int], None]) -> tuple[float, float, float]:
    """ops/s, p50 µs, p99 µs of `op` run `per_thread` times on each thread."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        mine = []
        for i in range(per_thread):
            t0 = time.perf_counter()
            op(t, i)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    total = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return len(latencies) / total, statistics.median(latencies) * 1e6, p99 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, numbers not meaningful")
    args = parser.parse_args()
    keys = 2_000 if args.quick else 100_000
    verifies = 2_000 if args.quick else 100_000
    writes = 256 if args.quick else 4_096
    rows: list[tuple[str, float, float, float]] = []

    with tempfile.TemporaryDirectory() as tmp:
        m = LocalCreditManager(f"sqlite:///{tmp}/cg.db", max_active_keys_per_user=100_000)
        m.record_payment("bench", "pay-1", 100_000_000)
        # Legacy imports skip the credit gate, so the key table fills quickly.
        for i in range(keys):
            m.import_api_key(f"user-{i % 1000}", secret=f"legacy-bench-key-{i:08}")
        secret = m.create_api_key("bench").secret

        ops, p50, p99 = timed(1, verifies, lambda t, i: m.verify_api_key_credits(secret))
        rows.append(("verify, creditgate from Python (1 thread)", ops, p50, p99))

        for threads in (1, 8, 32):
            per = writes // threads

            def usage(t: int, i: int, threads: int = threads) -> None:
                m.record_usage(secret, tokens=1000, request_id=f"{threads}-{t}-{i}")

            ops, p50, p99 = timed(threads, per, usage)
            rows.append((f"record_usage, creditgate from Python ({threads} callers)", ops, p50, p99))
        assert m.audit().ok

        seed = SeedCreditManager(str(Path(tmp) / "seed.db"))
        for threads in (1, 8, 32):
            per = writes // threads
            user = f"seed-{threads}"
            seed.add_credits(user, 10**12)
            ok = [0] * threads

            def deduct(t: int, i: int, user: str = user, ok: list[int] = ok) -> None:
                if seed.deduct_credits(user, 1):
                    ok[t] += 1

            ops, p50, p99 = timed(threads, per, deduct)
            lost = (10**12 - sum(ok)) - seed.balance(user)
            rows.append((f"usage charge, seed-style sqlite3 ({threads} callers; {-lost} of {sum(ok)} updates lost)",
                         ops, p50, p99))

    print("\n| benchmark | ops/s | p50 µs | p99 µs |\n|---|---:|---:|---:|")
    for name, ops, p50, p99 in rows:
        print(f"| {name} | {ops:.0f} | {p50:.1f} | {p99:.1f} |")
    print(f"\n({keys} keys in the table{'; quick smoke run, numbers not meaningful' if args.quick else ''})")


if __name__ == "__main__":
    main()
