"""Type stubs for the native module ``creditgate._creditgate`` (docs/reference.md).

Written by hand and checked against the built module by
``python -m mypy.stubtest creditgate._creditgate`` (scripts/test-python.sh).
"""

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Final, Literal, final

from typing_extensions import TypeAlias

__all__ = [
    "__version__",
    "LocalCreditManager",
    "Entry",
    "Event",
    "Account",
    "Grant",
    "ExpirySweep",
    "KeyEligibility",
    "NewApiKey",
    "ApiKeyInfo",
    "Verification",
    "UsageCharge",
    "Hold",
    "AccountSummary",
    "AccountPage",
    "DayFlow",
    "AuditMismatch",
    "AuditReport",
    "Report",
    "ImportSummary",
    "SchemaStatus",
    "CreditError",
    "InsufficientCredits",
    "InvalidApiKey",
    "LimitReached",
    "NotFound",
    "RateLimited",
    "IdempotencyConflict",
    "InvalidArgument",
    "StorageError",
    "MetricsSnapshot",
    "HistogramSample",
    "Budget",
    "Member",
    "Project",
    "MemberUsage",
    "Allowance",
    "ModelPrice",
    "PriceVersion",
    "UsageRow",
    "DailyTotal",
    "StatementLine",
    "Statement",
    "AutoTopup",
    "Topup",
    "WebhookSubscription",
    "DeadLetter",
    "DeliveryReport",
    "WebhookVerificationError",
    "verify_webhook",
    "EVENT_KINDS",
    "DEFAULT_TTL_SECONDS",
    "DEFAULT_PAGE_LIMIT",
    "DEFAULT_EVENTS_LIMIT",
    "DEFAULT_EXPIRE_LIMIT",
    "DEFAULT_VERIFY_MIN_CREDITS",
    "DEFAULT_GRANT_PRIORITY",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_API_KEY_PREFIX",
    "DEFAULT_MIN_CREDITS_API_KEY",
    "DEFAULT_CREDITS_PER_USD",
    "DEFAULT_CREDITS_PER_1K_TOKENS",
    "DEFAULT_MAX_ACTIVE_KEYS_PER_USER",
    "DEFAULT_MAX_ACTIVE_HOLDS_PER_USER",
    "DEFAULT_BUSY_TIMEOUT_MS",
    "DEFAULT_POOL_SIZE",
    "MAX_CREDITS_PER_USD",
    "MAX_KEYS_OR_HOLDS_LIMIT",
    "MAX_POOL_SIZE",
    "MAX_CURRENCY_EXPONENT",
    "MAX_CURRENCIES",
    "MAX_LOW_BALANCE_THRESHOLDS",
    "MICROS_PER_CREDIT",
    "MAX_AMOUNT_CREDITS",
    "MAX_AMOUNT_MICROS",
    "MAX_TEXT_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_TOKENS_PER_CALL",
    "MAX_PAGE_LIMIT",
    "MAX_EVENTS_PER_PAGE",
    "MAX_TTL_SECONDS",
    "MAX_LISTED_KEYS",
    "MAX_ROTATION_GRACE_SECONDS",
    "MAX_KEY_EXPIRY_MICROS",
    "MIN_KEY_LEN",
    "MAX_KEY_LEN",
    "MAX_PREFIX_LEN",
    "MIN_GRANT_PRIORITY",
    "MAX_GRANT_PRIORITY",
    "MAX_GRANT_LIFETIME_MICROS",
    "MAX_LISTED_GRANTS",
    "MAX_EXPIRY_SWEEP",
    "MAX_TOKENS_PER_MINUTE",
    "MAX_ACCOUNT_OFFSET",
    "MAX_OPERATOR_BYTES",
    "MAX_MEMBERS_PER_ORG",
    "MAX_PROJECTS_PER_ORG",
    "MAX_ALLOWANCES_PER_ACCOUNT",
    "MAX_SUMMARY_ROWS",
    "MAX_TOTALS_DAYS",
    "MAX_PRICE_VERSIONS",
    "MAX_TOPUPS_PER_MONTH",
    "MAX_LISTED_TOPUPS",
    "RESERVED_KEY_PREFIXES",
    "MAX_WEBHOOKS",
    "MAX_WEBHOOK_URL_LEN",
    "MAX_WEBHOOK_ALLOWED_HOSTS",
    "DEFAULT_WEBHOOK_TIMEOUT_MS",
    "MAX_WEBHOOK_TIMEOUT_MS",
    "DEFAULT_WEBHOOK_MAX_ATTEMPTS",
    "MAX_WEBHOOK_MAX_ATTEMPTS",
    "DEFAULT_WEBHOOK_BACKOFF_BASE_MS",
    "DEFAULT_WEBHOOK_BACKOFF_MAX_MS",
    "MAX_WEBHOOK_BACKOFF_MS",
    "DEFAULT_WEBHOOK_BATCH_SIZE",
    "MAX_WEBHOOK_BATCH_SIZE",
    "DEFAULT_WEBHOOK_TOLERANCE_SECONDS",
]

__version__: str

# An amount of credits in: int, Decimal or a decimal str (never float or bool).
_Amount: TypeAlias = int | Decimal | str
# A user id: str, or an int converted with str().
_UserId: TypeAlias = str | int

# ----- limits and defaults (src/limits.rs; docs/reference.md "Limits") ---------
# The front doors' defaults: every signature default in this package equals
# one of these (tests/python/test_limits.py).

DEFAULT_TTL_SECONDS: Final[int]
DEFAULT_PAGE_LIMIT: Final[int]
DEFAULT_EVENTS_LIMIT: Final[int]
DEFAULT_EXPIRE_LIMIT: Final[int]
DEFAULT_VERIFY_MIN_CREDITS: Final[int]
DEFAULT_GRANT_PRIORITY: Final[int]

# Settings when neither an argument nor the environment gives one.
DEFAULT_DATABASE_URL: Final[str]
DEFAULT_API_KEY_PREFIX: Final[str]
DEFAULT_MIN_CREDITS_API_KEY: Final[int]
DEFAULT_CREDITS_PER_USD: Final[int]
DEFAULT_CREDITS_PER_1K_TOKENS: Final[int]
DEFAULT_MAX_ACTIVE_KEYS_PER_USER: Final[int]
DEFAULT_MAX_ACTIVE_HOLDS_PER_USER: Final[int]
DEFAULT_BUSY_TIMEOUT_MS: Final[int]
DEFAULT_POOL_SIZE: Final[int]

# Bounds, checked by the core before any storage work.
MAX_CREDITS_PER_USD: Final[int]
MAX_KEYS_OR_HOLDS_LIMIT: Final[int]
MAX_POOL_SIZE: Final[int]
MAX_CURRENCY_EXPONENT: Final[int]
MAX_CURRENCIES: Final[int]
MAX_LOW_BALANCE_THRESHOLDS: Final[int]
MICROS_PER_CREDIT: Final[int]
MAX_AMOUNT_CREDITS: Final[int]
MAX_AMOUNT_MICROS: Final[int]
MAX_TEXT_BYTES: Final[int]
MAX_METADATA_BYTES: Final[int]
MAX_TOKENS_PER_CALL: Final[int]
MAX_PAGE_LIMIT: Final[int]
MAX_EVENTS_PER_PAGE: Final[int]
MAX_TTL_SECONDS: Final[int]
MAX_LISTED_KEYS: Final[int]
MAX_ROTATION_GRACE_SECONDS: Final[int]
MAX_KEY_EXPIRY_MICROS: Final[int]
MIN_KEY_LEN: Final[int]
MAX_KEY_LEN: Final[int]
MAX_PREFIX_LEN: Final[int]
MIN_GRANT_PRIORITY: Final[int]
MAX_GRANT_PRIORITY: Final[int]
MAX_GRANT_LIFETIME_MICROS: Final[int]
MAX_LISTED_GRANTS: Final[int]
MAX_EXPIRY_SWEEP: Final[int]
MAX_TOKENS_PER_MINUTE: Final[int]
MAX_ACCOUNT_OFFSET: Final[int]
MAX_OPERATOR_BYTES: Final[int]
MAX_MEMBERS_PER_ORG: Final[int]
MAX_PROJECTS_PER_ORG: Final[int]
MAX_ALLOWANCES_PER_ACCOUNT: Final[int]
MAX_SUMMARY_ROWS: Final[int]
MAX_TOTALS_DAYS: Final[int]
MAX_PRICE_VERSIONS: Final[int]
MAX_TOPUPS_PER_MONTH: Final[int]
MAX_LISTED_TOPUPS: Final[int]
RESERVED_KEY_PREFIXES: Final[tuple[str, ...]]
MAX_WEBHOOKS: Final[int]
MAX_WEBHOOK_URL_LEN: Final[int]
MAX_WEBHOOK_ALLOWED_HOSTS: Final[int]
DEFAULT_WEBHOOK_TIMEOUT_MS: Final[int]
MAX_WEBHOOK_TIMEOUT_MS: Final[int]
DEFAULT_WEBHOOK_MAX_ATTEMPTS: Final[int]
MAX_WEBHOOK_MAX_ATTEMPTS: Final[int]
DEFAULT_WEBHOOK_BACKOFF_BASE_MS: Final[int]
DEFAULT_WEBHOOK_BACKOFF_MAX_MS: Final[int]
MAX_WEBHOOK_BACKOFF_MS: Final[int]
DEFAULT_WEBHOOK_BATCH_SIZE: Final[int]
MAX_WEBHOOK_BATCH_SIZE: Final[int]
DEFAULT_WEBHOOK_TOLERANCE_SECONDS: Final[int]
EVENT_KINDS: Final[tuple[str, ...]]
"""Every event kind's name (``balance.low``, ...), in a stable order."""

# ----- errors (docs/reference.md) --------------------------------------------------------

class CreditError(Exception):
    """Base class of every creditgate error; raised itself for internal errors (500)."""

    code: ClassVar[str]
    status_code: ClassVar[int]

class InsufficientCredits(CreditError):
    """Not enough available credits (402)."""

    required: Decimal
    available: Decimal
    limit_source: str
    """``"account"`` (the paying account's available credits), ``"key"`` (the API key's spend cap),
    ``"member"`` (the member's budget in its organisation) or ``"project"`` (the key's project budget)."""

class InvalidApiKey(CreditError):
    """The API key is malformed, unknown or revoked (401)."""

class LimitReached(CreditError):
    """A per-user limit is reached (403); ``limit`` names the setting."""

    limit: str

class RateLimited(CreditError):
    """A per-key rate limit is used up for this minute (429); ``limit`` names it
    (``requests_per_minute`` or ``tokens_per_minute``), ``retry_after`` is the
    whole seconds until the next minute."""

    limit: str
    retry_after: int

class NotFound(CreditError):
    """No such payment, hold, key or entry (404)."""

class IdempotencyConflict(CreditError):
    """The idempotency key was used with other parameters (409)."""

class InvalidArgument(CreditError, ValueError):
    """An argument is out of range or malformed (400)."""

class StorageError(CreditError):
    """The database failed (503); retry a write with the same idempotency key."""

class WebhookVerificationError(InvalidArgument):
    """``verify_webhook`` refused a delivery; the message says which check failed."""

def verify_webhook(
    payload: bytes | bytearray | str,
    headers: Mapping[str, str] | Sequence[tuple[str, str]],
    secret: str,
    *,
    tolerance_seconds: int = 300,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Checks a webhook's ``webhook-signature`` (HMAC-SHA-256 of id, timestamp
    and body under ``secret``; any of several passes) and that its
    ``webhook-timestamp`` is within ``tolerance_seconds`` of ``now`` (default:
    the clock); returns the parsed JSON body (the event). Headers are matched
    case-insensitively. Raises ``WebhookVerificationError``."""

# ----- results -----------------------------------------------------------------

@final
class WebhookSubscription:
    """A webhook subscription and its delivery figures (never its secret)."""

    @property
    def id(self) -> str:
        """``wh_`` and 32 hex digits."""
    @property
    def url(self) -> str:
        """The endpoint (``https://...``, ``http://...``), or ``callback:NAME`` for a ``handle_events`` consumer."""
    @property
    def kinds(self) -> list[str]:
        """The event kinds delivered; empty: every kind."""
    @property
    def enabled(self) -> bool: ...
    @property
    def description(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def delivered(self) -> int:
        """Events delivered (2xx), all time."""
    @property
    def failed_attempts(self) -> int:
        """Attempts that failed, all time."""
    @property
    def dead_lettered(self) -> int:
        """Events now in the dead-letter list."""
    @property
    def pending(self) -> int:
        """Events after the cursor (counted up to one page of events)."""
    @property
    def lag_seconds(self) -> int:
        """Age of the oldest event after the cursor, of any kind: not yet delivered or skipped (0: none)."""
    @property
    def attempts(self) -> int:
        """Failed attempts of the event at the head of the queue (0: none)."""
    @property
    def next_attempt_at(self) -> datetime | None:
        """When the head is retried (None: at the next pass)."""
    @property
    def last_error(self) -> str | None:
        """``HTTP 500``, ``timeout after 10000 ms``, ...: never a secret or a response body."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class DeadLetter:
    """An event given up on after every attempt; ``replay_dead_letters`` queues it again."""

    @property
    def subscription_id(self) -> str: ...
    @property
    def event_id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def dead_at(self) -> datetime: ...
    @property
    def requeued(self) -> bool:
        """Queued for one more attempt at the next pass."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class DeliveryReport:
    """What one ``deliver_webhooks()`` or ``handle_events()`` pass did."""

    @property
    def sent(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def dead_lettered(self) -> int: ...
    @property
    def busy(self) -> int:
        """Subscriptions leased by another worker or waiting for their backoff."""
    def to_dict(self) -> dict[str, int]: ...

@final
class Entry:
    """One append-only ledger entry."""

    @property
    def id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def user_id(self) -> str: ...
    @property
    def kind(self) -> str:
        """purchase, grant, usage, deduct, refund, reversal, reinstatement, adjustment or expiry."""
    @property
    def amount(self) -> Decimal:
        """Signed: negative for usage, deduct and reversal."""
    @property
    def balance_after(self) -> Decimal: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def reference(self) -> str | None: ...
    @property
    def api_key_id(self) -> str | None: ...
    @property
    def input_tokens(self) -> int | None: ...
    @property
    def output_tokens(self) -> int | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def amount_minor(self) -> int | None:
        """Money of a purchase, reversal or reinstatement, in the currency's minor units."""
    @property
    def currency(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def replayed(self) -> bool:
        """True when an idempotent call returned this earlier result."""
    @property
    def member_id(self) -> str | None:
        """The member of the organisation ``user_id`` that spent (or was granted) this entry; None otherwise."""
    @property
    def project(self) -> str | None:
        """The organisation project of the key that spent this entry, at the charge."""
    @property
    def cached_input_tokens(self) -> int | None:
        """Of ``input_tokens``, those read from the provider's cache (usage entries)."""
    @property
    def cache_write_tokens(self) -> int | None:
        """Of ``input_tokens``, those written to the provider's cache (usage entries)."""
    @property
    def price(self) -> ModelPrice | None:
        """The rates a usage entry was charged at; None for charges of a given amount and older entries."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class Event:
    """One outbox event, written in the same transaction as its change."""

    @property
    def id(self) -> int:
        """Pass the id of the last event handled as ``after`` to resume."""
    @property
    def kind(self) -> str:
        """balance.low, purchase.first, overdraft, grant.expired, or key.created,
        key.revoked, key.disabled, key.enabled, key.rotated, key.limit_set, key.expiry_set."""
    @property
    def user_id(self) -> str: ...
    @property
    def api_key_id(self) -> str | None: ...
    @property
    def data(self) -> dict[str, Any]:
        """The kind's details; amounts are decimal strings."""
    @property
    def created_at(self) -> datetime: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Account:
    """An account: ledger balance, active holds and what is available."""

    @property
    def user_id(self) -> str: ...
    @property
    def balance(self) -> Decimal: ...
    @property
    def held(self) -> Decimal: ...
    @property
    def available(self) -> Decimal:
        """What strict operations may still take: balance - held - min_balance."""
    @property
    def min_balance(self) -> Decimal:
        """The floor of strict operations (<= 0; 0 unless set with set_min_balance)."""
    @property
    def lifetime_purchased(self) -> Decimal: ...
    @property
    def lifetime_used(self) -> Decimal: ...
    @property
    def active_keys(self) -> int: ...
    @property
    def first_key_issued(self) -> bool: ...
    @property
    def created_at(self) -> datetime | None:
        """None for a user the ledger has never seen."""
    @property
    def grants(self) -> list[Grant]:
        """The live grants (not spent, not expired) in draw-down order; an
        allowance's refill that is due but not yet written has ``grant_id`` 0."""
    @property
    def organisation(self) -> str | None:
        """The organisation this account is a member of (its keys charge it); None otherwise."""
    @property
    def auto_topup(self) -> AutoTopup | None:
        """The account's auto top-up rule (set_auto_topup); None without one."""
    @property
    def topups_this_month(self) -> list[Topup]:
        """The top-ups requested this calendar month (UTC), oldest first, whatever their status."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class Grant:
    """A grant (lot): the credits one entry added and what is left of them."""

    @property
    def grant_id(self) -> int: ...
    @property
    def user_id(self) -> str: ...
    @property
    def category(self) -> str:
        """paid or promotional (promotional is drawn down first)."""
    @property
    def priority(self) -> int:
        """Lower is drawn first, within a category."""
    @property
    def amount(self) -> Decimal:
        """What the source entry credited."""
    @property
    def remaining(self) -> Decimal: ...
    @property
    def expires_at(self) -> datetime | None:
        """None: never expires."""
    @property
    def created_at(self) -> datetime: ...
    @property
    def source_entry_id(self) -> str | None:
        """None for the opening grant of a ledger migrated from before grants."""
    @property
    def payment_id(self) -> str | None: ...
    @property
    def member_id(self) -> str | None:
        """Only charges by this member of the organisation may draw it (an allowance for the member)."""
    @property
    def api_key_id(self) -> str | None:
        """Only charges through this key may draw it (an allowance for the key)."""
    @property
    def allowance_id(self) -> int | None:
        """The allowance whose refill issued it."""
    def to_dict(self) -> dict[str, Any]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ExpirySweep:
    """What ``expire_grants()`` did."""

    @property
    def accounts(self) -> int: ...
    @property
    def entries(self) -> int:
        """expiry entries written, one per expired grant."""
    @property
    def credits(self) -> Decimal:
        """Credits removed from balances."""
    @property
    def refills(self) -> int:
        """Allowance refills written (one per allowance and period)."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class KeyEligibility:
    """Whether a user may create an API key now; ``bool()`` is ``allowed``."""

    @property
    def allowed(self) -> bool: ...
    @property
    def is_first_key(self) -> bool: ...
    @property
    def required(self) -> Decimal: ...
    @property
    def available(self) -> Decimal: ...
    def __bool__(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class NewApiKey:
    """A new API key. ``secret`` is shown once and never in ``repr``/``str``."""

    @property
    def secret(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def prefix(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    def to_dict(self) -> dict[str, Any]:
        """The fields, ``secret`` included."""

@final
class ApiKeyInfo:
    """An API key as listed: never its secret."""

    @property
    def key_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def prefix(self) -> str | None:
        """None for legacy keys imported by hash."""
    @property
    def created_at(self) -> datetime: ...
    @property
    def last_used_at(self) -> datetime | None: ...
    @property
    def revoked_at(self) -> datetime | None: ...
    @property
    def legacy(self) -> bool: ...
    @property
    def expires_at(self) -> datetime | None:
        """When the key stops verifying (set at creation, later, or by a rotation's grace end)."""
    @property
    def disabled(self) -> bool: ...
    @property
    def rotated_to(self) -> str | None:
        """The id of the key that replaced this one (``rotate_api_key``)."""
    @property
    def spend_limit(self) -> Decimal | None:
        """The key's spend cap per ``spend_window``; None without a cap."""
    @property
    def spend_window(self) -> str | None:
        """``daily``, ``weekly``, ``monthly`` or ``lifetime``; None without a cap."""
    @property
    def spent_in_window(self) -> Decimal:
        """Usage charged through the key in the current window (0 without a cap)."""
    @property
    def window_resets_at(self) -> datetime | None:
        """When the current window ends; None without a cap or for ``lifetime``."""
    @property
    def project(self) -> str | None:
        """The organisation project the key belongs to (``set_key_project``)."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class Verification:
    """A verified key: whose it is, what its account has available and what its cap leaves."""

    @property
    def user_id(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def available(self) -> Decimal: ...
    @property
    def key_remaining(self) -> Decimal | None:
        """What the key's spend cap still allows in its window; None without a cap."""
    @property
    def member_remaining(self) -> Decimal | None:
        """What the key owner's member budget still allows; None without one."""
    @property
    def project_remaining(self) -> Decimal | None:
        """What the key's project budget still allows; None without one."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class UsageCharge:
    """A usage charge (``record_usage``, ``settle``)."""

    @property
    def entry_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
    @property
    def charged(self) -> Decimal: ...
    @property
    def balance(self) -> Decimal:
        """Ledger balance after the charge."""
    @property
    def overdraft(self) -> bool:
        """True exactly when the balance after the charge is below zero."""
    @property
    def replayed(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Hold:
    """Credits held by ``reserve`` until ``settle``, ``release`` or expiry.
    ``status`` is ``"active"`` for a new hold; on a replay (``replayed``),
    where the first hold stands now: ``"active"``, ``"settled"``,
    ``"released"`` or ``"expired"`` (only an active hold covers a call)."""

    @property
    def hold_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def status(self) -> Literal["active", "settled", "released", "expired"]: ...
    @property
    def replayed(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class AuditMismatch:
    """One problem found by ``audit()``."""

    @property
    def user_id(self) -> str: ...
    @property
    def problem(self) -> str:
        """balance_mismatch, balance_after_chain, seq_gap, missing_account, grant_mismatch, grant_out_of_range,
        payment_over_reversed or reinstatement_mismatch."""
    @property
    def detail(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class AuditReport:
    """The result of ``audit()``: ``ok`` when every account adds up."""

    @property
    def ok(self) -> bool: ...
    @property
    def accounts_checked(self) -> int: ...
    @property
    def entries_checked(self) -> int: ...
    @property
    def mismatches(self) -> list[AuditMismatch]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Report:
    """Business figures from the database (docs/reference.md)."""

    @property
    def users(self) -> int: ...
    @property
    def paying_users(self) -> int: ...
    @property
    def users_attempted_key(self) -> int: ...
    @property
    def key_generation_attempts(self) -> int: ...
    @property
    def key_generation_successes(self) -> int: ...
    @property
    def purchase_conversion_rate(self) -> Decimal: ...
    @property
    def credits_purchased(self) -> Decimal: ...
    @property
    def revenue_usd_minor(self) -> int: ...
    @property
    def revenue_per_paying_user_usd_minor(self) -> int: ...
    @property
    def revenue_minor_by_currency(self) -> dict[str, int]:
        """Purchases minus reversals plus reinstatements, per currency code, in minor units."""
    @property
    def credits_used(self) -> Decimal: ...
    @property
    def outstanding_balance(self) -> Decimal: ...
    @property
    def outstanding_holds(self) -> Decimal:
        """Credits held by active, unexpired holds across the ledger."""
    @property
    def overdraft_receivable(self) -> Decimal: ...
    @property
    def allowance_issued(self) -> Decimal:
        """Credits issued by allowance refills."""
    @property
    def allowance_used(self) -> Decimal:
        """Of ``allowance_issued``, what was spent (issued - expired - still held by live allowance grants)."""
    @property
    def schema_version(self) -> int: ...
    @property
    def library_schema_version(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class SchemaStatus:
    """A ledger's schema version against this library's (``LocalCreditManager.schema_status``)."""

    @property
    def database_version(self) -> int: ...
    @property
    def library_version(self) -> int: ...
    @property
    def pending(self) -> list[int]: ...
    @property
    def newer_than_library(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class ImportSummary:
    """What ``LocalCreditManager.import_users`` did (counts)."""

    @property
    def users(self) -> int: ...
    @property
    def balances_imported(self) -> int: ...
    @property
    def balances_already_imported(self) -> int: ...
    @property
    def balances_skipped(self) -> int: ...
    @property
    def keys(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class HistogramSample:
    """One latency histogram of a ``MetricsSnapshot``."""

    @property
    def name(self) -> str:
        """The exposition name, e.g. ``creditgate_verify_seconds``."""
    @property
    def help(self) -> str: ...
    @property
    def buckets(self) -> list[tuple[str, int]]:
        """(``le`` label in seconds, cumulative count), ending with ("+Inf", count)."""
    @property
    def sum_micros(self) -> int:
        """The sum of the observations in microseconds."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class MetricsSnapshot:
    """What ``metrics_prometheus()`` writes, as numbers (``metrics_snapshot()``)."""

    @property
    def counters(self) -> dict[str, tuple[str, int]]:
        """Exposition name (``creditgate_verify_ok_total``) -> (help, value), in exposition order."""
    @property
    def errors_help(self) -> str: ...
    @property
    def errors(self) -> dict[str, int]:
        """``creditgate_errors_total`` by error code, every code."""
    @property
    def histograms(self) -> list[HistogramSample]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Budget:
    """A member's or a project's budget as it stands."""

    @property
    def scope(self) -> Literal["member", "project"]: ...
    @property
    def name(self) -> str:
        """The member's user id or the project's name."""
    @property
    def limit(self) -> Decimal: ...
    @property
    def window(self) -> str:
        """``daily``, ``weekly``, ``monthly`` or ``lifetime``."""
    @property
    def low_threshold(self) -> Decimal | None: ...
    @property
    def spent(self) -> Decimal:
        """Charged in the current window."""
    @property
    def remaining(self) -> Decimal:
        """What verify and reserve still allow: limit - spent - active holds through its keys (may be negative)."""
    @property
    def resets_at(self) -> datetime | None:
        """When the current window ends; None for ``lifetime``."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class Member:
    """A member of an organisation: its keys charge the organisation."""

    @property
    def org_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def joined_at(self) -> datetime: ...
    @property
    def budget(self) -> Budget | None: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Project:
    """A named group of an organisation's keys, with an optional budget."""

    @property
    def org_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def keys(self) -> int:
        """Keys in the project (revoked ones included)."""
    @property
    def budget(self) -> Budget | None: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class MemberUsage:
    """What one member spent of its organisation's credits (``member_usage``)."""

    @property
    def member_id(self) -> str: ...
    @property
    def requests(self) -> int:
        """Usage entries (charged calls and settlements)."""
    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
    @property
    def credits(self) -> Decimal: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class AutoTopup:
    """An auto top-up rule: below ``threshold``, request ``amount`` (or up to ``target``; exactly one is set)."""

    @property
    def threshold(self) -> Decimal: ...
    @property
    def amount(self) -> Decimal | None: ...
    @property
    def target(self) -> Decimal | None: ...
    @property
    def max_per_month(self) -> int: ...
    @property
    def monthly_cap(self) -> Decimal: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Topup:
    """A top-up a rule requested: pay it with ``record_payment`` under ``id`` as the payment id."""

    @property
    def id(self) -> str:
        """``tu_`` + 32 hex digits."""
    @property
    def user_id(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def status(self) -> Literal["requested", "paid", "failed"]: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def entry_id(self) -> str | None:
        """The purchase entry that paid it."""
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Allowance:
    """``amount`` every ``period`` on ``user_id``'s account, or only for one member or key of it."""

    @property
    def allowance_id(self) -> int: ...
    @property
    def user_id(self) -> str: ...
    @property
    def member_id(self) -> str | None: ...
    @property
    def api_key_id(self) -> str | None: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def period(self) -> str:
        """``daily``, ``weekly`` or ``monthly`` (UTC)."""
    @property
    def rollover_cap(self) -> Decimal | None:
        """None: rollover off (each period's grant expires at the period's end)."""
    @property
    def next_refill_at(self) -> datetime:
        """The start of the next period not yet refilled."""
    @property
    def created_at(self) -> datetime: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class ModelPrice:
    """A model's prices in credits per 1,000 tokens, and a fee per request.
    A cache price of None charges those tokens at ``input_per_1k``."""

    @property
    def input_per_1k(self) -> Decimal:
        """Prompt tokens neither read from nor written to the cache."""
    @property
    def output_per_1k(self) -> Decimal: ...
    @property
    def cached_input_per_1k(self) -> Decimal | None: ...
    @property
    def cache_write_per_1k(self) -> Decimal | None: ...
    @property
    def request_fee(self) -> Decimal:
        """Charged once per request, on top of the tokens."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class PriceVersion:
    """One version of a model's price: in effect from ``effective_at`` until the next version's."""

    @property
    def model(self) -> str: ...
    @property
    def price(self) -> ModelPrice: ...
    @property
    def effective_at(self) -> datetime: ...
    @property
    def set_at(self) -> datetime:
        """When it was set."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class DailyTotal:
    """One UTC day's entries of one kind, model and currency: how many and their exact sums."""

    @property
    def day(self) -> datetime:
        """The UTC midnight starting the day."""
    @property
    def kind(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def currency(self) -> str | None: ...
    @property
    def entries(self) -> int: ...
    @property
    def amount(self) -> Decimal:
        """Signed as the entries are (usage and deductions negative)."""
    @property
    def amount_minor(self) -> int:
        """Payments' minor units (0 for entries without)."""
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class UsageRow:
    """One group of a usage summary: the grouped fields are set, the others None."""

    @property
    def day(self) -> datetime | None:
        """The UTC midnight starting the day."""
    @property
    def model(self) -> str | None: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def member_id(self) -> str | None: ...
    @property
    def project(self) -> str | None: ...
    @property
    def requests(self) -> int:
        """Usage entries (charges) counted."""
    @property
    def input_tokens(self) -> int:
        """The whole prompts, cache reads and writes included."""
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def credits(self) -> Decimal: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class StatementLine:
    """One line of a statement: a kind of movement, and for usage one model at one set of rates."""

    @property
    def kind(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def price(self) -> ModelPrice | None:
        """The rates of a usage line; None for charges of a given amount."""
    @property
    def entries(self) -> int: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def amount(self) -> Decimal:
        """The line's total movement (negative: out of the account)."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class Statement:
    """An account's movements over ``[since, until)``: ``opening_balance`` plus
    every line's ``amount`` is ``closing_balance``, exactly."""

    @property
    def user_id(self) -> str: ...
    @property
    def since(self) -> datetime: ...
    @property
    def until(self) -> datetime: ...
    @property
    def opening_balance(self) -> Decimal: ...
    @property
    def closing_balance(self) -> Decimal: ...
    @property
    def lines(self) -> list[StatementLine]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def to_json(self) -> str:
        """The core's JSON: amounts as integer ``*_micros``, RFC 3339 UTC times."""
    def to_csv(self) -> str:
        """The core's CSV: a header, an ``opening`` row, one row per line, a ``closing`` row."""

@final
class AccountSummary:
    """One account of a ``list_accounts`` page. ``balance`` is the account
    row's (grants past their expiry count until the account's next write)."""

    @property
    def user_id(self) -> str: ...
    @property
    def balance(self) -> Decimal: ...
    @property
    def min_balance(self) -> Decimal:
        """The floor of strict operations (<= 0)."""
    @property
    def held(self) -> Decimal:
        """Active holds not yet expired."""
    @property
    def active_keys(self) -> int:
        """Keys neither revoked nor expired (disabled ones count)."""
    @property
    def created_at(self) -> datetime | None: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class AccountPage:
    """A page of ``list_accounts`` and how many accounts match the filters."""

    @property
    def accounts(self) -> list[AccountSummary]: ...
    @property
    def total(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class DayFlow:
    """One UTC day of ``daily_flows``: credits purchased and used as the
    report counts them, and the day's entries of any kind."""

    @property
    def day(self) -> datetime:
        """The UTC midnight starting the day."""
    @property
    def purchased(self) -> Decimal: ...
    @property
    def used(self) -> Decimal: ...
    @property
    def entries(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

# ----- the manager -------------------------------------------------------------

@final
class LocalCreditManager:
    """The prepaid-credit ledger.

    Each setting is the argument when given, else the environment
    (``DATABASE_URL``, ``MIN_CREDITS_API_KEY``, ``CREDITS_PER_USD``,
    ``CREDITS_PER_1K_TOKENS``, ``API_KEY_PREFIX``, ``API_KEY_PEPPER``,
    ``MAX_ACTIVE_KEYS_PER_USER``, ``MAX_ACTIVE_HOLDS_PER_USER``,
    ``CREDITGATE_CURRENCY_RATES``), else the default. ``currency_rates`` adds
    currencies to the environment's: code -> (credits per major unit as an
    int, Decimal or decimal str, minor-unit exponent). Opening creates or
    migrates the schema.

    Thread-safe; the GIL is released during storage work. After ``os.fork()``
    the child reopens its own connections on first use (an in-memory
    database cannot follow a fork: ``StorageError``).
    """

    def __new__(
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
    ) -> LocalCreditManager: ...
    @property
    def database_url(self) -> str:
        """The resolved database URL, password redacted."""
    @property
    def pool_size(self) -> int:
        """How many database connections the manager may open at once (1 for an in-memory database)."""
    def acting_as(self, operator: str) -> LocalCreditManager:
        """A manager on the same ledger and connections whose writes record
        ``operator`` in every entry's metadata and every event's data."""
    @property
    def operator(self) -> str | None:
        """The operator of a manager from ``acting_as`` (None: a plain manager)."""
    def list_accounts(
        self,
        *,
        search: str | None = None,
        below: _Amount | None = None,
        order: str = "user_id",
        offset: int = 0,
        limit: int = 50,
    ) -> AccountPage: ...
    def holds(self, user_id: _UserId, *, active_only: bool = True, limit: int = 50) -> list[Hold]:
        """Newest first; an active hold past its expiry shows as expired."""
    def recent_events(
        self, *, user_id: _UserId | None = None, kind: str | None = None, before: int | None = None, limit: int = 100
    ) -> list[Event]:
        """Newest first; ``before`` is the last id of the previous page."""
    def daily_flows(self, since: datetime, until: datetime) -> list[DayFlow]:
        """Per UTC day that ``[since, until)`` touches (at most ``MAX_TOTALS_DAYS``); days without entries left out."""
    def migrate(self) -> None: ...
    def schema_versions(self) -> tuple[int, int]:
        """(version found when this manager opened the ledger, 0 if it created the schema; version now): a read."""
    @staticmethod
    def schema_status(database_url: str | None = None) -> SchemaStatus:
        """The ledger's schema version against this library's, without migrating or creating anything."""
    def backup(self, dest: str | os.PathLike[str]) -> int:
        """Copy an SQLite ledger into the new file `dest` (online backup API); its size in bytes."""
    def get_balance(self, user_id: _UserId) -> Decimal: ...
    def account(self, user_id: _UserId) -> Account: ...
    def set_min_balance(self, user_id: _UserId, floor: _Amount) -> None:
        """Let the account run to `floor` (<= 0) on deducts, holds and key purchases."""
    def add_credits(
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
        priority: int = 0,
    ) -> Entry:
        """Credits form a grant: ``category`` paid | promotional (default:
        promotional for kind grant, else paid), ``priority`` (-1000..1000,
        lower drawn first), ``expires_at`` (aware datetime, in the future)."""
    def import_balance(self, user_id: _UserId, balance: _Amount, kind: str = "adjustment") -> Entry:
        """``creditgate import-users``: a host balance, keyed ``import:<user_id>``."""
    def import_users(
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
        """``creditgate import-users``: the host's users table (and keys) into the ledger; idempotent."""
    def deduct_credits(
        self,
        user_id: _UserId,
        amount: _Amount,
        *,
        idempotency_key: str | None = None,
        reference: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry: ...
    def record_payment(
        self,
        user_id: _UserId,
        payment_id: str,
        amount_minor: int,
        currency: str = "USD",
        *,
        expires_at: datetime | None = None,
        category: str | None = None,
        priority: int = 0,
    ) -> Entry: ...
    def expire_grants(self, limit: int = 1000) -> ExpirySweep:
        """Applies every due grant expiry of up to ``limit`` accounts; call again while ``accounts == limit``."""
    def reverse_payment(
        self,
        payment_id: str,
        amount_minor: int | None = None,
        reason: str | None = None,
        *,
        reversal_id: str | None = None,
    ) -> Entry: ...
    def reinstate_reversal(self, reversal_id: str, reason: str | None = None) -> Entry:
        """Restore what the reversal ``reversal_id`` removed (a dispute won), once; not a purchase."""
    def record_event(self, kind: str, data: dict[str, Any]) -> int:
        """Record an outbox event the host observed (only ``payment.unmapped``); its id."""
    def transactions(self, user_id: _UserId, *, limit: int = 50, before: str | None = None) -> list[Entry]: ...
    def events(self, after: int = 0, limit: int = 100) -> list[Event]:
        """Outbox events committed after event ``after`` (0: the first), in commit order."""
    def set_rate_limit(
        self, key_id: str, *, requests_per_minute: int | None = None, tokens_per_minute: int | None = None
    ) -> None:
        """Per-minute rate limits of a key, shared through the database; None lifts one."""
    def can_generate_api_key(self, user_id: _UserId) -> KeyEligibility: ...
    def create_api_key(
        self, user_id: _UserId, name: str | None = None, *, expires_at: datetime | None = None
    ) -> NewApiKey: ...
    def set_api_key_expiry(self, key_id: str, expires_at: datetime | None, *, user_id: _UserId | None = None) -> None:
        """Set (or clear with None) when the key stops verifying; a past time expires it now."""
    def disable_api_key(self, key_id: str, *, user_id: _UserId | None = None) -> None:
        """The key fails verification like an unknown key until enabled; usage through it is still charged."""
    def enable_api_key(self, key_id: str, *, user_id: _UserId | None = None) -> None: ...
    def rotate_api_key(self, key_id: str, grace_seconds: int, *, user_id: _UserId | None = None) -> NewApiKey:
        """A new secret for the same user and name; the old key works for ``grace_seconds`` (0..=30 days) more."""
    def set_key_limit(self, key_id: str, limit: _Amount | None, window: str, *, user_id: _UserId | None = None) -> None:
        """Cap the key's spend per ``window`` (daily, weekly, monthly: UTC; or lifetime); None removes it."""
    def import_api_key(
        self,
        user_id: _UserId,
        *,
        secret: str | None = None,
        secret_sha256: str | None = None,
        name: str | None = None,
    ) -> ApiKeyInfo: ...
    def revoke_api_key(self, key_id: str, *, user_id: _UserId | None = None) -> None: ...
    def list_api_keys(self, user_id: _UserId) -> list[ApiKeyInfo]: ...
    def verify_api_key_credits(self, api_key: str, min_credits: _Amount = 1) -> Verification: ...
    def authenticate_api_key(self, api_key: str) -> Verification:
        """Checks the key, not the credits: ``available`` may be 0 or negative; never ``InsufficientCredits``."""
    def record_usage(
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
        """Charge a call's usage; ``tokens=`` alone means ``input_tokens``.
        At least one count is required (``InvalidArgument`` otherwise; an
        explicit ``0`` is fine), so a forgotten count never gives a call away."""
    def reserve(
        self,
        api_key: str,
        *,
        credits: _Amount | None = None,
        tokens: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        model: str | None = None,
        ttl_seconds: int = 600,
        request_id: str | None = None,
    ) -> Hold:
        """Hold ``credits``, or the price of the token counts: input tokens at
        ``model``'s input rate plus output tokens (e.g. ``max_tokens``) at its
        output rate, the formula of the charge (``tokens=`` alone means
        ``input_tokens``)."""
    def settle(
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
        """Charge the real usage against the hold, at the price in effect when it was reserved."""
    def release(self, hold_id: str) -> None: ...
    def set_model_price(
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
        """Add a version of ``model``'s price, in effect from ``effective_at`` (None: now; never in the past)."""
    def list_model_prices(self) -> dict[str, tuple[Decimal, Decimal]]: ...
    def model_prices(self) -> dict[str, ModelPrice]:
        """Each model's price in effect now, every component."""
    def price_history(self, model: str | None = None) -> list[PriceVersion]:
        """Every version of ``model``'s price (every model's when None), by model, oldest first."""
    # ----- usage analytics (docs/analytics.md) -----
    def usage_summary(
        self,
        *,
        user_id: _UserId | None = None,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[str] = (),
    ) -> list[UsageRow]:
        """Requests, tokens and credits of usage in ``[since, until)``, grouped by
        ``day``, ``model``, ``key``, ``member`` and/or ``project``."""
    def usage_summary_json(
        self,
        *,
        user_id: _UserId | None = None,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[str] = (),
    ) -> str: ...
    def usage_summary_csv(
        self,
        *,
        user_id: _UserId | None = None,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[str] = (),
    ) -> str: ...
    def daily_totals(self, since: datetime, until: datetime) -> list[DailyTotal]:
        """Counts and exact sums of the entries per UTC day, kind, model and currency, for the
        days ``[since, until)`` touches (each whole); at most ``MAX_TOTALS_DAYS`` days."""
    def statement(self, user_id: _UserId, since: datetime, until: datetime) -> Statement:
        """Opening balance, movements by kind (usage by model and rates) and closing balance of ``[since, until)``."""
    def audit(self) -> AuditReport: ...
    def metrics(self) -> dict[str, int]: ...
    def metrics_prometheus(self) -> str: ...
    def metrics_snapshot(self) -> MetricsSnapshot:
        """What ``metrics_prometheus()`` writes, as numbers: no text to parse."""
    def report(self) -> Report: ...
    # ----- organisations and allowances (docs/organisations.md) -----
    def add_member(self, org_id: _UserId, member_id: _UserId) -> Member:
        """Make ``member_id`` a member of ``org_id``: its keys charge the organisation. Idempotent."""
    def remove_member(self, org_id: _UserId, member_id: _UserId) -> None:
        """End a membership (``NotFound`` when not a member of ``org_id``)."""
    def members(self, org_id: _UserId) -> list[Member]: ...
    def create_project(self, org_id: _UserId, name: str) -> Project:
        """Create a project of ``org_id`` (idempotent)."""
    def projects(self, org_id: _UserId) -> list[Project]: ...
    def set_key_project(self, key_id: str, project: str | None) -> None:
        """Put the key in a project of the organisation that pays for it (None: in no project)."""
    def set_budget(
        self,
        org_id: _UserId,
        *,
        member: _UserId | None = None,
        project: str | None = None,
        limit: _Amount | None = None,
        window: str = "monthly",
        low_threshold: _Amount | None = None,
    ) -> None:
        """Budget of one member or one project (exactly one): ``limit`` per ``window``; ``limit=None`` removes it."""
    def member_transactions(
        self, org_id: _UserId, member_id: _UserId, *, limit: int = 50, before: str | None = None
    ) -> list[Entry]:
        """The entries ``member_id`` made on ``org_id``'s account, newest first."""
    def member_usage(self, org_id: _UserId, since: datetime | None = None) -> list[MemberUsage]:
        """Usage totals per member of ``org_id`` (since ``since``, or all)."""
    def set_allowance(
        self,
        user_id: _UserId,
        amount: _Amount,
        period: str,
        *,
        member: _UserId | None = None,
        key_id: str | None = None,
        rollover_cap: _Amount | None = None,
    ) -> Allowance:
        """``amount`` every ``period`` (daily, weekly, monthly: UTC); the current period's grant is issued at once."""
    def remove_allowance(self, allowance_id: int) -> None:
        """Stop an allowance's refills; the grants it issued stay."""
    def allowances(self, user_id: _UserId) -> list[Allowance]: ...
    # ----- auto top-up (docs/auto-topup.md) -----
    def set_auto_topup(
        self,
        user_id: _UserId,
        threshold: _Amount,
        *,
        amount: _Amount | None = None,
        target: _Amount | None = None,
        max_per_month: int,
        monthly_cap: _Amount,
    ) -> Topup | None:
        """Below ``threshold``, request ``amount`` (or up to ``target``: exactly one).

        Returns the top-up requested at once when already below, else None."""
    def remove_auto_topup(self, user_id: _UserId) -> bool:
        """Remove the rule; False when there was none."""
    def topups(self, user_id: _UserId, *, limit: int = 50) -> list[Topup]:
        """The newest top-ups, newest first."""
    def record_topup_failure(self, topup_id: str, reason: str) -> Topup:
        """Record a failed payment (idempotent); it still counts against the month's caps."""

    def create_webhook(
        self, url: str, events: Sequence[str] | None = None, description: str | None = None
    ) -> tuple[WebhookSubscription, str]:
        """Subscribes ``url`` to ``events`` (None: every kind) from now on; returns the
        subscription and its signing secret (``whsec_...``), shown this once."""
    def webhooks(self) -> list[WebhookSubscription]:
        """Every subscription (``callback:`` consumers included), oldest first."""
    def webhook(self, webhook_id: str) -> WebhookSubscription: ...
    def set_webhook_enabled(self, webhook_id: str, enabled: bool) -> WebhookSubscription: ...
    def delete_webhook(self, webhook_id: str) -> None:
        """Deletes the subscription and its dead letters."""
    def rotate_webhook_secret(self, webhook_id: str) -> str:
        """A new signing secret, shown this once; the old one stops signing at once."""
    def webhook_dead_letters(self, webhook_id: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters (of one subscription, or all), oldest first."""
    def replay_dead_letters(self, webhook_id: str, event_ids: Sequence[int] | None = None) -> int:
        """Queues dead letters (None: all of the subscription's) for one more attempt; returns how many."""
    def deliver_webhooks(
        self,
        *,
        timeout_ms: int = 10000,
        max_attempts: int = 12,
        backoff_base_ms: int = 10000,
        backoff_max_ms: int = 3600000,
        batch_size: int = 100,
    ) -> DeliveryReport:
        """One delivery pass over the enabled HTTP(S) subscriptions (signed POSTs, in commit order)."""
    def handle_events(
        self,
        consumer: str,
        handler: Callable[[Event], object],
        *,
        events: Sequence[str] | None = None,
        timeout_ms: int = 10000,
        max_attempts: int = 12,
        backoff_base_ms: int = 10000,
        backoff_max_ms: int = 3600000,
        batch_size: int = 100,
    ) -> DeliveryReport:
        """One pass of consumer ``consumer`` (subscription ``callback:CONSUMER``): ``handler(event)``
        for each new event of ``events`` in commit order; raising is a failed attempt. The
        consumer's lease lasts 2 x ``timeout_ms`` + 5 s: a handler must return within it."""
