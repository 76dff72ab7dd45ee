"""asyncio front door: :class:`AsyncLocalCreditManager`.

Every ledger call of :class:`~creditgate.LocalCreditManager` waits on the
database (a lock, a disk sync, a network round trip to PostgreSQL). Called
from a coroutine, it would stop the whole event loop for that time: every
other request of the worker waits, including the ones that never touch the
ledger. ``AsyncLocalCreditManager`` has the same constructor and the same
methods, each an ``async def`` that runs the synchronous call on a thread of
its own executor; the native call releases the GIL during storage work, so
the loop keeps running while the ledger waits::

    from creditgate import AsyncLocalCreditManager

    async with AsyncLocalCreditManager("sqlite:///ledger.db") as credits:
        await credits.add_credits("alice", 5000)
        print(await credits.get_balance("alice"))

Results and exceptions are exactly those of the synchronous manager (the same
classes, the same messages). ``.sync`` is the underlying
``LocalCreditManager``, for code that is not async (a CLI, a thread, a
Prometheus collector); both may be used at the same time.

Why an executor of its own, not the loop's default one
------------------------------------------------------
The default executor (``loop.run_in_executor(None, ...)``,
``asyncio.to_thread``) is shared with everything else in the process:
``getaddrinfo`` for every outgoing connection (the upstream model's too),
file I/O, other libraries' blocking calls. A ledger stalled on a locked or
unreachable database would fill it, and an LLM client resolving host names
would then wait behind the ledger (and the other way round). This manager's
executor is bounded by the manager's connection pool (``pool_size``, from
``CREDITGATE_POOL_SIZE``, default 8; 1 for ``sqlite:///:memory:``): a thread
beyond the pool would only wait for a connection, so more calls than that
queue as cheap futures rather than as parked threads, and a burst of
requests can never grow the thread count.

Cancellation
------------
Cancelling an ``await`` (a client that went away, a timeout) cannot stop a
call that has started on its thread: it runs to the end and its result is
dropped; a call still queued is not started. Either way the caller does not
learn the outcome of a write, exactly as with a ``StorageError``: retry with
the same idempotency key or request id, or shield the await
(``asyncio.shield``, ``anyio.CancelScope(shield=True)``) where the result
matters, such as settling a hold.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Union

from ._creditgate import (
    DEFAULT_EVENTS_LIMIT,
    DEFAULT_EXPIRE_LIMIT,
    DEFAULT_GRANT_PRIORITY,
    DEFAULT_PAGE_LIMIT,
    DEFAULT_TTL_SECONDS,
    DEFAULT_VERIFY_MIN_CREDITS,
    DEFAULT_WEBHOOK_BACKOFF_BASE_MS,
    DEFAULT_WEBHOOK_BACKOFF_MAX_MS,
    DEFAULT_WEBHOOK_BATCH_SIZE,
    DEFAULT_WEBHOOK_MAX_ATTEMPTS,
    DEFAULT_WEBHOOK_TIMEOUT_MS,
    Account,
    AccountPage,
    Allowance,
    ApiKeyInfo,
    AuditReport,
    DailyTotal,
    DayFlow,
    DeadLetter,
    DeliveryReport,
    Entry,
    Event,
    ExpirySweep,
    Hold,
    ImportSummary,
    KeyEligibility,
    LocalCreditManager,
    Member,
    MemberUsage,
    MetricsSnapshot,
    ModelPrice,
    NewApiKey,
    PriceVersion,
    Project,
    Report,
    SchemaStatus,
    Statement,
    Topup,
    UsageCharge,
    UsageRow,
    Verification,
    WebhookSubscription,
)

if TYPE_CHECKING:
    from typing_extensions import ParamSpec, Self

    _P = ParamSpec("_P")

__all__ = ["AsyncLocalCreditManager"]

_T = TypeVar("_T")
# As in the native module's stubs: an amount is an int, a Decimal or a decimal str.
_Amount = Union[int, Decimal, str]
_UserId = Union[str, int]


class AsyncLocalCreditManager:
    """The prepaid-credit ledger for asyncio code: ``LocalCreditManager``'s
    methods as coroutines that never block the event loop.

    The constructor takes ``LocalCreditManager``'s arguments (each ``None``
    means the environment, then the default) and opens the database, as
    ``LocalCreditManager()`` does: a short blocking call, meant for startup
    (a FastAPI lifespan). Inside a running loop, ``await
    AsyncLocalCreditManager.open(...)`` opens it off the loop. To share an
    existing manager, use :meth:`from_manager`.

    ``max_workers`` bounds the manager's own thread pool; by default it is the
    manager's ``pool_size`` (see the module docs for why). Close the pool with
    ``await aclose()`` or ``async with``; the database handle itself is
    released with the last reference to ``.sync``.
    """

    __slots__ = ("_sync", "_max_workers", "_executor", "_pid", "_closed", "_owner")

    def __init__(
        self,
        database_url: str | None = None,
        *,
        min_credits_api_key: _Amount | None = None,
        credits_per_usd: int | None = None,
        credits_per_1k_tokens: _Amount | None = None,
        api_key_prefix: str | None = None,
        api_key_pepper: str | None = None,
        max_active_keys_per_user: int | None = None,
        max_active_holds_per_user: int | None = None,
        currency_rates: Mapping[str, tuple[_Amount, int]] | None = None,
        webhook_key: str | None = None,
        webhook_allowed_hosts: Sequence[str] | None = None,
        max_workers: int | None = None,
    ) -> None:
        sync = LocalCreditManager(
            database_url,
            min_credits_api_key=min_credits_api_key,
            credits_per_usd=credits_per_usd,
            credits_per_1k_tokens=credits_per_1k_tokens,
            api_key_prefix=api_key_prefix,
            api_key_pepper=api_key_pepper,
            max_active_keys_per_user=max_active_keys_per_user,
            max_active_holds_per_user=max_active_holds_per_user,
            currency_rates=currency_rates,
            webhook_key=webhook_key,
            webhook_allowed_hosts=webhook_allowed_hosts,
        )
        self._setup(sync, max_workers)

    def _setup(self, sync: LocalCreditManager, max_workers: int | None) -> None:
        if not isinstance(sync, LocalCreditManager):
            raise TypeError(f"manager must be a LocalCreditManager, not {type(sync).__name__}")
        if max_workers is None:
            max_workers = sync.pool_size
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int, not {type(max_workers).__name__}")
        elif max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self._sync = sync
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._closed = False
        # The manager whose thread pool this one uses: itself, or for a
        # manager from ``acting_as`` the one it came from (one pool for all).
        self._owner = self

    @classmethod
    def from_manager(cls, manager: LocalCreditManager, *, max_workers: int | None = None) -> Self:
        """Wraps an open ``LocalCreditManager`` (no new database handle)."""
        self = cls.__new__(cls)
        self._setup(manager, max_workers)
        return self

    @classmethod
    async def open(
        cls,
        database_url: str | None = None,
        *,
        min_credits_api_key: _Amount | None = None,
        credits_per_usd: int | None = None,
        credits_per_1k_tokens: _Amount | None = None,
        api_key_prefix: str | None = None,
        api_key_pepper: str | None = None,
        max_active_keys_per_user: int | None = None,
        max_active_holds_per_user: int | None = None,
        currency_rates: Mapping[str, tuple[_Amount, int]] | None = None,
        webhook_key: str | None = None,
        webhook_allowed_hosts: Sequence[str] | None = None,
        max_workers: int | None = None,
    ) -> Self:
        """The constructor, with the database opened (and migrated) on a thread
        rather than on the event loop."""
        loop = asyncio.get_running_loop()
        open_sync = functools.partial(
            LocalCreditManager,
            database_url,
            min_credits_api_key=min_credits_api_key,
            credits_per_usd=credits_per_usd,
            credits_per_1k_tokens=credits_per_1k_tokens,
            api_key_prefix=api_key_prefix,
            api_key_pepper=api_key_pepper,
            max_active_keys_per_user=max_active_keys_per_user,
            max_active_holds_per_user=max_active_holds_per_user,
            currency_rates=currency_rates,
            webhook_key=webhook_key,
            webhook_allowed_hosts=webhook_allowed_hosts,
        )
        # A one-off thread: this manager's executor does not exist yet.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="creditgate-open") as opener:
            sync = await loop.run_in_executor(opener, open_sync)
        return cls.from_manager(sync, max_workers=max_workers)

    # ----- plumbing --------------------------------------------------------------

    @property
    def sync(self) -> LocalCreditManager:
        """The underlying synchronous manager (the same ledger and counters)."""
        return self._sync

    @property
    def database_url(self) -> str:
        """The resolved database URL, password redacted."""
        return self._sync.database_url

    @property
    def pool_size(self) -> int:
        """How many database connections the manager may open at once."""
        return self._sync.pool_size

    @property
    def operator(self) -> str | None:
        """The operator of a manager from ``acting_as`` (None: a plain manager)."""
        return self._sync.operator

    @property
    def max_workers(self) -> int:
        """The size of this manager's thread pool."""
        return self._max_workers

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"AsyncLocalCreditManager(database_url={self.database_url!r}, max_workers={self._max_workers})"

    def _pool(self) -> ThreadPoolExecutor:
        if self._closed:
            raise RuntimeError("this AsyncLocalCreditManager is closed")
        if self._owner is not self:
            return self._owner._pool()
        pid = os.getpid()
        if self._executor is None or self._pid != pid:
            # Created on first use; recreated in a forked child, whose copy of
            # the parent's executor has no threads behind it.
            self._executor = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="creditgate")
            self._pid = pid
        return self._executor

    async def _run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), functools.partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        """Shuts the thread pool down after the calls already submitted (without
        blocking the loop). Later calls raise ``RuntimeError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None and self._pid == os.getpid():
            loop = asyncio.get_running_loop()
            # A one-off thread waits for the pool: the pool cannot wait for itself.
            await loop.run_in_executor(None, functools.partial(executor.shutdown, wait=True))

    def close(self) -> None:
        """``aclose()`` for code outside the event loop (blocks until pending calls end)."""
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None and self._pid == os.getpid():
            executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----- the calls of docs/reference.md, as coroutines-------------------------------------------

    async def migrate(self) -> None:
        return await self._run(self._sync.migrate)

    async def schema_versions(self) -> tuple[int, int]:
        return await self._run(self._sync.schema_versions)

    @staticmethod
    async def schema_status(database_url: str | None = None) -> SchemaStatus:
        """``LocalCreditManager.schema_status`` on a one-off thread (no manager is opened)."""
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="creditgate-schema") as reader:
            return await loop.run_in_executor(reader, LocalCreditManager.schema_status, database_url)

    async def backup(self, dest: str | os.PathLike[str]) -> int:
        """Copies an SQLite ledger into the new file ``dest``; its size in bytes."""
        return await self._run(self._sync.backup, dest)

    async def get_balance(self, user_id: _UserId) -> Decimal:
        return await self._run(self._sync.get_balance, user_id)

    async def account(self, user_id: _UserId) -> Account:
        return await self._run(self._sync.account, user_id)

    async def set_min_balance(self, user_id: _UserId, floor: _Amount) -> None:
        """Lets the account run to ``floor`` (<= 0) on deducts, holds and key purchases."""
        await self._run(self._sync.set_min_balance, user_id, floor)

    async def add_credits(
        self,
        user_id: _UserId,
        amount: _Amount,
        *,
        kind: str = "grant",
        idempotency_key: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
        category: str | None = None,
        priority: int = DEFAULT_GRANT_PRIORITY,
    ) -> Entry:
        return await self._run(
            self._sync.add_credits,
            user_id,
            amount,
            kind=kind,
            idempotency_key=idempotency_key,
            reference=reference,
            metadata=metadata,
            expires_at=expires_at,
            category=category,
            priority=priority,
        )

    async def import_balance(self, user_id: _UserId, balance: _Amount, kind: str = "adjustment") -> Entry:
        return await self._run(self._sync.import_balance, user_id, balance, kind)

    async def import_users(
        self,
        *,
        table: str = "users",
        id_column: str = "id",
        balance_column: str = "credit_balance",
        kind: str = "adjustment",
        keys_table: str | None = None,
        key_user_column: str = "user_id",
        key_column: str = "key",
        key_format: str = "plain",
    ) -> ImportSummary:
        return await self._run(
            self._sync.import_users,
            table=table,
            id_column=id_column,
            balance_column=balance_column,
            kind=kind,
            keys_table=keys_table,
            key_user_column=key_user_column,
            key_column=key_column,
            key_format=key_format,
        )

    async def deduct_credits(
        self,
        user_id: _UserId,
        amount: _Amount,
        *,
        idempotency_key: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry:
        return await self._run(
            self._sync.deduct_credits,
            user_id,
            amount,
            idempotency_key=idempotency_key,
            reference=reference,
            metadata=metadata,
        )

    async def record_payment(
        self,
        user_id: _UserId,
        payment_id: str,
        amount_minor: int,
        currency: str = "USD",
        *,
        expires_at: datetime | None = None,
        category: str | None = None,
        priority: int = DEFAULT_GRANT_PRIORITY,
    ) -> Entry:
        return await self._run(
            self._sync.record_payment,
            user_id,
            payment_id,
            amount_minor,
            currency,
            expires_at=expires_at,
            category=category,
            priority=priority,
        )

    async def expire_grants(self, limit: int = DEFAULT_EXPIRE_LIMIT) -> ExpirySweep:
        return await self._run(self._sync.expire_grants, limit)

    async def reverse_payment(
        self,
        payment_id: str,
        amount_minor: int | None = None,
        reason: str | None = None,
        *,
        reversal_id: str | None = None,
    ) -> Entry:
        return await self._run(self._sync.reverse_payment, payment_id, amount_minor, reason, reversal_id=reversal_id)

    async def reinstate_reversal(self, reversal_id: str, reason: str | None = None) -> Entry:
        return await self._run(self._sync.reinstate_reversal, reversal_id, reason)

    async def record_event(self, kind: str, data: dict[str, Any]) -> int:
        return await self._run(self._sync.record_event, kind, data)

    async def transactions(
        self, user_id: _UserId, *, limit: int = DEFAULT_PAGE_LIMIT, before: str | None = None
    ) -> list[Entry]:
        return await self._run(self._sync.transactions, user_id, limit=limit, before=before)

    async def events(self, after: int = 0, limit: int = DEFAULT_EVENTS_LIMIT) -> list[Event]:
        return await self._run(self._sync.events, after, limit)

    async def set_rate_limit(
        self, key_id: str, *, requests_per_minute: int | None = None, tokens_per_minute: int | None = None
    ) -> None:
        return await self._run(
            self._sync.set_rate_limit,
            key_id,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )

    async def can_generate_api_key(self, user_id: _UserId) -> KeyEligibility:
        return await self._run(self._sync.can_generate_api_key, user_id)

    async def create_api_key(
        self, user_id: _UserId, name: str | None = None, *, expires_at: datetime | None = None
    ) -> NewApiKey:
        return await self._run(self._sync.create_api_key, user_id, name, expires_at=expires_at)

    async def set_api_key_expiry(
        self, key_id: str, expires_at: datetime | None, *, user_id: _UserId | None = None
    ) -> None:
        """Sets (or clears with None) when the key stops verifying; a past time expires it now."""
        await self._run(self._sync.set_api_key_expiry, key_id, expires_at, user_id=user_id)

    async def disable_api_key(self, key_id: str, *, user_id: _UserId | None = None) -> None:
        """The key fails verification like an unknown key until enabled."""
        await self._run(self._sync.disable_api_key, key_id, user_id=user_id)

    async def enable_api_key(self, key_id: str, *, user_id: _UserId | None = None) -> None:
        await self._run(self._sync.enable_api_key, key_id, user_id=user_id)

    async def rotate_api_key(self, key_id: str, grace_seconds: int, *, user_id: _UserId | None = None) -> NewApiKey:
        """A new secret for the same user and name; the old key works for ``grace_seconds`` more."""
        return await self._run(self._sync.rotate_api_key, key_id, grace_seconds, user_id=user_id)

    async def set_key_limit(
        self, key_id: str, limit: _Amount | None, window: str, *, user_id: _UserId | None = None
    ) -> None:
        """Caps the key's spend per ``window`` (daily, weekly, monthly or lifetime); None removes it."""
        await self._run(self._sync.set_key_limit, key_id, limit, window, user_id=user_id)

    async def import_api_key(
        self,
        user_id: _UserId,
        *,
        secret: str | None = None,
        secret_sha256: str | None = None,
        name: str | None = None,
    ) -> ApiKeyInfo:
        return await self._run(
            self._sync.import_api_key, user_id, secret=secret, secret_sha256=secret_sha256, name=name
        )

    async def revoke_api_key(self, key_id: str, *, user_id: _UserId | None = None) -> None:
        return await self._run(self._sync.revoke_api_key, key_id, user_id=user_id)

    async def list_api_keys(self, user_id: _UserId) -> list[ApiKeyInfo]:
        return await self._run(self._sync.list_api_keys, user_id)

    async def verify_api_key_credits(
        self, api_key: str, min_credits: _Amount = DEFAULT_VERIFY_MIN_CREDITS
    ) -> Verification:
        return await self._run(self._sync.verify_api_key_credits, api_key, min_credits)

    async def authenticate_api_key(self, api_key: str) -> Verification:
        """Checks the key, not the credits: ``available`` may be 0 or negative."""
        return await self._run(self._sync.authenticate_api_key, api_key)

    async def record_usage(
        self,
        api_key: str | None = None,
        *,
        key_id: str | None = None,
        tokens: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        model: str | None = None,
        request_id: str | None = None,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> UsageCharge:
        return await self._run(
            self._sync.record_usage,
            api_key,
            key_id=key_id,
            tokens=tokens,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model,
            request_id=request_id,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
        )

    async def reserve(
        self,
        api_key: str,
        *,
        credits: _Amount | None = None,
        tokens: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        model: str | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        request_id: str | None = None,
    ) -> Hold:
        return await self._run(
            self._sync.reserve,
            api_key,
            credits=credits,
            tokens=tokens,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model,
            ttl_seconds=ttl_seconds,
            request_id=request_id,
        )

    async def settle(
        self,
        hold_id: str,
        *,
        credits: _Amount | None = None,
        tokens: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        model: str | None = None,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> UsageCharge:
        return await self._run(
            self._sync.settle,
            hold_id,
            credits=credits,
            tokens=tokens,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
        )

    async def release(self, hold_id: str) -> None:
        return await self._run(self._sync.release, hold_id)

    async def set_model_price(
        self,
        model: str,
        input_per_1k: _Amount,
        output_per_1k: _Amount,
        *,
        cached_input_per_1k: _Amount | None = None,
        cache_write_per_1k: _Amount | None = None,
        request_fee: _Amount = 0,
        effective_at: datetime | None = None,
    ) -> PriceVersion:
        return await self._run(
            self._sync.set_model_price,
            model,
            input_per_1k,
            output_per_1k,
            cached_input_per_1k=cached_input_per_1k,
            cache_write_per_1k=cache_write_per_1k,
            request_fee=request_fee,
            effective_at=effective_at,
        )

    async def list_model_prices(self) -> dict[str, tuple[Decimal, Decimal]]:
        return await self._run(self._sync.list_model_prices)

    async def model_prices(self) -> dict[str, ModelPrice]:
        return await self._run(self._sync.model_prices)

    async def price_history(self, model: str | None = None) -> list[PriceVersion]:
        return await self._run(self._sync.price_history, model)

    # ----- usage analytics ---------------------------------------------------------------

    async def usage_summary(
        self,
        *,
        user_id: _UserId | None = None,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[str] = (),
    ) -> list[UsageRow]:
        return await self._run(
            self._sync.usage_summary,
            user_id=user_id,
            key_id=key_id,
            model=model,
            since=since,
            until=until,
            group_by=group_by,
        )

    async def usage_summary_json(
        self,
        *,
        user_id: _UserId | None = None,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[str] = (),
    ) -> str:
        return await self._run(
            self._sync.usage_summary_json,
            user_id=user_id,
            key_id=key_id,
            model=model,
            since=since,
            until=until,
            group_by=group_by,
        )

    async def usage_summary_csv(
        self,
        *,
        user_id: _UserId | None = None,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[str] = (),
    ) -> str:
        return await self._run(
            self._sync.usage_summary_csv,
            user_id=user_id,
            key_id=key_id,
            model=model,
            since=since,
            until=until,
            group_by=group_by,
        )

    async def statement(self, user_id: _UserId, since: datetime, until: datetime) -> Statement:
        return await self._run(self._sync.statement, user_id, since, until)

    # ----- the operator's reads and write context ------------------------------------------------

    async def acting_as(self, operator: str) -> AsyncLocalCreditManager:
        """A manager whose writes record ``operator`` (``LocalCreditManager.acting_as``),
        on this one's thread pool: closing it leaves the pool to this manager.
        No storage work: it returns at once."""
        clone = AsyncLocalCreditManager.from_manager(self._sync.acting_as(operator), max_workers=self._max_workers)
        clone._owner = self._owner
        return clone

    async def list_accounts(
        self,
        *,
        search: str | None = None,
        below: _Amount | None = None,
        order: str = "user_id",
        offset: int = 0,
        limit: int = DEFAULT_PAGE_LIMIT,
    ) -> AccountPage:
        return await self._run(
            self._sync.list_accounts, search=search, below=below, order=order, offset=offset, limit=limit
        )

    async def holds(self, user_id: _UserId, *, active_only: bool = True, limit: int = DEFAULT_PAGE_LIMIT) -> list[Hold]:
        return await self._run(self._sync.holds, user_id, active_only=active_only, limit=limit)

    async def recent_events(
        self,
        *,
        user_id: _UserId | None = None,
        kind: str | None = None,
        before: int | None = None,
        limit: int = DEFAULT_EVENTS_LIMIT,
    ) -> list[Event]:
        return await self._run(self._sync.recent_events, user_id=user_id, kind=kind, before=before, limit=limit)

    async def daily_flows(self, since: datetime, until: datetime) -> list[DayFlow]:
        return await self._run(self._sync.daily_flows, since, until)

    async def daily_totals(self, since: datetime, until: datetime) -> list[DailyTotal]:
        return await self._run(self._sync.daily_totals, since, until)

    async def audit(self) -> AuditReport:
        return await self._run(self._sync.audit)

    async def metrics(self) -> dict[str, int]:
        return await self._run(self._sync.metrics)

    async def metrics_prometheus(self) -> str:
        return await self._run(self._sync.metrics_prometheus)

    async def metrics_snapshot(self) -> MetricsSnapshot:
        return await self._run(self._sync.metrics_snapshot)

    async def report(self) -> Report:
        return await self._run(self._sync.report)

    # ----- organisations and allowances ------------------------------------------------

    async def add_member(self, org_id: _UserId, member_id: _UserId) -> Member:
        return await self._run(self._sync.add_member, org_id, member_id)

    async def remove_member(self, org_id: _UserId, member_id: _UserId) -> None:
        return await self._run(self._sync.remove_member, org_id, member_id)

    async def members(self, org_id: _UserId) -> list[Member]:
        return await self._run(self._sync.members, org_id)

    async def create_project(self, org_id: _UserId, name: str) -> Project:
        return await self._run(self._sync.create_project, org_id, name)

    async def projects(self, org_id: _UserId) -> list[Project]:
        return await self._run(self._sync.projects, org_id)

    async def set_key_project(self, key_id: str, project: str | None) -> None:
        return await self._run(self._sync.set_key_project, key_id, project)

    async def set_budget(
        self,
        org_id: _UserId,
        *,
        member: _UserId | None = None,
        project: str | None = None,
        limit: _Amount | None = None,
        window: str = "monthly",
        low_threshold: _Amount | None = None,
    ) -> None:
        return await self._run(
            self._sync.set_budget,
            org_id,
            member=member,
            project=project,
            limit=limit,
            window=window,
            low_threshold=low_threshold,
        )

    async def member_transactions(
        self, org_id: _UserId, member_id: _UserId, *, limit: int = DEFAULT_PAGE_LIMIT, before: str | None = None
    ) -> list[Entry]:
        return await self._run(self._sync.member_transactions, org_id, member_id, limit=limit, before=before)

    async def member_usage(self, org_id: _UserId, since: datetime | None = None) -> list[MemberUsage]:
        return await self._run(self._sync.member_usage, org_id, since)

    async def set_allowance(
        self,
        user_id: _UserId,
        amount: _Amount,
        period: str,
        *,
        member: _UserId | None = None,
        key_id: str | None = None,
        rollover_cap: _Amount | None = None,
    ) -> Allowance:
        return await self._run(
            self._sync.set_allowance, user_id, amount, period, member=member, key_id=key_id, rollover_cap=rollover_cap
        )

    async def remove_allowance(self, allowance_id: int) -> None:
        return await self._run(self._sync.remove_allowance, allowance_id)

    async def allowances(self, user_id: _UserId) -> list[Allowance]:
        return await self._run(self._sync.allowances, user_id)

    # ----- auto top-up ----------------------------------------------------------------

    async def set_auto_topup(
        self,
        user_id: _UserId,
        threshold: _Amount,
        *,
        amount: _Amount | None = None,
        target: _Amount | None = None,
        max_per_month: int,
        monthly_cap: _Amount,
    ) -> Topup | None:
        return await self._run(
            self._sync.set_auto_topup,
            user_id,
            threshold,
            amount=amount,
            target=target,
            max_per_month=max_per_month,
            monthly_cap=monthly_cap,
        )

    async def remove_auto_topup(self, user_id: _UserId) -> bool:
        return await self._run(self._sync.remove_auto_topup, user_id)

    async def topups(self, user_id: _UserId, *, limit: int = DEFAULT_PAGE_LIMIT) -> list[Topup]:
        return await self._run(self._sync.topups, user_id, limit=limit)

    async def record_topup_failure(self, topup_id: str, reason: str) -> Topup:
        return await self._run(self._sync.record_topup_failure, topup_id, reason)

    # ----- webhooks -----------------------------------------------------------------

    async def create_webhook(
        self, url: str, events: Sequence[str] | None = None, description: str | None = None
    ) -> tuple[WebhookSubscription, str]:
        return await self._run(self._sync.create_webhook, url, events, description)

    async def webhooks(self) -> list[WebhookSubscription]:
        return await self._run(self._sync.webhooks)

    async def webhook(self, webhook_id: str) -> WebhookSubscription:
        return await self._run(self._sync.webhook, webhook_id)

    async def set_webhook_enabled(self, webhook_id: str, enabled: bool) -> WebhookSubscription:
        return await self._run(self._sync.set_webhook_enabled, webhook_id, enabled)

    async def delete_webhook(self, webhook_id: str) -> None:
        return await self._run(self._sync.delete_webhook, webhook_id)

    async def rotate_webhook_secret(self, webhook_id: str) -> str:
        return await self._run(self._sync.rotate_webhook_secret, webhook_id)

    async def webhook_dead_letters(
        self, webhook_id: str | None = None, limit: int = DEFAULT_EVENTS_LIMIT
    ) -> list[DeadLetter]:
        return await self._run(self._sync.webhook_dead_letters, webhook_id, limit)

    async def replay_dead_letters(self, webhook_id: str, event_ids: Sequence[int] | None = None) -> int:
        return await self._run(self._sync.replay_dead_letters, webhook_id, event_ids)

    async def deliver_webhooks(
        self,
        *,
        timeout_ms: int = DEFAULT_WEBHOOK_TIMEOUT_MS,
        max_attempts: int = DEFAULT_WEBHOOK_MAX_ATTEMPTS,
        backoff_base_ms: int = DEFAULT_WEBHOOK_BACKOFF_BASE_MS,
        backoff_max_ms: int = DEFAULT_WEBHOOK_BACKOFF_MAX_MS,
        batch_size: int = DEFAULT_WEBHOOK_BATCH_SIZE,
    ) -> DeliveryReport:
        return await self._run(
            self._sync.deliver_webhooks,
            timeout_ms=timeout_ms,
            max_attempts=max_attempts,
            backoff_base_ms=backoff_base_ms,
            backoff_max_ms=backoff_max_ms,
            batch_size=batch_size,
        )

    async def handle_events(
        self,
        consumer: str,
        handler: Callable[[Event], object],
        *,
        events: Sequence[str] | None = None,
        timeout_ms: int = DEFAULT_WEBHOOK_TIMEOUT_MS,
        max_attempts: int = DEFAULT_WEBHOOK_MAX_ATTEMPTS,
        backoff_base_ms: int = DEFAULT_WEBHOOK_BACKOFF_BASE_MS,
        backoff_max_ms: int = DEFAULT_WEBHOOK_BACKOFF_MAX_MS,
        batch_size: int = DEFAULT_WEBHOOK_BATCH_SIZE,
    ) -> DeliveryReport:
        """``handler`` is a plain function, called on the manager's thread (not a coroutine)."""
        return await self._run(
            self._sync.handle_events,
            consumer,
            handler,
            events=events,
            timeout_ms=timeout_ms,
            max_attempts=max_attempts,
            backoff_base_ms=backoff_base_ms,
            backoff_max_ms=backoff_max_ms,
            batch_size=batch_size,
        )
