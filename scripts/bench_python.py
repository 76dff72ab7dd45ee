"""Python side of the benchmarks (issue 6), side by side in one run.

    .venv/bin/python scripts/bench_python.py            # full run
    .venv/bin/python scripts/bench_python.py --quick    # smoke run (CI)
    .venv/bin/python scripts/bench_python.py --postgres URL   # also PostgreSQL

With ``--postgres`` (a server URL; a scratch database is created and dropped),
it also runs creditgate on PostgreSQL against a hand-written ``psycopg``
manager that locks the balance row (``SELECT ... FOR UPDATE``), checks,
writes, inserts a transaction row and commits per call.

Compares creditgate's ``LocalCreditManager`` with a hand-written Python
``sqlite3`` implementation of the seed's ``LocalCreditManager`` (read the
balance, check, write it back, insert a transaction row, commit per call),
which is what a team writes without this library, and counts the updates that
baseline loses under threads. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from creditgate import LocalCreditManager

Row = tuple[str, float, float, float]
TOTAL_CREDITS = 10**12


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


class PsycopgCreditManager:
    """The same manager on PostgreSQL, done right by hand: the balance row is
    locked (``SELECT ... FOR UPDATE``) so no update is lost; commit per call."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self.local = threading.local()
        self.psycopg = psycopg
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, credit_balance BIGINT NOT NULL)")
            c.execute(
                "CREATE TABLE IF NOT EXISTS credit_transactions "
                "(id BIGSERIAL PRIMARY KEY, user_id TEXT, amount BIGINT, created_at DOUBLE PRECISION)"
            )

    def conn(self):  # noqa: ANN201 - psycopg is an optional import
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.psycopg.connect(self.url)
            self.local.conn = c
        return c

    def add_credits(self, user_id: str, amount: int) -> None:
        with self.conn().transaction():
            self.conn().execute(
                "INSERT INTO users (id, credit_balance) VALUES (%s, %s) "
                "ON CONFLICT (id) DO UPDATE SET credit_balance = users.credit_balance + EXCLUDED.credit_balance",
                (user_id, amount),
            )

    def deduct_credits(self, user_id: str, amount: int) -> bool:
        c = self.conn()
        with c.transaction():
            row = c.execute("SELECT credit_balance FROM users WHERE id = %s FOR UPDATE", (user_id,)).fetchone()
            if row is None or row[0] < amount:
                return False
            c.execute("UPDATE users SET credit_balance = %s WHERE id = %s", (row[0] - amount, user_id))
            c.execute(
                "INSERT INTO credit_transactions (user_id, amount, created_at) VALUES (%s, %s, %s)",
                (user_id, -amount, time.time()),
            )
        return True

    def balance(self, user_id: str) -> int:
        with self.conn().transaction():
            (b,) = self.conn().execute("SELECT credit_balance FROM users WHERE id = %s", (user_id,)).fetchone()
        return int(b)


def baseline_rows(label: str, manager: SeedCreditManager | PsycopgCreditManager, writes: int) -> list[Row]:
    """The hand-written manager charging 1 credit per call with 1, 8, 32 threads."""
    rows = []
    for threads in (1, 8, 32):
        per = writes // threads
        user = f"seed-{threads}"
        manager.add_credits(user, TOTAL_CREDITS)
        ok = [0] * threads

        def deduct(t: int, i: int, user: str = user, ok: list[int] = ok) -> None:
            if manager.deduct_credits(user, 1):
                ok[t] += 1

        ops, p50, p99 = timed(threads, per, deduct)
        lost = manager.balance(user) - (TOTAL_CREDITS - sum(ok))
        rows.append((f"usage charge, {label} ({threads} callers; {lost} of {sum(ok)} updates lost)", ops, p50, p99))
    return rows


def creditgate_usage_rows(label: str, m: LocalCreditManager, secret: str, writes: int) -> list[Row]:
    rows = []
    for threads in (1, 8, 32):
        per = writes // threads

        def usage(t: int, i: int, threads: int = threads) -> None:
            m.record_usage(secret, tokens=1000, request_id=f"{threads}-{t}-{i}")

        ops, p50, p99 = timed(threads, per, usage)
        rows.append((f"record_usage, {label} ({threads} callers)", ops, p50, p99))
    assert m.audit().ok
    return rows


def postgres_rows(server_url: str, writes: int) -> list[Row]:
    """creditgate on PostgreSQL and the psycopg baseline, each on a scratch database."""
    import psycopg

    base, _, query = server_url.partition("?")
    root = base.rsplit("/", 1)[0]
    names = [f"cg_bench_{os.getpid()}_{n}" for n in ("creditgate", "psycopg")]
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
    urls = [f"{root}/{name}" + (f"?{query}" if query else "") for name in names]
    try:
        m = LocalCreditManager(urls[0])
        m.record_payment("bench", "pay-1", 100_000_000)
        secret = m.create_api_key("bench").secret
        rows = creditgate_usage_rows("creditgate on PostgreSQL", m, secret, writes)
        del m
        rows += baseline_rows("psycopg FOR UPDATE on PostgreSQL", PsycopgCreditManager(urls[1]), writes)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for name in names:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return rows


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
    parser.add_argument("--postgres", metavar="URL", help="also benchmark PostgreSQL (a server URL)")
    args = parser.parse_args()
    keys = 2_000 if args.quick else 100_000
    verifies = 2_000 if args.quick else 100_000
    writes = 256 if args.quick else 4_096
    rows: list[Row] = []

    with tempfile.TemporaryDirectory() as tmp:
        m = LocalCreditManager(f"sqlite:///{tmp}/cg.db", max_active_keys_per_user=100_000)
        m.record_payment("bench", "pay-1", 100_000_000)
        # Legacy imports skip the credit gate, so the key table fills quickly.
        for i in range(keys):
            m.import_api_key(f"user-{i % 1000}", secret=f"legacy-bench-key-{i:08}")
        secret = m.create_api_key("bench").secret

        ops, p50, p99 = timed(1, verifies, lambda t, i: m.verify_api_key_credits(secret))
        rows.append(("verify, creditgate from Python (1 thread)", ops, p50, p99))

        rows += creditgate_usage_rows("creditgate from Python", m, secret, writes)
        rows += baseline_rows("seed-style sqlite3", SeedCreditManager(str(Path(tmp) / "seed.db")), writes)

    if args.postgres:
        rows += postgres_rows(args.postgres, writes)

    print("\n| benchmark | ops/s | p50 µs | p99 µs |\n|---|---:|---:|---:|")
    for name, ops, p50, p99 in rows:
        print(f"| {name} | {ops:.0f} | {p50:.1f} | {p99:.1f} |")
    print(f"\n({keys} keys in the table{'; quick smoke run, numbers not meaningful' if args.quick else ''})")


if __name__ == "__main__":
    main()
