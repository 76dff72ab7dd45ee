"""Python side of the benchmarks (issues 6 and 16), side by side in one run.

    .venv/bin/python scripts/bench_python.py            # full run
    .venv/bin/python scripts/bench_python.py --quick    # smoke run (CI)
    .venv/bin/python scripts/bench_python.py --postgres URL   # also PostgreSQL
    .venv/bin/python scripts/bench_python.py --markdown FILE  # also write the tables to FILE

Each path runs creditgate and a hand-written baseline in the same run and
prints one Markdown table per side (SQLite, PostgreSQL): creditgate ops/s,
baseline ops/s, the ratio creditgate/baseline, the target of issue 16 and
whether it is met, with p50/p99 latencies. The baselines, what a team writes
without this library:

- **verify**: sha256 of the key and one indexed ``SELECT`` on stdlib
  ``sqlite3``, on creditgate's own key table (the same 100k keys).
- **hand-written durable charge** (SQLite): stdlib ``sqlite3``, WAL,
  ``synchronous=FULL``, a busy timeout; per call ``BEGIN IMMEDIATE``, a
  conditional ``UPDATE ... RETURNING`` of the balance, the ``INSERT`` of the
  entry, ``COMMIT``. Run with 1 caller, 8 threads, and 4 processes x 8
  threads on one file (the gunicorn layout; spawned processes). Next to the
  1-caller row: the one-fsync-per-commit floor (a loop of tiny durable
  commits, ``BEGIN IMMEDIATE; UPDATE one row; COMMIT``).
- **seed-style sqlite3**: the seed's ``LocalCreditManager`` (read, check,
  write back, insert, commit per call); counts the updates it loses.
- **psycopg** (with ``--postgres``): ``SELECT ... FOR UPDATE``; ``UPDATE``;
  ``INSERT``; ``COMMIT``, one connection per thread. 1 caller, 8 and 32
  threads (one account per thread), 8 threads on one shared account.
- **credit-ledger 0.3.0** from PyPI (with ``--postgres``): its ``decrement``
  at 8 threads on its own schema (the three tables its ``metering.py`` uses).
  Install it with ``pip install -r scripts/bench-requirements.txt``; a quick
  run skips it with a line when it is not importable, a full run refuses.

The policy rows run creditgate on accounts with an expiring grant, a key cap
and a rate limit (high enough never to refuse), against the plain row. They
run after the plain rows: a rate limit on any key turns rate counting on for
the whole ledger.

Every write row ends with a correctness check, failing the run when it does
not hold: creditgate's audit is ok and each account's balance fell by exactly
the charges made (no lost update); each baseline's balance equals its start
plus the sum of its entries, one entry per successful charge (the seed-style
baseline reports the updates it lost instead).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Protocol

from creditgate import LocalCreditManager

TOTAL_CREDITS = 10**12


@dataclass
class Stat:
    ops: float
    p50: float
    p99: float


@dataclass
class Line:
    """One row of an issue 16 table."""

    path: str
    cg: Stat | None
    base: Stat | None
    target: float | None = None  # minimum ratio creditgate/baseline; None: no target
    target_text: str = "–"


def timed(threads: int, per_thread: int, op: Callable[[int, int], Any]) -> Stat:
    """ops/s, p50 µs, p99 µs of `op(t, i)` run `per_thread` times on each of `threads` threads."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        mine = []
        try:
            for i in range(per_thread):
                t0 = time.perf_counter()
                op(t, i)
                mine.append(time.perf_counter() - t0)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    total = time.perf_counter() - start
    if errors:
        raise errors[0]
    return stat(latencies, len(latencies) / total)


def stat(latencies: list[float], ops: float) -> Stat:
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return Stat(ops, statistics.median(latencies) * 1e6, p99 * 1e6)


# ----- hand-written baselines on SQLite -----------------------------------------


class HandVerify:
    """The hand-written verify: sha256 of the key, one indexed SELECT."""

    SQL = (
        "SELECT k.id, k.revoked_at, a.balance FROM creditgate_api_keys k "
        "JOIN creditgate_accounts a ON a.user_id = k.user_id WHERE k.key_hash = ?"
    )

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)

    def verify(self, secret: str, min_micros: int = 1_000_000) -> str:
        row = self.db.execute(self.SQL, (hashlib.sha256(secret.encode()).hexdigest(),)).fetchone()
        if row is None or row[1] is not None or row[2] < min_micros:
            raise PermissionError("invalid key or insufficient credits")
        return str(row[0])


class HandCharge:
    """The correct hand-written durable charge on stdlib sqlite3: WAL,
    synchronous=FULL, per call BEGIN IMMEDIATE; conditional UPDATE ...
    RETURNING; INSERT; COMMIT; a busy timeout. One connection per thread."""

    def __init__(self, path: str, create: bool = False) -> None:
        self.path = path
        self.conns: dict[int, sqlite3.Connection] = {}
        if create:
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE accounts (user_id TEXT PRIMARY KEY, balance INTEGER NOT NULL)")
            db.execute(
                "CREATE TABLE entries (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, amount INTEGER NOT NULL, "
                "balance_after INTEGER NOT NULL, created_at REAL NOT NULL)"
            )
            db.close()

    def conn(self, t: int) -> sqlite3.Connection:
        c = self.conns.get(t)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA synchronous=FULL")
            self.conns[t] = c
        return c

    def open_account(self, user: str, balance: int) -> None:
        self.conn(-1).execute("INSERT INTO accounts (user_id, balance) VALUES (?, ?)", (user, balance))

    def charge(self, t: int, user: str, amount: int) -> bool:
        c = self.conn(t)
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute(
                "UPDATE accounts SET balance = balance - ? WHERE user_id = ? AND balance >= ? RETURNING balance",
                (amount, user, amount),
            ).fetchall()
            if not row:
                c.execute("ROLLBACK")
                return False
            c.execute(
                "INSERT INTO entries (user_id, amount, balance_after, created_at) VALUES (?, ?, ?, ?)",
                (user, -amount, row[0][0], time.time()),
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return True

    def check(self, start: int, counts: dict[str, int]) -> None:
        """Each account's balance is its start plus the sum of its entries, one per successful charge."""
        for user, n in counts.items():
            balance, total, entries = (
                self.conn(-1)
                .execute(
                    "SELECT balance, (SELECT COALESCE(SUM(amount), 0) FROM entries WHERE user_id = ?1), "
                    "(SELECT COUNT(*) FROM entries WHERE user_id = ?1) FROM accounts WHERE user_id = ?1",
                    (user,),
                )
                .fetchone()
            )
            if balance != start + total or entries != n or total != -n:
                raise SystemExit(f"hand-written charge check failed for {user}: {balance=} {total=} {entries=} {n=}")


def fsync_floor(path: str, n: int) -> Stat:
    """The one-fsync-per-commit floor: tiny durable commits (BEGIN IMMEDIATE; UPDATE one row; COMMIT)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    db.execute("INSERT INTO t VALUES (1, 0)")

    def commit(t: int, i: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE t SET n = n + 1 WHERE id = 1")
        db.execute("COMMIT")

    s = timed(1, n, commit)
    (count,) = db.execute("SELECT n FROM t").fetchone()
    assert count == n
    db.close()
    return s


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


def seed_row(manager: SeedCreditManager, threads: int, writes: int) -> tuple[Stat, int, int]:
    """The seed-style manager charging 1 credit per call on one account; (stat, lost, charged)."""
    user = f"seed-{threads}"
    manager.add_credits(user, TOTAL_CREDITS)
    ok = [0] * threads

    def deduct(t: int, i: int) -> None:
        if manager.deduct_credits(user, 1):
            ok[t] += 1

    s = timed(threads, writes // threads, deduct)
    lost = manager.balance(user) - (TOTAL_CREDITS - sum(ok))
    return s, lost, sum(ok)


# ----- creditgate -------------------------------------------------------------


class Ledger:
    """A creditgate ledger with accounts (one key each) and the correctness check of its write rows."""

    def __init__(self, url: str, **kw: Any) -> None:
        self.url = url
        self.m = LocalCreditManager(url, **kw)
        self.secrets: dict[str, str] = {}
        self.key_ids: dict[str, str] = {}
        self.unit: Decimal | None = None

    def account(self, user: str) -> str:
        if user not in self.secrets:
            self.m.record_payment(user, f"pay-{user}", 100_000_000)
            key = self.m.create_api_key(user)
            self.secrets[user], self.key_ids[user] = key.secret, key.key_id
            if self.unit is None:  # the price of one charge, outside the timed rows
                self.unit = self.m.record_usage(key.secret, tokens=1000, request_id=f"warm-{user}").charged
        return self.secrets[user]

    def add_policy(self, user: str) -> None:
        """An expiring grant, a key cap and a rate limit that never refuses."""
        self.account(user)
        expires = datetime.now(timezone.utc) + timedelta(days=30)
        self.m.add_credits(user, 1_000_000, expires_at=expires)
        self.m.set_key_limit(self.key_ids[user], 10_000_000, "daily")
        self.m.set_rate_limit(self.key_ids[user], requests_per_minute=1_000_000_000, tokens_per_minute=10**12)

    def balances(self, users: list[str]) -> dict[str, Decimal]:
        return {u: self.m.get_balance(u) for u in users}

    def check(self, before: dict[str, Decimal], counts: dict[str, int]) -> None:
        """Audit ok, and each balance fell by exactly its charges (no lost update)."""
        assert self.unit is not None
        after = self.balances(list(before))
        for user, n in counts.items():
            if before[user] - after[user] != n * self.unit:
                raise SystemExit(f"creditgate check failed for {user}: {before[user]} - {after[user]} != {n} charges")
        if not self.m.audit().ok:
            raise SystemExit("creditgate check failed: audit not ok")

    def usage(self, users: list[str], threads: int, writes: int, tag: str) -> Stat:
        """`writes` record_usage calls over `threads` threads, thread t on users[t % len(users)]; checked."""
        secrets = [self.account(u) for u in users]
        before = self.balances(users)
        per = max(1, writes // threads)
        ok = [0] * threads

        def op(t: int, i: int) -> None:
            self.m.record_usage(secrets[t % len(secrets)], tokens=1000, request_id=f"{tag}-{t}-{i}")
            ok[t] += 1

        s = timed(threads, per, op)
        counts = dict.fromkeys(users, 0)
        for t in range(threads):
            counts[users[t % len(users)]] += ok[t]
        self.check(before, counts)
        return s


# ----- 4 processes x 8 threads on one file (the gunicorn layout) ---------------


def _mp_worker(kind: str, target: str, names: list[str], per_thread: int, barrier: Any, queue: Any, tag: str) -> None:
    """A spawned process: 8 threads, thread t charging names[t], after the barrier."""
    if kind == "creditgate":
        m = LocalCreditManager(target)
        m.verify_api_key_credits(names[0])  # opens the manager's connections before the clock starts

        def op(t: int, i: int) -> None:
            m.record_usage(names[t], tokens=1000, request_id=f"{tag}-{t}-{i}")

    else:
        hc = HandCharge(target)
        for t in range(len(names)):
            hc.conn(t)

        def op(t: int, i: int) -> None:
            if not hc.charge(t, names[t], 1):
                raise RuntimeError("refused")

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

    barrier.wait()
    start = time.monotonic()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(len(names))]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    queue.put((start, time.monotonic(), latencies))


def multiprocess(kind: str, target: str, groups: list[list[str]], per_thread: int, tag: str) -> Stat:
    """One spawned process per group, one thread per name; ops/s from the first start to the last end."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(groups) + 1)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_mp_worker, args=(kind, target, names, per_thread, barrier, queue, f"{tag}-{p}"))
        for p, names in enumerate(groups)
    ]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a {kind} benchmark process failed ({p.exitcode})")
    latencies = [x for r in results for x in r[2]]
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    return stat(latencies, len(latencies) / wall)


# ----- PostgreSQL ---------------------------------------------------------------


class PsycopgCreditManager:
    """The same manager on PostgreSQL, done right by hand: SELECT ... FOR UPDATE;
    UPDATE; INSERT; COMMIT per call, one connection per thread."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self.psycopg = psycopg
        self.conns: dict[int, Any] = {}
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE users (id TEXT PRIMARY KEY, credit_balance BIGINT NOT NULL)")
            c.execute(
                "CREATE TABLE credit_transactions "
                "(id BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, amount BIGINT NOT NULL, "
                "created_at DOUBLE PRECISION NOT NULL)"
            )

    def conn(self, t: int) -> Any:
        c = self.conns.get(t)
        if c is None:
            c = self.conns[t] = self.psycopg.connect(self.url)
        return c

    def open_account(self, user_id: str, amount: int) -> None:
        with self.conn(-1).transaction():
            self.conn(-1).execute("INSERT INTO users (id, credit_balance) VALUES (%s, %s)", (user_id, amount))

    def charge(self, t: int, user_id: str, amount: int) -> bool:
        c = self.conn(t)
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

    def check(self, start: int, counts: dict[str, int]) -> None:
        c = self.conn(-1)
        with c.transaction():
            for user, n in counts.items():
                balance, total, entries = c.execute(
                    "SELECT credit_balance, (SELECT COALESCE(SUM(amount), 0) FROM credit_transactions "
                    "WHERE user_id = %s), (SELECT COUNT(*) FROM credit_transactions WHERE user_id = %s) "
                    "FROM users WHERE id = %s",
                    (user, user, user),
                ).fetchone()
                if balance != start + total or entries != n or total != -n:
                    raise SystemExit(f"psycopg check failed for {user}: {balance=} {total=} {entries=} {n=}")

    def close(self) -> None:
        for c in self.conns.values():
            c.close()


class Baseline(Protocol):
    """A hand-written charge (HandCharge, PsycopgCreditManager): one
    connection per thread, checked against its own entries at the end."""

    def conn(self, t: int) -> Any: ...
    def open_account(self, user: str, balance: int) -> None: ...
    def charge(self, t: int, user: str, amount: int) -> bool: ...
    def check(self, start: int, counts: dict[str, int]) -> None: ...


def baseline_row(manager: Baseline, users: list[str], threads: int, writes: int) -> Stat:
    """`threads` threads charging 1 credit each from `users` (thread t uses
    users[t % len(users)]), then the baseline's own check of its balances."""
    for u in users:
        manager.open_account(u, TOTAL_CREDITS)
    for t in range(threads):
        manager.conn(t)
    ok = [0] * threads

    def op(t: int, i: int) -> None:
        if not manager.charge(t, users[t % len(users)], 1):
            raise RuntimeError("refused")
        ok[t] += 1

    s = timed(threads, max(1, writes // threads), op)
    counts = dict.fromkeys(users, 0)
    for t in range(threads):
        counts[users[t % len(users)]] += ok[t]
    manager.check(TOTAL_CREDITS, counts)
    return s


CREDIT_LEDGER_SCHEMA = [
    "CREATE TABLE tenants (id uuid PRIMARY KEY, slug text, name text)",
    "CREATE TABLE credit_balance (tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE, "
    "credits numeric(18, 4) NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE credit_ledger (id uuid PRIMARY KEY, "
    "tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, delta numeric(18, 4) NOT NULL, "
    "reason varchar(120) NOT NULL DEFAULT 'usage', idempotency_key varchar(200), balance_after numeric(18, 4), "
    "created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX ix_credit_ledger_tenant ON credit_ledger (tenant_id)",
    "ALTER TABLE credit_ledger ADD CONSTRAINT uq_credit_ledger_idem UNIQUE (tenant_id, idempotency_key)",
]


def credit_ledger_row(url: str, threads: int, writes: int) -> Stat:
    """credit-ledger 0.3.0's decrement, one tenant per thread, a pooled connection per thread; checked."""
    import psycopg
    from credit_ledger import metering
    from sqlalchemy import create_engine, text

    with psycopg.connect(url, autocommit=True) as setup:
        for sql in CREDIT_LEDGER_SCHEMA:
            setup.execute(sql)
    engine = create_engine(
        "postgresql+psycopg://" + url.split("://", 1)[1], future=True, pool_size=threads, max_overflow=threads
    )
    tenants = [str(uuid.uuid4()) for _ in range(threads)]
    with engine.begin() as conn:
        for tenant in tenants:
            conn.execute(
                text("INSERT INTO tenants (id, slug, name) VALUES (:id, :s, :s)"), {"id": tenant, "s": tenant[:8]}
            )
    for tenant in tenants:
        metering.grant(tenant, TOTAL_CREDITS, reason="bench-seed", engine=engine)
    warm = [engine.connect() for _ in range(threads)]  # the pool's connections, before the clock starts
    for w in warm:
        w.close()
    ok = [0] * threads

    def op(t: int, i: int) -> None:
        if not metering.decrement(tenants[t], 1, reason="bench", idempotency_key=f"cl-{t}-{i}", engine=engine).ok:
            raise RuntimeError("refused")
        ok[t] += 1

    s = timed(threads, max(1, writes // threads), op)
    with engine.begin() as conn:
        for t, tenant in enumerate(tenants):
            balance, total, entries = conn.execute(
                text(
                    "SELECT (SELECT credits FROM credit_balance WHERE tenant_id = :t), "
                    "(SELECT SUM(delta) FROM credit_ledger WHERE tenant_id = :t), "
                    "(SELECT COUNT(*) FROM credit_ledger WHERE tenant_id = :t AND reason = 'bench')"
                ),
                {"t": tenant},
            ).one()
            if balance != total or entries != ok[t] or balance != TOTAL_CREDITS - ok[t]:
                raise SystemExit(f"credit-ledger check failed: {balance=} {total=} {entries=} {ok[t]=}")
    engine.dispose()
    return s


def credit_ledger_importable() -> bool:
    try:
        import credit_ledger  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError:
        return False
    return True


def show(conn: Any, setting: str) -> str:
    """A server setting (`SHOW`), as text."""
    row = conn.execute(f"SHOW {setting}").fetchone()
    if row is None:
        raise SystemExit(f"SHOW {setting} returned no row")
    return str(row[0])


def postgres_lines(server_url: str, writes: int, quick: bool, with_credit_ledger: bool) -> tuple[str, list[Line]]:
    """creditgate on PostgreSQL against psycopg and credit-ledger, each on a scratch database."""
    import psycopg

    base, _, query = server_url.partition("?")
    root = base.rsplit("/", 1)[0]
    names = [f"cg_bench_{os.getpid()}_{n}" for n in ("creditgate", "psycopg", "credit_ledger")]
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
        settings = {s: show(admin, s) for s in ("server_version", "fsync", "synchronous_commit")}
    durable = settings["fsync"] == "on" and settings["synchronous_commit"] != "off"
    title = (
        f"Python on PostgreSQL {settings['server_version']} (fsync={settings['fsync']}, "
        f"synchronous_commit={settings['synchronous_commit']}{'' if durable else ': NOT durable'})"
    )
    if not durable and not quick:
        print(f"warning: the server is not durable ({title}); CREDITGATE_PG_DURABLE=1 bash scripts/pg.sh start")
    urls = [f"{root}/{name}" + (f"?{query}" if query else "") for name in names]
    lines: list[Line] = []
    try:
        cg = Ledger(urls[0])
        pg = PsycopgCreditManager(urls[1])
        one = writes // 2
        c1 = cg.usage(["pg-1"], 1, one, "pg1")
        b1 = baseline_row(pg, ["b-1"], 1, one)
        lines.append(Line("record_usage, 1 caller", c1, b1, 1.5, "≥ 1.5×"))
        per8 = [f"pg8-{t}" for t in range(8)]
        c8 = cg.usage(per8, 8, writes, "pg8")
        b8 = baseline_row(pg, [f"b8-{t}" for t in range(8)], 8, writes)
        lines.append(Line("record_usage, 8 threads, one account per thread", c8, b8, 3.0, "≥ 3×"))
        c32 = cg.usage([f"pg32-{t}" for t in range(32)], 32, writes, "pg32")
        b32 = baseline_row(pg, [f"b32-{t}" for t in range(32)], 32, writes)
        lines.append(Line("record_usage, 32 threads, one account per thread", c32, b32, 5.0, "≥ 5×"))
        cs = cg.usage(["pg-shared"], 8, writes, "pgs")
        bs = baseline_row(pg, ["b-shared"], 8, writes)
        lines.append(Line("record_usage, 8 threads, one shared account", cs, bs, 1.0, "≥ 1.0× (no worse)"))
        if with_credit_ledger:
            cl = credit_ledger_row(urls[2], 8, writes)
            lines.append(Line("record_usage vs credit-ledger 0.3.0 `decrement`, 8 threads", c8, cl, 5.0, "≥ 5×"))
        else:
            print("credit-ledger not importable: its row is skipped (pip install -r scripts/bench-requirements.txt)")
        pol = [f"pgpol-{t}" for t in range(8)]
        for u in pol:
            cg.add_policy(u)
        cp = cg.usage(pol, 8, writes, "pgpol")
        lines.append(
            Line("policy: record_usage, 8 threads (baseline: creditgate plain row)", cp, c8, 1 / 1.5, "≥ 0.67×")
        )
        pg.close()
        del cg
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for name in names:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return title, lines


# ----- SQLite -------------------------------------------------------------------


def sqlite_lines(tmp: str, keys: int, verifies: int, writes: int, mp_per_thread: int) -> tuple[list[Line], Stat]:
    cg = Ledger(f"sqlite:///{tmp}/cg.db", max_active_keys_per_user=100_000)
    m = cg.m
    # Legacy imports skip the credit gate, so the key table fills quickly.
    for i in range(keys):
        m.import_api_key(f"user-{i % 1000}", secret=f"legacy-bench-key-{i:08}")
    secret = cg.account("bench")
    lines: list[Line] = []

    cv = timed(1, verifies, lambda t, i: m.verify_api_key_credits(secret))
    hv = HandVerify(f"{tmp}/cg.db")
    bv = timed(1, verifies, lambda t, i: hv.verify(secret))
    lines.append(Line(f"verify, 1 thread ({keys} keys)", cv, bv, 1.5, "≥ 1.5×"))

    hand = HandCharge(f"{tmp}/hand.db", create=True)

    def hand_row(users: list[str], threads: int) -> Stat:
        return baseline_row(hand, users, threads, writes)

    one = writes // 2
    c1 = cg.usage(["sq-1"], 1, one, "sq1")
    b1 = hand_row(["h-1"], 1)
    floor = fsync_floor(f"{tmp}/floor.db", one)
    lines.append(Line("durable record_usage, 1 caller", c1, b1, 1.0, "≥ 1.0×"))
    lines.append(
        Line("↳ floor: one fsync per commit (`BEGIN IMMEDIATE; UPDATE one row; COMMIT`), 1 caller", None, floor)
    )
    u8 = [f"sq8-{t}" for t in range(8)]
    c8 = cg.usage(u8, 8, writes, "sq8")
    b8 = hand_row([f"h8-{t}" for t in range(8)], 8)
    lines.append(Line("durable record_usage, 8 threads, one account per thread", c8, b8, 5.0, "≥ 5×"))

    groups = [[f"sqmp-{p}-{t}" for t in range(8)] for p in range(4)]
    flat = [u for g in groups for u in g]
    for u in flat:
        cg.account(u)
    before = cg.balances(flat)
    cmp_ = multiprocess("creditgate", cg.url, [[cg.secrets[u] for u in g] for g in groups], mp_per_thread, "sqmp")
    cg.check(before, dict.fromkeys(flat, mp_per_thread))
    hgroups = [[f"hmp-{p}-{t}" for t in range(8)] for p in range(4)]
    for g in hgroups:
        for u in g:
            hand.open_account(u, TOTAL_CREDITS)
    bmp = multiprocess("hand", hand.path, hgroups, mp_per_thread, "hmp")
    hand.check(TOTAL_CREDITS, {u: mp_per_thread for g in hgroups for u in g})
    lines.append(Line("durable record_usage, 4 processes × 8 threads, one file", cmp_, bmp, 3.0, "≥ 3×"))

    seed = SeedCreditManager(f"{tmp}/seed.db")
    c32 = cg.usage([f"sq32-{t}" for t in range(32)], 32, writes, "sq32")
    for threads, c in ((1, c1), (8, c8), (32, c32)):
        s, lost, charged = seed_row(seed, threads, max(threads, one if threads == 1 else writes))
        lines.append(
            Line(
                f"seed-style sqlite3 (read, write back), {threads} thread{'s' if threads > 1 else ''}: "
                f"loses {lost} of {charged} updates",
                c,
                s,
            )
        )

    # Policy rows, after the plain ones (a rate limit turns rate counting on ledger-wide).
    pol = [f"sqpol-{t}" for t in range(8)]
    for u in pol:
        cg.add_policy(u)
    psecret = cg.secrets[pol[0]]
    pv = timed(1, verifies, lambda t, i: m.verify_api_key_credits(psecret))
    lines.append(Line("policy: verify (baseline: creditgate plain row)", pv, cv, 1 / 1.5, "≥ 0.67×"))
    p1 = cg.usage(pol[:1], 1, one, "sqpol1")
    lines.append(Line("policy: record_usage, 1 caller (baseline: creditgate plain row)", p1, c1, 1 / 1.5, "≥ 0.67×"))
    p8 = cg.usage(pol, 8, writes, "sqpol8")
    lines.append(Line("policy: record_usage, 8 threads (baseline: creditgate plain row)", p8, c8, 1 / 1.5, "≥ 0.67×"))
    return lines, floor


def table(title: str, lines: list[Line]) -> str:
    out = [
        f"### {title}",
        "",
        "| path | creditgate ops/s | baseline ops/s | ratio (creditgate/baseline) | target | met? "
        "| creditgate p50 / p99 µs | baseline p50 / p99 µs |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for ln in lines:
        ratio = ln.cg.ops / ln.base.ops if ln.cg and ln.base else None
        met = "–" if ln.target is None or ratio is None else ("yes" if ratio >= ln.target else "no")
        out.append(
            f"| {ln.path} | {f'{ln.cg.ops:,.0f}' if ln.cg else '–'} | {f'{ln.base.ops:,.0f}' if ln.base else '–'} "
            f"| {f'{ratio:.2f}×' if ratio is not None else '–'} | {ln.target_text} | {met} "
            f"| {f'{ln.cg.p50:.1f} / {ln.cg.p99:.1f}' if ln.cg else '–'} "
            f"| {f'{ln.base.p50:.1f} / {ln.base.p99:.1f}' if ln.base else '–'} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, numbers not meaningful")
    parser.add_argument("--postgres", metavar="URL", help="also benchmark PostgreSQL (a server URL)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    args = parser.parse_args()
    keys = 2_000 if args.quick else 100_000
    verifies = 2_000 if args.quick else 100_000
    writes = 64 if args.quick else 4_096
    mp_per_thread = 4 if args.quick else 128
    with_cl = credit_ledger_importable()
    if args.postgres and not with_cl and not args.quick:
        sys.exit("credit-ledger is not importable: pip install -r scripts/bench-requirements.txt (or use --quick)")

    with tempfile.TemporaryDirectory() as tmp:
        sqlite, _ = sqlite_lines(tmp, keys, verifies, writes, mp_per_thread)
    out = [table("Python on SQLite (WAL, synchronous=FULL)", sqlite)]
    if args.postgres:
        out.append(table(*postgres_lines(args.postgres, writes, args.quick, with_cl)))
    note = (
        f"({keys} keys in the table; {writes} writes per row, 4 × 8 × {mp_per_thread} in the multi-process row"
        f"{'; quick smoke run, numbers not meaningful' if args.quick else ''}. "
        "Every write row was checked at its end: creditgate's audit ok and balances fell by exactly its charges; "
        "each hand-written baseline's balance equals the sum of its entries.)\n"
    )
    text = "\n".join(out) + "\n" + note
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
