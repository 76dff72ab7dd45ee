//! The small `#[repr(C)]` structs: results, which hold only numbers, bools
//! and fixed-size NUL-terminated strings, so they need no freeing; and the
//! options structs of the calls with many optional arguments, which the
//! caller fills and keeps.

use crate::ffi::{OutValue, fill};
use creditgate_core::{
    Credits, DeliveryReport, Entry, Hold, HoldStatus, KeyEligibility, Result, Topup, TopupStatus, UsageCharge,
    Verification,
};
use std::ffi::c_char;

/// Size of an id buffer: a lowercase hyphenated UUID (36 bytes) and its NUL.
pub const CG_ID_SIZE: usize = 37;
/// Size of a user id buffer: a user id is at most 255 bytes, plus the NUL.
pub const CG_USER_ID_SIZE: usize = 256;
/// Size of an API key display prefix buffer: at most 8 characters of at most
/// 4 bytes each, plus the NUL.
pub const CG_KEY_PREFIX_SIZE: usize = 33;

/// A ledger entry just written (or replayed). The full entry, with every
/// field, is in `cg_transactions_json`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_entry {
    /// Entry id, a lowercase UUID.
    pub id: [c_char; CG_ID_SIZE],
    /// The account the entry belongs to.
    pub user_id: [c_char; CG_USER_ID_SIZE],
    /// Per-account sequence number, gap-free from 1.
    pub seq: i64,
    /// Signed change of the balance, in micro-credits.
    pub amount_micros: i64,
    /// Ledger balance after this entry, in micro-credits.
    pub balance_after_micros: i64,
    /// True when an idempotent call returned this earlier entry and changed
    /// nothing.
    pub replayed: bool,
}

/// Whether a user may create an API key now (docs/reference.md `can_generate_api_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_key_eligibility {
    pub allowed: bool,
    /// True when no key was ever created for the user by `cg_create_api_key`.
    pub is_first_key: bool,
    /// Available credits the rule requires, in micro-credits.
    pub required_micros: i64,
    /// The user's available credits, in micro-credits.
    pub available_micros: i64,
}

/// A key just created or imported. The secret of a created key is returned
/// separately, once, as a string to free.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_api_key {
    /// Key id, a lowercase UUID; not secret.
    pub key_id: [c_char; CG_ID_SIZE],
    /// Display prefix (the first 8 characters of our keys, at most a quarter
    /// of a legacy key, "" for a key imported by hash).
    pub prefix: [c_char; CG_KEY_PREFIX_SIZE],
    /// True for an imported (legacy) key.
    pub legacy: bool,
}

/// A verified key (docs/reference.md `verify_api_key_credits`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_verification {
    pub user_id: [c_char; CG_USER_ID_SIZE],
    pub key_id: [c_char; CG_ID_SIZE],
    /// Available credits (balance minus active holds), in micro-credits:
    /// of the paying account (the organisation's, for a member's key).
    pub available_micros: i64,
    /// True when the key has a spend cap (`cg_set_key_limit`); then
    /// `key_remaining_micros` is what it still allows in its window.
    pub has_key_remaining: bool,
    /// What the key's cap still allows (limit - spent - the key's holds);
    /// 0 when `has_key_remaining` is false.
    pub key_remaining_micros: i64,
    /// True when the key's owner is a member of an organisation with a
    /// member budget (`cg_set_budget`).
    pub has_member_remaining: bool,
    /// What that member budget still allows; 0 without one.
    pub member_remaining_micros: i64,
    /// True when the key is in a project with a budget.
    pub has_project_remaining: bool,
    /// What that project budget still allows; 0 without one.
    pub project_remaining_micros: i64,
}

/// A usage charge (`cg_record_usage`, `cg_settle`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_usage_charge {
    /// The `usage` ledger entry's id.
    pub entry_id: [c_char; CG_ID_SIZE],
    pub user_id: [c_char; CG_USER_ID_SIZE],
    /// Input plus output tokens.
    pub tokens: i64,
    /// Micro-credits charged (not negative).
    pub charged_micros: i64,
    /// Ledger balance after the charge, in micro-credits.
    pub balance_micros: i64,
    /// True exactly when the balance after the charge is below zero.
    pub overdraft: bool,
    /// True when the request id was charged before and nothing changed.
    pub replayed: bool,
}

/// Where a hold stands (`cg_hold.status`). The numbers are part of the ABI.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum cg_hold_status {
    /// Holding credits until settled, released or expired.
    CG_HOLD_ACTIVE = 0,
    /// Charged by `cg_settle`.
    CG_HOLD_SETTLED = 1,
    /// Freed by `cg_release` without a charge.
    CG_HOLD_RELEASED = 2,
    /// Its TTL passed before it was settled.
    CG_HOLD_EXPIRED = 3,
}

/// A hold (`cg_reserve`, `cg_reserve_usage`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_hold {
    pub hold_id: [c_char; CG_ID_SIZE],
    pub user_id: [c_char; CG_USER_ID_SIZE],
    /// Micro-credits held (at least 1).
    pub amount_micros: i64,
    /// When the hold expires: microseconds since the Unix epoch, UTC.
    pub expires_at_unix_micros: i64,
    /// True when the request id already held this amount.
    pub replayed: bool,
    /// `CG_HOLD_ACTIVE` for a new hold; on a replay, where the first hold
    /// stands now (only an active hold still covers a call).
    pub status: cg_hold_status,
}

/// The optional parts of a ledger entry (`cg_add_credits`,
/// `cg_add_credits_grant`, `cg_deduct_credits`). Every field is optional
/// and 0/NULL means "not given", so a zero-initialised struct
/// (`cg_entry_options options = {0};`), like a NULL `options` pointer, gives
/// none of them. Borrowed for the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_entry_options {
    /// At most 255 bytes; the same key writes once (`replayed`), with other
    /// parameters it is `CG_IDEMPOTENCY_CONFLICT`. NULL: none.
    pub idempotency_key: *const c_char,
    /// Free text for the host, at most 255 bytes. NULL: none.
    pub reference: *const c_char,
    /// A JSON object's text, at most 4 KiB once parsed. NULL: none.
    pub metadata_json: *const c_char,
}

/// The options of the grant an entry creates (`cg_add_credits_grant`,
/// `cg_record_payment_grant`). Every field is optional and 0/NULL means
/// "not given", so a zero-initialised struct
/// (`cg_grant_options grant = {0};`), like a NULL `grant` pointer, is the
/// default grant: the kind's category, priority 0, never expiring.
/// Borrowed for the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_grant_options {
    /// "paid" or "promotional". NULL: promotional for kind "grant", paid
    /// otherwise (a payment: paid).
    pub category: *const c_char,
    /// Draw-down order, -1000..=1000, lower is drawn first. 0: the default.
    pub priority: i32,
    /// When the grant expires: microseconds since the Unix epoch (UTC),
    /// later than now. 0: never.
    pub expires_at_micros: i64,
}

/// A call's usage (`cg_record_usage`, `cg_reserve`, `cg_reserve_usage`,
/// `cg_settle`): the tokens to charge, or to hold the price of. A
/// zero-initialised struct (`cg_usage usage = {0};`) is no tokens at the
/// default price. Borrowed for the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_usage {
    /// Input (prompt) tokens, 0..=10^9, at the model's input rate.
    pub input_tokens: i64,
    /// Output (completion) tokens, 0..=10^9, at the model's output rate;
    /// for a hold, e.g. the request's `max_tokens`.
    pub output_tokens: i64,
    /// The model whose price applies. NULL: the default price (in
    /// `cg_settle`: the hold's model).
    pub model: *const c_char,
    /// Of `input_tokens`, those read from the provider's cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`), at the model's cached-input
    /// rate (none set: its input rate). `input_tokens` is the whole prompt,
    /// so `cached_input_tokens + cache_write_tokens <= input_tokens`. A
    /// hold's worst case does not depend on them.
    pub cached_input_tokens: i64,
    /// Of `input_tokens`, those written to the provider's cache, at the
    /// model's cache-write rate (none set: its input rate).
    pub cache_write_tokens: i64,
}

/// A model's prices (`cg_set_model_pricing`), in micro-credits per 1,000
/// tokens, each 0..=10^18. The cache prices are optional: a zeroed struct
/// is a free model whose cache tokens cost its input price. Borrowed for
/// the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_model_price {
    /// Prompt tokens neither read from nor written to the cache.
    pub input_per_1k_micros: i64,
    pub output_per_1k_micros: i64,
    /// True when `cached_input_per_1k_micros` is the cache-read price
    /// (0 is a price: free cache reads); false: cache reads cost the input
    /// price, and `cached_input_per_1k_micros` must be 0.
    pub has_cached_input_per_1k: bool,
    pub cached_input_per_1k_micros: i64,
    /// True when `cache_write_per_1k_micros` is the cache-write price;
    /// false: cache writes cost the input price, and
    /// `cache_write_per_1k_micros` must be 0.
    pub has_cache_write_per_1k: bool,
    pub cache_write_per_1k_micros: i64,
    /// Charged once per request, on top of the tokens. 0: none.
    pub request_fee_micros: i64,
}

/// Which usage a summary counts (`cg_usage_summary_json`,
/// `cg_usage_summary_csv`): every filter given must match. Every field is
/// optional and 0/NULL means "not given", so a zeroed struct, like a NULL
/// pointer, is one row of totals over all usage. Borrowed for the call
/// only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_usage_query {
    /// The paying account (an organisation's members' usage is its own).
    /// NULL: every account.
    pub user_id: *const c_char,
    /// A key id (a UUID). NULL: every key.
    pub key_id: *const c_char,
    /// NULL: every model.
    pub model: *const c_char,
    /// Usage at or after this time: microseconds since the Unix epoch,
    /// UTC. 0: from the first.
    pub since_micros: i64,
    /// Usage before this time (the range is `[since, until)`; `since` after
    /// `until` is `CG_INVALID_ARGUMENT`). 0: no end.
    pub until_micros: i64,
    /// What to group by, comma-separated, in order: `"day"` (UTC),
    /// `"model"`, `"key"`, `"member"`, `"project"` (e.g. `"day,model"`;
    /// spaces around a name are ignored); an unknown or repeated name is
    /// `CG_INVALID_ARGUMENT`. NULL or `""`: one row of totals.
    pub group_by: *const c_char,
}

/// The optional parts of an allowance (`cg_set_allowance`). Every field is
/// optional and 0/NULL means "not given", so a zero-initialised struct
/// (`cg_allowance_options options = {0};`), like a NULL pointer, is an
/// allowance for the whole account with rollover off. Borrowed for the
/// call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_allowance_options {
    /// Only charges by this member of the account (an organisation) may
    /// draw the refills. NULL: the whole account.
    pub member_id: *const c_char,
    /// Only charges through this key (a key id, charged to the account) may
    /// draw the refills. NULL: the whole account. Not with `member_id`.
    pub key_id: *const c_char,
    /// Rollover on: what is left carries over to the next period, up to
    /// this many micro-credits (at least the amount). 0: rollover off, each
    /// period's grant expires at the period's end.
    pub rollover_cap_micros: i64,
}

/// A webhook subscription just created (`cg_create_webhook`). Its figures
/// and settings are in `cg_webhooks_json`; its secret is returned
/// separately, once, as a string to free.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_webhook {
    /// Subscription id: `wh_` and 32 hex digits (35 bytes).
    pub id: [c_char; CG_ID_SIZE],
}

/// How one delivery pass works (`cg_deliver_webhooks`). Every field is
/// optional and 0 means "not given" (its default), so a zeroed struct, like
/// a NULL pointer, is every default. Borrowed for the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_delivery_options {
    /// Bounds each request, connect included: 1..=`CG_MAX_WEBHOOK_TIMEOUT_MS`.
    /// 0: `CG_DEFAULT_WEBHOOK_TIMEOUT_MS`.
    pub timeout_ms: u32,
    /// Attempts of one event before it is dead-lettered:
    /// 1..=`CG_MAX_WEBHOOK_MAX_ATTEMPTS`. 0: `CG_DEFAULT_WEBHOOK_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// The first retry's delay, doubled per attempt (with jitter).
    /// 0: `CG_DEFAULT_WEBHOOK_BACKOFF_BASE_MS`.
    pub backoff_base_ms: u64,
    /// The longest delay: the base..=`CG_MAX_WEBHOOK_BACKOFF_MS`.
    /// 0: `CG_DEFAULT_WEBHOOK_BACKOFF_MAX_MS`.
    pub backoff_max_ms: u64,
    /// Events read per subscription at once: 1..=`CG_MAX_WEBHOOK_BATCH_SIZE`.
    /// 0: `CG_DEFAULT_WEBHOOK_BATCH_SIZE`.
    pub batch_size: u32,
}

/// What one delivery pass did (`cg_deliver_webhooks`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_delivery_report {
    /// Events delivered (answered 2xx), replayed dead letters included.
    pub sent: u64,
    /// Attempts that failed (each retried later with backoff).
    pub failed: u64,
    /// Events moved to the dead-letter list.
    pub dead_lettered: u64,
    /// Subscriptions skipped: leased by another worker or waiting for their
    /// backoff.
    pub busy: u64,
}

/// A webhook delivery as its receiver got it (`cg_verify_webhook`): the raw
/// body and the three Standard Webhooks headers' values. Borrowed for the
/// call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_webhook_request {
    /// The body exactly as received (`payload_len` bytes, no NUL needed).
    /// NULL only with `payload_len` 0.
    pub payload: *const u8,
    pub payload_len: usize,
    /// The `webhook-id` header's value. NULL: the header is missing.
    pub webhook_id: *const c_char,
    /// The `webhook-timestamp` header's value (unix seconds). NULL: missing.
    pub webhook_timestamp: *const c_char,
    /// The `webhook-signature` header's value (one or more space-separated
    /// `v1,<base64>`). NULL: missing.
    pub webhook_signature: *const c_char,
}

/// An auto top-up rule (`cg_set_auto_topup`): when the account's available
/// balance crosses below `threshold_micros`, request `amount_micros` or
/// what takes it up to `target_micros` (exactly one of the two, the other
/// 0), at most `max_per_month` times and `monthly_cap_micros` per calendar
/// month (UTC). Borrowed for the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_auto_topup {
    /// At least 0.
    pub threshold_micros: i64,
    /// A fixed amount per top-up (> 0), or 0 to use `target_micros`.
    pub amount_micros: i64,
    /// Up to this available balance (above the threshold), or 0 to use
    /// `amount_micros`.
    pub target_micros: i64,
    /// 1..=`CG_MAX_TOPUPS_PER_MONTH`.
    pub max_per_month: u32,
    /// The most credits requested per month (> 0); every requested top-up
    /// counts, paid or not.
    pub monthly_cap_micros: i64,
}

/// Where a top-up stands (`cg_topup.status`). The numbers are part of the ABI.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum cg_topup_status {
    /// Waiting for the host's payment (`cg_record_payment` with the
    /// top-up's id as the payment id).
    CG_TOPUP_REQUESTED = 0,
    /// A payment under its id credited it.
    CG_TOPUP_PAID = 1,
    /// `cg_record_topup_failure` recorded that its payment failed.
    CG_TOPUP_FAILED = 2,
}

/// A top-up a rule requested (`cg_set_auto_topup`,
/// `cg_record_topup_failure`). Every field, with the reason, the paying
/// entry and the times, is in `cg_topups_json`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cg_topup {
    /// `tu_` and 32 hex digits (35 bytes): the payment id to pay it under.
    /// "" when `cg_set_auto_topup` requested none.
    pub topup_id: [c_char; CG_ID_SIZE],
    /// The account it credits.
    pub user_id: [c_char; CG_USER_ID_SIZE],
    /// Micro-credits requested.
    pub amount_micros: i64,
    pub status: cg_topup_status,
}

impl OutValue for cg_entry {
    const EMPTY: cg_entry = cg_entry {
        id: [0; CG_ID_SIZE],
        user_id: [0; CG_USER_ID_SIZE],
        seq: 0,
        amount_micros: 0,
        balance_after_micros: 0,
        replayed: false,
    };
}

impl OutValue for cg_key_eligibility {
    const EMPTY: cg_key_eligibility =
        cg_key_eligibility { allowed: false, is_first_key: false, required_micros: 0, available_micros: 0 };
}

impl OutValue for cg_api_key {
    const EMPTY: cg_api_key = cg_api_key { key_id: [0; CG_ID_SIZE], prefix: [0; CG_KEY_PREFIX_SIZE], legacy: false };
}

impl OutValue for cg_verification {
    const EMPTY: cg_verification = cg_verification {
        user_id: [0; CG_USER_ID_SIZE],
        key_id: [0; CG_ID_SIZE],
        available_micros: 0,
        has_key_remaining: false,
        key_remaining_micros: 0,
        has_member_remaining: false,
        member_remaining_micros: 0,
        has_project_remaining: false,
        project_remaining_micros: 0,
    };
}

impl OutValue for cg_usage_charge {
    const EMPTY: cg_usage_charge = cg_usage_charge {
        entry_id: [0; CG_ID_SIZE],
        user_id: [0; CG_USER_ID_SIZE],
        tokens: 0,
        charged_micros: 0,
        balance_micros: 0,
        overdraft: false,
        replayed: false,
    };
}

impl OutValue for cg_hold {
    const EMPTY: cg_hold = cg_hold {
        hold_id: [0; CG_ID_SIZE],
        user_id: [0; CG_USER_ID_SIZE],
        amount_micros: 0,
        expires_at_unix_micros: 0,
        replayed: false,
        status: cg_hold_status::CG_HOLD_ACTIVE,
    };
}

impl cg_entry {
    pub(crate) fn of(e: &Entry) -> Result<cg_entry> {
        let mut out = cg_entry::EMPTY;
        fill(&mut out.id, &e.id.to_string())?;
        fill(&mut out.user_id, &e.user_id)?;
        out.seq = e.seq;
        out.amount_micros = e.amount.micros();
        out.balance_after_micros = e.balance_after.micros();
        out.replayed = e.replayed;
        Ok(out)
    }
}

impl cg_key_eligibility {
    pub(crate) fn of(e: &KeyEligibility) -> cg_key_eligibility {
        cg_key_eligibility {
            allowed: e.allowed,
            is_first_key: e.is_first_key,
            required_micros: e.required.micros(),
            available_micros: e.available.micros(),
        }
    }
}

impl cg_api_key {
    pub(crate) fn of(key_id: &str, prefix: Option<&str>, legacy: bool) -> Result<cg_api_key> {
        let mut out = cg_api_key::EMPTY;
        fill(&mut out.key_id, key_id)?;
        fill(&mut out.prefix, prefix.unwrap_or(""))?;
        out.legacy = legacy;
        Ok(out)
    }
}

impl cg_verification {
    pub(crate) fn of(v: &Verification) -> Result<cg_verification> {
        let mut out = cg_verification::EMPTY;
        fill(&mut out.user_id, &v.user_id)?;
        fill(&mut out.key_id, &v.key_id.to_string())?;
        out.available_micros = v.available.micros();
        (out.has_key_remaining, out.key_remaining_micros) = optional(v.key_remaining);
        (out.has_member_remaining, out.member_remaining_micros) = optional(v.member_remaining);
        (out.has_project_remaining, out.project_remaining_micros) = optional(v.project_remaining);
        Ok(out)
    }
}

/// An optional amount as a result struct's flag and micro-credits (0
/// when absent).
fn optional(c: Option<Credits>) -> (bool, i64) {
    c.map_or((false, 0), |c| (true, c.micros()))
}

impl cg_usage_charge {
    pub(crate) fn of(c: &UsageCharge) -> Result<cg_usage_charge> {
        let mut out = cg_usage_charge::EMPTY;
        fill(&mut out.entry_id, &c.entry_id.to_string())?;
        fill(&mut out.user_id, &c.user_id)?;
        out.tokens = c.tokens;
        out.charged_micros = c.charged.micros();
        out.balance_micros = c.balance.micros();
        out.overdraft = c.overdraft;
        out.replayed = c.replayed;
        Ok(out)
    }
}

impl cg_hold {
    pub(crate) fn of(h: &Hold) -> Result<cg_hold> {
        let mut out = cg_hold::EMPTY;
        fill(&mut out.hold_id, &h.hold_id.to_string())?;
        fill(&mut out.user_id, &h.user_id)?;
        out.amount_micros = h.amount.micros();
        out.expires_at_unix_micros = h.expires_at.micros();
        out.replayed = h.replayed;
        out.status = match h.status {
            HoldStatus::Active => cg_hold_status::CG_HOLD_ACTIVE,
            HoldStatus::Settled => cg_hold_status::CG_HOLD_SETTLED,
            HoldStatus::Expired => cg_hold_status::CG_HOLD_EXPIRED,
            // Released, and any state this binding does not know: never
            // "active", which would tell a host the hold covers its call.
            _ => cg_hold_status::CG_HOLD_RELEASED,
        };
        Ok(out)
    }
}

impl OutValue for cg_webhook {
    const EMPTY: cg_webhook = cg_webhook { id: [0; CG_ID_SIZE] };
}

impl OutValue for cg_delivery_report {
    const EMPTY: cg_delivery_report = cg_delivery_report { sent: 0, failed: 0, dead_lettered: 0, busy: 0 };
}

impl OutValue for cg_topup {
    const EMPTY: cg_topup = cg_topup {
        topup_id: [0; CG_ID_SIZE],
        user_id: [0; CG_USER_ID_SIZE],
        amount_micros: 0,
        status: cg_topup_status::CG_TOPUP_REQUESTED,
    };
}

impl cg_webhook {
    pub(crate) fn of(id: &str) -> Result<cg_webhook> {
        let mut out = cg_webhook::EMPTY;
        fill(&mut out.id, id)?;
        Ok(out)
    }
}

impl cg_delivery_report {
    pub(crate) fn of(r: &DeliveryReport) -> cg_delivery_report {
        cg_delivery_report { sent: r.sent, failed: r.failed, dead_lettered: r.dead_lettered, busy: r.busy }
    }
}

impl cg_topup {
    pub(crate) fn of(t: &Topup) -> Result<cg_topup> {
        let mut out = cg_topup::EMPTY;
        fill(&mut out.topup_id, &t.id)?;
        fill(&mut out.user_id, &t.user_id)?;
        out.amount_micros = t.amount.micros();
        out.status = match t.status {
            TopupStatus::Requested => cg_topup_status::CG_TOPUP_REQUESTED,
            TopupStatus::Paid => cg_topup_status::CG_TOPUP_PAID,
            // Failed, and any state this binding does not know: never
            // "requested", which would tell a host to pay it.
            _ => cg_topup_status::CG_TOPUP_FAILED,
        };
        Ok(out)
    }
}
