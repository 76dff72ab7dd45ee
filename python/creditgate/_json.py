"""Exact JSON of creditgate values, shared by the command line (``creditgate.cli``)
and the FastAPI glue (``creditgate.fastapi``): ``Decimal`` amounts as exact
numbers (never through float), aware datetimes as RFC 3339 UTC, result objects
as their fields in spec order (docs/reference.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

__all__ = ["FIELDS", "as_dict", "decimal_text", "rfc3339", "to_json"]

# Field order of each result type (docs/reference.md), so JSON, CSV and tables list
# fields as the spec does rather than alphabetically.
FIELDS: dict[str, tuple[str, ...]] = {
    "Account": (
        "user_id",
        "balance",
        "held",
        "available",
        "lifetime_purchased",
        "lifetime_used",
        "active_keys",
        "first_key_issued",
        "created_at",
        "grants",
        "organisation",
        "auto_topup",
        "topups_this_month",
    ),
    "Grant": (
        "grant_id",
        "category",
        "priority",
        "amount",
        "remaining",
        "expires_at",
        "created_at",
        "source_entry_id",
        "payment_id",
        "member_id",
        "api_key_id",
        "allowance_id",
    ),
    "ExpirySweep": ("accounts", "entries", "credits", "refills"),
    "Entry": (
        "id",
        "seq",
        "user_id",
        "kind",
        "amount",
        "balance_after",
        "idempotency_key",
        "reference",
        "api_key_id",
        "input_tokens",
        "output_tokens",
        "model",
        "amount_minor",
        "currency",
        "metadata",
        "created_at",
        "replayed",
        "member_id",
        "project",
        "cached_input_tokens",
        "cache_write_tokens",
        "price",
    ),
    "KeyEligibility": ("allowed", "is_first_key", "required", "available"),
    "NewApiKey": ("key_id", "user_id", "name", "prefix", "created_at", "secret"),
    "ApiKeyInfo": (
        "key_id",
        "user_id",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
        "legacy",
    ),
    "AuditReport": ("ok", "accounts_checked", "entries_checked", "mismatches"),
    "Report": (
        "users",
        "paying_users",
        "users_attempted_key",
        "key_generation_attempts",
        "key_generation_successes",
        "purchase_conversion_rate",
        "credits_purchased",
        "revenue_usd_minor",
        "revenue_per_paying_user_usd_minor",
        "revenue_minor_by_currency",
        "credits_used",
        "outstanding_balance",
        "outstanding_holds",
        "overdraft_receivable",
        "allowance_issued",
        "allowance_used",
        "schema_version",
        "library_schema_version",
    ),
    "SchemaStatus": ("database_version", "library_version", "pending", "newer_than_library"),
    "Budget": ("scope", "name", "limit", "window", "low_threshold", "spent", "remaining", "resets_at"),
    "Member": ("org_id", "user_id", "joined_at", "budget"),
    "Project": ("org_id", "name", "created_at", "keys", "budget"),
    "MemberUsage": ("member_id", "requests", "tokens", "credits"),
    "ModelPrice": ("input_per_1k", "output_per_1k", "cached_input_per_1k", "cache_write_per_1k", "request_fee"),
    "PriceVersion": ("model", "price", "effective_at", "set_at"),
    "UsageRow": (
        "day",
        "model",
        "key_id",
        "member_id",
        "project",
        "requests",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "credits",
    ),
    "StatementLine": (
        "kind",
        "model",
        "price",
        "entries",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "amount",
    ),
    "Statement": ("user_id", "since", "until", "opening_balance", "closing_balance", "lines"),
    "AutoTopup": ("threshold", "amount", "target", "max_per_month", "monthly_cap"),
    "Topup": ("id", "user_id", "amount", "status", "reason", "entry_id", "created_at", "updated_at"),
    "Allowance": (
        "allowance_id",
        "user_id",
        "member_id",
        "api_key_id",
        "amount",
        "period",
        "rollover_cap",
        "next_refill_at",
        "created_at",
    ),
    "WebhookSubscription": (
        "id",
        "url",
        "kinds",
        "enabled",
        "description",
        "created_at",
        "delivered",
        "failed_attempts",
        "dead_lettered",
        "pending",
        "lag_seconds",
        "attempts",
        "next_attempt_at",
        "last_error",
    ),
    "DeadLetter": ("subscription_id", "event_id", "kind", "attempts", "last_error", "dead_at", "requeued"),
    "DeliveryReport": ("sent", "failed", "dead_lettered", "busy"),
    "PassReport": ("sent", "failed", "dead_lettered", "busy"),
}


def decimal_text(value: Decimal) -> str:
    """Plain positional notation (`5000`, never `5E+3`), digits kept exactly."""
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    if value.is_zero():
        return "0"  # not "0.00" or "-0"
    # normalize() drops trailing zeros (5000.00 -> 5E+3); "f" then writes 5000.
    return format(value.normalize(), "f")


def rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime: {value!r}")
    text = value.astimezone(timezone.utc).isoformat()
    return text[: -len("+00:00")] + "Z"


def as_dict(obj: Any) -> dict[str, Any]:
    """The public fields of a result object, in spec order."""
    if isinstance(obj, Mapping):
        return dict(obj)
    names = FIELDS.get(type(obj).__name__)
    if names is None and callable(getattr(obj, "to_dict", None)):
        return dict(obj.to_dict())  # e.g. AuditMismatch: the binding's own field list
    if names is None:  # an object the table does not know: its public attributes
        names = tuple(n for n in dir(obj) if not n.startswith("_") and not callable(getattr(obj, n)))
    return {n: getattr(obj, n) for n in names}


def to_json(value: Any, indent: int | None = None) -> str:
    """JSON with Decimal amounts as exact numbers (`4998.5`).

    The standard encoder can only write numbers through float, which would
    round large or finely divided amounts; this writer never touches float.
    """
    return "".join(_json_parts(value, indent, 0))


def _json_parts(value: Any, indent: int | None, level: int) -> Iterator[str]:
    if value is None or isinstance(value, (bool, int, str)):
        yield json.dumps(value)
    elif isinstance(value, Decimal):
        yield decimal_text(value)
    elif isinstance(value, float):
        raise TypeError("floats have no place in ledger output")
    elif isinstance(value, datetime):
        yield json.dumps(rfc3339(value))
    elif isinstance(value, (list, tuple)):
        yield from _json_container("[", "]", [(None, v) for v in value], indent, level)
    else:
        items = list(as_dict(value).items())
        yield from _json_container("{", "}", items, indent, level)


def _json_container(
    open_: str,
    close: str,
    items: Sequence[tuple[str | None, Any]],
    indent: int | None,
    level: int,
) -> Iterator[str]:
    if not items:
        yield open_ + close
        return
    pad = "" if indent is None else "\n" + " " * (indent * (level + 1))
    yield open_
    for i, (key, item) in enumerate(items):
        yield ("," if i else "") + pad
        if key is not None:
            yield json.dumps(str(key)) + (": " if indent is not None else ":")
        yield from _json_parts(item, indent, level + 1)
    yield ("" if indent is None else "\n" + " " * (indent * level)) + close
