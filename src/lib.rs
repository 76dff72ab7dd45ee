//! creditgate: an embeddable prepaid-credit ledger for AI API gateways.
//!
//! Gate API-key creation on payment, verify a key and its balance, charge
//! usage in real time, and keep an audit trail that always adds up — all
//! in-process and transactional, on SQLite (default) or PostgreSQL.
//! The contract is `docs/reference.md`; [`CreditManager`] is the facade.

mod analytics;
mod browse;
mod config;
mod error;
mod events;
mod import;
mod keys;
pub mod limits;
mod manager;
mod metrics;
mod money;
mod organisations;
mod pricing;
mod store;
mod topups;
mod totals;
mod types;
mod validate;
pub mod webhooks;

pub use analytics::{
    Statement, StatementLine, UsageGroup, UsageQuery, UsageRow, price_json, usage_rows_csv, usage_rows_json,
};
pub use browse::{AccountOrder, AccountPage, AccountQuery, AccountSummary, DayFlow, EventQuery};
pub use config::{Config, CurrencyRate, Synchronous, TestClock, redact_url};
pub use error::{Error, ErrorCode, LimitSource, Result};
pub use events::{Event, EventKind, HOST_EVENT_KINDS};
pub use import::{ImportKeys, ImportSummary, ImportUsers, KeyFormat};
pub use keys::ApiKeySecret;
// The limits most callers check against, also at the crate root (all of
// them, and the defaults, are in `limits`).
pub use limits::{
    MAX_AMOUNT_CREDITS, MAX_AMOUNT_MICROS, MAX_CURRENCIES, MAX_CURRENCY_EXPONENT, MAX_EVENTS_PER_PAGE,
    MAX_EXPIRY_SWEEP, MAX_GRANT_LIFETIME_MICROS, MAX_GRANT_PRIORITY, MAX_LISTED_GRANTS, MAX_LOW_BALANCE_THRESHOLDS,
    MAX_METADATA_BYTES, MAX_PAGE_LIMIT, MAX_TEXT_BYTES, MAX_TOKENS_PER_CALL, MAX_TOKENS_PER_MINUTE,
    MAX_TOPUPS_PER_MONTH, MAX_TTL_SECONDS, MICROS_PER_CREDIT, MIN_GRANT_PRIORITY,
};
pub use manager::{CreditManager, EntryOptions, HoldAmount, KeyRef, Settlement, Usage};
pub use metrics::{Counter, CounterSample, ERRORS_HELP, ERRORS_NAME, HistogramSample, MetricsSnapshot};
pub use money::Credits;
pub use organisations::{Allowance, AllowanceSpec, Budget, BudgetLimit, BudgetScope, Member, MemberUsage, Project};
pub use pricing::{ModelPrice, PriceVersion};
pub use topups::{AutoTopup, Topup, TopupAmount, TopupStatus};
pub use totals::DailyTotal;
pub use types::{
    Account, ApiKeyInfo, AuditMismatch, AuditReport, Entry, EntryId, EntryKind, ExpirySweep, Grant, GrantCategory,
    GrantId, GrantOptions, Hold, HoldId, HoldStatus, KeyEligibility, KeyId, NewApiKey, Report, SchemaStatus,
    SpendWindow, Timestamp, UsageCharge, Verification,
};
pub use webhooks::{
    DeadLetter, DeliveryOptions, DeliveryReport, WebhookSecret, WebhookSubscription, sign_webhook, verify_webhook,
};

// The Rust code blocks of the documentation run as doctests (`cargo test
// --doc`); tests/python/test_docs.py checks that every page with a ```rust
// block is included here.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/quickstart-rust.md")]
struct QuickstartRustDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/pricing.md")]
struct PricingDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/analytics.md")]
struct AnalyticsDoctests;
