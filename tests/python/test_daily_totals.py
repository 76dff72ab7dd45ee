"""daily_totals from Python (issue 22; docs/reference.md): the ledger's entries
per UTC day, kind, model and currency equal the sums of its own entries, as
typed objects and dicts; a bad range raises InvalidArgument; the asyncio
manager gives the same rows. Runs on SQLite and on PostgreSQL (conftest.py);
the rollup itself is tested in Rust (tests/daily_totals.rs), with a clock."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from creditgate import AsyncLocalCreditManager, DailyTotal, InvalidArgument, LocalCreditManager
from creditgate._creditgate import MAX_TOTALS_DAYS

UTC = timezone.utc


def test_totals_are_the_sums_of_the_entries(manager: LocalCreditManager) -> None:
    manager.set_model_price("m-1", 1, 2)
    manager.record_payment("alice", "pi_1", 500)
    manager.record_payment("bob", "pi_2", 250, "usd")
    key = manager.create_api_key("alice").secret
    for i in range(3):
        manager.record_usage(key, input_tokens=1000 + i, output_tokens=10, model="m-1", cached_input_tokens=5)
    manager.record_usage(key, input_tokens=40, output_tokens=4)
    manager.deduct_credits("bob", "1.5")
    now = datetime.now(UTC)
    rows = manager.daily_totals(now - timedelta(days=1), now + timedelta(minutes=1))
    assert all(isinstance(r, DailyTotal) for r in rows)
    keys = [(r.day, r.kind, r.model or "", r.currency or "") for r in rows]
    assert keys == sorted(keys), "ordered by day, kind, model, currency"
    expected: dict[tuple[object, ...], list[Decimal | int]] = defaultdict(lambda: [0, Decimal(0), 0, 0, 0, 0])
    for user in ("alice", "bob"):
        for e in manager.transactions(user):
            day = e.created_at.replace(hour=0, minute=0, second=0, microsecond=0)
            s = expected[(day, e.kind, e.model, e.currency)]
            s[0] += 1
            s[1] += e.amount
            s[2] += e.amount_minor or 0
            s[3] += e.input_tokens or 0
            s[4] += e.output_tokens or 0
            s[5] += e.cached_input_tokens or 0
    got = {
        (r.day, r.kind, r.model, r.currency): [
            r.entries,
            r.amount,
            r.amount_minor,
            r.input_tokens,
            r.output_tokens,
            r.cached_input_tokens,
        ]
        for r in rows
    }
    assert got == expected
    usage = next(r for r in rows if r.kind == "usage" and r.model == "m-1")
    assert (usage.entries, usage.input_tokens, usage.cache_write_tokens) == (3, 3003, 0)
    assert isinstance(usage.amount, Decimal) and usage.amount < 0
    assert usage.day.tzinfo is not None and usage.day.hour == 0
    d = usage.to_dict()
    assert d["kind"] == "usage" and d["amount"] == usage.amount and d["currency"] is None
    purchases = [r for r in rows if r.kind == "purchase"]
    assert sum(r.amount_minor for r in purchases) == 750
    report = manager.report()
    assert report.credits_purchased == sum(r.amount for r in purchases)
    assert report.credits_used == -sum(r.amount for r in rows if r.kind in ("usage", "deduct"))


def test_a_bad_range_is_refused(manager: LocalCreditManager) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert manager.daily_totals(start, start + timedelta(days=MAX_TOTALS_DAYS)) == []
    for since, until in [
        (start, start),
        (start + timedelta(seconds=1), start),
        (start, start + timedelta(days=MAX_TOTALS_DAYS, microseconds=1)),
    ]:
        with pytest.raises(InvalidArgument):
            manager.daily_totals(since, until)


def test_the_async_manager_gives_the_same_rows(db_url: str) -> None:
    sync = LocalCreditManager(db_url)
    sync.record_payment("carol", "pi_c", 300)
    now = datetime.now(UTC)

    async def run() -> list[DailyTotal]:
        async with AsyncLocalCreditManager.from_manager(sync) as m:
            return await m.daily_totals(now - timedelta(days=2), now + timedelta(days=1))

    rows = asyncio.run(run())
    assert [r.to_dict() for r in rows] == [r.to_dict() for r in sync.daily_totals(now - timedelta(days=2), now)]
