"""Hostile input loses nothing (issue 7): every public method of
``LocalCreditManager`` (docs/reference.md) is fed hostile arguments, one at a time,
beside otherwise valid ones. Each call must raise the documented class
(docs/reference.md, §2, §5: ``TypeError`` for a wrong Python type, ``InvalidArgument``
for a bad value, ``InvalidApiKey`` for a malformed key, ``NotFound`` for an
unknown id), with a message naming the argument, never crash, never raise
PyO3's ``PanicException`` or a ``SystemError``, and leave the ledger exactly
as it was (balances, accounts, entries, keys, prices, report, audit).

One ledger serves the whole module (it must not change, after all); a case
that changes it fails and the next case gets a fresh one."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import conftest
import pytest
from creditgate import (
    CreditError,
    InsufficientCredits,
    InvalidApiKey,
    InvalidArgument,
    LocalCreditManager,
    NotFound,
)

MIB = 1 << 20
UNKNOWN_UUID = "01a213dc-0000-7000-8000-000000000000"
LEGACY_SECRET = "legacy-bob-0123456789"


class Opaque:
    """An arbitrary object (its repr must be harmless)."""

    def __repr__(self) -> str:
        return "Opaque()"


def deep(n: int) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for _ in range(n):
        d = {"d": d}
    return d


@dataclasses.dataclass(frozen=True)
class Case:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    expected: type[BaseException]
    field: str  # the argument made hostile: the message must name it
    label: str

    @property
    def id(self) -> str:
        return f"{self.method}-{self.field}-{self.label}"


# ----- hostile values, by kind of argument ---------------------------------
# (label, value, expected class). Values that are valid for a kind are not
# listed (e.g. a user id of 2**200 is the valid id "1606...").

WRONG_TYPES: list[tuple[str, Any]] = [
    ("bytes", b"alice"),
    ("list", ["a"]),
    ("dict", {"a": 1}),
    ("object", Opaque()),
    ("float", 1.5),
    ("bool", True),
]

Bad = tuple[str, Any, type[BaseException]]
BAD_STRINGS: list[Bad] = (
    list[Bad](
        [
            ("empty", "", InvalidArgument),
            ("1MiB", "x" * MIB, InvalidArgument),
            ("256B", "y" * 256, InvalidArgument),
            ("nul", "a\0b", InvalidArgument),
            ("surrogate", "\ud800", InvalidArgument),
            ("surrogate-tail", "ok\udcff", InvalidArgument),
        ]
    )
    + [(label, v, TypeError) for label, v in WRONG_TYPES if not isinstance(v, bool)]
    + [("int", 5, TypeError)]
)

# A user id is a str or an int (converted with str()).
BAD_USER_IDS: list[tuple[str, Any, type[BaseException]]] = [
    (label, v, exc) for label, v, exc in BAD_STRINGS if label != "int"
] + [
    ("bool", True, TypeError),
    ("int-10**300", 10**300, InvalidArgument),  # 301 bytes
    ("None", None, TypeError),
]

BAD_AMOUNTS: list[tuple[str, Any, type[BaseException]]] = [
    ("zero", 0, InvalidArgument),
    ("negative", -1, InvalidArgument),
    ("over-10**12", 10**12 + 1, InvalidArgument),
    ("2**63", 2**63, InvalidArgument),
    ("2**200", 2**200, InvalidArgument),
    ("-2**63-1", -(2**63) - 1, InvalidArgument),
    ("float-0.1", 0.1, TypeError),
    ("float-1.0", 1.0, TypeError),
    ("float-nan", float("nan"), TypeError),
    ("float-inf", float("inf"), TypeError),
    ("float-minus-inf", float("-inf"), TypeError),
    ("bool-True", True, TypeError),
    ("bool-False", False, TypeError),
    ("None", None, TypeError),
    ("bytes", b"1", TypeError),
    ("list", [1], TypeError),
    ("dict", {"a": 1}, TypeError),
    ("object", Opaque(), TypeError),
    ("complex", 1j, TypeError),
    ("dec-NaN", Decimal("NaN"), InvalidArgument),
    ("dec-sNaN", Decimal("sNaN"), InvalidArgument),
    ("dec-Infinity", Decimal("Infinity"), InvalidArgument),
    ("dec-minus-Infinity", Decimal("-Infinity"), InvalidArgument),
    ("dec-7-places", Decimal("1.0000001"), InvalidArgument),
    ("dec-1e-9", Decimal("1e-9"), InvalidArgument),
    ("dec-minus-zero", Decimal("-0"), InvalidArgument),
    ("dec-1e999999", Decimal("1e999999"), InvalidArgument),
    ("dec-2**63-micros", Decimal(2**63) / 1_000_000, InvalidArgument),
    ("str-empty", "", InvalidArgument),
    ("str-abc", "abc", InvalidArgument),
    ("str-NaN", "NaN", InvalidArgument),
    ("str-inf", "inf", InvalidArgument),
    ("str-exponent", "1e3", InvalidArgument),
    ("str-7-places", "0.1234567", InvalidArgument),
    ("str-spaces", " 1 ", InvalidArgument),
    ("str-fullwidth", "\uff15", InvalidArgument),
    ("str-nul", "1\0", InvalidArgument),
    ("str-surrogate", "1\ud800", InvalidArgument),
    ("str-1MiB", "9" * MIB, InvalidArgument),
    ("str-negative", "-1", InvalidArgument),
]

# Integer arguments (counts, cents, seconds): int only.
INT_WRONG_TYPES: list[tuple[str, Any, type[BaseException]]] = [
    ("float", 1.0, TypeError),
    ("float-nan", float("nan"), TypeError),
    ("float-inf", float("inf"), TypeError),
    ("bool", True, TypeError),
    ("str", "5", TypeError),
    ("decimal", Decimal(5), TypeError),
    ("bytes", b"5", TypeError),
    ("list", [5], TypeError),
    ("object", Opaque(), TypeError),
]
HUGE_INTS: list[tuple[str, Any, type[BaseException]]] = [
    ("2**63", 2**63, InvalidArgument),
    ("2**200", 2**200, InvalidArgument),
    ("-2**63-1", -(2**63) - 1, InvalidArgument),
]
BAD_TOKENS = (
    INT_WRONG_TYPES
    + HUGE_INTS
    + [
        ("negative", -1, InvalidArgument),
        ("over-10**9", 10**9 + 1, InvalidArgument),
    ]
)
BAD_CENTS = INT_WRONG_TYPES + HUGE_INTS + [("zero", 0, InvalidArgument), ("negative", -500, InvalidArgument)]

# Entry, key and hold ids are UUIDs.
BAD_IDS: list[tuple[str, Any, type[BaseException]]] = [
    (label, v, exc) for label, v, exc in BAD_STRINGS if label not in ("256B",)
] + [("not-uuid", "nope", InvalidArgument), ("uuid-nul", UNKNOWN_UUID + "\0", InvalidArgument)]

# An API key presented for verification: malformed is InvalidApiKey (401).
BAD_API_KEYS: list[tuple[str, Any, type[BaseException]]] = [
    ("empty", "", InvalidApiKey),
    ("short", "sk_1", InvalidApiKey),
    ("1MiB", "x" * MIB, InvalidApiKey),
    ("513B", "k" * 513, InvalidApiKey),
    ("nul", "sk_" + "a" * 20 + "\0", InvalidApiKey),
    ("surrogate", "sk_" + "a" * 20 + "\ud800", InvalidApiKey),
    ("unknown-legacy", "not-a-key-we-know", InvalidApiKey),
    ("None", None, TypeError),
] + [(label, v, TypeError) for label, v in WRONG_TYPES if not isinstance(v, bool)]

BAD_METADATA: list[tuple[str, Any, type[BaseException]]] = [
    ("list", [1], TypeError),
    ("str", "{}", TypeError),
    ("int-key", {1: 2}, TypeError),
    ("set-value", {"a": {1}}, TypeError),
    ("bytes-value", {"a": b"x"}, TypeError),
    ("object-value", {"a": Opaque()}, TypeError),
    ("decimal-value", {"a": Decimal("1")}, TypeError),
    ("nan-value", {"a": float("nan")}, InvalidArgument),
    ("inf-value", {"a": float("inf")}, InvalidArgument),
    ("2**64-value", {"a": 2**64}, InvalidArgument),
    ("5KiB", {"a": "x" * 5000}, InvalidArgument),
    ("1MiB", {"a": "x" * MIB}, InvalidArgument),
    ("many-keys", {f"k{i}": i for i in range(1000)}, InvalidArgument),
    ("deep", deep(100), InvalidArgument),
    ("surrogate-key", {"\ud800": 1}, InvalidArgument),
    ("surrogate-value", {"a": ["\udcff"]}, InvalidArgument),
]


def _self_list() -> list[Any]:
    x: list[Any] = []
    x.append(x)
    return x


def _self_dict() -> dict[str, Any]:
    x: dict[str, Any] = {}
    x["x"] = x
    return x


BAD_METADATA += [("cycle-list", {"a": _self_list()}, InvalidArgument), ("cycle-dict", _self_dict(), InvalidArgument)]

NO_NONE = [(label, v, exc) for label, v, exc in BAD_STRINGS] + [("None", None, TypeError)]

# Times: aware datetimes only (a naive one has no known zone).
PAST = datetime(2000, 1, 1, tzinfo=timezone.utc)
FUTURE = datetime(2100, 1, 1, tzinfo=timezone.utc)
BAD_TIMES: list[tuple[str, Any, type[BaseException]]] = [
    ("naive", datetime(2099, 1, 1), InvalidArgument),
    ("str", "2099-01-01T00:00:00Z", TypeError),
    ("int", 4_000_000_000, TypeError),
    ("date", date(2099, 1, 1), TypeError),
    ("object", Opaque(), TypeError),
]
# group_by: a sequence of known names, or one str of comma-separated names, each once.
BAD_GROUPS: list[tuple[str, Any, type[BaseException]]] = [
    ("unknown", ["week"], InvalidArgument),
    ("twice", ["day", "day"], InvalidArgument),
    ("empty-name", [""], InvalidArgument),
    ("nul", ["day\0"], InvalidArgument),
    ("a-str-of-unknown", "day,week", InvalidArgument),
    ("a-str-twice", "day, day", InvalidArgument),
    ("int", 5, TypeError),
    ("int-item", [5], TypeError),
    ("None-item", [None], TypeError),
]


# ----- the matrix ------------------------------------------------------------


def vary(
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    field: str,
    values: list[tuple[str, Any, type[BaseException]]],
    position: int | None = None,
) -> list[Case]:
    """One case per hostile value of `field` (positional at `position`)."""
    out = []
    for label, value, exc in values:
        a, kw = list(args), dict(kwargs)
        if position is not None:
            a[position] = value
        else:
            kw[field] = value
        out.append(Case(method, tuple(a), kw, exc, field, label))
    return out


def build_cases() -> list[Case]:
    c: list[Case] = []
    user_methods = ("get_balance", "account", "can_generate_api_key", "list_api_keys", "transactions")
    for m in user_methods:
        c += vary(m, ("alice",), {}, "user_id", BAD_USER_IDS, 0)
    c += vary("create_api_key", ("alice",), {}, "user_id", BAD_USER_IDS, 0)

    for m in ("add_credits", "deduct_credits"):
        c += vary(m, ("alice", 1), {}, "user_id", BAD_USER_IDS, 0)
        c += vary(m, ("alice", 1), {}, "amount", BAD_AMOUNTS, 1)
        c += vary(m, ("alice", 1), {}, "idempotency_key", BAD_STRINGS)
        c += vary(m, ("alice", 1), {}, "idempotency_key", [("reserved-payment", "payment:x", InvalidArgument)])
        c += vary(m, ("alice", 1), {}, "reference", BAD_STRINGS)
        c += vary(m, ("alice", 1), {}, "metadata", BAD_METADATA)
    c += vary(
        "add_credits",
        ("alice", 1),
        {},
        "kind",
        NO_NONE + [("usage", "usage", InvalidArgument), ("GRANT-caps", "GRANT ", InvalidArgument)],
    )
    # Only an adjustment may be negative, and a negative one is strict.
    c += vary(
        "add_credits", ("alice", 1), {"kind": "adjustment"}, "amount", [("overdraw", -(10**9), InsufficientCredits)], 1
    )
    c += vary("deduct_credits", ("alice", 1), {}, "amount", [("overdraw", 10**9, InsufficientCredits)], 1)

    c += vary("import_balance", ("newcomer", 1), {}, "user_id", BAD_USER_IDS, 0)
    c += vary(
        "import_balance",
        ("newcomer", 1),
        {},
        "balance",
        [v for v in BAD_AMOUNTS if v[0] not in ("zero", "negative", "dec-minus-zero", "str-negative")],
        1,
    )
    c += vary("import_balance", ("newcomer", 1), {}, "kind", NO_NONE + [("usage", "usage", InvalidArgument)])

    c += vary("record_payment", ("alice", "pay_new", 500), {}, "user_id", BAD_USER_IDS, 0)
    c += vary("record_payment", ("alice", "pay_new", 500), {}, "payment_id", NO_NONE, 1)
    c += vary(
        "record_payment", ("alice", "pay_new", 500), {}, "amount_minor", BAD_CENTS + [("None", None, TypeError)], 2
    )
    c += vary(
        "record_payment",
        ("alice", "pay_new", 500, "USD"),
        {},
        "currency",
        NO_NONE + [("EUR", "EUR", InvalidArgument), ("usd-nul", "usd\0", InvalidArgument)],
        3,
    )

    c += vary("reverse_payment", ("pay_alice",), {}, "payment_id", NO_NONE, 0)
    c += vary("reverse_payment", ("pay_alice",), {}, "amount_minor", BAD_CENTS, None)
    c += vary("reverse_payment", ("pay_alice",), {}, "amount_minor", [("more-than-paid", 501, InvalidArgument)])
    c += vary("reverse_payment", ("pay_alice",), {}, "reason", BAD_STRINGS)
    c += vary("reverse_payment", ("pay_alice",), {}, "reversal_id", BAD_STRINGS)
    c += vary("reverse_payment", ("pay_alice",), {}, "payment_id", [("unknown", "pay_unknown", NotFound)], 0)

    c += vary("transactions", ("alice",), {}, "limit", INT_WRONG_TYPES + HUGE_INTS)
    c += vary(
        "transactions",
        ("alice",),
        {},
        "limit",
        [("zero", 0, InvalidArgument), ("1001", 1001, InvalidArgument), ("negative", -1, InvalidArgument)],
    )
    c += vary("transactions", ("alice",), {}, "before", BAD_IDS + [("unknown", UNKNOWN_UUID, NotFound)])

    c += vary("create_api_key", ("alice",), {}, "name", BAD_STRINGS, None)

    c += vary("import_api_key", ("bob",), {"secret": "legacy-new-0123456789"}, "user_id", BAD_USER_IDS, 0)
    c += vary(
        "import_api_key",
        ("bob",),
        {},
        "secret",
        [
            (label, v, exc)
            for label, v, exc in BAD_STRINGS
            if label not in ("256B",)  # a 256-byte legacy secret is valid
        ]
        + [
            ("7B", "1234567", InvalidArgument),
            ("513B", "k" * 513, InvalidArgument),
            ("our-prefix-bad-checksum", "CHECKSUM", InvalidArgument),
        ],
    )
    c += vary(
        "import_api_key",
        ("bob",),
        {},
        "secret_sha256",
        [(label, v, exc) for label, v, exc in BAD_STRINGS if label != "256B"]
        + [
            ("upper-hex", "A" * 64, InvalidArgument),
            ("63-hex", "a" * 63, InvalidArgument),
            ("65-hex", "a" * 65, InvalidArgument),
            ("not-hex", "g" * 64, InvalidArgument),
        ],
    )
    c += vary("import_api_key", ("bob",), {"secret": "legacy-new-0123456789"}, "name", BAD_STRINGS)
    c += vary("import_api_key", ("bob",), {}, "secret", [("neither", None, InvalidArgument)])
    c += vary(
        "import_api_key",
        ("bob",),
        {"secret_sha256": "a" * 64},
        "secret",
        [("both", "legacy-new-0123456789", InvalidArgument)],
    )

    c += vary("revoke_api_key", (UNKNOWN_UUID,), {}, "key_id", BAD_IDS + [("None", None, TypeError)], 0)
    c += vary("revoke_api_key", (UNKNOWN_UUID,), {}, "key_id", [("unknown", UNKNOWN_UUID, NotFound)], 0)
    c += vary(
        "revoke_api_key", ("KEY_ID_ALICE",), {}, "user_id", [(lb, v, e) for lb, v, e in BAD_USER_IDS if lb != "None"]
    )
    c += vary("revoke_api_key", ("KEY_ID_ALICE",), {}, "user_id", [("other-user", "bob", NotFound)])

    c += vary("verify_api_key_credits", ("KEY_ALICE",), {}, "api_key", BAD_API_KEYS, 0)
    c += vary("verify_api_key_credits", ("KEY_ALICE",), {}, "api_key", [("near-miss", "NEAR_MISS", InvalidApiKey)], 0)
    c += vary(
        "verify_api_key_credits",
        ("KEY_ALICE",),
        {},
        "min_credits",
        [v for v in BAD_AMOUNTS if v[0] not in ("zero", "dec-minus-zero", "None")],
        None,
    )

    usage_base: dict[str, Any] = {"tokens": 10, "request_id": "bad-usage"}
    # api_key is optional here (key_id is the other way): None is "pass exactly one".
    usage_keys = [(lb, v, InvalidArgument if v is None else e) for lb, v, e in BAD_API_KEYS]
    c += vary("record_usage", ("KEY_ALICE",), usage_base, "api_key", usage_keys, 0)
    c += vary("record_usage", ("KEY_ALICE",), usage_base, "api_key", [("near-miss", "NEAR_MISS", InvalidApiKey)], 0)
    for field in ("tokens", "input_tokens", "output_tokens"):
        base = {k: v for k, v in usage_base.items() if k != "tokens"} if field != "tokens" else usage_base
        c += vary("record_usage", ("KEY_ALICE",), base, field, BAD_TOKENS)
    c += vary(
        "record_usage",
        ("KEY_ALICE",),
        usage_base,
        "input_tokens",
        [("with-tokens", 5, InvalidArgument)],
    )
    c += vary("record_usage", ("KEY_ALICE",), usage_base, "model", BAD_STRINGS)
    c += vary("record_usage", ("KEY_ALICE",), usage_base, "request_id", BAD_STRINGS)
    c += vary("record_usage", (None,), usage_base, "key_id", BAD_IDS + [("unknown", UNKNOWN_UUID, InvalidApiKey)])
    c += vary("record_usage", ("KEY_ALICE",), usage_base, "key_id", [("both", "KEY_ID_ALICE", InvalidArgument)])

    hold_base: dict[str, Any] = {"credits": 1, "request_id": "bad-hold"}
    c += vary("reserve", ("KEY_ALICE",), hold_base, "api_key", BAD_API_KEYS, 0)
    c += vary("reserve", ("KEY_ALICE",), hold_base, "credits", [v for v in BAD_AMOUNTS if v[0] != "None"])
    c += vary("reserve", ("KEY_ALICE",), hold_base, "credits", [("over-available", 10**6, InsufficientCredits)])
    c += vary("reserve", ("KEY_ALICE",), hold_base, "api_key", [("near-miss", "NEAR_MISS", InvalidApiKey)], 0)
    c += vary("reserve", ("KEY_ALICE",), {"request_id": "bad-hold"}, "tokens", BAD_TOKENS)
    c += vary(
        "reserve",
        ("KEY_ALICE",),
        hold_base,
        "ttl_seconds",
        INT_WRONG_TYPES
        + HUGE_INTS
        + [("zero", 0, InvalidArgument), ("negative", -1, InvalidArgument), ("86401", 86_401, InvalidArgument)],
    )
    c += vary("reserve", ("KEY_ALICE",), hold_base, "model", [("with-credits", "gpt", InvalidArgument)])
    c += vary("reserve", ("KEY_ALICE",), {"tokens": 10, "request_id": "bad-hold"}, "model", BAD_STRINGS)
    c += vary("reserve", ("KEY_ALICE",), {"credits": 1}, "request_id", BAD_STRINGS)
    c += vary("reserve", ("KEY_ALICE",), {"request_id": "bad-hold"}, "credits", [("neither", None, InvalidArgument)])
    c += vary("reserve", ("KEY_ALICE",), hold_base, "tokens", [("both", 10, InvalidArgument)])

    for m, kw in (("settle", {"credits": 1}), ("release", {})):
        c += vary(m, ("HOLD_ALICE",), kw, "hold_id", BAD_IDS + [("None", None, TypeError)], 0)
        c += vary(m, ("HOLD_ALICE",), kw, "hold_id", [("unknown", UNKNOWN_UUID, NotFound)], 0)
    # (0 credits settles a hold without charge: valid, not listed)
    c += vary(
        "settle",
        ("HOLD_ALICE",),
        {},
        "credits",
        [v for v in BAD_AMOUNTS if v[0] not in ("None", "zero", "dec-minus-zero")],
    )
    for field in ("tokens", "input_tokens", "output_tokens"):
        c += vary("settle", ("HOLD_ALICE",), {}, field, BAD_TOKENS)
    c += vary("settle", ("HOLD_ALICE",), {"tokens": 10}, "model", BAD_STRINGS)
    c += vary("settle", ("HOLD_ALICE",), {"credits": 1}, "tokens", [("both", 10, InvalidArgument)])

    price_values = [v for v in BAD_AMOUNTS if v[0] not in ("zero", "dec-minus-zero")]
    c += vary("set_model_price", ("gpt", 1, 2), {}, "model", NO_NONE, 0)
    c += vary("set_model_price", ("gpt", 1, 2), {}, "input_per_1k", price_values, 1)
    c += vary("set_model_price", ("gpt", 1, 2), {}, "output_per_1k", price_values, 2)
    # None is valid for these (the input price; no fee).
    optional_prices = [v for v in price_values if v[0] != "None"]
    for field in ("cached_input_per_1k", "cache_write_per_1k", "request_fee"):
        c += vary("set_model_price", ("gpt", 1, 2), {}, field, optional_prices)
    c += vary("set_model_price", ("gpt", 1, 2), {}, "effective_at", BAD_TIMES + [("past", PAST, InvalidArgument)])
    c += vary("price_history", (), {}, "model", BAD_STRINGS)

    # Cache counts are part of input_tokens: more than it is refused.
    cache_counts = BAD_TOKENS + [("over-input", 11, InvalidArgument)]
    for field in ("cached_input_tokens", "cache_write_tokens"):
        c += vary("record_usage", ("KEY_ALICE",), usage_base, field, cache_counts)
        c += vary("settle", ("HOLD_ALICE",), {"tokens": 10}, field, cache_counts)
        c += vary("settle", ("HOLD_ALICE",), {"credits": 1}, field, [("with-credits", 5, InvalidArgument)])

    for m in ("usage_summary", "usage_summary_json", "usage_summary_csv"):
        c += vary(m, (), {}, "user_id", [v for v in BAD_STRINGS if v[0] != "int"])
        c += vary(m, (), {}, "key_id", BAD_IDS)
        c += vary(m, (), {}, "model", BAD_STRINGS)
        c += vary(m, (), {}, "since", BAD_TIMES)
        c += vary(m, (), {"since": FUTURE}, "until", BAD_TIMES + [("inverted", PAST, InvalidArgument)])
        c += vary(m, (), {}, "group_by", BAD_GROUPS)
    c += vary("statement", ("alice", PAST, FUTURE), {}, "user_id", [v for v in NO_NONE if v[0] != "int"], 0)
    c += vary("statement", ("alice", PAST, FUTURE), {}, "since", BAD_TIMES + [("None", None, TypeError)], 1)
    c += vary(
        "statement",
        ("alice", PAST, FUTURE),
        {},
        "until",
        BAD_TIMES + [("None", None, TypeError), ("inverted", PAST - timedelta(days=1), InvalidArgument)],
        2,
    )

    for field in ("table", "id_column", "balance_column"):
        c += vary(
            "import_users",
            (),
            {},
            field,
            [(label, v, exc) for label, v, exc in BAD_STRINGS if label not in ("1MiB", "256B")]
            + [
                ("injection", 'users; DROP TABLE "creditgate_entries"; --', InvalidArgument),
                ("quote", 'us"ers', InvalidArgument),
                ("None", None, TypeError),
            ],
        )
    c += vary("import_users", (), {}, "kind", NO_NONE + [("usage", "usage", InvalidArgument)])
    c += vary("import_users", (), {"keys_table": "keys"}, "key_format", NO_NONE + [("md5", "md5", InvalidArgument)])

    c += vary(
        "backup",
        ("never-written.db",),
        {},
        "dest",
        [
            ("empty", "", InvalidArgument),
            ("nul", "a\0b.db", InvalidArgument),
            ("surrogate", "\ud800.db", InvalidArgument),
            ("bytes", b"x.db", TypeError),
            ("int", 42, TypeError),
            ("None", None, TypeError),
        ],
        0,
    )

    # Methods without arguments refuse extra ones.
    for m in ("list_model_prices", "audit", "metrics", "metrics_prometheus", "report", "migrate"):
        c += vary(m, ("extra",), {}, "extra", [("positional", "alice", TypeError)], 0)
    # Webhooks (this ledger has no CREDITGATE_WEBHOOK_KEY: only what needs none,
    # and what the binding refuses before the core looks for the key).
    unknown_hook = "wh_" + "0" * 32
    bad_hook_ids = [(lb, v, e) for lb, v, e in NO_NONE if lb not in ("1MiB", "256B", "empty", "nul")]
    for m in ("webhook", "delete_webhook", "set_webhook_enabled", "replay_dead_letters"):
        args: tuple[Any, ...] = (unknown_hook, True) if m == "set_webhook_enabled" else (unknown_hook,)
        c += vary(m, args, {}, "webhook_id", bad_hook_ids + [("unknown", unknown_hook, NotFound)], 0)
    c += vary("set_webhook_enabled", (unknown_hook, True), {}, "enabled", [("str", "yes", TypeError)], 1)
    c += vary(
        "webhook_dead_letters",
        (),
        {},
        "limit",
        INT_WRONG_TYPES + HUGE_INTS + [("zero", 0, InvalidArgument), ("10**6", 10**6, InvalidArgument)],
    )
    c += vary(
        "replay_dead_letters",
        (unknown_hook,),
        {},
        "event_ids",
        [("str", "12", TypeError), ("floats", [1.5], TypeError), ("huge", [2**70], InvalidArgument)],
    )
    options = ("timeout_ms", "max_attempts", "backoff_base_ms", "backoff_max_ms", "batch_size")
    for field in options:
        c += vary("deliver_webhooks", (), {}, field, INT_WRONG_TYPES + HUGE_INTS)
        c += vary(
            "handle_events",
            ("consumer", print),
            {},
            field,
            INT_WRONG_TYPES + HUGE_INTS + [("negative", -1, InvalidArgument)],
        )
    c += vary("handle_events", ("consumer", print), {}, "handler", [("str", "print", TypeError)], 1)
    c += vary(
        "handle_events",
        ("consumer", print),
        {},
        "events",
        [("str", "balance.low", TypeError), ("unknown", ["no.such.kind"], InvalidArgument), ("int", 5, TypeError)],
    )
    c += vary(
        "handle_events", ("consumer", print), {}, "consumer", [(lb, v, e) for lb, v, e in NO_NONE if lb != "nul"], 0
    )
    return c


CASES = build_cases()

# Messages that explain the problem without the argument's own name.
MESSAGES = {
    "reverse_payment-amount_minor-more-than-paid": r"cannot reverse 501 minor units .* only 500 remain",
    "settle-tokens-both": r"pass credits alone, or token counts",
    "settle-cached_input_tokens-with-credits": r"pass credits alone, or token counts",
    "settle-cache_write_tokens-with-credits": r"pass credits alone, or token counts",
    **{
        f"{m}-{case}": pattern
        for m in ("usage_summary", "usage_summary_json", "usage_summary_csv")
        for case, pattern in (
            ("group_by-unknown", r"group_by: unknown group \"week\", expected one of day, model, key, member, project"),
            ("group_by-twice", r"group \"day\" is given twice"),
            ("group_by-empty-name", r"unknown group"),
            ("group_by-nul", r"unknown group"),
            ("group_by-a-str-of-unknown", r"group_by: unknown group \"week\""),
            ("group_by-a-str-twice", r"group_by: group \"day\" is given twice"),
            ("until-inverted", r"the range is inverted: since .* is after until"),
        )
    },
    "statement-until-inverted": r"the range is inverted: since .* is after until",
}
_tried: list[str] = []


# ----- the ledger ------------------------------------------------------------


@dataclasses.dataclass
class Ledger:
    manager: LocalCreditManager
    key: str  # alice's secret
    key_id: str
    hold_id: str
    baseline: dict[str, Any]
    dirty: bool = False


USERS = ("alice", "bob", "newcomer")


def seed(m: LocalCreditManager) -> tuple[str, str, str]:
    m.record_payment("alice", "pay_alice", 500)
    key = m.create_api_key("alice", name="main")
    m.record_usage(key.secret, tokens=1000, request_id="seed-usage")
    hold = m.reserve(key.secret, credits=2, request_id="seed-hold")
    m.add_credits("bob", 10, reference="seed")
    m.import_api_key("bob", secret=LEGACY_SECRET, name="legacy")
    m.set_model_price("gpt", 1, 2)
    return key.secret, key.key_id, hold.hold_id


def snapshot(m: LocalCreditManager) -> dict[str, Any]:
    audit = m.audit()
    assert audit.ok, audit
    state: dict[str, Any] = {
        "audit": (audit.accounts_checked, audit.entries_checked),
        "report": m.report().to_dict(),
        "prices": m.list_model_prices(),
        "price_history": [v.to_dict() for v in m.price_history()],
    }
    for u in USERS:
        keys = [k.to_dict() for k in m.list_api_keys(u)]
        for k in keys:
            k.pop("last_used_at")  # may be updated lazily by a successful verify of the seed
        state[u] = {
            "balance": m.get_balance(u),
            "account": m.account(u).to_dict(),
            "transactions": [e.to_dict() for e in m.transactions(u, limit=1000)],
            "keys": keys,
        }
    return state


@pytest.fixture(scope="module")
def _databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """Makes fresh ledger databases (SQLite files, or PostgreSQL databases
    dropped at the end), as conftest's `db_url` does for one test."""
    made: list[str] = []

    def new() -> str:
        if not conftest.IS_POSTGRES:
            return f"sqlite:///{tmp_path_factory.mktemp('bad_input') / 'ledger.db'}"
        name = f"cg_py_bad_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        conftest.psql(conftest.server_url(), f'CREATE DATABASE "{name}"')
        made.append(name)
        return conftest.with_database(conftest.server_url(), name)

    yield new
    for name in made:
        conftest.psql(conftest.server_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def _ledger_holder(_databases: Callable[[], str]) -> list[Ledger]:
    return []


@pytest.fixture
def ledger(_ledger_holder: list[Ledger], _databases: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> Ledger:
    if not _ledger_holder or _ledger_holder[0].dirty:
        m = LocalCreditManager(_databases())
        key, key_id, hold_id = seed(m)
        _ledger_holder[:] = [Ledger(m, key, key_id, hold_id, snapshot(m))]
    return _ledger_holder[0]


def resolve(value: Any, ld: Ledger) -> Any:
    """Placeholders for values that exist only once the ledger is seeded."""
    if isinstance(value, str):
        if value == "KEY_ALICE":
            return ld.key
        if value == "KEY_ID_ALICE":
            return ld.key_id
        if value == "HOLD_ALICE":
            return ld.hold_id
        if value == "NEAR_MISS":  # one character of the body changed: a bad checksum
            body = ld.key[-10]
            return ld.key[:-10] + ("A" if body != "A" else "B") + ld.key[-9:]
        if value == "CHECKSUM":  # our prefix and length, wrong checksum
            return ld.key[:-1] + ("A" if ld.key[-1] != "A" else "B")
    return value


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_argument(case: Case, ledger: Ledger) -> None:
    m = ledger.manager
    args = tuple(resolve(a, ledger) for a in case.args)
    kwargs = {k: resolve(v, ledger) for k, v in case.kwargs.items()}
    _tried.append(case.id)
    try:
        with pytest.raises(BaseException) as info:
            getattr(m, case.method)(*args, **kwargs)
        err = info.value
        name = type(err).__name__
        assert name not in ("PanicException", "SystemError"), f"{name}: {err}"
        assert isinstance(err, Exception), f"{name} is not an Exception: {err}"
        if issubclass(case.expected, CreditError):
            assert type(err) is case.expected, f"expected {case.expected.__name__}, got {name}: {err}"
            assert err.code == case.expected.code
        else:
            assert isinstance(err, case.expected) and not isinstance(err, CreditError), f"got {name}: {err}"
        message = str(err)
        assert message and len(message) < 2000, f"{name} with a missing or runaway message: {message[:200]!r}"
        if case.id in MESSAGES:
            assert re.search(MESSAGES[case.id], message), message
        elif case.expected in (InvalidArgument, TypeError) and case.field != "extra":
            assert case.field in message, f"the message does not name {case.field}: {message!r}"
        secret_parts = [ledger.key, ledger.key[3:], LEGACY_SECRET]
        for text in (message, repr(err)):
            assert not any(s in text for s in secret_parts), f"a secret leaked: {text[:200]!r}"
    finally:
        after = snapshot(m)
        if after != ledger.baseline:
            ledger.dirty = True
    assert after == ledger.baseline, "the failed call changed the ledger"


SETTINGS: list[tuple[str, Any, type[BaseException]]] = [
    ("database_url", "", InvalidArgument),
    ("database_url", "mysql://u:pw@h/db", InvalidArgument),
    ("database_url", "sqlite:///a\0b", InvalidArgument),
    ("database_url", "sqlite:///\ud800.db", InvalidArgument),
    ("database_url", b"sqlite:///x.db", TypeError),
    ("database_url", 5, TypeError),
    ("api_key_prefix", "", InvalidArgument),
    ("api_key_prefix", "sk\0", InvalidArgument),
    ("api_key_prefix", "sk_\ud800", InvalidArgument),
    ("api_key_prefix", "p" * MIB, InvalidArgument),
    ("api_key_prefix", "a b", InvalidArgument),
    ("api_key_prefix", b"sk_", TypeError),
    ("api_key_pepper", "", InvalidArgument),
    ("api_key_pepper", "short", InvalidArgument),
    ("api_key_pepper", "p" * MIB, InvalidArgument),
    ("api_key_pepper", "pepper-\ud800-0123456789", InvalidArgument),
    ("api_key_pepper", b"pepper-0123456789", TypeError),
]
for _field in ("min_credits_api_key", "credits_per_1k_tokens"):
    SETTINGS += [(_field, v, e) for lb, v, e in BAD_AMOUNTS if lb not in ("zero", "dec-minus-zero", "None")]
for _field in ("credits_per_usd", "max_active_keys_per_user", "max_active_holds_per_user"):
    SETTINGS += [(_field, v, e) for lb, v, e in INT_WRONG_TYPES + HUGE_INTS] + [
        (_field, 0, InvalidArgument),
        (_field, -1, InvalidArgument),
        (_field, 2**32, InvalidArgument),
    ]


@pytest.mark.parametrize(("field", "value", "expected"), SETTINGS, ids=lambda v: repr(v)[:24])
def test_hostile_setting(field: str, value: Any, expected: type[BaseException], tmp_path: Path) -> None:
    """The constructor checks every setting before it opens anything."""
    url = f"sqlite:///{tmp_path / 'never.db'}"
    kwargs = {field: value} if field != "database_url" else {}
    _tried.append(f"LocalCreditManager-{field}")
    with pytest.raises(BaseException) as info:
        LocalCreditManager(value if field == "database_url" else url, **kwargs)
    err = info.value
    assert isinstance(err, expected) and isinstance(err, Exception), f"{type(err).__name__}: {err}"
    if expected is TypeError:
        assert not isinstance(err, CreditError)
    else:
        assert type(err) is expected
    message = str(err)
    assert 0 < len(message) < 2000, message[:200]
    name = "url" if field == "database_url" else field.lower().replace("_", "")
    assert name in message.lower().replace("_", "").replace(" ", ""), message
    if field in ("api_key_pepper", "database_url") and isinstance(value, str) and len(value) > 8:
        assert value not in message and "pw@" not in message, message
    assert not (tmp_path / "never.db").exists()


def test_zz_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Counts the inputs tried (run last: the file's order)."""
    assert len(CASES) >= 500
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    with capsys.disabled():
        backend = "PostgreSQL" if conftest.IS_POSTGRES else "SQLite"
        methods = len({c.method for c in CASES}) + 1  # and the constructor
        total = len(CASES) + len(SETTINGS)
        sys.stdout.write(
            f"\nbad-input matrix ({backend}): {len(_tried)} of {total} hostile calls tried "
            f"over {methods} methods and the constructor's settings\n"
        )
