"""The seed's four scenarios (docs/reference.md) and the ledger stories around them,
through the Python API."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import Decimal

import pytest
from creditgate import (
    IdempotencyConflict,
    InsufficientCredits,
    InvalidApiKey,
    InvalidArgument,
    LocalCreditManager,
    NotFound,
    StorageError,
)


def test_seed_scenarios(manager: LocalCreditManager) -> None:
    # 1. A new user tries to generate an API key -> 402.
    eligibility = manager.can_generate_api_key("user-1")
    assert not eligibility and eligibility.is_first_key
    assert eligibility.required == Decimal("5000") and eligibility.available == 0
    with pytest.raises(InsufficientCredits) as denied:
        manager.create_api_key("user-1")
    assert denied.value.status_code == 402
    assert denied.value.required == Decimal("5000") and denied.value.available == Decimal("0")

    # 2. The user purchases $5 (5,000 credits) -> the key is generated.
    purchase = manager.record_payment("user-1", "pay_1", 500, "USD")
    assert purchase.kind == "purchase" and purchase.amount == Decimal("5000")
    assert purchase.amount_minor == 500 and purchase.currency == "USD"
    assert manager.can_generate_api_key("user-1")
    key = manager.create_api_key("user-1", "prod")
    assert key.secret.startswith("sk_") and key.prefix == key.secret[:8]

    # 3. Calls with the key: the balance drops by tokens/1000 credits each time.
    balance = manager.get_balance("user-1")
    for i, tokens in enumerate([1000, 1500, 1]):
        manager.verify_api_key_credits(key.secret)
        charge = manager.record_usage(key.secret, tokens=tokens, request_id=f"req-{i}")
        expected = balance - Decimal(tokens) / 1000
        assert charge.charged == Decimal(tokens) / 1000 and charge.balance == expected
        assert manager.get_balance("user-1") == expected
        balance = expected
    assert balance == Decimal("4997.499")

    # 4. Use the key until credits run low -> the next call gets 402.
    charge = manager.record_usage(key.secret, tokens=4_997_000, request_id="big")
    assert charge.balance == Decimal("0.499") and not charge.overdraft
    with pytest.raises(InsufficientCredits) as low:
        manager.verify_api_key_credits(key.secret)
    assert low.value.status_code == 402 and low.value.available == Decimal("0.499")
    assert manager.audit().ok


def test_additional_keys_need_only_one_credit(manager: LocalCreditManager) -> None:
    manager.record_payment("u", "pay_1", 500)
    first = manager.create_api_key("u")
    manager.deduct_credits("u", Decimal("4999.5"))
    eligibility = manager.can_generate_api_key("u")
    assert not eligibility.is_first_key and eligibility.required == 1 and not eligibility
    with pytest.raises(InsufficientCredits):
        manager.create_api_key("u")
    manager.add_credits("u", 1)
    second = manager.create_api_key("u", name="second")
    assert second.key_id != first.key_id
    # Revoking every key does not make the next one "first" again.
    for k in (first, second):
        manager.revoke_api_key(k.key_id, user_id="u")
    assert not manager.can_generate_api_key("u").is_first_key
    assert [k.revoked_at is not None for k in manager.list_api_keys("u")] == [True, True]
    with pytest.raises(InvalidApiKey):
        manager.verify_api_key_credits(first.secret)


def test_usage_overdraft_is_recorded_and_next_verify_fails(manager: LocalCreditManager, paid_key: str) -> None:
    charge = manager.record_usage(paid_key, input_tokens=5_000_000, output_tokens=1000, request_id="r")
    assert charge.overdraft and charge.balance == Decimal("-1")
    assert manager.metrics()["usage_overdrafts_total"] == 1
    with pytest.raises(InsufficientCredits):
        manager.verify_api_key_credits(paid_key)
    assert manager.report().overdraft_receivable == 1


def test_idempotent_payment_webhook(manager: LocalCreditManager) -> None:
    first = manager.record_payment("u", "pi_42", 500, "usd")
    again = manager.record_payment("u", "pi_42", 500, "USD")
    assert again.replayed and not first.replayed and again.id == first.id
    assert manager.get_balance("u") == 5000
    with pytest.raises(IdempotencyConflict) as other_user:
        manager.record_payment("someone-else", "pi_42", 500)
    assert other_user.value.status_code == 409 and other_user.value.code == "idempotency_conflict"
    with pytest.raises(IdempotencyConflict):
        manager.record_payment("u", "pi_42", 900)
    with pytest.raises(InvalidArgument):
        manager.record_payment("u", "pi_43", 500, "EUR")
    assert len(manager.transactions("u")) == 1


def test_refund_takes_the_credits_back(manager: LocalCreditManager) -> None:
    manager.record_payment("u", "pi_1", 1000)  # $10 -> 10,000 credits
    part = manager.reverse_payment("pi_1", 300, "partial refund", reversal_id="re_1")
    assert part.kind == "reversal" and part.amount == Decimal("-3000") and part.amount_minor == 300
    # The reason, and how the payment's own grant covered the reversal.
    assert part.metadata is not None and part.metadata["reason"] == "partial refund"
    assert part.metadata["from_grant_micros"] == 3_000_000_000 and part.metadata["already_spent_micros"] == 0
    assert manager.reverse_payment("pi_1", 300, reversal_id="re_1").replayed
    rest = manager.reverse_payment("pi_1")
    assert rest.amount == Decimal("-7000") and manager.get_balance("u") == 0
    with pytest.raises(InvalidArgument):
        manager.reverse_payment("pi_1", reversal_id="re_2")
    with pytest.raises(NotFound):
        manager.reverse_payment("pi_unknown")
    assert manager.report().revenue_usd_minor == 0


def test_legacy_key_keeps_working_and_is_charged(manager: LocalCreditManager) -> None:
    legacy = "legacy-0123456789abcdef"
    info = manager.import_api_key("old-user", secret=legacy, name="from v1")
    assert info.legacy and info.prefix is not None and len(info.prefix) <= len(legacy) // 4
    manager.add_credits("old-user", 100, kind="adjustment")
    assert manager.verify_api_key_credits(legacy).user_id == "old-user"
    charge = manager.record_usage(legacy, tokens=2000, request_id="legacy-1")
    assert charge.charged == 2 and manager.get_balance("old-user") == 98
    # An imported key is not a paid-for first key.
    assert manager.can_generate_api_key("old-user").is_first_key
    assert [k.key_id for k in manager.list_api_keys("old-user")] == [info.key_id]
    with pytest.raises(InvalidArgument):
        manager.import_api_key("old-user", secret="short")
    with pytest.raises(InvalidArgument):
        manager.import_api_key("old-user", secret_sha256="not-hex")


def test_legacy_key_imported_by_hash_with_a_pepper(db_url: str) -> None:
    m = LocalCreditManager(db_url, api_key_pepper="pepper-0123456789abcdef")
    legacy = "old-style-key-with-no-prefix"
    digest = hashlib.sha256(legacy.encode()).hexdigest()
    info = m.import_api_key("u", secret_sha256=digest)
    assert info.prefix is None and info.legacy
    assert m.verify_api_key_credits(legacy, min_credits=0).key_id == info.key_id


def test_import_balance_is_idempotent(manager: LocalCreditManager) -> None:
    entry = manager.import_balance(7, Decimal("4998.5"))
    assert entry.kind == "adjustment" and entry.idempotency_key == "import:7" and entry.user_id == "7"
    assert manager.import_balance("7", "4998.5").replayed
    assert manager.import_balance("owes", -3).balance_after == -3
    assert manager.import_balance("buyer", 10, "purchase").kind == "purchase"
    with pytest.raises(InvalidArgument):
        manager.import_balance("x", 1, "grant")


def test_import_users_from_the_host_tables(host_sql: Callable[[str], None], db_url: str) -> None:
    # The host's own tables, as the seed's migration left them, in the
    # ledger's database (written before the ledger opens it).
    digest = hashlib.sha256(b"hashed-legacy-key-for-3").hexdigest().upper()
    host_sql(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, credit_balance DOUBLE PRECISION);"
        "INSERT INTO users VALUES (1, 'a@x', 5000.0), (2, 'b@x', 0), (3, 'c@x', 4998.5), (4, 'd@x', NULL);"
        "CREATE TABLE api_keys (user_id INTEGER, key TEXT);"
        "INSERT INTO api_keys VALUES (1, 'legacy-user-one-key-abcdef');"
        "CREATE TABLE key_hashes (owner TEXT, digest TEXT);"
        f"INSERT INTO key_hashes VALUES ('3', '{digest}');"
    )
    m = LocalCreditManager(db_url)
    first = m.import_users(keys_table="api_keys")
    assert (first.users, first.balances_imported, first.balances_already_imported) == (4, 2, 0)
    assert (first.balances_skipped, first.keys) == (2, 1)
    assert m.get_balance("1") == 5000 and m.get_balance("3") == Decimal("4998.5")
    entry = m.transactions("1")[0]
    assert entry.kind == "adjustment" and entry.idempotency_key == "import:1"
    # Twice changes nothing.
    again = m.import_users(keys_table="api_keys")
    assert (again.balances_imported, again.balances_already_imported, again.keys) == (0, 2, 1)
    assert len(m.transactions("1")) == 1
    # The same balances under another kind: a conflict, not a second credit.
    with pytest.raises(IdempotencyConflict):
        m.import_users(kind="purchase")
    hashed = m.import_users(keys_table="key_hashes", key_user_column="owner", key_column="digest", key_format="sha256")
    assert hashed.keys == 1
    assert m.verify_api_key_credits("legacy-user-one-key-abcdef").user_id == "1"
    assert m.verify_api_key_credits("hashed-legacy-key-for-3").user_id == "3"
    assert all(k.legacy for k in m.list_api_keys("1"))
    assert m.audit().ok


def test_import_users_rejects_bad_input(host_sql: Callable[[str], None], db_url: str) -> None:
    host_sql(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, credit_balance TEXT);INSERT INTO users VALUES (1, '0.0000001');"
    )
    m = LocalCreditManager(db_url)
    with pytest.raises(InvalidArgument):
        m.import_users()  # finer than a micro-credit: nothing imported
    assert m.transactions("1") == []
    with pytest.raises(InvalidArgument):
        m.import_users(table="users; DROP TABLE x")
    with pytest.raises(InvalidArgument):
        m.import_users(keys_table="users", key_format="md5")
    with pytest.raises(InvalidArgument):
        m.import_users(kind="grant")
    with pytest.raises(StorageError):
        m.import_users(table="no_such_table")


def test_holds_reserve_settle_release(manager: LocalCreditManager, paid_key: str) -> None:
    hold = manager.reserve(paid_key, tokens=4096, request_id="stream-1")
    assert hold.amount == Decimal("4.096") and hold.user_id == "alice"
    account = manager.account("alice")
    assert account.held == hold.amount and account.available == account.balance - hold.amount
    assert manager.reserve(paid_key, tokens=4096, request_id="stream-1").replayed
    charge = manager.settle(hold.hold_id, input_tokens=50, output_tokens=700)
    assert charge.charged == Decimal("0.75")
    assert manager.settle(hold.hold_id, input_tokens=50, output_tokens=700).replayed
    with pytest.raises(IdempotencyConflict):
        manager.settle(hold.hold_id, input_tokens=51, output_tokens=700)
    # A fallback record_usage with the hold's request id cannot charge twice.
    assert manager.record_usage(paid_key, input_tokens=50, output_tokens=700, request_id="stream-1").replayed
    other = manager.reserve(paid_key, credits="2.5", ttl_seconds=60)
    manager.release(other.hold_id)
    manager.release(other.hold_id)  # a no-op
    assert manager.account("alice").held == 0
    with pytest.raises(InsufficientCredits):
        manager.reserve(paid_key, credits=10_000)
    assert manager.audit().ok


def test_transactions_paging(manager: LocalCreditManager) -> None:
    for i in range(5):
        manager.add_credits("u", i + 1, idempotency_key=f"grant-{i}", reference=f"ref-{i}")
    page = manager.transactions("u", limit=2)
    assert [e.seq for e in page] == [5, 4]
    rest = manager.transactions("u", before=page[-1].id)
    assert [e.seq for e in rest] == [3, 2, 1] and rest[0].reference == "ref-2"
    assert rest[-1].balance_after == 1 and page[0].balance_after == 15
    with pytest.raises(NotFound):
        manager.transactions("someone-else", before=page[0].id)
    with pytest.raises(InvalidArgument):
        manager.transactions("u", limit=1001)


def test_prices_report_metrics(manager: LocalCreditManager, paid_key: str) -> None:
    manager.set_model_price("gpt-x", "0.5", 2)
    assert manager.list_model_prices() == {"gpt-x": (Decimal("0.5"), Decimal("2"))}
    charge = manager.record_usage(paid_key, input_tokens=1000, output_tokens=1000, model="gpt-x")
    assert charge.charged == Decimal("2.5")
    report = manager.report()
    assert report.paying_users == 1 and report.users_attempted_key == 1
    assert report.purchase_conversion_rate == 1 and isinstance(report.purchase_conversion_rate, Decimal)
    assert report.revenue_usd_minor == 500 and report.credits_used == Decimal("2.5")
    metrics = manager.metrics()
    assert metrics["usage_charges_total"] == 1 and metrics["purchases_total"] == 1
    assert all(isinstance(v, int) for v in metrics.values())
    text = manager.metrics_prometheus()
    assert "creditgate_usage_charges_total 1" in text and "creditgate_verify_seconds" in text
    manager.migrate()  # also done on open; twice is fine


def test_min_balance_lets_a_trusted_customer_run_to_the_floor(manager: LocalCreditManager) -> None:
    manager.add_credits("trusted", 10)
    manager.set_min_balance("trusted", Decimal(-5))
    a = manager.account("trusted")
    assert (a.balance, a.min_balance, a.available) == (Decimal(10), Decimal(-5), Decimal(15))
    manager.deduct_credits("trusted", 15)
    assert manager.get_balance("trusted") == -5
    with pytest.raises(InsufficientCredits) as exc:
        manager.deduct_credits("trusted", "0.000001")
    assert exc.value.available == 0
    with pytest.raises(InvalidArgument, match="min_balance"):
        manager.set_min_balance("trusted", 1)
    with pytest.raises(TypeError, match="floor"):
        manager.set_min_balance("trusted", -1.5)  # type: ignore[arg-type]
    assert manager.audit().ok
