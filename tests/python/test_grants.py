"""Grants from Python: options of add_credits/record_payment, the draw-down
order seen through Account.grants, expiry (real clock, about a second),
expire_grants, grant-aware reversals, the async wrapper and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from creditgate import (
    AsyncLocalCreditManager,
    ExpirySweep,
    Grant,
    InsufficientCredits,
    InvalidArgument,
    LocalCreditManager,
)


def remaining(manager: LocalCreditManager, user: str) -> list[Decimal]:
    return [g.remaining for g in manager.account(user).grants]


def test_grant_options_and_the_draw_down_order(manager: LocalCreditManager) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=30)
    sooner = datetime.now(timezone.utc) + timedelta(days=3)
    paid = manager.record_payment("u", "pay-1", 100)  # 1000 paid
    promo_late = manager.add_credits("u", 20, expires_at=later)  # kind grant: promotional
    promo_soon = manager.add_credits("u", 30, expires_at=sooner, priority=0)
    promo_low = manager.add_credits("u", 40, priority=7)
    refund = manager.add_credits("u", "0.5", kind="refund", category="promotional", priority=-3)
    grants = manager.account("u").grants
    assert all(isinstance(g, Grant) for g in grants)
    assert [g.source_entry_id for g in grants] == [
        refund.id,
        promo_soon.id,
        promo_late.id,
        promo_low.id,
        paid.id,
    ]
    first = grants[0]
    assert (first.category, first.priority) == ("promotional", -3)
    assert (first.amount, first.remaining) == (Decimal("0.5"), Decimal("0.5"))
    assert grants[1].expires_at is not None and abs(grants[1].expires_at - sooner) < timedelta(microseconds=1)
    assert grants[4].category == "paid" and grants[4].payment_id == "pay-1" and grants[4].expires_at is None
    assert isinstance(grants[4].grant_id, int) and grants[4].to_dict()["remaining"] == Decimal("1000")
    # Compared by value: the same account read twice is equal, dicts included.
    assert manager.account("u").grants == grants and manager.account("u").to_dict() == manager.account("u").to_dict()
    assert len(set(grants) | set(manager.account("u").grants)) == len(grants)
    assert grants[0] != grants[1] and grants[0] != "grant"
    manager.deduct_credits("u", "60.5")  # refund 0.5, soon 30, late 20, low 10 of 40
    assert remaining(manager, "u") == [Decimal("30"), Decimal("1000")]
    assert manager.audit().ok


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"priority": 1001}, InvalidArgument),
        ({"priority": -(2**40)}, InvalidArgument),
        ({"priority": True}, TypeError),
        ({"priority": 1.0}, TypeError),
        ({"category": "free"}, InvalidArgument),
        ({"expires_at": datetime(2000, 1, 1, tzinfo=timezone.utc)}, InvalidArgument),
        ({"expires_at": datetime(2099, 1, 1)}, InvalidArgument),  # naive
        ({"expires_at": "2099-01-01T00:00:00Z"}, TypeError),
        ({"expires_at": 4102444800}, TypeError),
    ],
)
def test_bad_grant_options(manager: LocalCreditManager, kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        manager.add_credits("u", 5, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error):
        manager.record_payment("u", "p", 100, **kwargs)  # type: ignore[arg-type]
    assert manager.get_balance("u") == 0 and manager.transactions("u") == []


def test_a_negative_adjustment_takes_no_grant_options(manager: LocalCreditManager) -> None:
    manager.add_credits("u", 5)
    with pytest.raises(InvalidArgument):
        manager.add_credits("u", -1, kind="adjustment", category="paid")
    assert manager.get_balance("u") == 5


def test_expiry_is_lazy_on_reads_and_writes_and_swept(manager: LocalCreditManager) -> None:
    soon = datetime.now(timezone.utc) + timedelta(milliseconds=600)
    manager.add_credits("u", 10, expires_at=soon)
    manager.add_credits("v", 4, expires_at=soon)
    manager.add_credits("u", 3, kind="purchase")
    manager.deduct_credits("u", 2)  # from the promotional grant: 8 left
    assert manager.get_balance("u") == 11
    time.sleep(max(0.0, (soon - datetime.now(timezone.utc)).total_seconds()) + 0.2)
    # Reads drop expired credits at once and write nothing.
    assert manager.get_balance("u") == 3
    account = manager.account("u")
    assert (account.balance, account.available, remaining(manager, "u")) == (Decimal(3), Decimal(3), [Decimal(3)])
    assert [e.kind for e in manager.transactions("u")] == ["deduct", "purchase", "grant"]
    with pytest.raises(InsufficientCredits):
        manager.deduct_credits("u", 4)
    # The next write applies the expiry first.
    manager.deduct_credits("u", 1)
    kinds = [(e.kind, e.amount) for e in manager.transactions("u")]
    assert kinds[:2] == [("deduct", Decimal("-1")), ("expiry", Decimal("-8"))]
    # The sweep takes care of the account nobody wrote to.
    sweep = manager.expire_grants()
    assert isinstance(sweep, ExpirySweep)
    assert (sweep.accounts, sweep.entries, sweep.credits) == (1, 1, Decimal("4"))
    assert manager.expire_grants(limit=5).entries == 0
    with pytest.raises(InvalidArgument):
        manager.expire_grants(limit=0)
    assert manager.transactions("v")[0].kind == "expiry"
    assert manager.audit().ok


def test_reversal_reports_what_was_already_spent(manager: LocalCreditManager) -> None:
    manager.record_payment("u", "p1", 500)  # 5000
    manager.record_payment("u", "p2", 500)
    manager.deduct_credits("u", 1500)  # all from p1 (the oldest paid grant)
    reversal = manager.reverse_payment("p1", reason="chargeback")
    assert reversal.metadata is not None
    assert reversal.metadata["reason"] == "chargeback"
    assert reversal.metadata["from_grant_micros"] == 3_500_000_000
    assert reversal.metadata["already_spent_micros"] == 1_500_000_000
    assert remaining(manager, "u") == [Decimal("3500")]
    assert manager.audit().ok


def test_async_wrapper_passes_grant_options(db_url: str) -> None:
    async def main() -> None:
        async with AsyncLocalCreditManager(db_url) as m:
            expires = datetime.now(timezone.utc) + timedelta(days=1)
            await m.add_credits("u", 5, expires_at=expires, category="paid", priority=2)
            await m.record_payment("u", "pay", 100, expires_at=expires, priority=-1)
            grants = (await m.account("u")).grants
            assert [(g.category, g.priority) for g in grants] == [("paid", -1), ("paid", 2)]
            assert (await m.expire_grants()).entries == 0

    asyncio.run(main())


def cli(tmp_path: Path, *args: str) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    r = subprocess.run(
        [sys.executable, "-m", "creditgate", "--database-url", url, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ),
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


@pytest.mark.sqlite_only("the CLI runs on its own SQLite file")
def test_cli_grant_options_balance_and_expire(tmp_path: Path) -> None:
    cli(tmp_path, "migrate")  # only migrate creates a ledger
    expires = datetime.now(timezone.utc) + timedelta(seconds=3)  # each CLI call starts a Python process
    soon = expires.isoformat().replace("+00:00", "Z")
    cli(tmp_path, "grant", "--user", "u", "--amount", "7", "--expires-at", soon, "--priority", "3")
    cli(tmp_path, "grant", "--user", "u", "--amount", "2", "--kind", "purchase", "--category", "promotional")
    account = json.loads(cli(tmp_path, "balance", "--user", "u", "--json"), parse_float=Decimal)
    assert [(g["category"], g["priority"], g["remaining"]) for g in account["grants"]] == [
        ("promotional", 0, 2),
        ("promotional", 3, 7),
    ]
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 0.2)
    totals = json.loads(cli(tmp_path, "expire", "--json"), parse_float=Decimal)
    assert totals == {"accounts": 1, "entries": 1, "credits": 7, "refills": 0}
    assert "expired 0 grants of 0 accounts" in cli(tmp_path, "expire")
    rows = json.loads(cli(tmp_path, "transactions", "--user", "u", "--format", "json"), parse_float=Decimal)
    assert [(r["kind"], r["amount"]) for r in rows] == [("expiry", -7), ("purchase", 2), ("grant", 7)]
    assert "expiry" in cli(tmp_path, "transactions", "--user", "u", "--format", "csv")
    assert "ok" in cli(tmp_path, "audit")
