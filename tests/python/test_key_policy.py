"""Key lifecycle (expiry, disable/enable, rotation with grace) and per-key
spend caps through the Python front door: sync and asyncio managers, the
``limit_source`` of ``InsufficientCredits``, and argument types."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from creditgate import (
    ApiKeyInfo,
    AsyncLocalCreditManager,
    InsufficientCredits,
    InvalidApiKey,
    InvalidArgument,
    LocalCreditManager,
    NotFound,
)


def unknown_message(m: LocalCreditManager) -> str:
    with pytest.raises(InvalidApiKey) as e:
        m.verify_api_key_credits("legacy-unknown-secret-123")
    return str(e.value)


def key_info(m: LocalCreditManager, user: str, key_id: str) -> ApiKeyInfo:
    return next(k for k in m.list_api_keys(user) if k.key_id == key_id)


def test_disabled_and_expired_keys_401_like_unknown_but_usage_still_charges(manager: LocalCreditManager) -> None:
    manager.record_payment("alice", "p1", 500)
    k = manager.create_api_key("alice", "prod")
    hold = manager.reserve(k.secret, credits=2)
    manager.disable_api_key(k.key_id)
    assert key_info(manager, "alice", k.key_id).disabled is True
    for call in (
        lambda: manager.verify_api_key_credits(k.secret),
        lambda: manager.authenticate_api_key(k.secret),
        lambda: manager.reserve(k.secret, credits=1),
    ):
        with pytest.raises(InvalidApiKey) as e:
            call()
        assert str(e.value) == unknown_message(manager)
        assert e.value.status_code == 401
    assert manager.record_usage(k.secret, tokens=1000).charged == Decimal("1")
    assert manager.settle(hold.hold_id, credits=2).charged == Decimal("2")
    manager.enable_api_key(k.key_id)
    assert manager.verify_api_key_credits(k.secret).key_id == k.key_id

    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    manager.set_api_key_expiry(k.key_id, past)
    info = key_info(manager, "alice", k.key_id)
    assert info.expires_at is not None
    assert abs(info.expires_at - past) < timedelta(microseconds=1)
    with pytest.raises(InvalidApiKey) as e:
        manager.verify_api_key_credits(k.secret)
    assert str(e.value) == unknown_message(manager)
    manager.set_api_key_expiry(k.key_id, None)
    assert manager.verify_api_key_credits(k.secret).user_id == "alice"
    with pytest.raises(NotFound):
        manager.disable_api_key(k.key_id, user_id="mallory")
    assert manager.audit().ok


def test_expiry_at_creation_must_be_aware_and_future(manager: LocalCreditManager) -> None:
    manager.record_payment("alice", "p1", 500)
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        manager.create_api_key("alice", expires_at=datetime(2099, 1, 1))
    with pytest.raises(TypeError):
        manager.create_api_key("alice", expires_at="2099-01-01")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="future"):
        manager.create_api_key("alice", expires_at=datetime(2000, 1, 1, tzinfo=timezone.utc))
    at = datetime.now(timezone.utc) + timedelta(seconds=1.2)
    k = manager.create_api_key("alice", expires_at=at)
    assert key_info(manager, "alice", k.key_id).expires_at == at
    manager.verify_api_key_credits(k.secret)
    time.sleep(1.4)
    with pytest.raises(InvalidApiKey):
        manager.verify_api_key_credits(k.secret)


def test_rotation_grace_then_401_no_fee_no_slot(db_url: str) -> None:
    m = LocalCreditManager(db_url, max_active_keys_per_user=1)
    m.record_payment("alice", "p1", 500)
    old = m.create_api_key("alice", "prod")
    before = m.get_balance("alice")
    new = m.rotate_api_key(old.key_id, 1)
    assert (new.name, new.user_id) == ("prod", "alice")
    assert new.secret != old.secret
    assert m.get_balance("alice") == before
    assert m.verify_api_key_credits(old.secret).key_id == old.key_id
    assert m.verify_api_key_credits(new.secret).key_id == new.key_id
    assert key_info(m, "alice", old.key_id).rotated_to == new.key_id
    with pytest.raises(InvalidArgument):
        m.rotate_api_key(old.key_id, 0)
    with pytest.raises(InvalidArgument):
        m.rotate_api_key(new.key_id, 30 * 86400 + 1)
    with pytest.raises(TypeError):
        m.rotate_api_key(new.key_id, 1.5)  # type: ignore[arg-type]
    time.sleep(1.3)
    with pytest.raises(InvalidApiKey):
        m.verify_api_key_credits(old.secret)
    assert m.verify_api_key_credits(new.secret).key_id == new.key_id
    assert m.account("alice").active_keys == 1


def test_key_cap_and_limit_source(manager: LocalCreditManager) -> None:
    manager.record_payment("alice", "p1", 500)
    k = manager.create_api_key("alice")
    manager.set_key_limit(k.key_id, 10, "daily")
    v = manager.verify_api_key_credits(k.secret, 10)
    assert v.key_remaining == Decimal("10")
    manager.record_usage(k.secret, tokens=8000)
    with pytest.raises(InsufficientCredits) as e:
        manager.verify_api_key_credits(k.secret, 5)
    assert e.value.limit_source == "key"
    assert (e.value.required, e.value.available) == (Decimal("5"), Decimal("2"))
    assert e.value.status_code == 402
    with pytest.raises(InsufficientCredits) as e:
        manager.reserve(k.secret, credits="2.5")
    assert e.value.limit_source == "key"
    manager.record_usage(k.secret, tokens=5000)  # usage is never refused by the cap
    info = key_info(manager, "alice", k.key_id)
    assert info.spend_limit == Decimal("10")
    assert info.spend_window == "daily"
    assert info.spent_in_window == Decimal("13")
    now = datetime.now(timezone.utc)
    assert info.window_resets_at == datetime(now.year, now.month, now.day, tzinfo=timezone.utc) + timedelta(days=1)
    assert info.to_dict()["spend_window"] == "daily"

    # The account's limit when it is the tighter one.
    manager.set_key_limit(k.key_id, None, "daily")
    assert key_info(manager, "alice", k.key_id).spend_limit is None
    with pytest.raises(InsufficientCredits) as e:
        manager.verify_api_key_credits(k.secret, 100_000)
    assert e.value.limit_source == "account"
    with pytest.raises(InvalidArgument, match="window"):
        manager.set_key_limit(k.key_id, 1, "hourly")
    with pytest.raises(TypeError):
        manager.set_key_limit(k.key_id, 1.5, "daily")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        manager.set_key_limit(k.key_id, -1, "daily")


def test_threads_never_hold_more_than_the_key_cap(manager: LocalCreditManager) -> None:
    manager.record_payment("alice", "p1", 5000)
    k = manager.create_api_key("alice")
    manager.set_key_limit(k.key_id, 12, "weekly")
    ok: list[int] = []
    short: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(4):
            try:
                manager.reserve(k.secret, credits=1)
                with lock:
                    ok.append(1)
            except InsufficientCredits as e:
                with lock:
                    short.append(e.limit_source)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 12
    assert short == ["key"] * 20
    assert manager.account("alice").held == Decimal("12")


def test_async_manager_has_the_key_policy_calls(db_url: str) -> None:
    async def main() -> None:
        async with AsyncLocalCreditManager(db_url) as m:
            await m.record_payment("alice", "p1", 500)
            k = await m.create_api_key("alice", expires_at=datetime.now(timezone.utc) + timedelta(days=1))
            await m.set_key_limit(k.key_id, 3, "monthly")
            with pytest.raises(InsufficientCredits) as e:
                await m.verify_api_key_credits(k.secret, 4)
            assert e.value.limit_source == "key"
            await m.disable_api_key(k.key_id)
            with pytest.raises(InvalidApiKey):
                await m.verify_api_key_credits(k.secret)
            await m.enable_api_key(k.key_id)
            await m.set_api_key_expiry(k.key_id, None)
            new = await m.rotate_api_key(k.key_id, 0, user_id="alice")
            with pytest.raises(InvalidApiKey):
                await m.verify_api_key_credits(k.secret)
            v = await m.verify_api_key_credits(new.secret, 3)
            assert v.key_remaining == Decimal("3")

    asyncio.run(main())
