"""Stripe webhooks in: payments credited, refunds and disputes reversed.

Needs the ``stripe`` extra (``pip install '.[stripe]'``): the signature is
checked with the official package's own helper, never by hand. Everything a
credits business needs from Stripe is one call (docs/payments.md)::

    from creditgate import LocalCreditManager
    from creditgate.stripe import handle_event

    result = handle_event(manager, request_body, request.headers["Stripe-Signature"], secret)
    # answer Stripe with result.status_code and result.body (JSON)

or, with FastAPI, ``app.include_router(stripe_router(manager, secret=...))``.

What each event does (the payment id is always the PaymentIntent id, so a
Checkout Session and its PaymentIntent credit once; an auto top-up's
``metadata["creditgate_topup_id"]`` replaces it):

- ``checkout.session.completed`` with ``payment_status`` ``paid``,
  ``checkout.session.async_payment_succeeded``, ``payment_intent.succeeded``:
  ``record_payment`` of the amount and currency. The account is
  ``metadata["creditgate_user"]``, else the session's ``client_reference_id``.
  A paid Checkout Session without an account (or in a currency without a
  rate) is acknowledged and recorded as a ``payment.unmapped`` outbox event
  for an operator; a PaymentIntent without ``metadata["creditgate_user"]`` is
  acknowledged and left to its Checkout Session's event.
- ``refund.created``, ``refund.updated``, ``charge.refund.updated`` (a Refund)
  and ``charge.refunded`` (a Charge with its ``refunds`` list): each
  succeeded or pending refund reverses its amount once, with the refund id as
  the reversal id; a refund that failed or was canceled is reinstated.
- ``charge.dispute.created``: the disputed amount reversed (reversal id =
  the dispute id); ``charge.dispute.closed`` ``won`` (or ``warning_closed``)
  reinstates it, ``lost`` keeps it.
- A refund or dispute whose payment is not in the ledger yet: 409, so Stripe
  delivers it again later, for a day (``unknown_payment_retry_seconds``);
  then 200 and a ``payment.unmapped`` event. A refund or dispute larger
  than what remains of its payment reverses what remains. Unknown event
  types: 200, ignored.

The endpoint secret is never logged or echoed; without one nothing is
constructed (``ValueError``), so unsigned events are never accepted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Union

import stripe as _stripe

from ._creditgate import (
    CreditError,
    Entry,
    IdempotencyConflict,
    InvalidArgument,
    LocalCreditManager,
    NotFound,
    StorageError,
)
from .aio import AsyncLocalCreditManager

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = [
    "ACCOUNT_KEY",
    "DEFAULT_TOLERANCE_SECONDS",
    "DEFAULT_UNKNOWN_PAYMENT_RETRY_SECONDS",
    "TOPUP_KEY",
    "StripeResult",
    "handle_event",
    "handle_event_async",
    "stripe_router",
]

log = logging.getLogger("creditgate.stripe")

#: The metadata key naming the account to credit (else ``client_reference_id``).
ACCOUNT_KEY = "creditgate_user"
#: The metadata key of an auto top-up: its value is the payment id credited.
TOPUP_KEY = "creditgate_topup_id"
#: Oldest signature timestamp accepted, in seconds (Stripe's own default).
DEFAULT_TOLERANCE_SECONDS = 300
#: How long a refund or dispute whose payment is not in the ledger is
#: answered 409 (Stripe delivers it again): its payment's own event may still
#: be on its way. Older, it is acknowledged and recorded as a
#: ``payment.unmapped`` event for an operator (e.g. a refund of a payment that
#: was never creditgate's), so Stripe does not retry it for days.
DEFAULT_UNKNOWN_PAYMENT_RETRY_SECONDS = 86_400

Ledger = Union[LocalCreditManager, AsyncLocalCreditManager]

_PAID_SESSION_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
_REFUND_EVENTS = ("refund.created", "refund.updated", "charge.refund.updated")
# A refund in these states has taken (or is taking) the money back.
_REFUND_TAKEN = ("succeeded", "pending", "requires_action")
_REFUND_UNDONE = ("failed", "canceled")
# The dispute ended in the merchant's favour: the money came back.
_DISPUTE_RESTORED = ("won", "warning_closed")


@dataclass(frozen=True)
class StripeResult:
    """What to answer Stripe, and what the ledger did.

    ``action``: ``credited``, ``replayed``, ``reversed``, ``reinstated``,
    ``unmapped`` (recorded for an operator), ``ignored``, ``retry`` (the
    payment is not in the ledger yet: Stripe delivers it again), ``refused``
    (the ledger refused the change; recorded for an operator), ``rejected``
    (bad signature or payload), ``unavailable`` (storage down: 503, retried)
    or ``error`` (an internal error: 500, retried).
    """

    status_code: int
    action: str
    event_id: str | None = None
    event_type: str | None = None
    detail: str = ""
    entries: tuple[Entry, ...] = field(default=())

    @property
    def body(self) -> dict[str, Any]:
        """The JSON answer: never the secret, never the payload."""
        out: dict[str, Any] = {"received": self.status_code < 300, "action": self.action}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.detail:
            out["detail"] = self.detail
        out["entry_ids"] = [e.id for e in self.entries]
        return out


# ----- the plan: what an event asks of the ledger --------------------------------


@dataclass(frozen=True)
class _Step:
    """One ledger call. ``op``: payment, reverse, restore, unmapped, ignore."""

    op: str
    payment_id: str = ""
    user_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    reversal_id: str = ""
    reason: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if isinstance(v, Mapping):  # an expanded object: its id
        v = v.get("id")
    return v if isinstance(v, str) and v else None


def _amount(obj: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        v = obj.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _unmapped(event: Mapping[str, Any], obj: Mapping[str, Any], reason: str, **extra: Any) -> _Step:
    data: dict[str, Any] = {
        "provider": "stripe",
        "event_id": event.get("id"),
        "event_type": event.get("type"),
        "object_id": obj.get("id"),
        "reason": reason,
    }
    data.update({k: v for k, v in extra.items() if v is not None})
    return _Step("unmapped", reason=reason, data=data)


def _payment(event: Mapping[str, Any], obj: Mapping[str, Any], from_session: bool) -> _Step:
    intent = obj.get("id") if not from_session else _text(obj, "payment_intent")
    meta = _metadata(obj)
    account = meta.get(ACCOUNT_KEY) or (obj.get("client_reference_id") if from_session else None)
    amount = _amount(obj, "amount_total") if from_session else _amount(obj, "amount_received", "amount")
    currency = obj.get("currency")
    payment_id = meta.get(TOPUP_KEY) or intent
    if not isinstance(payment_id, str) or not payment_id:
        return _Step("ignore", reason="no PaymentIntent (not a one-time payment)")
    facts = {"payment_id": payment_id, "amount_minor": amount, "currency": currency}
    if not isinstance(account, str) or not account:
        if not from_session:
            # Checkout's PaymentIntents carry no session metadata: the session's event credits them.
            return _Step("ignore", reason=f"no metadata[{ACCOUNT_KEY!r}] on the PaymentIntent")
        return _unmapped(event, obj, f"no metadata[{ACCOUNT_KEY!r}] or client_reference_id", **facts)
    if amount is None or amount <= 0 or not isinstance(currency, str):
        return _unmapped(event, obj, "no positive amount and currency", user_id=account, **facts)
    return _Step("payment", payment_id, account, amount, currency.upper())


def _paid_for(obj: Mapping[str, Any]) -> str | None:
    """The payment id a refund or dispute takes back."""
    return _text(_metadata(obj), TOPUP_KEY) or _text(obj, "payment_intent")


def _refund(refund: Mapping[str, Any], payment_id: str | None) -> _Step:
    refund_id, status, amount = _text(refund, "id"), refund.get("status"), _amount(refund, "amount")
    if payment_id is None or refund_id is None or amount is None or amount <= 0:
        return _Step("ignore", reason="a refund without a PaymentIntent, id or amount")
    if status in _REFUND_UNDONE:
        return _Step("restore", payment_id, amount_minor=amount, reversal_id=refund_id, reason=f"refund {status}")
    if status in _REFUND_TAKEN:
        return _Step("reverse", payment_id, amount_minor=amount, reversal_id=refund_id, reason="refund")
    return _Step("ignore", reason=f"refund status {status!r}")


def _dispute(dispute: Mapping[str, Any], closed: bool) -> _Step:
    payment_id, dispute_id, amount = _paid_for(dispute), _text(dispute, "id"), _amount(dispute, "amount")
    if payment_id is None or dispute_id is None or amount is None or amount <= 0:
        return _Step("ignore", reason="a dispute without a PaymentIntent, id or amount")
    status = dispute.get("status")
    if closed and status in _DISPUTE_RESTORED:
        return _Step("restore", payment_id, amount_minor=amount, reversal_id=dispute_id, reason=f"dispute {status}")
    if closed and status != "lost":
        return _Step("ignore", reason=f"dispute closed as {status!r}")
    # Opened, or lost: the reversal stands (made now if the opening was missed).
    return _Step("reverse", payment_id, amount_minor=amount, reversal_id=dispute_id, reason="dispute")


def _plan(event: Mapping[str, Any]) -> list[_Step]:
    """The ledger calls an event asks for, in order (pure: no I/O)."""
    kind, data = event.get("type"), event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        return [_Step("ignore", reason="no data.object")]
    if kind in _PAID_SESSION_EVENTS:
        if obj.get("payment_status") != "paid":
            return [_Step("ignore", reason=f"payment_status {obj.get('payment_status')!r}")]
        return [_payment(event, obj, from_session=True)]
    if kind == "payment_intent.succeeded":
        return [_payment(event, obj, from_session=False)]
    if kind in _REFUND_EVENTS:
        return [_refund(obj, _paid_for(obj))]
    if kind == "charge.refunded":
        refunds = obj.get("refunds")
        listed = refunds.get("data") if isinstance(refunds, Mapping) else None
        if not isinstance(listed, list):
            return [_Step("ignore", reason="no refunds list on the charge (refund.created carries each refund)")]
        return [_refund(r, _paid_for(obj)) for r in listed if isinstance(r, Mapping)]
    if kind in ("charge.dispute.created", "charge.dispute.closed"):
        return [_dispute(obj, closed=kind == "charge.dispute.closed")]
    return [_Step("ignore", reason="an event type creditgate does not handle")]


# ----- verification -------------------------------------------------------------------


def _check_secret(secret: object) -> str:
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError("a Stripe endpoint secret (whsec_...) is required: unsigned events are never accepted")
    return secret


def _check_seconds(name: str, value: object) -> int:
    # Zero would turn the timestamp check (or the retry window) off.
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return value


def _verify(payload: bytes, sig_header: str | None, secret: str, tolerance: int) -> dict[str, Any] | str:
    """The event as plain JSON values, or why it is refused (never naming the secret)."""
    try:
        # Text, not bytes: older stripe releases format bytes as "b'...'"
        # into the signed string, so no signature would ever match.
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else str(payload)
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    try:
        _stripe.WebhookSignature.verify_header(text, sig_header, secret, tolerance)
    except _stripe.SignatureVerificationError:
        return "the Stripe-Signature header does not verify (wrong secret, tampered body or stale timestamp)"
    try:
        # Decimal, not float: nothing in the ledger's path is ever a float.
        event = json.loads(text, parse_float=Decimal)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return "the body is not a Stripe event"
    return event


def _young(event: Mapping[str, Any], retry_for: int) -> bool:
    """Whether the event was created less than ``retry_for`` seconds ago."""
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        return True
    return time.time() - created < retry_for


def _rejected(why: str) -> StripeResult:
    log.warning("stripe webhook rejected: %s", why)
    return StripeResult(400, "rejected", detail=why)


# ----- applying the plan ------------------------------------------------------------------


class _Outcome:
    """The results of an event's steps, folded into one answer."""

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.event_id = event.get("id") if isinstance(event.get("id"), str) else None
        self.event_type = str(event.get("type"))
        self.entries: list[Entry] = []
        self.actions: list[str] = []
        self.details: list[str] = []

    def add(self, action: str, entry: Entry | None = None, detail: str = "") -> None:
        self.actions.append(action)
        if entry is not None:
            self.entries.append(entry)
        if detail:
            self.details.append(detail)

    def result(self) -> StripeResult:
        order = ("credited", "reversed", "reinstated", "refused", "unmapped", "replayed", "ignored")
        action = next((a for a in order if a in self.actions), "ignored")
        detail = "; ".join(self.details)
        return StripeResult(200, action, self.event_id, self.event_type, detail, tuple(self.entries))

    def failed(self, status: int, action: str, detail: str) -> StripeResult:
        log.warning("stripe event %s (%s) answered %d: %s", self.event_id, self.event_type, status, detail)
        return StripeResult(status, action, self.event_id, self.event_type, detail, tuple(self.entries))


def _error_result(out: _Outcome, e: CreditError) -> StripeResult:
    if isinstance(e, NotFound):
        return out.failed(409, "retry", f"the payment is not in the ledger yet ({e}); Stripe will retry")
    if isinstance(e, StorageError):
        return out.failed(503, "unavailable", "the ledger is unavailable; Stripe will retry")
    return out.failed(500, "error", f"{e.code}: the ledger failed; Stripe will retry")


def _refusal(step: _Step, e: CreditError) -> _Step:
    """A change the ledger refused for good (e.g. no rate for the currency): an operator's job."""
    data = dict(step.data) or {"provider": "stripe"}
    data.update({"op": step.op, "payment_id": step.payment_id, "reason": f"{e.code}: {e}"})
    if step.amount_minor:
        data.update({"amount_minor": step.amount_minor, "currency": step.currency or None})
    return _Step("unmapped", reason=str(e), data=data)


def _unmapped_data(step: _Step, out: _Outcome) -> dict[str, Any]:
    data = dict(step.data)
    data.setdefault("event_id", out.event_id)
    data.setdefault("event_type", out.event_type)
    return data


def _apply_sync(m: LocalCreditManager, step: _Step, out: _Outcome) -> None:
    if step.op == "ignore":
        out.add("ignored", detail=step.reason)
    elif step.op == "unmapped":
        m.record_event("payment.unmapped", _unmapped_data(step, out))
        out.add("unmapped", detail=step.reason)
    elif step.op == "payment":
        e = m.record_payment(step.user_id, step.payment_id, step.amount_minor, step.currency)
        out.add("replayed" if e.replayed else "credited", e)
    elif step.op == "reverse":
        e = _reverse_sync(m, step)
        out.add("replayed" if e.replayed else "reversed", e)
    else:  # restore: reversed first (a no-op replay when it was), so a late reversal replays
        _reverse_sync(m, step)
        e = m.reinstate_reversal(step.reversal_id, step.reason)
        out.add("replayed" if e.replayed else "reinstated", e)


def _reverse_sync(m: LocalCreditManager, step: _Step) -> Entry:
    try:
        return m.reverse_payment(step.payment_id, step.amount_minor, step.reason, reversal_id=step.reversal_id)
    except (InvalidArgument, IdempotencyConflict):
        # More than remains (a dispute after a partial refund), or the replay
        # of such a reversal: what remains (a replay when it was taken).
        return m.reverse_payment(step.payment_id, None, step.reason, reversal_id=step.reversal_id)


async def _apply_async(m: AsyncLocalCreditManager, step: _Step, out: _Outcome) -> None:
    if step.op == "ignore":
        out.add("ignored", detail=step.reason)
    elif step.op == "unmapped":
        await m.record_event("payment.unmapped", _unmapped_data(step, out))
        out.add("unmapped", detail=step.reason)
    elif step.op == "payment":
        e = await m.record_payment(step.user_id, step.payment_id, step.amount_minor, step.currency)
        out.add("replayed" if e.replayed else "credited", e)
    elif step.op == "reverse":
        e = await _reverse_async(m, step)
        out.add("replayed" if e.replayed else "reversed", e)
    else:
        await _reverse_async(m, step)
        e = await m.reinstate_reversal(step.reversal_id, step.reason)
        out.add("replayed" if e.replayed else "reinstated", e)


async def _reverse_async(m: AsyncLocalCreditManager, step: _Step) -> Entry:
    try:
        return await m.reverse_payment(step.payment_id, step.amount_minor, step.reason, reversal_id=step.reversal_id)
    except (InvalidArgument, IdempotencyConflict):
        return await m.reverse_payment(step.payment_id, None, step.reason, reversal_id=step.reversal_id)


def _permanent(e: CreditError, event: Mapping[str, Any], retry_for: int) -> bool:
    """Refusals a retry cannot change (bad currency, amounts, reused ids), and
    a payment still unknown once the event is older than ``retry_for``."""
    if isinstance(e, NotFound):
        return not _young(event, retry_for)
    return isinstance(e, (InvalidArgument, IdempotencyConflict))


def handle_event(
    manager: LocalCreditManager,
    payload: bytes,
    sig_header: str | None,
    secret: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    retry_for: int = DEFAULT_UNKNOWN_PAYMENT_RETRY_SECONDS,
) -> StripeResult:
    """Verifies one webhook delivery (the raw body and its ``Stripe-Signature``
    header) with the endpoint ``secret`` and applies it to the ledger.

    Answer Stripe with ``result.status_code`` and ``result.body``: 200 when the
    event is handled (or ignored), 400 for a bad signature or body, 409 when
    its payment is not in the ledger yet and 503 when the ledger is down (both
    retried by Stripe). Safe to call again with the same delivery.
    ``retry_for``: see :data:`DEFAULT_UNKNOWN_PAYMENT_RETRY_SECONDS`.
    """
    secret = _check_secret(secret)
    tolerance = _check_seconds("tolerance", tolerance)
    retry_for = _check_seconds("retry_for", retry_for)
    event = _verify(payload, sig_header, secret, tolerance)
    if isinstance(event, str):
        return _rejected(event)
    out = _Outcome(event)
    for step in _plan(event):
        try:
            _apply_sync(manager, step, out)
        except CreditError as e:
            if not (_permanent(e, event, retry_for) and step.op != "unmapped"):
                return _error_result(out, e)
            try:
                _apply_sync(manager, _refusal(step, e), out)
            except CreditError as e2:
                return _error_result(out, e2)
            out.add("refused", detail=str(e))
    return out.result()


async def handle_event_async(
    manager: Ledger,
    payload: bytes,
    sig_header: str | None,
    secret: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    retry_for: int = DEFAULT_UNKNOWN_PAYMENT_RETRY_SECONDS,
) -> StripeResult:
    """:func:`handle_event` for a coroutine: ledger calls run on the async
    manager's own threads (a ``LocalCreditManager``'s on ``asyncio.to_thread``)."""
    secret = _check_secret(secret)
    tolerance = _check_seconds("tolerance", tolerance)
    retry_for = _check_seconds("retry_for", retry_for)
    if isinstance(manager, LocalCreditManager):
        return await asyncio.to_thread(
            handle_event, manager, payload, sig_header, secret, tolerance=tolerance, retry_for=retry_for
        )
    event = _verify(payload, sig_header, secret, tolerance)
    if isinstance(event, str):
        return _rejected(event)
    out = _Outcome(event)
    for step in _plan(event):
        try:
            await _apply_async(manager, step, out)
        except CreditError as e:
            if not (_permanent(e, event, retry_for) and step.op != "unmapped"):
                return _error_result(out, e)
            try:
                await _apply_async(manager, _refusal(step, e), out)
            except CreditError as e2:
                return _error_result(out, e2)
            out.add("refused", detail=str(e))
    return out.result()


def stripe_router(
    manager: Ledger,
    *,
    secret: str,
    path: str = "/webhooks/stripe",
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    retry_for: int = DEFAULT_UNKNOWN_PAYMENT_RETRY_SECONDS,
) -> APIRouter:
    """A FastAPI router with ``POST {path}``: mount it with
    ``app.include_router(...)``. Raises ``ValueError`` without a secret."""
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    secret = _check_secret(secret)
    tolerance = _check_seconds("tolerance", tolerance)
    retry_for = _check_seconds("retry_for", retry_for)
    router = APIRouter()

    async def stripe_webhook(request: Request) -> JSONResponse:
        body = await request.body()
        result = await handle_event_async(
            manager, body, request.headers.get("stripe-signature"), secret, tolerance=tolerance, retry_for=retry_for
        )
        return JSONResponse(result.body, status_code=result.status_code)

    # Real classes, not this module's postponed (string) annotations: FastAPI
    # resolves them in the module's globals, where the optional import is not.
    stripe_webhook.__annotations__ = {"request": Request, "return": JSONResponse}
    router.add_api_route(path, stripe_webhook, methods=["POST"], include_in_schema=False)
    return router
