//! creditgate: an embeddable prepaid-credit ledger for AI API gateways.
//!
//! Gate API-key creation on payment, verify a key and its balance, charge
//! usage in real time, and keep an audit trail that always adds up — all
//! in-process and transactional, on SQLite (default) or PostgreSQL.
//! The contract is `docs/reference.md`; [`CreditManager`] is the facade.

mod config;
mod error;
mod events;
mod import;
mod keys;
mod manager;
mod metrics;
mod money;
mod store;
mod types;
mod validate;

pub use config::{Config, CurrencyRate, MAX_CURRENCIES, MAX_CURRENCY_EXPONENT, Synchronous, TestClock, redact_url};
pub use error::{Error, ErrorCode, LimitSource, Result};
pub use events::{Event, EventKind, HOST_EVENT_KINDS, MAX_EVENTS_PER_PAGE, MAX_LOW_BALANCE_THRESHOLDS};
pub use import::{ImportKeys, ImportSummary, ImportUsers, KeyFormat};
pub use keys::ApiKeySecret;
pub use manager::{
    CreditManager, EntryOptions, HoldAmount, KeyRef, MAX_EXPIRY_SWEEP, MAX_GRANT_LIFETIME_MICROS, MAX_GRANT_PRIORITY,
    MAX_LISTED_GRANTS, MAX_TOKENS_PER_MINUTE, MIN_GRANT_PRIORITY, Settlement, Usage,
};
pub use metrics::Counter;
pub use money::{Credits, MAX_AMOUNT_CREDITS, MAX_AMOUNT_MICROS, MICROS_PER_CREDIT};
pub use types::{
    Account, ApiKeyInfo, AuditMismatch, AuditReport, Entry, EntryId, EntryKind, ExpirySweep, Grant, GrantCategory,
    GrantId, GrantOptions, Hold, HoldId, HoldStatus, KeyEligibility, KeyId, ModelPrice, NewApiKey, Report,
    SchemaStatus, SpendWindow, Timestamp, UsageCharge, Verification,
};
pub use validate::{MAX_METADATA_BYTES, MAX_PAGE_LIMIT, MAX_TEXT_BYTES, MAX_TOKENS_PER_CALL, MAX_TTL_SECONDS};

// The Rust code blocks of the documentation run as doctests (`cargo test
// --doc`); tests/python/test_docs.py checks that every page with a ```rust
// block is included here.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/quickstart-rust.md")]
struct QuickstartRustDoctests;
