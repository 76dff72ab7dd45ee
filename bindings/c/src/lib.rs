//! C ABI for creditgate: `include/creditgate.h`, generated from this crate
//! by cbindgen. docs/reference.md is the contract; docs/c-api.md is the guide.
//!
//! Layout: the exported functions (one per operation, each body one
//! `ffi_fn!` call and free of `unsafe`) by concept in `handle.rs`,
//! `credits.rs`, `keys.rs`, `usage.rs`, `admin.rs`, `orgs.rs`, `analytics.rs`,
//! `webhooks.rs` and `topups.rs` (cbindgen writes them in that order); `lib.rs` the constants and the plumbing they share;
//! `ffi.rs` every raw-pointer access, `panic.rs` the boundary macro `ffi_fn!` (panics, out-pointer
//! resets, the handle check, arguments to safe values) and the thread-local
//! last error, `status.rs` the status enum, `types.rs` the
//! result structs, `json.rs` the JSON shapes.
#![allow(non_camel_case_types)]
// The safety contract is the same for every function and is stated once, in
// the header's preamble ("Pointers"): a live handle, NUL-terminated strings,
// writable out-pointers. Repeating it per function would bury the rest.
#![allow(clippy::missing_safety_doc)]
// Every `unsafe` block says why it is sound: the exports have none of their
// own (they run in `ffi_fn!`), ffi.rs and the macro document each one.
#![deny(clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]

// The panic boundary needs unwinding: with panic=abort a panic would kill
// the host process instead of becoming CG_PANIC.
#[cfg(panic = "abort")]
compile_error!("creditgate-c must be built with panic = \"unwind\" (see panic.rs)");

mod ffi;
mod json;
mod panic;
mod status;
mod types;

// The exports. cbindgen writes them in the order the modules are declared,
// so one comment per module keeps rustfmt from sorting them:
// opening, errors, strings;
mod handle;
// balances, credits, payments, entries, events;
mod credits;
// API keys;
mod keys;
// usage and holds;
mod usage;
// audit, report, metrics;
mod admin;
// organisations (members, projects, budgets) and allowances;
mod orgs;
// usage summaries and statements;
mod analytics;
// webhook subscriptions, delivery, dead letters and verification;
mod webhooks;
// auto top-up.
mod topups;

use creditgate_core::{
    AllowanceSpec, BudgetLimit, BudgetScope, Config, CreditManager, Credits, EntryId, EntryKind, EntryOptions, Error,
    GrantCategory, GrantOptions, HoldAmount, HoldId, KeyId, KeyRef, Result, Settlement, SpendWindow, Timestamp, Usage,
    UsageGroup, UsageQuery, usage_rows_csv, usage_rows_json,
};
use ffi::Out;
use panic::ffi_fn;
use serde_json::{Map, Value};
use std::ffi::c_char;

pub use status::cg_status;
pub use types::{
    CG_ID_SIZE, CG_KEY_PREFIX_SIZE, CG_USER_ID_SIZE, cg_allowance_options, cg_api_key, cg_auto_topup,
    cg_delivery_options, cg_delivery_report, cg_entry, cg_entry_options, cg_grant_options, cg_hold, cg_hold_status,
    cg_key_eligibility, cg_model_price, cg_topup, cg_topup_status, cg_usage, cg_usage_charge, cg_usage_query,
    cg_verification, cg_webhook, cg_webhook_request,
};

// The numbers below are the core's (creditgate::limits), written as literals
// because cbindgen turns only literals into `#define`s; each is asserted
// equal to the core's at compile time, so they cannot drift.

/// Micro-credits per credit: amounts in this API are `int64_t` micro-credits.
pub const CG_MICROS_PER_CREDIT: i64 = 1_000_000;
/// `ttl_seconds` of `cg_reserve` when 0 is passed.
pub const CG_DEFAULT_TTL_SECONDS: i64 = 600;
/// `limit` of `cg_transactions_json` when 0 is passed.
pub const CG_DEFAULT_PAGE_LIMIT: i64 = 50;
/// `limit` of `cg_events_json` when 0 is passed.
pub const CG_DEFAULT_EVENTS_LIMIT: i64 = 100;
/// `limit` of `cg_expire_grants` when 0 is passed.
pub const CG_DEFAULT_EXPIRE_LIMIT: u32 = 1000;
/// The largest `limit` of `cg_transactions_json`.
pub const CG_MAX_PAGE_LIMIT: i64 = 1000;
/// The largest `limit` of `cg_events_json`.
pub const CG_MAX_EVENTS_PER_PAGE: i64 = 1000;
/// The largest `limit` of `cg_expire_grants`.
pub const CG_MAX_EXPIRY_SWEEP: u32 = 10_000;
/// The largest `ttl_seconds` of a hold.
pub const CG_MAX_TTL_SECONDS: i64 = 86_400;
/// The longest user id, name, id, reference, idempotency key, model or
/// currency, in bytes (`CG_USER_ID_SIZE` is one more, for the NUL).
pub const CG_MAX_TEXT_BYTES: i64 = 255;
/// The longest metadata object, serialized as JSON, in bytes.
pub const CG_MAX_METADATA_BYTES: i64 = 4096;
/// The most tokens of each count of one call.
pub const CG_MAX_TOKENS_PER_CALL: i64 = 1_000_000_000;
/// The largest size of any amount, in micro-credits (10^12 credits).
pub const CG_MAX_AMOUNT_MICROS: i64 = 1_000_000_000_000_000_000;
/// A grant's priority lies in `-CG_MAX_GRANT_PRIORITY..=CG_MAX_GRANT_PRIORITY`
/// (no negative `#define`: `x-CG_MIN` would expand to `x--1000`).
pub const CG_MAX_GRANT_PRIORITY: i32 = 1000;
/// The longest `grace_seconds` of `cg_rotate_api_key` (30 days).
pub const CG_MAX_ROTATION_GRACE_SECONDS: i64 = 2_592_000;
/// The largest `tokens_per_minute` of `cg_set_rate_limit`.
pub const CG_MAX_TOKENS_PER_MINUTE: u64 = 1_000_000_000_000;
/// The longest API key looked up, in bytes (longer: `CG_INVALID_API_KEY`).
pub const CG_MAX_KEY_LEN: i64 = 512;
/// The most members of one organisation (`cg_add_member`).
pub const CG_MAX_MEMBERS_PER_ORG: u32 = 10_000;
/// The most projects of one organisation (`cg_create_project`).
pub const CG_MAX_PROJECTS_PER_ORG: u32 = 1_000;
/// The most allowances of one account (`cg_set_allowance`).
pub const CG_MAX_ALLOWANCES_PER_ACCOUNT: u32 = 100;
/// The most rows one usage summary (`cg_usage_summary_json`,
/// `cg_usage_summary_csv`) or statement returns (more:
/// `CG_LIMIT_REACHED`; narrow the query).
pub const CG_MAX_SUMMARY_ROWS: u32 = 100_000;
/// The most versions one model's price keeps (`cg_set_model_pricing`).
pub const CG_MAX_PRICE_VERSIONS: u32 = 1_000;
/// The most webhook subscriptions of a ledger (`cg_create_webhook`).
pub const CG_MAX_WEBHOOKS: u32 = 100;
/// The longest webhook endpoint URL, in bytes.
pub const CG_MAX_WEBHOOK_URL_LEN: u32 = 2048;
/// `cg_delivery_options.timeout_ms` when 0 is passed.
pub const CG_DEFAULT_WEBHOOK_TIMEOUT_MS: u32 = 10_000;
/// The largest `cg_delivery_options.timeout_ms`.
pub const CG_MAX_WEBHOOK_TIMEOUT_MS: u32 = 60_000;
/// `cg_delivery_options.max_attempts` when 0 is passed.
pub const CG_DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 12;
/// The largest `cg_delivery_options.max_attempts`.
pub const CG_MAX_WEBHOOK_MAX_ATTEMPTS: u32 = 50;
/// `cg_delivery_options.backoff_base_ms` when 0 is passed (10 s, doubling
/// up to 1 h: 12 attempts take about 3.5 h).
pub const CG_DEFAULT_WEBHOOK_BACKOFF_BASE_MS: u64 = 10_000;
/// `cg_delivery_options.backoff_max_ms` when 0 is passed.
pub const CG_DEFAULT_WEBHOOK_BACKOFF_MAX_MS: u64 = 3_600_000;
/// The longest backoff delay accepted (one day).
pub const CG_MAX_WEBHOOK_BACKOFF_MS: u64 = 86_400_000;
/// `cg_delivery_options.batch_size` when 0 is passed.
pub const CG_DEFAULT_WEBHOOK_BATCH_SIZE: u32 = 100;
/// The largest `cg_delivery_options.batch_size`.
pub const CG_MAX_WEBHOOK_BATCH_SIZE: u32 = 1_000;
/// `tolerance_seconds` of `cg_verify_webhook` when 0 is passed.
pub const CG_DEFAULT_WEBHOOK_TOLERANCE_SECONDS: u32 = 300;
/// The largest `max_per_month` of a `cg_auto_topup`.
pub const CG_MAX_TOPUPS_PER_MONTH: u32 = 100;
/// The largest `limit` of `cg_topups_json`.
pub const CG_MAX_LISTED_TOPUPS: i64 = 1_000;

const _: () = {
    use creditgate_core::limits as core;
    assert!(CG_MICROS_PER_CREDIT == core::MICROS_PER_CREDIT);
    assert!(CG_DEFAULT_TTL_SECONDS == core::DEFAULT_TTL_SECONDS);
    assert!(CG_DEFAULT_PAGE_LIMIT == core::DEFAULT_PAGE_LIMIT as i64);
    assert!(CG_DEFAULT_EVENTS_LIMIT == core::DEFAULT_EVENTS_LIMIT as i64);
    assert!(CG_DEFAULT_EXPIRE_LIMIT == core::DEFAULT_EXPIRE_LIMIT);
    assert!(CG_MAX_PAGE_LIMIT == core::MAX_PAGE_LIMIT as i64);
    assert!(CG_MAX_EVENTS_PER_PAGE == core::MAX_EVENTS_PER_PAGE as i64);
    assert!(CG_MAX_EXPIRY_SWEEP == core::MAX_EXPIRY_SWEEP);
    assert!(CG_MAX_TTL_SECONDS == core::MAX_TTL_SECONDS);
    assert!(CG_MAX_TEXT_BYTES == core::MAX_TEXT_BYTES as i64);
    assert!(CG_MAX_METADATA_BYTES == core::MAX_METADATA_BYTES as i64);
    assert!(CG_MAX_TOKENS_PER_CALL == core::MAX_TOKENS_PER_CALL);
    assert!(CG_MAX_AMOUNT_MICROS == core::MAX_AMOUNT_MICROS);
    assert!(-CG_MAX_GRANT_PRIORITY == core::MIN_GRANT_PRIORITY);
    assert!(CG_MAX_GRANT_PRIORITY == core::MAX_GRANT_PRIORITY);
    assert!(CG_MAX_ROTATION_GRACE_SECONDS == core::MAX_ROTATION_GRACE_SECONDS);
    assert!(CG_MAX_TOKENS_PER_MINUTE == core::MAX_TOKENS_PER_MINUTE);
    assert!(CG_MAX_KEY_LEN == core::MAX_KEY_LEN as i64);
    assert!(CG_MAX_MEMBERS_PER_ORG == core::MAX_MEMBERS_PER_ORG);
    assert!(CG_MAX_PROJECTS_PER_ORG == core::MAX_PROJECTS_PER_ORG);
    assert!(CG_MAX_ALLOWANCES_PER_ACCOUNT == core::MAX_ALLOWANCES_PER_ACCOUNT);
    assert!(CG_MAX_SUMMARY_ROWS == core::MAX_SUMMARY_ROWS);
    assert!(CG_MAX_PRICE_VERSIONS == core::MAX_PRICE_VERSIONS);
    assert!(CG_MAX_WEBHOOKS == core::MAX_WEBHOOKS);
    assert!(CG_MAX_WEBHOOK_URL_LEN as usize == core::MAX_WEBHOOK_URL_LEN);
    assert!(CG_DEFAULT_WEBHOOK_TIMEOUT_MS == core::DEFAULT_WEBHOOK_TIMEOUT_MS);
    assert!(CG_MAX_WEBHOOK_TIMEOUT_MS == core::MAX_WEBHOOK_TIMEOUT_MS);
    assert!(CG_DEFAULT_WEBHOOK_MAX_ATTEMPTS == core::DEFAULT_WEBHOOK_MAX_ATTEMPTS);
    assert!(CG_MAX_WEBHOOK_MAX_ATTEMPTS == core::MAX_WEBHOOK_MAX_ATTEMPTS);
    assert!(CG_DEFAULT_WEBHOOK_BACKOFF_BASE_MS == core::DEFAULT_WEBHOOK_BACKOFF_BASE_MS);
    assert!(CG_DEFAULT_WEBHOOK_BACKOFF_MAX_MS == core::DEFAULT_WEBHOOK_BACKOFF_MAX_MS);
    assert!(CG_MAX_WEBHOOK_BACKOFF_MS == core::MAX_WEBHOOK_BACKOFF_MS);
    assert!(CG_DEFAULT_WEBHOOK_BATCH_SIZE == core::DEFAULT_WEBHOOK_BATCH_SIZE);
    assert!(CG_MAX_WEBHOOK_BATCH_SIZE == core::MAX_WEBHOOK_BATCH_SIZE);
    assert!(CG_DEFAULT_WEBHOOK_TOLERANCE_SECONDS == core::DEFAULT_WEBHOOK_TOLERANCE_SECONDS);
    assert!(CG_MAX_TOPUPS_PER_MONTH == core::MAX_TOPUPS_PER_MONTH);
    assert!(CG_MAX_LISTED_TOPUPS == core::MAX_LISTED_TOPUPS as i64);
    // The fixed-size strings of the result structs hold the longest value and its NUL.
    assert!(CG_USER_ID_SIZE == core::MAX_TEXT_BYTES + 1);
    assert!(CG_KEY_PREFIX_SIZE == core::MAX_PREFIX_LEN + 1);
};

/// Longest `metadata_json` text accepted before parsing (the parsed object
/// must then serialize to at most 4 KiB).
const MAX_METADATA_JSON_BYTES: usize = 64 * 1024;

/// An open ledger. Opaque; created by `cg_open` or `cg_open_env`, destroyed
/// by `cg_close`. Thread-safe: one handle may be used by many threads at
/// once (but not closed while in use).
pub struct cg_manager {
    _private: [u8; 0],
}

// ----- plumbing shared by the functions below ------------------------------

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

pub(crate) fn write_json(out: Out<*mut c_char>, v: Value) -> Result<()> {
    out.write(ffi::string_into_raw(v.to_string())?);
    Ok(())
}

/// A page `limit` of a listing: 0 is `default`, else 1..=`max`.
pub(crate) fn page_limit(limit: i64, default: i64, max: i64) -> Result<u32> {
    let limit = if limit == 0 { default } else { limit };
    match u32::try_from(limit) {
        Ok(l) if i64::from(l) <= max => Ok(l),
        _ => Err(invalid(format!("limit must be in 1..={max}, or 0 for {default}, got {limit}"))),
    }
}

pub(crate) fn metadata(text: Option<&str>) -> Result<Option<Map<String, Value>>> {
    let Some(text) = text else { return Ok(None) };
    if text.len() > MAX_METADATA_JSON_BYTES {
        return Err(invalid(format!(
            "metadata_json must be at most {MAX_METADATA_JSON_BYTES} bytes, got {}",
            text.len()
        )));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(invalid("metadata_json must be a JSON object")),
        Err(e) => Err(invalid(format!("metadata_json is not valid JSON: {e}"))),
    }
}

pub(crate) fn open(url: Option<&str>) -> Result<CreditManager> {
    let config = Config::from_env()?;
    CreditManager::open(match url {
        Some(u) => config.database_url(u),
        None => config,
    })
}
