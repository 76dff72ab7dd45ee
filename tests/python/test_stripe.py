"""creditgate.stripe: Stripe webhooks against the ledger, on the test backend.

Payloads are built and signed here the way Stripe signs them
(``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`` with
the endpoint secret): no network. Every event the module maps, replays,
out-of-order delivery, bad signatures, and one event delivered to three
processes at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import multiprocessing
import time
from decimal import Decimal
from typing import Any

import pytest
from conftest import settled_events
from creditgate import AsyncLocalCreditManager, InvalidArgument, LocalCreditManager
from creditgate.stripe import StripeResult, handle_event, handle_event_async, stripe_router

SECRET = "whsec_test_0123456789abcdef"
_ids = iter(range(1, 1_000_000))


def sign(body: bytes, secret: str = SECRET, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    body = {
        "id": event_id or f"evt_{next(_ids)}",
        "object": "event",
        "type": kind,
        "livemode": False,
        "created": int(time.time()),
        "data": {"object": obj},
    }
    return json.dumps(body).encode()


def session(
    pi: str = "pi_1", amount: int = 500, currency: str = "usd", user: str | None = "alice", **extra: Any
) -> dict[str, Any]:
    return {
        "id": f"cs_{pi}",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "payment_intent": pi,
        "amount_total": amount,
        "currency": currency,
        "client_reference_id": None,
        "metadata": {"creditgate_user": user} if user else {},
        **extra,
    }


def intent(pi: str = "pi_1", amount: int = 500, currency: str = "usd", **metadata: str) -> dict[str, Any]:
    return {
        "id": pi,
        "object": "payment_intent",
        "status": "succeeded",
        "amount": amount,
        "amount_received": amount,
        "currency": currency,
        "metadata": metadata,
    }


def refund(refund_id: str, pi: str = "pi_1", amount: int = 200, status: str = "succeeded") -> dict[str, Any]:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "charge": f"ch_{pi}",
        "payment_intent": pi,
        "status": status,
        "currency": "usd",
    }


def dispute(dispute_id: str, pi: str = "pi_1", amount: int = 500, status: str = "needs_response") -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "charge": f"ch_{pi}",
        "payment_intent": pi,
        "status": status,
        "currency": "usd",
    }


def deliver(m: LocalCreditManager, body: bytes, secret: str = SECRET) -> StripeResult:
    return handle_event(m, body, sign(body), secret)


# ----- payments ---------------------------------------------------------------------


def test_checkout_and_its_payment_intent_credit_once(manager: LocalCreditManager) -> None:
    paid = event("checkout.session.completed", session())
    r = deliver(manager, paid)
    assert (r.status_code, r.action, r.body["received"]) == (200, "credited", True)
    assert r.entries[0].reference == "pi_1" and r.entries[0].amount == Decimal(5000)
    # The same delivery again, and the PaymentIntent's own event: the same entry.
    again = deliver(manager, paid)
    pi = deliver(manager, event("payment_intent.succeeded", intent(creditgate_user="alice")))
    assert (again.action, pi.action) == ("replayed", "replayed")
    assert again.entries[0].id == pi.entries[0].id == r.entries[0].id
    assert manager.get_balance("alice") == Decimal(5000)
    assert manager.metrics()["purchases_total"] == 1


def test_payment_intent_first_then_checkout(manager: LocalCreditManager) -> None:
    assert deliver(manager, event("payment_intent.succeeded", intent(creditgate_user="bob"))).action == "credited"
    s = session(user=None, client_reference_id="bob")
    assert deliver(manager, event("checkout.session.completed", s)).action == "replayed"
    assert manager.get_balance("bob") == Decimal(5000)


def test_client_reference_id_names_the_account(manager: LocalCreditManager) -> None:
    s = session(pi="pi_ref", amount=1234, user=None, client_reference_id="carol")
    assert deliver(manager, event("checkout.session.completed", s)).action == "credited"
    assert manager.get_balance("carol") == Decimal(12_340)


def test_an_async_payment_is_credited_when_it_succeeds(manager: LocalCreditManager) -> None:
    pending = session(pi="pi_async", payment_status="unpaid")
    r = deliver(manager, event("checkout.session.completed", pending))
    assert (r.status_code, r.action) == (200, "ignored")
    assert manager.get_balance("alice") == 0
    done = deliver(manager, event("checkout.session.async_payment_succeeded", session(pi="pi_async")))
    assert done.action == "credited"
    assert manager.get_balance("alice") == Decimal(5000)


def test_currencies_are_upper_cased_and_credited_at_their_rate(db_url: str) -> None:
    m = LocalCreditManager(db_url, currency_rates={"EUR": ("1100", 2), "JPY": (Decimal("7.5"), 0)})
    deliver(m, event("checkout.session.completed", session(pi="pi_eur", amount=1999, currency="eur")))
    deliver(m, event("payment_intent.succeeded", intent("pi_jpy", 3, "jpy", creditgate_user="alice")))
    assert m.get_balance("alice") == Decimal("21989") + Decimal("22.5")
    assert m.report().revenue_minor_by_currency == {"EUR": 1999, "JPY": 3}
    # No rate for GBP: acknowledged (the money is Stripe's to refund) and recorded for an operator.
    r = deliver(m, event("checkout.session.completed", session(pi="pi_gbp", currency="gbp")))
    assert (r.status_code, r.action) == (200, "refused")
    (e,) = settled_events(m)[-1:]
    assert e.kind == "payment.unmapped" and e.data["payment_id"] == "pi_gbp" and "GBP" in e.data["reason"]


def test_currency_rates_are_exact_and_checked(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bad_types: list[Any] = [{"EUR": (1100.0, 2)}, {"EUR": "1100:2"}, {"EUR": ("1100",)}, ["EUR"], {1: ("1", 2)}]
    for rates in bad_types:
        with pytest.raises(TypeError):
            LocalCreditManager(db_url, currency_rates=rates)
    for rates in ({"EUR": ("1100", 5)}, {"EURO": ("1", 2)}, {"EUR": ("0", 2)}, {"EUR": ("0.0000001", 2)}):
        with pytest.raises(InvalidArgument):
            LocalCreditManager(db_url, currency_rates=rates)
    monkeypatch.setenv("CREDITGATE_CURRENCY_RATES", "EUR=1100:2,KWD=0.0065:3")
    m = LocalCreditManager(db_url, currency_rates={"JPY": (7, 0)})
    assert m.record_payment("u", "p_eur", 1, "eur").amount == Decimal(11)
    assert m.record_payment("u", "p_kwd", 1, "KWD").amount == Decimal("0.000006")  # rounded down
    assert m.record_payment("u", "p_jpy", 2, "JPY").amount == Decimal(14)
    with pytest.raises(InvalidArgument):
        m.record_payment("u", "p_gbp", 1, "GBP")


def test_a_paid_session_without_an_account_is_recorded_for_an_operator(manager: LocalCreditManager) -> None:
    r = deliver(manager, event("checkout.session.completed", session(pi="pi_lost", user=None), "evt_lost"))
    assert (r.status_code, r.action) == (200, "unmapped")
    (e,) = settled_events(manager)
    assert (e.kind, e.user_id) == ("payment.unmapped", "")
    assert e.data["event_id"] == "evt_lost" and e.data["payment_id"] == "pi_lost"
    assert (e.data["amount_minor"], e.data["currency"]) == (500, "usd")
    # A PaymentIntent without the account is left to its Checkout Session's event.
    pi = deliver(manager, event("payment_intent.succeeded", intent("pi_lost")))
    assert (pi.status_code, pi.action) == (200, "ignored")
    assert len(settled_events(manager)) == 1


def test_an_auto_top_up_is_credited_under_its_top_up_id_once(manager: LocalCreditManager) -> None:
    first = intent("pi_t1", 1000, creditgate_user="dave", creditgate_topup_id="topup_7")
    r = deliver(manager, event("payment_intent.succeeded", first))
    assert r.action == "credited" and r.entries[0].reference == "topup_7"
    # A second PaymentIntent for the same top-up (a retried charge) credits nothing more.
    second = intent("pi_t2", 1000, creditgate_user="dave", creditgate_topup_id="topup_7")
    assert deliver(manager, event("payment_intent.succeeded", second)).action == "replayed"
    assert manager.get_balance("dave") == Decimal(10_000)


def test_unknown_events_are_acknowledged_and_ignored(manager: LocalCreditManager) -> None:
    r = deliver(manager, event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert (r.status_code, r.action) == (200, "ignored")
    assert settled_events(manager) == [] and manager.audit().entries_checked == 1  # the marker


# ----- refunds and disputes -----------------------------------------------------------


def test_refunds_reverse_each_refund_once(manager: LocalCreditManager) -> None:
    deliver(manager, event("checkout.session.completed", session()))
    charge = {
        "id": "ch_pi_1",
        "object": "charge",
        "payment_intent": "pi_1",
        "amount_refunded": 200,
        "refunds": {"object": "list", "data": [refund("re_1")]},
    }
    r = deliver(manager, event("charge.refunded", charge))
    assert (r.action, r.entries[0].amount, r.entries[0].amount_minor) == ("reversed", Decimal(-2000), 200)
    # refund.created for the same refund, and the charge event again: nothing more.
    assert deliver(manager, event("refund.created", refund("re_1"))).action == "replayed"
    assert deliver(manager, event("charge.refunded", charge)).action == "replayed"
    assert manager.get_balance("alice") == Decimal(3000)
    # A second refund, then it fails: reversed, then reinstated, once.
    assert deliver(manager, event("refund.created", refund("re_2", amount=100))).action == "reversed"
    failed = event("charge.refund.updated", refund("re_2", amount=100, status="failed"))
    assert deliver(manager, failed).action == "reinstated"
    assert deliver(manager, failed).action == "replayed"
    assert manager.get_balance("alice") == Decimal(3000)
    assert manager.report().revenue_usd_minor == 300
    assert manager.audit().ok


def test_a_refund_before_its_payment_is_retried(manager: LocalCreditManager) -> None:
    early = event("refund.created", refund("re_early", "pi_late"))
    r = deliver(manager, early)
    assert (r.status_code, r.action, r.body["received"]) == (409, "retry", False)
    assert "retry" in r.body["detail"]
    assert deliver(manager, event("checkout.session.completed", session("pi_late"))).action == "credited"
    # Stripe's retry of the same delivery now applies.
    assert deliver(manager, early).action == "reversed"
    assert manager.get_balance("alice") == Decimal(3000)


def test_a_dispute_won_restores_the_credits_once(manager: LocalCreditManager) -> None:
    deliver(manager, event("checkout.session.completed", session()))
    opened = deliver(manager, event("charge.dispute.created", dispute("dp_1")))
    assert (opened.action, manager.get_balance("alice")) == ("reversed", Decimal(0))
    won = event("charge.dispute.closed", dispute("dp_1", status="won"))
    r = deliver(manager, won)
    assert (r.action, r.entries[0].kind) == ("reinstated", "reinstatement")
    assert deliver(manager, won).action == "replayed"
    assert deliver(manager, event("charge.dispute.created", dispute("dp_1"))).action == "replayed"
    assert manager.get_balance("alice") == Decimal(5000)
    # Not a new purchase; the revenue is back.
    assert manager.metrics()["purchases_total"] == 1
    report = manager.report()
    assert (report.credits_purchased, report.revenue_usd_minor) == (Decimal(5000), 500)
    assert manager.audit().ok


def test_a_dispute_closed_before_its_opening_is_applied_in_order(manager: LocalCreditManager) -> None:
    opened = event("charge.dispute.created", dispute("dp_2"))
    assert deliver(manager, opened).action == "retry"  # no payment yet
    deliver(manager, event("payment_intent.succeeded", intent(creditgate_user="alice")))
    # The closing (won) arrives before Stripe retries the opening.
    assert deliver(manager, event("charge.dispute.closed", dispute("dp_2", status="won"))).action == "reinstated"
    assert deliver(manager, opened).action == "replayed"
    assert manager.get_balance("alice") == Decimal(5000)


def test_a_dispute_lost_keeps_the_reversal(manager: LocalCreditManager) -> None:
    deliver(manager, event("checkout.session.completed", session()))
    deliver(manager, event("charge.dispute.created", dispute("dp_3", amount=300)))
    r = deliver(manager, event("charge.dispute.closed", dispute("dp_3", amount=300, status="lost")))
    assert r.action == "replayed"
    assert manager.get_balance("alice") == Decimal(2000)
    assert manager.report().revenue_usd_minor == 200


def test_a_dispute_larger_than_what_remains_reverses_the_rest(manager: LocalCreditManager) -> None:
    # $5 paid, $2 refunded, then a dispute of the full $5: the $3 left go.
    deliver(manager, event("checkout.session.completed", session()))
    deliver(manager, event("refund.created", refund("re_part", amount=200)))
    disputed = event("charge.dispute.created", dispute("dp_big", amount=500))
    r = deliver(manager, disputed)
    assert (r.action, r.entries[0].amount_minor, r.entries[0].amount) == ("reversed", 300, Decimal(-3000))
    assert manager.get_balance("alice") == Decimal(0)
    # Stripe's redelivery replays it; nothing is recorded for an operator.
    assert deliver(manager, disputed).action == "replayed"
    assert not [e for e in settled_events(manager) if e.kind == "payment.unmapped"]
    assert manager.audit().ok


def test_an_unknown_payment_is_retried_for_a_day_then_left_to_an_operator(manager: LocalCreditManager) -> None:
    body = json.loads(event("refund.created", refund("re_other", "pi_not_ours")))
    assert deliver(manager, json.dumps(body).encode()).action == "retry"
    # Two days later (a refund of a payment that was never creditgate's):
    # acknowledged, so Stripe stops, and recorded for an operator.
    body["created"] -= 2 * 86_400
    r = deliver(manager, json.dumps(body).encode())
    assert (r.status_code, r.action) == (200, "refused")
    unmapped = [e for e in settled_events(manager) if e.kind == "payment.unmapped"]
    assert [e.data["payment_id"] for e in unmapped] == ["pi_not_ours"]
    # A shorter window, chosen by the host.
    young = event("refund.created", refund("re_other2", "pi_not_ours"))
    time.sleep(1.1)
    assert handle_event(manager, young, sign(young), SECRET, retry_for=1).action == "refused"


def test_windows_of_zero_seconds_are_refused(manager: LocalCreditManager) -> None:
    body = event("refund.created", refund("re_z"))
    for bad in ({"tolerance": 0}, {"retry_for": 0}, {"tolerance": -5}):
        with pytest.raises(ValueError, match="positive number of seconds"):
            handle_event(manager, body, sign(body), SECRET, **bad)


# ----- signatures ---------------------------------------------------------------------------


def test_bad_signatures_are_refused_and_never_echo_the_secret(
    manager: LocalCreditManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = event("checkout.session.completed", session())
    tampered = body.replace(b'"amount_total": 500', b'"amount_total": 50000')
    stale = sign(body, at=int(time.time()) - 3600)
    cases = [
        (tampered, sign(body)),
        (body, stale),
        (body, sign(body, secret="whsec_other")),
        (body, ""),
        (body, "t=1,v1=00"),
        (body, "garbage"),
    ]
    for payload, header in cases:
        r = handle_event(manager, payload, header, SECRET)
        assert (r.status_code, r.action, r.body["received"]) == (400, "rejected", False), header
        assert SECRET not in json.dumps(r.body)
    r = handle_event(manager, body, None, SECRET)
    assert r.status_code == 400
    assert manager.get_balance("alice") == 0
    assert SECRET not in caplog.text
    # A correctly signed body that is not an event.
    for junk in (b"not json", b"[1, 2]", b"\xff\xfe"):
        assert handle_event(manager, junk, sign(junk), SECRET).status_code == 400


def test_no_secret_means_nothing_is_accepted(manager: LocalCreditManager) -> None:
    body = event("checkout.session.completed", session())
    for secret in ("", "   "):
        with pytest.raises(ValueError, match="secret"):
            handle_event(manager, body, sign(body), secret)
        with pytest.raises(ValueError, match="secret"):
            stripe_router(manager, secret=secret)
    assert manager.get_balance("alice") == 0


# ----- concurrency, async and FastAPI ------------------------------------------------------------


def _deliver_in_process(url: str, body: bytes, header: str, start: Any, results: Any) -> None:
    m = LocalCreditManager(url)
    start.wait()
    results.put(handle_event(m, body, header, SECRET).action)


def test_one_event_delivered_to_three_processes_credits_once(db_url: str) -> None:
    m = LocalCreditManager(db_url)  # creates the schema before the race
    body = event("checkout.session.completed", session(pi="pi_race"))
    header = sign(body)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_deliver_in_process, args=(db_url, body, header, start, results)) for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    actions = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert actions == ["credited", "replayed", "replayed"]
    assert m.get_balance("alice") == Decimal(5000)
    assert m.audit().ok


def test_the_async_handler_with_either_manager(db_url: str) -> None:
    async def run() -> list[str]:
        async with await AsyncLocalCreditManager.open(db_url) as am:
            a = await handle_event_async(am, *_signed(event("checkout.session.completed", session())), SECRET)
            b = await handle_event_async(am.sync, *_signed(event("refund.created", refund("re_a"))), SECRET)
            c = await handle_event_async(am, *_signed(event("refund.created", refund("re_a"))), SECRET)
            return [a.action, b.action, c.action]

    assert asyncio.run(run()) == ["credited", "reversed", "replayed"]
    assert LocalCreditManager(db_url).get_balance("alice") == Decimal(3000)


def _signed(body: bytes) -> tuple[bytes, str]:
    return body, sign(body)


def test_the_fastapi_router(manager: LocalCreditManager) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    app.include_router(stripe_router(manager, secret=SECRET))
    client = TestClient(app)
    body = event("checkout.session.completed", session())
    ok = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)})
    assert ok.status_code == 200 and ok.json()["action"] == "credited"
    bad = client.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, "whsec_x")})
    assert bad.status_code == 400 and SECRET not in bad.text
    early = event("refund.created", refund("re_x", "pi_unknown"))
    assert client.post("/webhooks/stripe", content=early, headers={"Stripe-Signature": sign(early)}).status_code == 409
    assert manager.get_balance("alice") == Decimal(5000)
