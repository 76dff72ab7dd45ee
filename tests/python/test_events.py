"""The outbox from Python: `events(after, limit)` returns what the changes
wrote in their own transactions, in commit order, and a reader following the
cursor while processes write sees each event exactly once."""

from __future__ import annotations

import multiprocessing
import time
from decimal import Decimal

import pytest
from conftest import settled_events
from creditgate import AsyncLocalCreditManager, Event, InsufficientCredits, InvalidArgument, LocalCreditManager


def test_threshold_overdraft_and_key_events(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITGATE_LOW_BALANCE_THRESHOLDS", "10, 4500")
    m = LocalCreditManager(database_url=db_url)
    m.record_payment("ann", "pay_1", 500)  # $5: 5,000 credits
    key = m.create_api_key("ann", "main")
    m.record_usage(key.secret, input_tokens=600_000)  # 5,000 -> 4,400: crosses 4,500
    m.deduct_credits("ann", 4_390)  # -> 10: not below 10
    m.record_usage(key.secret, input_tokens=20_000)  # -> -10: crosses 10 and 0
    m.revoke_api_key(key.key_id)
    events = settled_events(m, page_size=5)
    assert [e.kind for e in events] == [
        "purchase.first",
        "key.created",
        "balance.low",
        "balance.low",
        "overdraft",
        "key.revoked",
    ]
    first, created, low_4500, low_10, overdraft, revoked = events
    assert first.data["amount"] == "5000" and first.api_key_id is None
    assert created.api_key_id == key.key_id == revoked.api_key_id
    assert created.data == {"name": "main", "first_key": True}
    assert (low_4500.data["threshold"], low_4500.data["balance"]) == ("4500", "4400")
    assert (low_10.data["threshold"], Decimal(low_10.data["balance"])) == ("10", Decimal(-10))
    assert overdraft.data["balance"] == "-10"
    assert all(e.user_id == "ann" for e in events)
    assert len({e.id for e in events}) == len(events)
    assert events[0].to_dict()["kind"] == "purchase.first"
    assert "purchase.first" in repr(events[0])


def test_failed_and_replayed_changes_write_nothing(manager: LocalCreditManager) -> None:
    manager.add_credits("bob", 3)
    with pytest.raises(InsufficientCredits):
        manager.deduct_credits("bob", 5)  # refused: no event
    manager.add_credits("bob", 2, kind="purchase", idempotency_key="p1")
    manager.add_credits("bob", 2, kind="purchase", idempotency_key="p1")  # replay
    assert [e.kind for e in settled_events(manager, page_size=5)] == ["purchase.first"]


@pytest.mark.parametrize(("after", "limit"), [(-1, 10), (0, 0), (0, 1001), (10**6, 10), (2**63, 10), (0, -1)])
def test_bad_cursor_or_limit_is_invalid_argument(manager: LocalCreditManager, after: int, limit: int) -> None:
    with pytest.raises(InvalidArgument):
        manager.events(after=after, limit=limit)


@pytest.mark.parametrize("bad", [1.5, "3", True, b"1"])
def test_wrong_types_are_type_errors(manager: LocalCreditManager, bad: object) -> None:
    with pytest.raises(TypeError):
        manager.events(after=bad)  # type: ignore[arg-type]


async def _async_events(url: str) -> list[Event]:
    async with AsyncLocalCreditManager(database_url=url) as m:
        await m.add_credits("cy", 1, kind="purchase")
        return await m.events(0, 10)


def test_async_front_door(db_url: str) -> None:
    import asyncio

    events = asyncio.run(_async_events(db_url))
    assert [e.kind for e in events] == ["purchase.first"]


def _writer(url: str, tag: str, users: int) -> None:
    m = LocalCreditManager(database_url=url)
    for i in range(users):
        m.add_credits(f"{tag}-{i}", 1, kind="purchase")


def test_a_reader_sees_each_event_once_while_processes_write(db_url: str) -> None:
    m = LocalCreditManager(database_url=db_url)
    ctx = multiprocessing.get_context("spawn")
    users = 30
    procs = [ctx.Process(target=_writer, args=(db_url, f"w{p}", users)) for p in range(3)]
    for p in procs:
        p.start()
    seen: list[Event] = []
    deadline = time.monotonic() + 120
    while len(seen) < 3 * users and time.monotonic() < deadline:
        page = m.events(after=seen[-1].id if seen else 0, limit=7)
        if not page:
            time.sleep(0.005)
        seen.extend(page)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(seen) == 3 * users, "events lost"
    assert len({e.id for e in seen}) == len(seen), "an event delivered twice"
    assert {e.user_id for e in seen} == {f"w{p}-{i}" for p in range(3) for i in range(users)}
    assert [e.id for e in settled_events(m, page_size=5)] == [e.id for e in seen]
