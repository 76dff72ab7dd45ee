"""Holds from Python as the integrations use them: the worst case quoted at
each token's own rate, the status of a replayed hold, the retry rule of the
FastAPI glue (``creditgate._holds``), 402 before 429, usage that must be
given, and ``errors_total`` counting every error a caller gets."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from creditgate import (
    AsyncLocalCreditManager,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidArgument,
    LocalCreditManager,
    RateLimited,
)
from creditgate.fastapi import CreditGate
from starlette.requests import Request


def _request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""})


def test_reserve_quotes_input_and_output_at_their_own_rates(manager: LocalCreditManager, paid_key: str) -> None:
    manager.set_model_price("dear", 1, 20)
    hold = manager.reserve(paid_key, input_tokens=1500, output_tokens=101, model="dear")
    assert (hold.amount, hold.status, hold.replayed) == (Decimal("3.52"), "active", False)
    # The quote is the charge's formula: the same usage settles to the hold.
    assert manager.settle(hold.hold_id, input_tokens=1500, output_tokens=101).charged == hold.amount
    # tokens= alone is input tokens, as before.
    assert manager.reserve(paid_key, tokens=1000, model="dear").amount == 1
    with pytest.raises(InvalidArgument, match="exactly one of credits and token counts"):
        manager.reserve(paid_key, credits=1, output_tokens=5)
    with pytest.raises(InvalidArgument, match="not both"):
        manager.reserve(paid_key, tokens=1, output_tokens=5)
    with pytest.raises(InvalidArgument):
        manager.reserve(paid_key)


def test_a_balance_covering_only_input_prices_is_refused(manager: LocalCreditManager, paid_key: str) -> None:
    manager.set_model_price("dear", 1, 20)
    manager.deduct_credits("alice", manager.get_balance("alice") - 4)
    with pytest.raises(InsufficientCredits):
        manager.reserve(paid_key, input_tokens=100, output_tokens=1000, model="dear")
    assert manager.account("alice").held == 0


def test_a_replayed_hold_carries_its_status(manager: LocalCreditManager, paid_key: str) -> None:
    first = manager.reserve(paid_key, credits=2, request_id="call-1")
    assert manager.reserve(paid_key, credits=2, request_id="call-1").status == "active"
    manager.release(first.hold_id)
    again = manager.reserve(paid_key, credits=2, request_id="call-1")
    assert (again.hold_id, again.replayed, again.status) == (first.hold_id, True, "released")
    assert again.to_dict()["status"] == "released"
    settled = manager.reserve(paid_key, credits=2, request_id="call-2")
    manager.settle(settled.hold_id, credits=1)
    assert manager.reserve(paid_key, credits=2, request_id="call-2").status == "settled"


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_fastapi_meter_never_runs_on_a_finished_hold(db_url: str, flavour: str) -> None:
    sync = LocalCreditManager(db_url)
    sync.record_payment("alice", "pay_1", 500)
    key = sync.create_api_key("alice").secret
    ledger = sync if flavour == "sync" else AsyncLocalCreditManager(db_url)
    gate = CreditGate(ledger)

    async def scenario() -> None:
        first = await gate.meter(_request(), key, input_tokens=100, max_output_tokens=100, request_id="req-1")
        with pytest.raises(IdempotencyConflict, match="in progress"):
            # A duplicate while the first is in flight would run the call twice for one charge.
            await gate.meter(_request(), key, input_tokens=100, max_output_tokens=100, request_id="req-1")
        await first.release()  # the upstream failed: nothing charged
        retry = await gate.meter(_request(), key, input_tokens=100, max_output_tokens=100, request_id="req-1")
        assert retry.hold_id != first.hold_id and retry.hold.status == "active"
        assert sync.account("alice").held > 0
        charge = await retry.settle(output_tokens=50)
        assert charge.charged > 0
        with pytest.raises(IdempotencyConflict, match="already settled"):
            await gate.meter(_request(), key, input_tokens=100, max_output_tokens=100, request_id="req-1")

    asyncio.run(scenario())
    usage = [e for e in sync.transactions("alice", limit=100) if e.kind == "usage"]
    assert len(usage) == 1, "the call is charged exactly once"
    assert sync.account("alice").held == 0
    assert sync.audit().ok


def test_the_fastapi_meter_quotes_like_the_core(manager: LocalCreditManager, paid_key: str) -> None:
    manager.set_model_price("dear", 1, 20)
    gate = CreditGate(manager)
    meter = asyncio.run(gate.meter(_request(), paid_key, model="dear", input_tokens=1500, max_output_tokens=101))
    assert meter.hold.amount == manager.reserve(paid_key, input_tokens=1500, output_tokens=101, model="dear").amount


def test_reserve_answers_402_before_429(manager: LocalCreditManager, paid_key: str) -> None:
    key_id = manager.list_api_keys("alice")[0].key_id
    manager.set_rate_limit(key_id, requests_per_minute=1)
    manager.reserve(paid_key, credits=1)
    with pytest.raises(InsufficientCredits):
        manager.reserve(paid_key, credits=10**9)
    manager.set_key_limit(key_id, 2, "daily")
    with pytest.raises(InsufficientCredits) as cap:
        manager.reserve(paid_key, credits=3)
    assert cap.value.limit_source == "key"
    with pytest.raises(RateLimited):
        manager.reserve(paid_key, credits=1)


def test_usage_must_be_given(manager: LocalCreditManager, paid_key: str) -> None:
    hold = manager.reserve(paid_key, credits=1)
    before = manager.get_balance("alice")
    with pytest.raises(InvalidArgument, match="no usage given"):
        manager.record_usage(paid_key)
    with pytest.raises(InvalidArgument, match="no usage given"):
        manager.settle(hold.hold_id)
    assert manager.get_balance("alice") == before
    # Explicit zeros are real counts.
    assert manager.record_usage(paid_key, input_tokens=0).charged == 0
    assert manager.settle(hold.hold_id, output_tokens=0).charged == 0


def test_errors_total_counts_conversion_errors_once(manager: LocalCreditManager, paid_key: str) -> None:
    def errors() -> dict[str, int]:
        text = manager.metrics_prometheus()
        out = {}
        for line in text.splitlines():
            if line.startswith("creditgate_errors_total{"):
                code = line.split('code="', 1)[1].split('"', 1)[0]
                out[code] = int(line.rsplit(" ", 1)[1])
        return out

    start = errors()
    total = manager.metrics()["errors_total"]
    with pytest.raises(InvalidArgument):
        manager.add_credits("u", "abc")  # caught while converting
    with pytest.raises(InvalidArgument):
        manager.record_usage(paid_key)  # caught while converting
    with pytest.raises(InvalidArgument):
        manager.add_credits("u", -1)  # caught by the core
    with pytest.raises(InsufficientCredits):
        manager.reserve(paid_key, credits=10**9)  # refused by the core
    with pytest.raises(TypeError):
        manager.add_credits("u", 1.5)  # type: ignore[arg-type]  # not a creditgate error: not counted
    manager.get_balance("alice")  # a success after errors counts nothing
    end = errors()
    assert end["invalid_argument"] - start["invalid_argument"] == 3
    assert end["insufficient_credits"] - start["insufficient_credits"] == 1
    assert manager.metrics()["errors_total"] - total == 4
