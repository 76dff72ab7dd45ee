"""Type conversion and error mapping of the Python API (docs/reference.md, §5, §8.1)."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import creditgate
import pytest
from creditgate import (
    CreditError,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidApiKey,
    InvalidArgument,
    LimitReached,
    LocalCreditManager,
    NotFound,
    RateLimited,
    StorageError,
)

UNKNOWN_UUID = "01a213dc-0000-7000-8000-000000000000"


def test_public_names_and_version() -> None:
    for name in creditgate.__all__:
        assert hasattr(creditgate, name), name
    assert creditgate.__version__.count(".") == 2


@dataclasses.dataclass
class Case:
    cls: type[CreditError]
    code: str
    status: int


ERROR_TABLE = [
    Case(InsufficientCredits, "insufficient_credits", 402),
    Case(InvalidApiKey, "invalid_api_key", 401),
    Case(LimitReached, "limit_reached", 403),
    Case(NotFound, "not_found", 404),
    Case(IdempotencyConflict, "idempotency_conflict", 409),
    Case(InvalidArgument, "invalid_argument", 400),
    Case(StorageError, "storage", 503),
    Case(CreditError, "internal", 500),
    Case(RateLimited, "rate_limited", 429),
]


@pytest.mark.parametrize("case", ERROR_TABLE, ids=lambda c: c.code)
def test_error_classes_carry_code_and_status(case: Case) -> None:
    assert issubclass(case.cls, CreditError) and issubclass(case.cls, Exception)
    assert case.cls.code == case.code and case.cls.status_code == case.status
    assert case.cls.__module__ == "creditgate"
    assert getattr(creditgate, case.cls.__name__) is case.cls


def test_invalid_argument_is_a_value_error(manager: LocalCreditManager) -> None:
    assert issubclass(InvalidArgument, ValueError)
    with pytest.raises(ValueError, match="finer than one micro-credit"):
        manager.add_credits("u", Decimal("1e-9"))


def test_each_error_is_raised_with_its_attributes(db_url: str) -> None:
    m = LocalCreditManager(db_url, max_active_keys_per_user=1, min_credits_api_key=0)
    with pytest.raises(InsufficientCredits) as insufficient:
        m.deduct_credits("u", "2.5")
    e: Any = insufficient.value
    assert (e.code, e.status_code, e.required, e.available) == ("insufficient_credits", 402, Decimal("2.5"), 0)
    assert isinstance(e.required, Decimal) and "2.5" in str(e)
    m.create_api_key("u")
    with pytest.raises(LimitReached) as limit:
        m.create_api_key("u")
    assert limit.value.limit == "max_active_keys_per_user" and limit.value.status_code == 403
    with pytest.raises(InvalidApiKey) as bad_key:
        m.verify_api_key_credits("sk_not-a-real-key-at-all")
    assert bad_key.value.code == "invalid_api_key" and bad_key.value.status_code == 401
    with pytest.raises(NotFound):
        m.release(UNKNOWN_UUID)
    with pytest.raises(NotFound):
        m.revoke_api_key(UNKNOWN_UUID)
    with pytest.raises(InvalidApiKey):
        m.record_usage(key_id=UNKNOWN_UUID, tokens=1)


def test_storage_error_for_an_unusable_database(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as e:
        LocalCreditManager(f"sqlite:///{tmp_path}/no/such/dir/ledger.db")
    assert e.value.status_code == 503 and e.value.code == "storage"


def test_exceptions_pickle_with_their_attributes(manager: LocalCreditManager) -> None:
    with pytest.raises(InsufficientCredits) as e:
        manager.deduct_credits("u", 1)
    copy = pickle.loads(pickle.dumps(e.value))
    assert type(copy) is InsufficientCredits and copy.required == 1 and str(copy) == str(e.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (5000, "5000"),
        ("1.5", "1.5"),
        (Decimal("5E+3"), "5000"),
        (Decimal("1.500000000"), "1.5"),
        (Decimal("0.000001"), "0.000001"),
        ("0.000001", "0.000001"),
        (Decimal("1000000000000"), "1000000000000"),
    ],
)
def test_amounts_in_and_decimal_out(manager: LocalCreditManager, given: Any, expected: str) -> None:
    entry = manager.add_credits("u", given)
    assert isinstance(entry.amount, Decimal) and str(entry.amount) == expected
    assert str(manager.get_balance("u")) == expected


@pytest.mark.parametrize("bad", [1.5, 1.0, True, False, [1], None, b"1", object()])
def test_wrong_amount_types_are_type_errors(manager: LocalCreditManager, bad: Any) -> None:
    with pytest.raises(TypeError):
        manager.add_credits("u", bad)
    with pytest.raises(TypeError):
        manager.deduct_credits("u", bad)


@pytest.mark.parametrize(
    "bad",
    [
        Decimal("1e-9"),
        Decimal("0.0000001"),
        "0.0000001",
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("1e999999999"),
        "1e3",
        "abc",
        "",
        0,
        -1,
        Decimal("1000000000000.000001"),
        2**63,
        -(2**64),
    ],
)
def test_out_of_range_or_malformed_amounts_are_invalid(manager: LocalCreditManager, bad: Any) -> None:
    with pytest.raises(InvalidArgument):
        manager.add_credits("u", bad)
    assert manager.transactions("u") == []


def test_negative_adjustment_is_strict(manager: LocalCreditManager) -> None:
    manager.add_credits("u", 10)
    entry = manager.add_credits("u", "-2.25", kind="adjustment")
    assert entry.amount == Decimal("-2.25") and entry.balance_after == Decimal("7.75")
    with pytest.raises(InsufficientCredits):
        manager.add_credits("u", -8, kind="adjustment")
    with pytest.raises(InvalidArgument):
        manager.add_credits("u", 1, kind="usage")


@pytest.mark.parametrize("bad", [1.0, True, "10", Decimal(10)])
def test_token_counts_are_ints_only(manager: LocalCreditManager, paid_key: str, bad: Any) -> None:
    for kwargs in ({"tokens": bad}, {"input_tokens": bad}, {"output_tokens": bad}):
        with pytest.raises(TypeError):
            manager.record_usage(paid_key, **kwargs)
    with pytest.raises(TypeError):
        manager.reserve(paid_key, tokens=bad)


@pytest.mark.parametrize("bad", [-1, 10**9 + 1, 2**63, 2**100])
def test_token_counts_out_of_range_are_invalid(manager: LocalCreditManager, paid_key: str, bad: int) -> None:
    with pytest.raises(InvalidArgument):
        manager.record_usage(paid_key, tokens=bad)
    with pytest.raises(InvalidArgument):
        manager.record_usage(paid_key, output_tokens=bad)


def test_tokens_alone_means_input_tokens(manager: LocalCreditManager, paid_key: str) -> None:
    manager.record_usage(paid_key, tokens=1234, request_id="r1")
    entry = manager.transactions("alice", limit=1)[0]
    assert (entry.input_tokens, entry.output_tokens, entry.kind) == (1234, 0, "usage")
    assert entry.idempotency_key == "usage:r1" and entry.api_key_id is not None
    with pytest.raises(InvalidArgument):
        manager.record_usage(paid_key, tokens=1, input_tokens=1)
    with pytest.raises(InvalidArgument):
        manager.record_usage(paid_key, tokens=1, output_tokens=1)
    # No count at all would give the call away; an explicit 0 is a real count.
    with pytest.raises(InvalidArgument, match="no usage given"):
        manager.record_usage(paid_key, request_id="nothing")
    zero = manager.record_usage(paid_key, tokens=0, request_id="nothing")
    assert zero.tokens == 0 and zero.charged == 0


def test_key_selection_and_hold_arguments(manager: LocalCreditManager, paid_key: str) -> None:
    key_id = manager.list_api_keys("alice")[0].key_id
    assert manager.record_usage(key_id=key_id, tokens=1000).charged == 1
    with pytest.raises(InvalidArgument):
        manager.record_usage(tokens=1)
    with pytest.raises(InvalidArgument):
        manager.record_usage(paid_key, key_id=key_id, tokens=1)
    with pytest.raises(InvalidArgument):
        manager.reserve(paid_key)
    with pytest.raises(InvalidArgument):
        manager.reserve(paid_key, credits=1, tokens=1)
    with pytest.raises(InvalidArgument):
        manager.reserve(paid_key, credits=1, ttl_seconds=0)
    with pytest.raises(TypeError):
        manager.reserve(paid_key, credits=1, ttl_seconds=1.5)  # type: ignore[arg-type]
    hold = manager.reserve(paid_key, credits=1)
    with pytest.raises(InvalidArgument):
        manager.settle(hold.hold_id, credits=1, tokens=1)
    assert manager.settle(hold.hold_id, credits="0.5").charged == Decimal("0.5")


@pytest.mark.parametrize("bad", ["nope", "", "01a213dc-0000-7000-8000", "x" * 100])
def test_malformed_ids_are_invalid(manager: LocalCreditManager, paid_key: str, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        manager.revoke_api_key(bad)
    with pytest.raises(InvalidArgument):
        manager.settle(bad, tokens=1)
    with pytest.raises(InvalidArgument):
        manager.release(bad)
    with pytest.raises(InvalidArgument):
        manager.transactions("alice", before=bad)
    with pytest.raises(InvalidArgument):
        manager.record_usage(key_id=bad, tokens=1)


def test_user_ids(manager: LocalCreditManager) -> None:
    manager.add_credits(42, 5)
    assert manager.get_balance("42") == 5 and manager.account(42).user_id == "42"
    assert manager.get_balance("nobody") == 0
    for bad in (True, 4.2, None, b"u"):
        with pytest.raises(TypeError):
            manager.get_balance(bad)  # type: ignore[arg-type]
    for invalid in ("", "a\0b", "x" * 256):
        with pytest.raises(InvalidArgument):
            manager.get_balance(invalid)


def test_integers_are_checked(manager: LocalCreditManager) -> None:
    with pytest.raises(TypeError):
        manager.record_payment("u", "p", 5.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        manager.record_payment("u", "p", True)
    with pytest.raises(InvalidArgument):
        manager.record_payment("u", "p", 2**64)
    with pytest.raises(InvalidArgument):
        manager.transactions("u", limit=-1)
    with pytest.raises(TypeError):
        manager.transactions("u", limit=True)
    with pytest.raises(InvalidArgument):
        LocalCreditManager("sqlite:///:memory:", max_active_keys_per_user=-1)


def test_metadata_round_trips(manager: LocalCreditManager) -> None:
    meta = {"order": "42", "n": 3, "big": 2**63, "ok": True, "none": None, "list": [1, "a", {"x": 1.5}]}
    entry = manager.add_credits("u", 1, metadata=meta)
    assert entry.metadata == meta
    assert manager.transactions("u")[0].metadata == meta
    assert manager.add_credits("u", 1).metadata is None
    with pytest.raises(TypeError):
        manager.add_credits("u", 1, metadata=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        manager.add_credits("u", 1, metadata={1: "int key"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        manager.add_credits("u", 1, metadata={"d": Decimal(1)})
    with pytest.raises(InvalidArgument):
        manager.add_credits("u", 1, metadata={"x": float("nan")})
    with pytest.raises(InvalidArgument):
        manager.add_credits("u", 1, metadata={"x": "y" * 5000})


def test_datetimes_are_aware_utc(manager: LocalCreditManager, paid_key: str) -> None:
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    entry = manager.transactions("alice")[0]
    hold = manager.reserve(paid_key, credits=1, ttl_seconds=60)
    for value in (entry.created_at, hold.expires_at, manager.account("alice").created_at):
        assert isinstance(value, datetime) and value.tzinfo is not None
        assert value.utcoffset() == timedelta(0) and value > before
    assert timedelta(seconds=55) < hold.expires_at - datetime.now(timezone.utc) <= timedelta(seconds=60)
    assert manager.account("stranger").created_at is None


def test_results_are_frozen_and_secret_free(manager: LocalCreditManager) -> None:
    manager.record_payment("u", "p", 500)
    key = manager.create_api_key("u", "prod")
    for text in (repr(key), str(key), repr(manager.list_api_keys("u")), repr(manager.transactions("u"))):
        assert key.secret not in text and key.secret[8:20] not in text
    assert key.prefix in repr(key) and "prod" in repr(key)
    assert key.to_dict()["secret"] == key.secret
    with pytest.raises(AttributeError):
        key.secret = "x"  # type: ignore[misc]
    entry = manager.transactions("u")[0]
    with pytest.raises(AttributeError):
        entry.amount = Decimal(1)  # type: ignore[misc]
    assert entry.to_dict()["amount"] == Decimal("5000") and repr(entry).startswith("Entry(")
    with pytest.raises(InvalidApiKey) as e:
        manager.verify_api_key_credits(key.secret[:-1] + ("A" if key.secret[-1] != "A" else "B"))
    assert key.secret[3:20] not in str(e.value)


@pytest.mark.sqlite_only("compares with the raw URL; a PostgreSQL URL is shown with its password redacted")
def test_manager_repr_hides_the_pepper(db_url: str) -> None:
    m = LocalCreditManager(db_url, api_key_pepper="pepper-secret-0123456789")
    assert "pepper-secret" not in repr(m) and m.database_url == db_url
    assert repr(m) == f"LocalCreditManager(database_url={db_url!r})"


def test_settings_come_from_arguments_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    m = LocalCreditManager()  # nothing set: sqlite:///creditgate.db in the working directory
    assert m.database_url.endswith("/creditgate.db") and (tmp_path / "creditgate.db").exists()
    env_db = tmp_path / "env.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{env_db}")
    monkeypatch.setenv("MIN_CREDITS_API_KEY", "0")
    monkeypatch.setenv("CREDITS_PER_USD", "2000")
    from_env = LocalCreditManager()
    assert from_env.database_url == f"sqlite:///{env_db}"
    assert from_env.can_generate_api_key("u").allowed
    assert from_env.record_payment("u", "p", 100).amount == 2000
    explicit = LocalCreditManager(min_credits_api_key=Decimal("0.5"), credits_per_usd=10, api_key_prefix="cg_")
    assert explicit.can_generate_api_key("fresh").required == Decimal("0.5")
    explicit.add_credits("fresh", 1)
    assert explicit.create_api_key("fresh").secret.startswith("cg_")
    monkeypatch.setenv("MIN_CREDITS_API_KEY", "lots")
    with pytest.raises(InvalidArgument):
        LocalCreditManager()


def test_price_per_1k_tokens_setting(db_url: str) -> None:
    m = LocalCreditManager(db_url, credits_per_1k_tokens="0.25", min_credits_api_key=0)
    m.add_credits("u", 10)
    key = m.create_api_key("u").secret
    assert m.record_usage(key, input_tokens=1000, output_tokens=3).charged == Decimal("0.25075")
