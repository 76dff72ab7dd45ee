//! C ABI for creditgate: `include/creditgate.h`, generated from this crate
//! by cbindgen. docs/reference.md is the contract; docs/c-api.md is the guide.
//!
//! Layout: `lib.rs` the exported functions (one per operation, each body
//! one `ffi_fn!` call and free of `unsafe`), `ffi.rs` every raw-pointer
//! access, `panic.rs` the boundary macro `ffi_fn!` (panics, out-pointer
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

use creditgate_core::{
    Config, CreditManager, Credits, EntryId, EntryKind, EntryOptions, Error, GrantCategory, GrantOptions, HoldAmount,
    HoldId, KeyId, KeyRef, Result, Settlement, SpendWindow, Timestamp, Usage,
};
use ffi::Out;
use panic::ffi_fn;
use serde_json::{Map, Value};
use std::ffi::c_char;

pub use status::cg_status;
pub use types::{
    CG_ID_SIZE, CG_KEY_PREFIX_SIZE, CG_USER_ID_SIZE, cg_api_key, cg_entry, cg_entry_options, cg_grant_options, cg_hold,
    cg_hold_status, cg_key_eligibility, cg_usage, cg_usage_charge, cg_verification,
};

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

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

fn write_json(out: Out<*mut c_char>, v: Value) -> Result<()> {
    out.write(ffi::string_into_raw(v.to_string())?);
    Ok(())
}

fn metadata(text: Option<&str>) -> Result<Option<Map<String, Value>>> {
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

fn open(url: Option<&str>) -> Result<CreditManager> {
    let config = Config::from_env()?;
    CreditManager::open(match url {
        Some(u) => config.database_url(u),
        None => config,
    })
}

// ----- handle, errors, strings ------------------------------------------------

/// Opens (and migrates) the ledger at `database_url` (`sqlite:///path.db`,
/// `sqlite:////abs/path.db`, `sqlite:///:memory:`, `postgresql://...`).
/// The other settings (`MIN_CREDITS_API_KEY`, `CREDITS_PER_USD`, ...) come
/// from the environment. To take the URL from `DATABASE_URL` too, call
/// `cg_open_env`.
///
/// `database_url`: required (NULL is `CG_INVALID_ARGUMENT`: a forgotten
/// URL must not open, or create, a ledger somewhere else); borrowed for the
/// call.
/// `manager_out`: required; receives a new handle owned by the caller, to be
/// released with `cg_close`. Set to NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_open(database_url: *const c_char, manager_out: *mut *mut cg_manager) -> cg_status {
    ffi_fn!(status; out [manager_out]; args [text database_url]; {
        manager_out.write(ffi::manager_into_raw(open(Some(database_url))?));
        Ok(())
    })
}

/// Opens the ledger named by the environment (`DATABASE_URL`, default
/// `sqlite:///creditgate.db`, and the other settings of docs/reference.md, "Environment variables").
///
/// `manager_out`: required; receives a new handle owned by the caller, to be
/// released with `cg_close`. Set to NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_open_env(manager_out: *mut *mut cg_manager) -> cg_status {
    ffi_fn!(status; out [manager_out]; {
        manager_out.write(ffi::manager_into_raw(open(None)?));
        Ok(())
    })
}

/// Closes a handle and frees it. NULL is a no-op. Closing a handle twice, or
/// while another thread still uses it, is undefined behaviour.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_close(manager: *mut cg_manager) {
    ffi_fn!(free manager_drop(manager))
}

/// The message of the last failed call on this thread ("" when the last
/// call succeeded). Never NULL. Borrowed: valid until the next call of a
/// `cg_status`-returning function on the same thread; copy it to keep it.
/// Messages say what was wrong and with which value, never a secret.
#[unsafe(no_mangle)]
pub extern "C" fn cg_last_error() -> *const c_char {
    ffi_fn!(value c"".as_ptr(); { panic::last_error_ptr() })
}

/// After `CG_RATE_LIMITED` on this thread: the whole seconds (1..=60) until
/// the key's next rate-limit window (an HTTP `Retry-After`); 0 after any
/// other result.
#[unsafe(no_mangle)]
pub extern "C" fn cg_last_error_retry_after() -> u32 {
    ffi_fn!(value 0; { panic::last_retry_after() })
}

/// Which limit the last `CG_INSUFFICIENT_CREDITS` on this thread hit:
/// "account" (the account's available credits) or "key" (the API key's
/// spend cap, `cg_set_key_limit`); "" when the last call on this thread did
/// not fail with `CG_INSUFFICIENT_CREDITS`. Static: never free it. Like
/// `cg_last_error`, it describes the last status-returning call.
#[unsafe(no_mangle)]
pub extern "C" fn cg_last_error_limit_source() -> *const c_char {
    ffi_fn!(value c"".as_ptr(); { panic::last_limit_source_ptr() })
}

/// The HTTP status of a status (docs/reference.md): 200 for `CG_OK`, 402, 401, 403,
/// 404, 409, 400, 503, 500, 429; 500 for `CG_PANIC` and for unknown values.
#[unsafe(no_mangle)]
pub extern "C" fn cg_status_http(status: u32) -> u16 {
    ffi_fn!(value 500; { cg_status::from_u32(status).map_or(500, cg_status::http_status) })
}

/// The error code (docs/reference.md) of a status: "ok", "insufficient_credits",
/// "invalid_api_key", "limit_reached", "not_found", "idempotency_conflict",
/// "invalid_argument", "storage", "internal", "panic", "rate_limited"; "unknown" for other
/// values. Static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn cg_status_name(status: u32) -> *const c_char {
    ffi_fn!(value c"unknown".as_ptr(); { cg_status::from_u32(status).map_or(c"unknown".as_ptr(), cg_status::name_ptr) })
}

/// The library version, e.g. "0.1.0". Static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn cg_version() -> *const c_char {
    const VERSION: &std::ffi::CStr =
        match std::ffi::CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    ffi_fn!(value c"unknown".as_ptr(); { VERSION.as_ptr() })
}

/// Frees a string this library returned through a `char **` out-pointer
/// (JSON, secrets, Prometheus text, URLs). Zeroes it first, as it may be an
/// API key secret. NULL is a no-op; freeing twice is undefined behaviour.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_string_free(s: *mut c_char) {
    ffi_fn!(free string_free(s))
}

/// The resolved database URL, password redacted.
///
/// `url_out`: required; receives a string owned by the caller (free it with
/// `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_database_url(manager: *const cg_manager, url_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [url_out]; {
        url_out.write(ffi::string_into_raw(m.database_url())?);
        Ok(())
    })
}

/// Runs pending schema migrations (also done by `cg_open`); safe to repeat.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_migrate(manager: *const cg_manager) -> cg_status {
    ffi_fn!(handle manager => m; { m.migrate() })
}

/// Copies an SQLite ledger into the new file `dest_path` (never
/// overwritten) with SQLite's online backup API, while the ledger stays in
/// use; the copy is a consistent snapshot that passed `PRAGMA quick_check`.
/// PostgreSQL ledgers: `CG_INVALID_ARGUMENT`.
///
/// `size_bytes_out`: optional (NULL to ignore); the copy's size, 0 on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_backup(
    manager: *const cg_manager,
    dest_path: *const c_char,
    size_bytes_out: *mut i64,
) -> cg_status {
    ffi_fn!(handle manager => m; args [opt_out size_bytes_out, text dest_path]; {
        let size = m.backup(dest_path)?;
        if let Some(out) = size_bytes_out {
            out.write(i64::try_from(size).unwrap_or(i64::MAX));
        }
        Ok(())
    })
}

// ----- balances and entries -------------------------------------------------

/// The ledger balance of `user_id` in micro-credits (0 for an unknown user).
///
/// `balance_micros_out`: required; 0 on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_balance(
    manager: *const cg_manager,
    user_id: *const c_char,
    balance_micros_out: *mut i64,
) -> cg_status {
    ffi_fn!(handle manager => m; out [balance_micros_out]; args [text user_id]; {
        balance_micros_out.write(m.get_balance(user_id)?.micros());
        Ok(())
    })
}

/// Sets the floor of `user_id`'s strict operations to `floor_micros` (<= 0):
/// deducts, holds and key purchases may run the balance down to it, and
/// `available_micros` = balance - held - floor. 0 restores the default.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_min_balance(
    manager: *const cg_manager,
    user_id: *const c_char,
    floor_micros: i64,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text user_id]; {
        m.set_min_balance(user_id, Credits::from_micros(floor_micros))
    })
}

/// The account of `user_id` as a JSON object: `user_id`, `balance_micros`,
/// `held_micros`, `available_micros`, `min_balance_micros`, `lifetime_purchased_micros`,
/// `lifetime_used_micros`, `active_keys`, `first_key_issued`, `created_at`
/// (RFC 3339, null for a user the ledger has never seen), and `grants`: the
/// live grants in draw-down order, each with `grant_id`, `category`,
/// `priority`, `amount_micros`, `remaining_micros`, `expires_at` (null:
/// never), `created_at`, `source_entry_id` and `payment_id`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_account_json(
    manager: *const cg_manager,
    user_id: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text user_id]; {
        write_json(json_out, json::account(&m.account(user_id)?))
    })
}

/// Credits `user_id` with `amount_micros`. `kind`: "grant" (NULL),
/// "purchase", "refund" or "adjustment" (which may be negative, and then is
/// strict). `options`: optional (NULL: none), the entry's idempotency key,
/// reference and metadata (`cg_entry_options`).
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_add_credits(
    manager: *const cg_manager,
    user_id: *const c_char,
    amount_micros: i64,
    kind: *const c_char,
    options: *const cg_entry_options,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text user_id, opt_text kind, entry_options options]; {
        let kind = kind.map_or(Ok(EntryKind::Grant), EntryKind::parse)?;
        let metadata = metadata(options.metadata_json)?;
        let e = m.add_credits(user_id, Credits::from_micros(amount_micros), kind, &entry(&options, &metadata))?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// The core's entry options from a `cg_entry_options` and its parsed
/// metadata.
fn entry<'a>(options: &ffi::EntryArgs<'a>, metadata: &'a Option<Map<String, Value>>) -> EntryOptions<'a> {
    EntryOptions { idempotency_key: options.idempotency_key, reference: options.reference, metadata: metadata.as_ref() }
}

/// The core's grant options from a `cg_grant_options` (0 and NULL: not
/// given).
fn grant(options: &ffi::GrantArgs) -> Result<GrantOptions> {
    Ok(GrantOptions {
        expires_at: (options.expires_at_micros != 0).then_some(Timestamp(options.expires_at_micros)),
        category: options.category.map(GrantCategory::parse).transpose()?,
        priority: options.priority,
    })
}

/// `cg_add_credits` with the options of the grant the credits form:
/// `grant` optional (NULL: the default grant, as `cg_add_credits`), see
/// `cg_grant_options`. A negative adjustment takes the default grant.
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_add_credits_grant(
    manager: *const cg_manager,
    user_id: *const c_char,
    amount_micros: i64,
    kind: *const c_char,
    options: *const cg_entry_options,
    grant: *const cg_grant_options,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out];
        args [text user_id, opt_text kind, entry_options options, grant_options grant]; {
        let kind = kind.map_or(Ok(EntryKind::Grant), EntryKind::parse)?;
        let grant = self::grant(&grant)?;
        let metadata = metadata(options.metadata_json)?;
        let amount = Credits::from_micros(amount_micros);
        let e = m.add_credits_with(user_id, amount, kind, &entry(&options, &metadata), &grant)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// `cg_record_payment` with the options of the grant the payment buys, as
/// in `cg_add_credits_grant` (`grant` NULL, or its `category` NULL: paid).
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_record_payment_grant(
    manager: *const cg_manager,
    user_id: *const c_char,
    payment_id: *const c_char,
    amount_minor: i64,
    currency: *const c_char,
    grant: *const cg_grant_options,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out];
        args [text user_id, text payment_id, opt_text currency, grant_options grant]; {
        let currency = currency.unwrap_or("USD");
        let e = m.record_payment_with(user_id, payment_id, amount_minor, currency, &self::grant(&grant)?)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Applies every due grant expiry of up to `limit` accounts (1..=10000,
/// or 0 for 1000), one `expiry` entry per expired grant. Reads never count
/// expired credits anyway; this brings the entries up to date. Call again
/// while `accounts == limit`.
///
/// `json_out`: required; receives `{"accounts", "entries",
/// "credits_micros"}` owned by the caller (free it with `cg_string_free`);
/// NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_expire_grants(
    manager: *const cg_manager,
    limit: u32,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        let limit = if limit == 0 { CG_DEFAULT_EXPIRE_LIMIT } else { limit };
        write_json(json_out, json::expiry_sweep(&m.expire_grants(limit)?))
    })
}

/// The payment webhook path: credits `user_id` with what `amount_minor`
/// (cents, > 0) of `currency` (NULL = "USD"; case-insensitive; only USD)
/// buys, as a `purchase` entry with key `payment:<payment_id>`. A payment
/// delivered twice credits once (`replayed`); the same `payment_id` for
/// another user or amount is `CG_IDEMPOTENCY_CONFLICT`.
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_record_payment(
    manager: *const cg_manager,
    user_id: *const c_char,
    payment_id: *const c_char,
    amount_minor: i64,
    currency: *const c_char,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text user_id, text payment_id, opt_text currency]; {
        let currency = currency.unwrap_or("USD");
        let e = m.record_payment(user_id, payment_id, amount_minor, currency)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Reverses (refunds, charges back) a payment: removes the credits it
/// bought as a `reversal` entry; the balance may go negative.
/// `amount_minor`: the part to reverse in cents, or 0 for everything not
/// yet reversed (negative: `CG_INVALID_ARGUMENT`). `reason`, `reversal_id`
/// (the processor's refund id, for partial refunds): optional (NULL).
/// Unknown payment: `CG_NOT_FOUND`; nothing left: `CG_INVALID_ARGUMENT`.
/// The payment's own grant gives first; the entry's metadata tells
/// `grant_id`, `from_grant_micros` and `already_spent_micros` (the part
/// taken from other grants or into overdraft).
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_reverse_payment(
    manager: *const cg_manager,
    payment_id: *const c_char,
    amount_minor: i64,
    reason: *const c_char,
    reversal_id: *const c_char,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text payment_id, opt_text reason, opt_text reversal_id]; {
        let amount_minor = match amount_minor {
            0 => None,
            a if a < 0 => return Err(invalid(format!("amount_minor must be 0 (all) or positive, got {a}"))),
            a => Some(a),
        };
        let e = m.reverse_payment(payment_id, amount_minor, reason, reversal_id)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Restores exactly what the reversal `reversal_id` removed (the
/// `reversal_id` given to `cg_reverse_payment`, or its payment id when it had
/// none): a dispute won, a refund that failed. Appends a `reinstatement`
/// entry once; a replay returns the same entry with `replayed` set. Not a
/// purchase (purchases and lifetime purchased do not count it; revenue
/// does). `reason`: optional (NULL). Unknown reversal: `CG_NOT_FOUND`.
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_reinstate_reversal(
    manager: *const cg_manager,
    reversal_id: *const c_char,
    reason: *const c_char,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text reversal_id, opt_text reason]; {
        let e = m.reinstate_reversal(reversal_id, reason)?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Strict debit of `amount_micros` (> 0) as a `deduct` entry:
/// `CG_INSUFFICIENT_CREDITS` when available < amount; never below zero.
/// `options`: optional (NULL: none), as in `cg_add_credits`.
///
/// `entry_out`: required; receives the entry (zeroed on failure).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_deduct_credits(
    manager: *const cg_manager,
    user_id: *const c_char,
    amount_micros: i64,
    options: *const cg_entry_options,
    entry_out: *mut cg_entry,
) -> cg_status {
    ffi_fn!(handle manager => m; out [entry_out]; args [text user_id, entry_options options]; {
        let metadata = metadata(options.metadata_json)?;
        let e = m.deduct_credits(user_id, Credits::from_micros(amount_micros), &entry(&options, &metadata))?;
        entry_out.write(cg_entry::of(&e)?);
        Ok(())
    })
}

/// Newest-first page of `user_id`'s entries as a JSON array of objects:
/// `id`, `seq`, `user_id`, `kind`, `amount_micros` (signed),
/// `balance_after_micros`, `idempotency_key`, `reference`, `api_key_id`,
/// `input_tokens`, `output_tokens`, `model`, `amount_minor`, `currency`,
/// `metadata` (object or null), `created_at`, `replayed`. `limit`: 1..=1000,
/// or 0 for 50. `before`: optional (NULL) entry id cursor; an unknown id or
/// another user's is `CG_NOT_FOUND`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_transactions_json(
    manager: *const cg_manager,
    user_id: *const c_char,
    limit: i64,
    before: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text user_id, opt_text before]; {
        let before = before.map(EntryId::parse).transpose()?;
        let limit = if limit == 0 { CG_DEFAULT_PAGE_LIMIT } else { limit };
        let limit = u32::try_from(limit).map_err(|_| invalid(format!("limit must be in 1..=1000, got {limit}")))?;
        write_json(json_out, json::entries(&m.transactions(user_id, limit, before)?))
    })
}

/// Outbox events committed after the event with id `after` (0: from the
/// first), in commit order, as a JSON array of objects with `id`, `kind`
/// (`balance.low`, `purchase.first`, `overdraft`, `grant.expired`,
/// `key.created`, `key.revoked`, `key.disabled`, `key.enabled`,
/// `key.rotated`, `key.limit_set`, `key.expiry_set`), `user_id`, `api_key_id` (or null), `data` (an object;
/// amounts in it are decimal strings of credits) and `created_at`. Resume
/// with the `id` of the last event handled. `limit`: 1..=1000, or 0 for 100.
/// An `after` that names no event is `CG_INVALID_ARGUMENT`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_events_json(
    manager: *const cg_manager,
    after: i64,
    limit: i64,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        let limit = if limit == 0 { CG_DEFAULT_EVENTS_LIMIT } else { limit };
        let limit = u32::try_from(limit).map_err(|_| invalid(format!("limit must be in 1..=1000, got {limit}")))?;
        write_json(json_out, json::events(&m.events(after, limit)?))
    })
}

/// Sets the per-minute rate limits of key `key_id`, shared through the
/// database by every process: `requests_per_minute` verified requests
/// (`cg_verify_api_key_credits`, `cg_reserve`) and `tokens_per_minute`
/// charged tokens; 0 lifts that limit (both 0: none). Over a limit those
/// calls fail with `CG_RATE_LIMITED` (429). Unknown key: `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_rate_limit(
    manager: *const cg_manager,
    key_id: *const c_char,
    requests_per_minute: u32,
    tokens_per_minute: u64,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id]; {
        let key = KeyId::parse(key_id)?;
        let rpm = (requests_per_minute != 0).then_some(requests_per_minute);
        let tpm = (tokens_per_minute != 0).then_some(tokens_per_minute);
        m.set_rate_limit(key, rpm, tpm)
    })
}

// ----- API keys ------------------------------------------------------------------

/// Whether `user_id` may create an API key now. Writes nothing.
///
/// `eligibility_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_can_generate_api_key(
    manager: *const cg_manager,
    user_id: *const c_char,
    eligibility_out: *mut cg_key_eligibility,
) -> cg_status {
    ffi_fn!(handle manager => m; out [eligibility_out]; args [text user_id]; {
        eligibility_out.write(cg_key_eligibility::of(&m.can_generate_api_key(user_id)?));
        Ok(())
    })
}

/// Creates an API key when the credit rule allows it:
/// `CG_INSUFFICIENT_CREDITS` (402) before the first payment,
/// `CG_LIMIT_REACHED` at the active-key limit. `name`: optional (NULL).
///
/// `secret_out`: required; receives the secret, shown this once, owned by
/// the caller: free it with `cg_string_free` (which zeroes it). NULL on
/// failure. `key_out`: required; the key's id and display prefix.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_create_api_key(
    manager: *const cg_manager,
    user_id: *const c_char,
    name: *const c_char,
    secret_out: *mut *mut c_char,
    key_out: *mut cg_api_key,
) -> cg_status {
    ffi_fn!(handle manager => m; out [secret_out, key_out]; args [text user_id, opt_text name]; {
        let k = m.create_api_key(user_id, name)?;
        let info = cg_api_key::of(&k.key_id.to_string(), Some(&k.prefix), false)?;
        secret_out.write(ffi::string_into_raw(k.secret.expose().to_string())?);
        key_out.write(info);
        Ok(())
    })
}

/// Registers a legacy key without the credit gate. Pass exactly one of
/// `secret` (8..=512 bytes) and `secret_sha256` (64 lowercase hex chars);
/// `name`: optional (NULL). All are borrowed for the call.
///
/// `key_out`: required; the key's id and display prefix.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_import_api_key(
    manager: *const cg_manager,
    user_id: *const c_char,
    secret: *const c_char,
    secret_sha256: *const c_char,
    name: *const c_char,
    key_out: *mut cg_api_key,
) -> cg_status {
    ffi_fn!(handle manager => m; out [key_out];
        args [text user_id, opt_text secret, opt_text secret_sha256, opt_text name]; {
        let k = m.import_api_key(user_id, secret, secret_sha256, name)?;
        key_out.write(cg_api_key::of(&k.key_id.to_string(), k.prefix.as_deref(), k.legacy)?);
        Ok(())
    })
}

/// Revokes a key at once. With `user_id` (optional, NULL), a key of another
/// user is `CG_NOT_FOUND`. Revoking twice is a no-op.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_revoke_api_key(
    manager: *const cg_manager,
    key_id: *const c_char,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        m.revoke_api_key(key_id, user_id)
    })
}

/// Sets when a key stops verifying: `expires_at_micros` microseconds since
/// the Unix epoch (UTC), a past time expires it now; 0 clears the expiry.
/// `user_id`: optional (NULL); with it, a key of another user is
/// `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_api_key_expiry(
    manager: *const cg_manager,
    key_id: *const c_char,
    expires_at_micros: i64,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        let at = if expires_at_micros == 0 { None } else { Some(Timestamp(expires_at_micros)) };
        m.set_api_key_expiry(key_id, at, user_id)
    })
}

/// Disables a key: verification and holds then fail with
/// `CG_INVALID_API_KEY` exactly as for an unknown key, until
/// `cg_enable_api_key`. Usage and settlements through it are still
/// charged. A no-op when already disabled. `user_id`: as `cg_revoke_api_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_disable_api_key(
    manager: *const cg_manager,
    key_id: *const c_char,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        m.disable_api_key(key_id, user_id)
    })
}

/// Enables a disabled key (a revoked or expired key stays unusable). A
/// no-op when enabled. `user_id`: as `cg_revoke_api_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_enable_api_key(
    manager: *const cg_manager,
    key_id: *const c_char,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        m.enable_api_key(key_id, user_id)
    })
}

/// Replaces a usable key with a new secret for the same user and name; the
/// old key keeps working for `grace_seconds` (0..=2592000, 30 days; 0 ends
/// it now). No credit rule and no active-key limit apply (it is not a new
/// key purchase). The new key inherits the old one's expiry and spend cap.
/// `user_id`: as `cg_revoke_api_key`.
///
/// `secret_out`, `key_out`: as `cg_create_api_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_rotate_api_key(
    manager: *const cg_manager,
    key_id: *const c_char,
    grace_seconds: i64,
    user_id: *const c_char,
    secret_out: *mut *mut c_char,
    key_out: *mut cg_api_key,
) -> cg_status {
    ffi_fn!(handle manager => m; out [secret_out, key_out]; args [text key_id, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        let k = m.rotate_api_key(key_id, grace_seconds, user_id)?;
        let info = cg_api_key::of(&k.key_id.to_string(), Some(&k.prefix), false)?;
        secret_out.write(ffi::string_into_raw(k.secret.expose().to_string())?);
        key_out.write(info);
        Ok(())
    })
}

/// Caps what a key may spend per `window`: "daily", "weekly", "monthly"
/// (UTC calendar periods: from 00:00, Monday 00:00, the 1st 00:00) or
/// "lifetime". `limit_micros` >= 0 sets the cap (0: nothing may be spent
/// through the key); `window` NULL removes the cap (then `limit_micros`
/// must be 0, as there is no cap to give). Verification and holds through
/// the key then fail with `CG_INSUFFICIENT_CREDITS` and
/// `cg_last_error_limit_source()` "key" when the cap is short. `user_id`:
/// as `cg_revoke_api_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_key_limit(
    manager: *const cg_manager,
    key_id: *const c_char,
    limit_micros: i64,
    window: *const c_char,
    user_id: *const c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text key_id, opt_text window, opt_text user_id]; {
        let key_id = KeyId::parse(key_id)?;
        match window {
            Some(window) => {
                m.set_key_limit(key_id, Some(Credits::from_micros(limit_micros)), SpendWindow::parse(window)?, user_id)
            }
            // Removing: the core ignores the window of a cap it removes.
            None if limit_micros == 0 => m.set_key_limit(key_id, None, SpendWindow::Lifetime, user_id),
            None => Err(invalid(format!(
                "window is NULL, which removes the cap, but limit_micros is {limit_micros}: pass 0, or a window"
            ))),
        }
    })
}

/// `user_id`'s keys, newest first, as a JSON array of objects: `key_id`,
/// `user_id`, `name`, `prefix`, `created_at`, `last_used_at`, `revoked_at`,
/// `legacy`, `expires_at`, `disabled`, `rotated_to` (a key id or null),
/// `spend_limit_micros` (null without a cap), `spend_window`,
/// `spent_in_window_micros`, `window_resets_at`. Never contains a secret.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_list_api_keys_json(
    manager: *const cg_manager,
    user_id: *const c_char,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; args [text user_id]; {
        write_json(json_out, json::api_keys(&m.list_api_keys(user_id)?))
    })
}

/// Verifies a presented key and its account's available credits:
/// `CG_INVALID_API_KEY` (401) for a malformed, unknown or revoked key,
/// `CG_INSUFFICIENT_CREDITS` (402) when available < `min_credits_micros`
/// (pass `CG_MICROS_PER_CREDIT` for the usual 1 credit; 0 checks only the
/// key). Read-only.
///
/// `verification_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_verify_api_key_credits(
    manager: *const cg_manager,
    api_key: *const c_char,
    min_credits_micros: i64,
    verification_out: *mut cg_verification,
) -> cg_status {
    ffi_fn!(handle manager => m; out [verification_out]; args [text api_key]; {
        let v = m.verify_api_key_credits(api_key, Credits::from_micros(min_credits_micros))?;
        verification_out.write(cg_verification::of(&v)?);
        Ok(())
    })
}

// ----- usage and holds -------------------------------------------------------

/// Charges a call's usage as a `usage` entry, never refused for balance
/// (the balance may go negative: `overdraft`). Name the key by exactly one
/// of `api_key` (the secret) and `key_id`. `usage`: required (NULL is
/// `CG_INVALID_ARGUMENT`; a zeroed `cg_usage` charges no tokens at the
/// default price). `request_id`: optional; the same id charges once
/// (`replayed`), with another usage it is `CG_IDEMPOTENCY_CONFLICT`.
///
/// `charge_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_record_usage(
    manager: *const cg_manager,
    api_key: *const c_char,
    key_id: *const c_char,
    usage: *const cg_usage,
    request_id: *const c_char,
    charge_out: *mut cg_usage_charge,
) -> cg_status {
    ffi_fn!(handle manager => m; out [charge_out];
        args [opt_text api_key, opt_text key_id, usage usage, opt_text request_id]; {
        let key = match (api_key, key_id) {
            (Some(secret), None) => KeyRef::Secret(secret),
            (None, Some(id)) => KeyRef::Id(KeyId::parse(id)?),
            _ => return Err(invalid("record_usage needs exactly one of api_key and key_id")),
        };
        charge_out.write(cg_usage_charge::of(&m.record_usage(key, usage, request_id)?)?);
        Ok(())
    })
}

/// Holds credits against available (strict), for streaming or bounding
/// concurrent spend: either `credits_micros` > 0 with `usage` NULL, or
/// `credits_micros` 0 and the price of `usage` (its input tokens at the
/// model's input rate plus its output tokens, e.g. the request's
/// `max_tokens`, at the output rate, rounded up once, at least 1
/// micro-credit: the formula of its charge). `ttl_seconds`: 1..=86400, or 0
/// for 600. `request_id`: optional; the same id holds once (`replayed`,
/// with the first hold's `status`).
///
/// `hold_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_reserve(
    manager: *const cg_manager,
    api_key: *const c_char,
    credits_micros: i64,
    usage: *const cg_usage,
    ttl_seconds: i64,
    request_id: *const c_char,
    hold_out: *mut cg_hold,
) -> cg_status {
    ffi_fn!(handle manager => m; out [hold_out]; args [text api_key, opt_usage usage, opt_text request_id]; {
        let amount = match credits_or_usage("reserve", credits_micros, usage)? {
            Amount::Credits(credits) => HoldAmount::Credits(credits),
            Amount::Usage(usage) => HoldAmount::Usage(usage),
        };
        hold_out.write(reserve(m, api_key, amount, ttl_seconds, request_id)?);
        Ok(())
    })
}

/// `cg_reserve` of a `usage` (required: NULL is `CG_INVALID_ARGUMENT`):
/// holds a call's worst case, quoted by the formula of its charge.
///
/// `hold_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_reserve_usage(
    manager: *const cg_manager,
    api_key: *const c_char,
    usage: *const cg_usage,
    ttl_seconds: i64,
    request_id: *const c_char,
    hold_out: *mut cg_hold,
) -> cg_status {
    ffi_fn!(handle manager => m; out [hold_out]; args [text api_key, usage usage, opt_text request_id]; {
        hold_out.write(reserve(m, api_key, HoldAmount::Usage(usage), ttl_seconds, request_id)?);
        Ok(())
    })
}

/// What `cg_reserve` and `cg_settle` were given: credits or a usage.
enum Amount<'a> {
    Credits(Credits),
    Usage(Usage<'a>),
}

/// The either/or of `cg_reserve` and `cg_settle`: credits (> 0, with no
/// usage) or a usage (with `credits_micros` 0).
fn credits_or_usage<'a>(call: &str, credits_micros: i64, usage: Option<Usage<'a>>) -> Result<Amount<'a>> {
    match (credits_micros, usage) {
        (0, Some(usage)) => Ok(Amount::Usage(usage)),
        (0, None) => Err(invalid(format!("{call} needs credits_micros or a usage, got neither"))),
        (c, None) => Ok(Amount::Credits(Credits::from_micros(c))),
        (c, Some(_)) => {
            Err(invalid(format!("{call} takes either credits_micros or a usage, got credits_micros {c} and a usage")))
        }
    }
}

/// What both reserve calls share once their amount is known: the TTL
/// default, the hold and its C result.
fn reserve(
    m: &CreditManager,
    api_key: &str,
    amount: HoldAmount,
    ttl_seconds: i64,
    request_id: Option<&str>,
) -> Result<cg_hold> {
    let ttl_seconds = if ttl_seconds == 0 { CG_DEFAULT_TTL_SECONDS } else { ttl_seconds };
    cg_hold::of(&m.reserve(api_key, amount, ttl_seconds, request_id)?)
}

/// Charges a hold's actual usage exactly once and frees it (also after it
/// expired or was released; the charge may exceed the hold): either
/// `credits_micros` > 0 with `usage` NULL, or `credits_micros` 0 and
/// `usage` (its `model` NULL: the hold's model). Settling again with the
/// same usage replays the first result; with another it is
/// `CG_IDEMPOTENCY_CONFLICT`. Unknown hold: `CG_NOT_FOUND`.
///
/// `charge_out`: required; zeroed on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_settle(
    manager: *const cg_manager,
    hold_id: *const c_char,
    credits_micros: i64,
    usage: *const cg_usage,
    charge_out: *mut cg_usage_charge,
) -> cg_status {
    ffi_fn!(handle manager => m; out [charge_out]; args [text hold_id, opt_usage usage]; {
        let hold_id = HoldId::parse(hold_id)?;
        let settlement = match credits_or_usage("settle", credits_micros, usage)? {
            Amount::Credits(credits) => Settlement::Credits(credits),
            Amount::Usage(usage) => Settlement::Tokens(usage),
        };
        charge_out.write(cg_usage_charge::of(&m.settle(hold_id, settlement)?)?);
        Ok(())
    })
}

/// Frees an active hold without charging; a no-op on a hold already
/// released, settled or expired. Unknown hold: `CG_NOT_FOUND`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_release(manager: *const cg_manager, hold_id: *const c_char) -> cg_status {
    ffi_fn!(handle manager => m; args [text hold_id]; {
        m.release(HoldId::parse(hold_id)?)
    })
}

/// Sets `model`'s usage price in micro-credits per 1,000 tokens, for input
/// and output separately (each 0..=10^18).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_set_model_price(
    manager: *const cg_manager,
    model: *const c_char,
    input_per_1k_micros: i64,
    output_per_1k_micros: i64,
) -> cg_status {
    ffi_fn!(handle manager => m; args [text model]; {
        m.set_model_price(model, Credits::from_micros(input_per_1k_micros), Credits::from_micros(output_per_1k_micros))
    })
}

/// The per-model prices as a JSON object: model name ->
/// `{"input_per_1k_micros": n, "output_per_1k_micros": n}`.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_list_model_prices_json(
    manager: *const cg_manager,
    json_out: *mut *mut c_char,
) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        write_json(json_out, json::model_prices(&m.list_model_prices()?))
    })
}

// ----- audit, report, metrics -----------------------------------------------

/// Checks every account (balance == sum of entries, gap-free seqs, the
/// `balance_after` chain) on one snapshot, as a JSON object: `ok`,
/// `accounts_checked`, `entries_checked`, `mismatches` (array of
/// `{user_id, problem, detail}`). Never modifies data.
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_audit_json(manager: *const cg_manager, json_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        write_json(json_out, json::audit(&m.audit()?))
    })
}

/// Business figures from the database (docs/reference.md) as a JSON object: `users`,
/// `paying_users`, `users_attempted_key`, `key_generation_attempts`,
/// `key_generation_successes`, `purchase_conversion_rate` (an exact decimal
/// string such as "0.5"), `credits_purchased_micros`, `revenue_usd_minor`,
/// `revenue_per_paying_user_usd_minor`, `revenue_minor_by_currency` (an
/// object: currency code → minor units, e.g. `{"EUR":750,"USD":500}`),
/// `credits_used_micros`, `outstanding_balance_micros`,
/// `overdraft_receivable_micros`, `schema_version` (the ledger's) and
/// `library_schema_version` (the newest this library knows; above it,
/// writes fail with `CG_STORAGE_ERROR`).
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_report_json(manager: *const cg_manager, json_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        write_json(json_out, json::report(&m.report()?))
    })
}

/// This process's counters (docs/reference.md) as a JSON object: counter name ->
/// integer (`verify_ok_total`, `credits_charged_micros_total`, ...,
/// `errors_total`).
///
/// `json_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_metrics_json(manager: *const cg_manager, json_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [json_out]; {
        write_json(json_out, json::metrics(&m.metrics()))
    })
}

/// The counters and latency histograms in Prometheus text format (names
/// prefixed `creditgate_`).
///
/// `text_out`: required; receives a string owned by the caller (free it
/// with `cg_string_free`); NULL on failure.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cg_metrics_prometheus(manager: *const cg_manager, text_out: *mut *mut c_char) -> cg_status {
    ffi_fn!(handle manager => m; out [text_out]; {
        text_out.write(ffi::string_into_raw(m.metrics_prometheus())?);
        Ok(())
    })
}
