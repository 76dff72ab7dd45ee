"""Auto top-up from Python (docs/auto-topup.md), on the test backend: a rule,
its top-ups and their payment, under 3 processes x 4 threads of charges on one
account (one top-up per crossing, the monthly cap honoured), a retried
handler and the Stripe mapper crediting once, and the `creditgate topup`
commands."""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_POSTGRES, settled_events
from creditgate import (
    AsyncLocalCreditManager,
    AutoTopup,
    IdempotencyConflict,
    InvalidArgument,
    LocalCreditManager,
    NotFound,
    Topup,
)
from creditgate.stripe import handle_event

PROCESSES = 3
THREADS = 4
OPS_PER_THREAD = 30
STRIPE_SECRET = "whsec_test_topups"


def cents(t: Topup) -> int:
    """What a host's handler charges: the top-up in USD cents (10 credits per cent), rounded up."""
    return int((t.amount / 10).to_integral_value(rounding="ROUND_CEILING"))


def test_a_crossing_requests_once_and_the_rule_shows_on_the_account(manager: LocalCreditManager) -> None:
    manager.add_credits("u", 100)
    assert manager.set_auto_topup("u", 50, amount=30, max_per_month=5, monthly_cap=1000) is None
    manager.deduct_credits("u", 60)  # 40: crosses
    manager.deduct_credits("u", 10)  # 30: stays below
    [t] = manager.topups("u")
    assert (t.user_id, t.amount, t.status, t.reason, t.entry_id) == ("u", Decimal(30), "requested", None, None)
    assert t.id.startswith("tu_") and t.created_at == t.updated_at
    a = manager.account("u")
    assert isinstance(a.auto_topup, AutoTopup)
    assert a.auto_topup.to_dict() == {
        "threshold": Decimal(50),
        "amount": Decimal(30),
        "target": None,
        "max_per_month": 5,
        "monthly_cap": Decimal(1000),
    }
    assert [x.id for x in a.topups_this_month] == [t.id]
    [ev] = [e for e in settled_events(manager) if e.kind == "topup.requested"]
    assert ev.user_id == "u"
    assert ev.data["topup_id"] == t.id and ev.data["amount_minor"] == 3 and ev.data["currency"] == "USD"
    # Up to a target: what takes the available balance there.
    manager.set_auto_topup("v", 50, target=120, max_per_month=5, monthly_cap=1000)
    assert manager.topups("v")[0].amount == Decimal(120)
    assert manager.remove_auto_topup("u") is True
    assert manager.remove_auto_topup("u") is False
    assert manager.account("u").auto_topup is None


def test_bad_rules_are_refused_and_change_nothing(manager: LocalCreditManager) -> None:
    bad: list[dict[str, Any]] = [
        {"amount": 30, "target": 100},
        {},
        {"amount": 0},
        {"target": 50},
        {"amount": 30, "max_per_month": 0},
        {"amount": 30, "max_per_month": 101},
        {"amount": 30, "monthly_cap": 0},
        {"amount": "x"},
    ]
    for b in bad:
        kw: dict[str, Any] = {"max_per_month": 5, "monthly_cap": 1000, **b}
        with pytest.raises(InvalidArgument):
            manager.set_auto_topup("u", 50, **kw)
    with pytest.raises(InvalidArgument):
        manager.set_auto_topup("u", -1, amount=30, max_per_month=5, monthly_cap=1000)
    assert manager.account("u").created_at is None
    with pytest.raises(NotFound):
        manager.record_topup_failure("tu_00000000000000000000000000000000", "declined")
    with pytest.raises(InvalidArgument):
        manager.topups("u", limit=0)


def test_a_retried_handler_and_the_stripe_mapper_credit_once(manager: LocalCreditManager) -> None:
    manager.add_credits("u", 40)
    t = manager.set_auto_topup("u", 50, amount=30, max_per_month=5, monthly_cap=1000)
    assert t is not None, "already below: requested at once"
    first = manager.record_payment("u", t.id, cents(t))
    second = manager.record_payment("u", t.id, cents(t))
    assert (first.replayed, second.replayed) == (False, True)
    assert manager.get_balance("u") == Decimal(70)
    [paid] = manager.topups("u")
    assert (paid.status, paid.entry_id) == ("paid", first.id)
    # Stripe's own webhook for the same payment, after the handler: nothing more.
    intent = {
        "id": "pi_topup",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": cents(t),
        "amount_received": cents(t),
        "currency": "usd",
        "metadata": {"creditgate_user": "u", "creditgate_topup_id": t.id},
    }
    r = deliver(manager, intent)
    assert r.action == "replayed" and r.entries[0].id == first.id
    assert manager.get_balance("u") == Decimal(70)
    kinds = [e.kind for e in settled_events(manager)]
    assert kinds.count("topup.requested") == 1 and kinds.count("topup.paid") == 1
    # A paid top-up cannot be recorded as failed.
    with pytest.raises(IdempotencyConflict):
        manager.record_topup_failure(t.id, "declined")


def test_the_stripe_mapper_first_then_the_handler_credit_once(manager: LocalCreditManager) -> None:
    t = manager.set_auto_topup("u", 50, amount=30, max_per_month=5, monthly_cap=1000)
    assert t is not None
    intent = {
        "id": "pi_first",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": cents(t),
        "amount_received": cents(t),
        "currency": "usd",
        "metadata": {"creditgate_user": "u", "creditgate_topup_id": t.id},
    }
    assert deliver(manager, intent).action == "credited"
    assert manager.record_payment("u", t.id, cents(t)).replayed
    assert manager.get_balance("u") == Decimal(30)
    assert manager.topups("u")[0].status == "paid"


def test_a_failure_is_recorded_once_and_counts(manager: LocalCreditManager) -> None:
    manager.add_credits("u", 100)
    manager.set_auto_topup("u", 50, amount=30, max_per_month=1, monthly_cap=1000)
    manager.deduct_credits("u", 60)
    [t] = manager.topups("u")
    failed = manager.record_topup_failure(t.id, "card_declined")
    assert (failed.status, failed.reason) == ("failed", "card_declined")
    assert manager.record_topup_failure(t.id, "again").to_dict() == failed.to_dict()
    manager.add_credits("u", 60)
    manager.deduct_credits("u", 60)  # crosses again: the month's one top-up is used
    assert len(manager.topups("u")) == 1
    events = settled_events(manager)
    assert [e.kind for e in events].count("topup.failed") == 1
    [skipped] = [e for e in events if e.kind == "topup.skipped"]
    assert skipped.data["reason"] == "max_per_month"


def test_the_async_manager_mirrors_the_methods(db_url: str) -> None:
    import asyncio

    async def run() -> None:
        async with AsyncLocalCreditManager(db_url) as m:
            t = await m.set_auto_topup("a", 10, amount=5, max_per_month=2, monthly_cap=100)
            assert t is not None
            assert [x.id for x in await m.topups("a", limit=10)] == [t.id]
            assert (await m.record_topup_failure(t.id, "no card")).status == "failed"
            assert await m.remove_auto_topup("a") is True

    asyncio.run(run())


def deliver(m: LocalCreditManager, obj: dict[str, Any]) -> Any:
    body = json.dumps(
        {
            "id": f"evt_{obj['id']}_{time.monotonic_ns()}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "livemode": False,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    ).encode()
    t = int(time.time())
    mac = hmac.new(STRIPE_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return handle_event(m, body, f"t={t},v1={mac}", STRIPE_SECRET)


# ----- 3 processes x 4 threads ---------------------------------------------------


def _charging_process(url: str, key: str, worker: int) -> int:
    """Runs in a spawned process: 4 threads charging one account (10 credits
    a call, never refused) and crediting it back now and then (20)."""
    m = LocalCreditManager(url)

    def thread(t: int) -> int:
        for i in range(OPS_PER_THREAD):
            if (i + t + worker) % 3 == 0:
                m.add_credits("shared", 20)
            else:
                m.record_usage(key, tokens=10_000)
        return OPS_PER_THREAD

    with ThreadPoolExecutor(THREADS) as pool:
        return sum(pool.map(thread, range(THREADS)))


def crossings_in_history(m: LocalCreditManager, user: str, threshold: Decimal, after_seq: int) -> int:
    """Crossings of `threshold` by the balance (the available balance: no
    holds, floor or expiries here), entry by entry after seq `after_seq`."""
    entries = []
    before = None
    while True:
        page = m.transactions(user, limit=1000, before=before)
        if not page:
            break
        entries.extend(page)
        before = page[-1].id
    crossed = 0
    for e in sorted(entries, key=lambda e: e.seq):
        was = e.balance_after - e.amount
        if e.seq > after_seq and was >= threshold > e.balance_after:
            crossed += 1
    return crossed


def test_processes_and_threads_cross_once_per_crossing_within_the_monthly_cap(db_url: str) -> None:
    m = LocalCreditManager(db_url, min_credits_api_key=0)
    key = m.create_api_key("shared").secret
    m.add_credits("shared", 100)
    # 10 credits a top-up, at most 25 credits a month: 10, 10, 5, then skipped.
    assert m.set_auto_topup("shared", 95, amount=10, max_per_month=100, monthly_cap=25) is None
    rule_seq = m.transactions("shared", limit=1)[0].seq
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        done = pool.starmap(_charging_process, [(db_url, key, w) for w in range(PROCESSES)])
    assert sum(done) == PROCESSES * THREADS * OPS_PER_THREAD
    expected = crossings_in_history(m, "shared", Decimal(95), rule_seq)
    assert expected > 3, f"the workload crossed only {expected} times: the cap was not reached"
    topups = list(reversed(m.topups("shared", limit=1000)))
    assert [t.amount for t in topups] == [Decimal(10), Decimal(10), Decimal(5)], "the monthly credit cap"
    events = [e for e in settled_events(m) if e.user_id == "shared"]
    requested = [e for e in events if e.kind == "topup.requested"]
    skipped = [e for e in events if e.kind == "topup.skipped"]
    assert sorted(e.data["topup_id"] for e in requested) == sorted(t.id for t in topups)
    assert {e.data["reason"] for e in skipped} == {"monthly_cap"}
    assert len(requested) + len(skipped) == expected, "one request (or skip) per crossing"
    assert m.audit().ok


# ----- the command line ----------------------------------------------------------


def cli(url: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "creditgate", "--database-url", url, "topup", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (r.returncode == 0) == ok, (args, r.returncode, r.stdout, r.stderr)
    return r


def test_the_topup_commands(db_url: str, tmp_path: Path) -> None:
    m = LocalCreditManager(db_url)  # creates the ledger (the CLI does not)
    m.add_credits("u", 100)
    out = cli(db_url, "set", "u", "--threshold", "50", "--amount", "30", "--max-per-month", "3", "--monthly-cap", "90")
    assert "auto top-up set for u" in out.stdout
    m.deduct_credits("u", 60)
    shown = cli(db_url, "show", "u").stdout
    assert "below 50 request 30; at most 3 top-ups and 90 credits per month" in shown
    assert "1 top-ups, 30 credits requested" in shown
    [t] = m.topups("u")
    assert t.id in shown and "requested" in shown
    as_json = json.loads(cli(db_url, "show", "u", "--format", "json").stdout, parse_float=Decimal)
    assert as_json["auto_topup"]["threshold"] == 50 and as_json["topups"][0]["id"] == t.id
    failed = cli(db_url, "fail", t.id, "--reason", "card_declined").stdout
    assert "failed (card_declined)" in failed
    assert m.topups("u")[0].status == "failed"
    assert "auto top-up removed for u" in cli(db_url, "remove", "u").stdout
    assert "had no auto top-up rule" in cli(db_url, "remove", "u").stdout
    # Exactly one of --amount and --target; a bad rule is the core's InvalidArgument.
    bad = cli(db_url, "set", "u", "--threshold", "50", "--max-per-month", "3", "--monthly-cap", "90", ok=False)
    assert bad.returncode == 2
    target = ["--target", "40", "--max-per-month", "3", "--monthly-cap", "90"]
    bad = cli(db_url, "set", "u", "--threshold", "50", *target, ok=False)
    assert "error: invalid_argument:" in bad.stderr
    # Set while below: requested at once.
    out = cli(db_url, "set", "u", "--threshold", "50", "--target", "100", "--max-per-month", "3", "--monthly-cap", "90")
    assert "already below the threshold: requested tu_" in out.stdout
    if not IS_POSTGRES:
        assert (tmp_path / "ledger.db").exists()
