"""The Python names of docs/reference.md are a contract: method signatures (parameter
names, kinds and defaults) and result fields, checked on the built module."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from creditgate import LocalCreditManager

SIGNATURES = {
    "get_balance": "(user_id)",
    "account": "(user_id)",
    "add_credits": (
        "(user_id, amount, *, kind='grant', idempotency_key=None, reference=None, metadata=None, "
        "expires_at=None, category=None, priority=0)"
    ),
    "record_payment": (
        "(user_id, payment_id, amount_minor, currency='USD', *, expires_at=None, category=None, priority=0)"
    ),
    "expire_grants": "(limit=1000)",
    "reverse_payment": "(payment_id, amount_minor=None, reason=None, *, reversal_id=None)",
    "deduct_credits": "(user_id, amount, *, idempotency_key=None, reference=None, metadata=None)",
    "can_generate_api_key": "(user_id)",
    "create_api_key": "(user_id, name=None, *, expires_at=None)",
    "import_api_key": "(user_id, *, secret=None, secret_sha256=None, name=None)",
    "revoke_api_key": "(key_id, *, user_id=None)",
    "list_api_keys": "(user_id)",
    "set_api_key_expiry": "(key_id, expires_at, *, user_id=None)",
    "disable_api_key": "(key_id, *, user_id=None)",
    "enable_api_key": "(key_id, *, user_id=None)",
    "rotate_api_key": "(key_id, grace_seconds, *, user_id=None)",
    "set_key_limit": "(key_id, limit, window, *, user_id=None)",
    "set_rate_limit": "(key_id, *, requests_per_minute=None, tokens_per_minute=None)",
    "events": "(after=0, limit=100)",
    "verify_api_key_credits": "(api_key, min_credits=1)",
    "record_usage": (
        "(api_key=None, *, key_id=None, tokens=None, input_tokens=None, output_tokens=None, model=None, "
        "request_id=None, cached_input_tokens=0, cache_write_tokens=0)"
    ),
    "reserve": (
        "(api_key, *, credits=None, tokens=None, input_tokens=None, output_tokens=None, model=None, ttl_seconds=600, "
        "request_id=None)"
    ),
    "settle": (
        "(hold_id, *, credits=None, tokens=None, input_tokens=None, output_tokens=None, model=None, "
        "cached_input_tokens=0, cache_write_tokens=0)"
    ),
    "release": "(hold_id)",
    "create_webhook": "(url, events=None, description=None)",
    "webhooks": "()",
    "webhook": "(webhook_id)",
    "set_webhook_enabled": "(webhook_id, enabled)",
    "delete_webhook": "(webhook_id)",
    "rotate_webhook_secret": "(webhook_id)",
    "webhook_dead_letters": "(webhook_id=None, limit=100)",
    "replay_dead_letters": "(webhook_id, event_ids=None)",
    "deliver_webhooks": (
        "(*, timeout_ms=10000, max_attempts=12, backoff_base_ms=10000, backoff_max_ms=3600000, batch_size=100)"
    ),
    "handle_events": (
        "(consumer, handler, *, events=None, timeout_ms=10000, max_attempts=12, backoff_base_ms=10000, "
        "backoff_max_ms=3600000, batch_size=100)"
    ),
    "set_model_price": (
        "(model, input_per_1k, output_per_1k, *, cached_input_per_1k=None, cache_write_per_1k=None, request_fee=0, "
        "effective_at=None)"
    ),
    "list_model_prices": "()",
    "model_prices": "()",
    "price_history": "(model=None)",
    "usage_summary": "(*, user_id=None, key_id=None, model=None, since=None, until=None, group_by=())",
    "usage_summary_json": "(*, user_id=None, key_id=None, model=None, since=None, until=None, group_by=())",
    "usage_summary_csv": "(*, user_id=None, key_id=None, model=None, since=None, until=None, group_by=())",
    "statement": "(user_id, since, until)",
    "daily_totals": "(since, until)",
    "transactions": "(user_id, *, limit=50, before=None)",
    "audit": "()",
    "metrics": "()",
    "metrics_prometheus": "()",
    "report": "()",
    "migrate": "()",
    "schema_versions": "()",
    "schema_status": "(database_url=None)",
    "add_member": "(org_id, member_id)",
    "remove_member": "(org_id, member_id)",
    "members": "(org_id)",
    "create_project": "(org_id, name)",
    "projects": "(org_id)",
    "set_key_project": "(key_id, project)",
    "set_budget": "(org_id, *, member=None, project=None, limit=None, window='monthly', low_threshold=None)",
    "member_transactions": "(org_id, member_id, *, limit=50, before=None)",
    "member_usage": "(org_id, since=None)",
    "set_allowance": "(user_id, amount, period, *, member=None, key_id=None, rollover_cap=None)",
    "remove_allowance": "(allowance_id)",
    "allowances": "(user_id)",
    "acting_as": "(operator)",
    "list_accounts": "(*, search=None, below=None, order='user_id', offset=0, limit=50)",
    "holds": "(user_id, *, active_only=True, limit=50)",
    "recent_events": "(*, user_id=None, kind=None, before=None, limit=100)",
    "daily_flows": "(since, until)",
    "import_users": (
        "(*, table='users', id_column='id', balance_column='credit_balance', kind='adjustment', keys_table=None, "
        "key_user_column='user_id', key_column='key', key_format='plain')"
    ),
}


def test_constructor_signature() -> None:
    assert str(inspect.signature(LocalCreditManager)) == (
        "(database_url=None, *, min_credits_api_key=None, credits_per_usd=None, credits_per_1k_tokens=None, "
        "api_key_prefix=None, api_key_pepper=None, max_active_keys_per_user=None, max_active_holds_per_user=None, "
        "currency_rates=None, webhook_key=None, webhook_allowed_hosts=None)"
    )


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_method_signatures(name: str) -> None:
    m = LocalCreditManager("sqlite:///:memory:")
    assert str(inspect.signature(getattr(m, name))) == SIGNATURES[name]


def test_documented_defaults_are_the_real_ones(manager: LocalCreditManager, paid_key: str) -> None:
    hold = manager.reserve(paid_key, credits=1)  # ttl_seconds=600
    assert 595 < (hold.expires_at - manager.transactions("alice")[0].created_at).total_seconds() <= 601
    for i in range(60):
        manager.add_credits("pager", 1, idempotency_key=f"k{i}")
    assert len(manager.transactions("pager")) == 50  # limit=50
    manager.deduct_credits("alice", Decimal("4998.5"))  # 0.5 left beside the 1-credit hold
    with pytest.raises(Exception, match="insufficient"):
        manager.verify_api_key_credits(paid_key)  # min_credits=1


FIELDS = {
    "Account": "user_id balance held available lifetime_purchased lifetime_used active_keys first_key_issued "
    "created_at",
    "Entry": "id seq user_id kind amount balance_after idempotency_key reference api_key_id input_tokens "
    "output_tokens model amount_minor currency metadata created_at replayed",
    "KeyEligibility": "allowed is_first_key required available",
    "NewApiKey": "secret key_id user_id name prefix created_at",
    "ApiKeyInfo": "key_id user_id name prefix created_at last_used_at revoked_at legacy",
    "Verification": "user_id key_id available",
    "UsageCharge": "entry_id user_id tokens charged balance overdraft replayed",
    "Hold": "hold_id user_id amount expires_at",
    "AuditReport": "ok accounts_checked entries_checked mismatches",
    "Report": "users paying_users users_attempted_key key_generation_attempts key_generation_successes "
    "purchase_conversion_rate credits_purchased revenue_usd_minor revenue_per_paying_user_usd_minor "
    "revenue_minor_by_currency credits_used outstanding_balance outstanding_holds overdraft_receivable",
    "DailyTotal": "day kind model currency entries amount amount_minor input_tokens output_tokens "
    "cached_input_tokens cache_write_tokens",
    "ImportSummary": "users balances_imported balances_already_imported balances_skipped keys",
}


def test_result_fields(manager: LocalCreditManager) -> None:
    manager.record_payment("u", "p", 500)
    key = manager.create_api_key("u")
    hold = manager.reserve(key.secret, credits=1)
    results: dict[str, Any] = {
        "Account": manager.account("u"),
        "Entry": manager.transactions("u")[0],
        "KeyEligibility": manager.can_generate_api_key("u"),
        "NewApiKey": key,
        "ApiKeyInfo": manager.list_api_keys("u")[0],
        "Verification": manager.verify_api_key_credits(key.secret),
        "UsageCharge": manager.settle(hold.hold_id, tokens=10),
        "Hold": hold,
        "AuditReport": manager.audit(),
        "Report": manager.report(),
        "DailyTotal": manager.daily_totals(hold.expires_at - timedelta(days=1), hold.expires_at)[0],
    }
    for cls, obj in results.items():
        assert type(obj).__name__ == cls
        for field in FIELDS[cls].split():
            assert hasattr(obj, field), f"{cls}.{field}"
            assert field in obj.to_dict()


def test_import_summary_fields(host_sql: Callable[[str], None], db_url: str) -> None:
    host_sql("CREATE TABLE users (id INTEGER PRIMARY KEY, credit_balance INTEGER)")
    summary = LocalCreditManager(db_url).import_users()
    assert type(summary).__name__ == "ImportSummary"
    for field in FIELDS["ImportSummary"].split():
        assert getattr(summary, field) == 0, field
        assert field in summary.to_dict()
