"""Prices from Python (issue 20; docs/pricing.md): every component of a
price charged by the one rule (rounded up once, plus the fee), cache counts
on record_usage and settle, price versions (a settle priced at its reserve,
a replay at its first charge, scheduled versions), the rates each usage
entry records, and bad input with the documented exceptions. Runs on SQLite
and on PostgreSQL (conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from creditgate import (
    AsyncLocalCreditManager,
    IdempotencyConflict,
    InvalidArgument,
    LocalCreditManager,
    ModelPrice,
    PriceVersion,
)

D = Decimal


def usage_entry(m: LocalCreditManager, entry_id: str) -> Any:
    return next(e for e in m.transactions("alice", limit=1000) if e.id == entry_id)


def test_every_component_is_charged_once_rounded_up(manager: LocalCreditManager, paid_key: str) -> None:
    v = manager.set_model_price(
        "gpt-x", "2", "4", cached_input_per_1k="0.5", cache_write_per_1k="3", request_fee="0.01"
    )
    assert isinstance(v, PriceVersion) and v.model == "gpt-x"
    assert v.effective_at == v.set_at and v.effective_at.tzinfo is not None
    p = v.price
    assert isinstance(p, ModelPrice)
    assert (p.input_per_1k, p.output_per_1k, p.cached_input_per_1k, p.cache_write_per_1k, p.request_fee) == (
        D(2),
        D(4),
        D("0.5"),
        D(3),
        D("0.01"),
    )
    # 700 uncached * 2 + 200 cached * 0.5 + 100 written * 3 + 500 output * 4 = 3800 per 1k -> 3.8, + 0.01.
    c = manager.record_usage(
        paid_key, input_tokens=1000, output_tokens=500, cached_input_tokens=200, cache_write_tokens=100, model="gpt-x"
    )
    assert c.charged == D("3.81")
    assert c.tokens == 1500
    e = usage_entry(manager, c.entry_id)
    assert (e.input_tokens, e.output_tokens, e.cached_input_tokens, e.cache_write_tokens) == (1000, 500, 200, 100)
    assert e.price is not None and e.price.to_dict() == p.to_dict()
    assert e.to_dict()["price"].to_dict() == p.to_dict()
    # One rounding, up, to the micro-credit: 1 token at 0.000001 per 1k is 0.001 micro-credits -> 1.
    manager.set_model_price("tiny", "0.000001", "0")
    assert manager.record_usage(paid_key, input_tokens=1, model="tiny").charged == D("0.000001")
    # 3 tokens at 0.000333 per 1k: 0.999 micro-credits summed exactly, then rounded once -> 1, not 3.
    manager.set_model_price("third", "0.000333", "0.000333")
    assert manager.record_usage(paid_key, input_tokens=2, output_tokens=1, model="third").charged == D("0.000001")
    assert manager.audit().ok


def test_cache_tokens_without_cache_prices_cost_the_input_price(manager: LocalCreditManager, paid_key: str) -> None:
    manager.set_model_price("plain", "1", "2")
    with_cache = manager.record_usage(
        paid_key, input_tokens=1000, output_tokens=10, cached_input_tokens=600, cache_write_tokens=400, model="plain"
    )
    without = manager.record_usage(paid_key, input_tokens=1000, output_tokens=10, model="plain")
    assert with_cache.charged == without.charged == D("1.02")
    e = usage_entry(manager, without.entry_id)
    assert (e.cached_input_tokens, e.cache_write_tokens) == (0, 0)
    assert e.price is not None and e.price.cached_input_per_1k is None and e.price.request_fee == 0
    # A charge of a given amount records no rates.
    hold = manager.reserve(paid_key, credits=5)
    credit_charge = manager.settle(hold.hold_id, credits=2)
    assert usage_entry(manager, credit_charge.entry_id).price is None


def test_reserve_holds_the_highest_prompt_rate_and_settle_fits(manager: LocalCreditManager, paid_key: str) -> None:
    manager.set_model_price("m", "1", "2", cached_input_per_1k="0.1", cache_write_per_1k="3", request_fee="0.5")
    hold = manager.reserve(paid_key, input_tokens=1000, output_tokens=100, model="m")
    assert hold.amount == D("3.7")  # 1000 * 3 + 100 * 2 per 1k, + 0.5
    charge = manager.settle(hold.hold_id, input_tokens=1000, output_tokens=100, cache_write_tokens=1000, model="m")
    assert charge.charged == D("3.7")
    assert manager.account("alice").held == 0
    hold = manager.reserve(paid_key, input_tokens=1000, output_tokens=100, model="m")
    charge = manager.settle(hold.hold_id, input_tokens=1000, output_tokens=100, cached_input_tokens=1000, model="m")
    assert charge.charged == D("0.8")  # 1000 * 0.1 + 100 * 2, + 0.5


def test_a_settle_uses_the_price_of_its_reserve(manager: LocalCreditManager, paid_key: str) -> None:
    manager.set_model_price("m", "1", "1")
    hold = manager.reserve(paid_key, input_tokens=2000, output_tokens=2000, model="m")
    manager.set_model_price("m", "10", "10", request_fee="1")
    assert manager.model_prices()["m"].input_per_1k == 10
    charge = manager.settle(hold.hold_id, input_tokens=1000, output_tokens=1000, model="m")
    assert charge.charged == D(2)  # the reserve's rates, not today's 21
    e = usage_entry(manager, charge.entry_id)
    assert e.price is not None and (e.price.input_per_1k, e.price.request_fee) == (D(1), D(0))
    # A charge made now pays the new version.
    assert manager.record_usage(paid_key, input_tokens=1000, output_tokens=1000, model="m").charged == D(21)
    assert manager.audit().ok


def test_a_replay_charges_the_first_price(manager: LocalCreditManager, paid_key: str) -> None:
    manager.set_model_price("m", "1", "1")
    first = manager.record_usage(
        paid_key, input_tokens=1000, output_tokens=0, cached_input_tokens=500, model="m", request_id="r1"
    )
    manager.set_model_price("m", "7", "7", cached_input_per_1k="1")
    again = manager.record_usage(
        paid_key, input_tokens=1000, output_tokens=0, cached_input_tokens=500, model="m", request_id="r1"
    )
    assert again.replayed and not first.replayed
    assert (again.entry_id, again.charged, again.balance) == (first.entry_id, first.charged, first.balance)
    assert first.charged == D(1)
    # Other cache counts under the same request id are another call: a conflict.
    with pytest.raises(IdempotencyConflict):
        manager.record_usage(
            paid_key, input_tokens=1000, output_tokens=0, cached_input_tokens=400, model="m", request_id="r1"
        )


def test_versions_history_and_scheduled_prices(manager: LocalCreditManager) -> None:
    manager.set_model_price("a", "1", "2")
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    scheduled = manager.set_model_price("a", "3", "4", cache_write_per_1k="5", effective_at=later)
    assert scheduled.effective_at == later and scheduled.set_at < later
    manager.set_model_price("b", "9", "9")
    # In effect now: the first version of a, and b.
    now = manager.model_prices()
    assert set(now) == {"a", "b"} and now["a"].input_per_1k == 1
    assert manager.list_model_prices() == {"a": (D(1), D(2)), "b": (D(9), D(9))}
    history = manager.price_history("a")
    assert [(v.model, v.price.input_per_1k) for v in history] == [("a", D(1)), ("a", D(3))]
    assert history[0].effective_at < history[1].effective_at
    assert [v.model for v in manager.price_history()] == ["a", "a", "b"]
    assert manager.price_history("unknown") == []
    # The same effective time again replaces that scheduled version.
    manager.set_model_price("a", "6", "6", effective_at=later)
    assert [v.price.input_per_1k for v in manager.price_history("a")] == [D(1), D(6)]
    assert history[1].to_dict()["price"].cache_write_per_1k == 5


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"input_per_1k": "-1"}, InvalidArgument, "input_per_1k"),
        ({"output_per_1k": -2}, InvalidArgument, "output_per_1k"),
        ({"cached_input_per_1k": "-0.5"}, InvalidArgument, "cached_input_per_1k"),
        ({"cache_write_per_1k": D("-3")}, InvalidArgument, "cache_write_per_1k"),
        ({"request_fee": "-0.01"}, InvalidArgument, "request_fee"),
        ({"request_fee": "0.0000001"}, InvalidArgument, "request_fee"),
        ({"cached_input_per_1k": 0.5}, TypeError, "float"),
        ({"effective_at": datetime(2099, 1, 1)}, InvalidArgument, "naive"),
        ({"effective_at": "2099-01-01"}, TypeError, "datetime"),
        ({"effective_at": datetime(2000, 1, 1, tzinfo=timezone.utc)}, InvalidArgument, "past"),
    ],
)
def test_bad_prices_are_refused(
    manager: LocalCreditManager, kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"input_per_1k": "1", "output_per_1k": "1", **kwargs}
    with pytest.raises(exc, match=match):
        manager.set_model_price("m", **args)
    assert manager.price_history() == []


def test_bad_cache_counts_are_refused(manager: LocalCreditManager, paid_key: str) -> None:
    with pytest.raises(InvalidArgument, match="must not exceed input_tokens"):
        manager.record_usage(paid_key, input_tokens=100, cached_input_tokens=60, cache_write_tokens=41)
    with pytest.raises(InvalidArgument, match="cached_input_tokens"):
        manager.record_usage(paid_key, input_tokens=100, cached_input_tokens=-1)
    with pytest.raises(TypeError, match="cache_write_tokens must be an int"):
        manager.record_usage(paid_key, input_tokens=100, cache_write_tokens=True)
    hold = manager.reserve(paid_key, credits=10)
    with pytest.raises(InvalidArgument, match="not both"):
        manager.settle(hold.hold_id, credits=1, cached_input_tokens=5)
    with pytest.raises(InvalidArgument, match="must not exceed input_tokens"):
        manager.settle(hold.hold_id, input_tokens=10, cache_write_tokens=11)
    # Nothing was charged by the refused calls; the hold is still active.
    assert manager.get_balance("alice") == 5000 and manager.account("alice").held == 10
    assert manager.settle(hold.hold_id, credits=1, cached_input_tokens=0).charged == 1


def test_async_prices(db_url: str) -> None:
    async def main() -> None:
        async with AsyncLocalCreditManager(db_url) as m:
            await m.record_payment("alice", "pay", 500)
            key = (await m.create_api_key("alice")).secret
            v = await m.set_model_price("m", "1", "2", cached_input_per_1k="0.25", request_fee="0.1")
            assert v.price.cached_input_per_1k == D("0.25")
            assert (await m.model_prices())["m"].to_dict() == v.price.to_dict()
            assert [x.model for x in await m.price_history("m")] == ["m"]
            hold = await m.reserve(key, input_tokens=1000, output_tokens=0, model="m")
            c = await m.settle(hold.hold_id, input_tokens=1000, cached_input_tokens=1000, model="m")
            assert c.charged == D("0.35")
            c = await m.record_usage(key, input_tokens=1000, cache_write_tokens=1000, model="m")
            assert c.charged == D("1.1")
            with pytest.raises(InvalidArgument):
                await m.set_model_price("m", "-1", "1")

    asyncio.run(main())
