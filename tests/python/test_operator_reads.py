"""The operator's reads and write context from Python (issue 22): a manager
``acting_as`` an operator records it in entries and events and shares the
ledger; list_accounts, holds, recent_events and daily_flows convert their
arguments and results."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from creditgate import (
    AccountPage,
    AccountSummary,
    AsyncLocalCreditManager,
    DayFlow,
    InvalidArgument,
    LocalCreditManager,
)
from creditgate._creditgate import MAX_TOTALS_DAYS


def test_acting_as_records_the_operator_and_shares_the_ledger(manager: LocalCreditManager) -> None:
    ops = manager.acting_as("ops@example.com")
    assert (ops.operator, manager.operator) == ("ops@example.com", None)
    assert "operator='ops@example.com'" in repr(ops)
    entry = ops.add_credits("u", 5, metadata={"note": "goodwill", "operator": "spoofed"})
    assert entry.metadata == {"note": "goodwill", "operator": "ops@example.com"}
    assert manager.add_credits("u", 1).metadata is None
    with pytest.raises(InvalidArgument, match="reserved"):
        manager.add_credits("u", 1, metadata={"operator": "spoofed"})  # only an acting_as handle names one
    assert manager.get_balance("u") == 6, "one ledger"
    for bad in ["", "a\nb", "x" * 65]:
        with pytest.raises(InvalidArgument):
            manager.acting_as(bad)
    with pytest.raises(TypeError):
        manager.acting_as(7)  # type: ignore[arg-type]


def test_operator_events(manager: LocalCreditManager, paid_key: str) -> None:
    key_id = manager.verify_api_key_credits(paid_key).key_id
    manager.acting_as("Jane Doe").revoke_api_key(key_id)
    (revoked,) = manager.recent_events(kind="key.revoked")
    assert revoked.data["operator"] == "Jane Doe" and revoked.api_key_id == key_id
    (created,) = manager.recent_events(user_id="alice", kind="key.created")
    assert "operator" not in created.data
    events = manager.recent_events(limit=2)
    assert events[0].id > events[1].id
    older = manager.recent_events(before=events[-1].id)
    assert all(e.id < events[-1].id for e in older)
    with pytest.raises(InvalidArgument):
        manager.recent_events(limit=0)


def test_list_accounts_and_holds(manager: LocalCreditManager, paid_key: str) -> None:
    manager.add_credits("bob", 10)
    manager.set_min_balance("carol", -5)
    manager.deduct_credits("carol", 2)
    hold = manager.reserve(paid_key, credits=3)
    page = manager.list_accounts(order="balance", limit=2)
    assert isinstance(page, AccountPage) and page.total == 3
    assert [a.user_id for a in page.accounts] == ["carol", "bob"]
    assert all(isinstance(a, AccountSummary) for a in page.accounts)
    assert page.accounts[0].balance == Decimal(-2) and page.accounts[0].min_balance == Decimal(-5)
    assert page.to_dict()["total"] == 3
    (alice,) = manager.list_accounts(search="ali").accounts
    assert (alice.held, alice.active_keys) == (Decimal(3), 1)
    assert set(alice.to_dict()) == {"user_id", "balance", "min_balance", "held", "active_keys", "created_at"}
    assert [a.user_id for a in manager.list_accounts(below=0).accounts] == ["carol"]
    assert manager.list_accounts(offset=1, order="-balance").accounts[0].user_id == "bob"
    for bad in [{"order": "richest"}, {"limit": 0}, {"search": ""}, {"offset": -1}]:
        with pytest.raises(InvalidArgument):
            manager.list_accounts(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        manager.list_accounts(below=1.5)  # type: ignore[arg-type]

    assert [h.hold_id for h in manager.holds("alice")] == [hold.hold_id]
    manager.release(hold.hold_id)
    assert manager.holds("alice") == []
    (released,) = manager.holds("alice", active_only=False)
    assert released.status == "released"
    with pytest.raises(TypeError):
        manager.holds("alice", active_only=1)  # type: ignore[arg-type]


def test_daily_flows(manager: LocalCreditManager, paid_key: str) -> None:
    manager.deduct_credits("alice", 7)
    now = datetime.now(timezone.utc)
    flows = manager.daily_flows(now - timedelta(days=1), now + timedelta(days=1))
    assert flows and all(isinstance(f, DayFlow) for f in flows)
    assert sum((f.purchased for f in flows), Decimal(0)) == manager.report().credits_purchased == 5000
    assert sum((f.used for f in flows), Decimal(0)) == 7
    assert flows[0].day.tzinfo is not None and flows[0].day.hour == 0
    assert set(flows[0].to_dict()) == {"day", "purchased", "used", "entries"}
    with pytest.raises(InvalidArgument):
        manager.daily_flows(now, now)
    with pytest.raises(InvalidArgument):
        manager.daily_flows(now - timedelta(days=MAX_TOTALS_DAYS + 1), now)  # the daily totals' range


def test_async_acting_as_shares_the_pool(db_url: str) -> None:
    async def main() -> None:
        async with AsyncLocalCreditManager(db_url) as credits:
            ops = await credits.acting_as("ops")
            assert ops.operator == "ops" and credits.operator is None
            entry = await ops.add_credits("u", 1)
            assert entry.metadata == {"operator": "ops"}
            await ops.aclose()  # the pool stays with `credits`
            page = await credits.list_accounts()
            assert page.total == 1
            assert (await credits.recent_events()) == []
            assert await credits.holds("u") == []
            now = datetime.now(timezone.utc)
            assert len(await credits.daily_flows(now - timedelta(hours=1), now + timedelta(hours=1))) >= 1

    asyncio.run(main())
