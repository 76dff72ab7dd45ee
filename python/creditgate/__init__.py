"""creditgate: an embeddable prepaid-credit ledger for AI API gateways.

Drop-in for a gateway's hand-written ``billing/credit_manager.py``::

    from creditgate import LocalCreditManager, InsufficientCredits
    credits = LocalCreditManager()          # DATABASE_URL, MIN_CREDITS_API_KEY, ... from the environment

Amounts are ``Decimal`` credits (``int``, ``Decimal`` or a decimal ``str`` in;
``float`` is a ``TypeError``); ids are ``str``; datetimes are timezone-aware
UTC. Every error is a ``CreditError`` with ``.code`` and ``.status_code``.

The native module ``creditgate._creditgate`` is private; this package
re-exports its public names. A manager may be shared by threads (the GIL is
released during storage work) and survives ``os.fork()``: a forked child
reopens its own connections on first use (not for ``sqlite:///:memory:``).

In asyncio code use ``AsyncLocalCreditManager`` (``creditgate.aio``): the same
methods as coroutines that never block the event loop. FastAPI glue (bearer
key dependencies, OpenAI-shaped errors, metered streaming) is in
``creditgate.fastapi`` (``pip install '.[fastapi]'``). Signed webhooks: the
subscriptions are manager methods (``create_webhook``, ...), the delivery
worker is ``creditgate.webhooks`` (``creditgate webhooks run``), and receivers
check a delivery with ``verify_webhook``.
"""

from ._creditgate import (
    Account,
    AccountPage,
    AccountSummary,
    Allowance,
    ApiKeyInfo,
    AuditMismatch,
    AuditReport,
    AutoTopup,
    Budget,
    CreditError,
    DailyTotal,
    DayFlow,
    DeadLetter,
    DeliveryReport,
    Entry,
    Event,
    ExpirySweep,
    Grant,
    Hold,
    IdempotencyConflict,
    ImportSummary,
    InsufficientCredits,
    InvalidApiKey,
    InvalidArgument,
    KeyEligibility,
    LimitReached,
    LocalCreditManager,
    Member,
    MemberUsage,
    ModelPrice,
    NewApiKey,
    NotFound,
    PriceVersion,
    Project,
    RateLimited,
    Report,
    SchemaStatus,
    Statement,
    StatementLine,
    StorageError,
    Topup,
    UsageCharge,
    UsageRow,
    Verification,
    WebhookSubscription,
    WebhookVerificationError,
    __version__,
    verify_webhook,
)
from .aio import AsyncLocalCreditManager

__all__ = [
    "Account",
    "AccountPage",
    "AccountSummary",
    "Allowance",
    "ApiKeyInfo",
    "AsyncLocalCreditManager",
    "AuditMismatch",
    "AuditReport",
    "AutoTopup",
    "Budget",
    "CreditError",
    "DailyTotal",
    "DayFlow",
    "Entry",
    "Event",
    "ExpirySweep",
    "Grant",
    "Hold",
    "IdempotencyConflict",
    "ImportSummary",
    "InsufficientCredits",
    "InvalidApiKey",
    "InvalidArgument",
    "KeyEligibility",
    "LimitReached",
    "LocalCreditManager",
    "Member",
    "MemberUsage",
    "ModelPrice",
    "NewApiKey",
    "NotFound",
    "PriceVersion",
    "Project",
    "RateLimited",
    "Report",
    "SchemaStatus",
    "Statement",
    "StatementLine",
    "StorageError",
    "Topup",
    "UsageCharge",
    "UsageRow",
    "Verification",
    "DeadLetter",
    "DeliveryReport",
    "WebhookSubscription",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]
