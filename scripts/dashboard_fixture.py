"""Builds a large, consistent SQLite ledger for the dashboard benchmark
(scripts/bench_dashboard.py): N users with one key each, purchases and usage
spread over the last D days, some accounts overdrawn, outstanding holds and
events. Written with Python's sqlite3 in one transaction after the library
created the schema (a fixture only: the ledger is closed while it is written,
so the two SQLite libraries never share the file). `creditgate audit` passes
on the result: balances are the sums of entries, `balance_after` chains, and
each purchase's grant holds what usage left of it.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import time
import uuid

from creditgate import LocalCreditManager

MICROS = 1_000_000
DAY_MICROS = 86_400 * MICROS
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b", "mistral-large", "o3")
# Credits per 1,000 input and output tokens, per model (in micro-credits).
RATES = {m: (MICROS * (i + 1), MICROS * 3 * (i + 1)) for i, m in enumerate(MODELS)}


def uuid7(created_at_micros: int, rng: random.Random) -> str:
    """A UUIDv7 whose timestamp is the entry's own (as the library writes them)."""
    ms = created_at_micros // 1000
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62) | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def build(path: str, users: int, entries: int, days: int, seed: int = 7) -> None:
    if os.path.exists(path):
        os.remove(path)
    LocalCreditManager(f"sqlite:///{path}").migrate()
    rng = random.Random(seed)
    now = time.time_ns() // 1000
    start = now - days * DAY_MICROS
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    rows_entries: list[tuple[object, ...]] = []
    rows_accounts: list[tuple[object, ...]] = []
    rows_keys: list[tuple[object, ...]] = []
    rows_grants: list[tuple[object, ...]] = []
    rows_events: list[tuple[str, str, None, str, int]] = []
    usage_per_user = max(0, entries - users) // users
    extra = max(0, entries - users) - usage_per_user * users
    for price_model, (rate_in, rate_out) in RATES.items():
        db.execute(
            "INSERT INTO creditgate_prices (model, effective_at, input_per_1k, output_per_1k, set_at) "
            "VALUES (?, 0, ?, ?, ?)",
            (price_model, rate_in, rate_out, start),
        )
    for n in range(users):
        user = f"user-{n:06d}"
        created = start + rng.randrange(0, max(1, (days - 1) * DAY_MICROS))
        key_id = uuid7(created + 1000, rng)
        purchase = 5_000 * MICROS * rng.choice((1, 1, 1, 2, 4))
        purchase_id = uuid7(created, rng)
        rows_entries.append(
            (purchase_id, user, 1, "purchase", purchase, purchase, f"payment:pi_{n}", f"payment:pi_{n}", f"pi_{n}",
             None, None, None, None, purchase // (10 * MICROS), "USD", created)
        )  # fmt: skip
        rows_keys.append(
            (key_id, user, "prod", "sk_" + format(n, "05x")[-5:], format(rng.getrandbits(256), "064x"),
             "peppered", 0, created + 1000, None)
        )  # fmt: skip
        rows_events.append(("purchase.first", user, None, '{"amount":"5000"}', created))
        balance, seq, t = purchase, 1, created + 2000
        count = usage_per_user + (1 if n < extra else 0)
        # One user in 50 spends past zero (an overdraft the dashboard lists first).
        heavy = n % 50 == 0
        last_used = None
        for _ in range(count):
            t = min(now - 1, t + rng.randrange(1, max(2, (now - t) // max(1, count))))
            model = rng.choice(MODELS)
            tokens_in, tokens_out = rng.randrange(100, 4000), rng.randrange(10, 1500)
            rate_in, rate_out = RATES[model]
            cost = (tokens_in * rate_in + tokens_out * rate_out) // 1000
            if heavy:
                cost *= 200
            seq += 1
            balance -= cost
            rows_entries.append(
                (uuid7(t, rng), user, seq, "usage", -cost, balance, f"usage:r{n}-{seq}", None, None,
                 key_id, tokens_in, tokens_out, model, None, None, t)
            )  # fmt: skip
            last_used = t
        rows_accounts.append((user, balance, seq, 1, created, -1_000_000 * MICROS if heavy else 0))
        rows_grants.append((user, purchase_id, "paid", purchase, max(0, balance), created, f"pi_{n}"))
        if last_used is not None:
            rows_keys[-1] = rows_keys[-1][:-1] + (last_used,)
        if balance < 1000 * MICROS:
            rows_events.append(("balance.low", user, None, '{"threshold":"1000"}', t))
    db.executemany(
        "INSERT INTO creditgate_accounts (user_id, balance, last_seq, first_key_issued, created_at, min_balance) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows_accounts,
    )
    db.executemany(
        "INSERT INTO creditgate_entries (id, user_id, seq, kind, amount, balance_after, idempotency_key, global_key, "
        "reference, api_key_id, input_tokens, output_tokens, model, amount_minor, currency, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows_entries,
    )
    db.executemany(
        "INSERT INTO creditgate_api_keys (id, user_id, name, prefix, key_hash, hash_kind, legacy, created_at, "
        "last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows_keys,
    )
    db.executemany(
        "INSERT INTO creditgate_grants (user_id, entry_id, category, priority, amount, remaining, created_at, "
        "payment_id) VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
        rows_grants,
    )
    rows_events.sort(key=lambda e: e[4])  # ids in time order, as the outbox writes them
    db.executemany(
        "INSERT INTO creditgate_events (kind, user_id, api_key_id, data, created_at) VALUES (?, ?, ?, ?, ?)",
        rows_events,
    )
    db.commit()
    db.execute("ANALYZE")
    db.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("path")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=180)
    a = p.parse_args()
    t0 = time.perf_counter()
    build(a.path, a.users, a.entries, a.days)
    print(f"built {a.path}: {a.users} users and keys, {a.entries} entries in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
