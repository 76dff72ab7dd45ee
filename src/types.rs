//! The values operations return. Plain data; none holds a secret except
//! `NewApiKey::secret`, which `Debug` redacts.

use crate::error::{Error, Result};
use crate::keys::ApiKeySecret;
use crate::money::Credits;
pub use crate::pricing::ModelPrice;
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Parses a UUID string; anything else is `InvalidArgument`. The
            /// message quotes at most the first 4 characters: a host that
            /// mixes up a key id and an API key must not see the secret in
            /// its logs (docs/reference.md).
            pub fn parse(s: &str) -> Result<$name> {
                let bad = || {
                    let start: String = s.chars().take(4).collect();
                    Error::invalid(format!(
                        "{} is not a UUID: a {}-byte string starting {start:?}",
                        stringify!($name),
                        s.len()
                    ))
                };
                if s.len() > 64 {
                    return Err(bad());
                }
                Uuid::try_parse(s).map($name).map_err(|_| bad())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A ledger entry id (UUID v7 carrying the entry's `created_at`, to the
    /// millisecond: see [`EntryId::at`]).
    EntryId
);

impl EntryId {
    /// The id of an entry created at `at` (the ledger's clock, which the
    /// entry's `created_at` is too): a UUIDv7 whose timestamp is `at`'s
    /// millisecond and whose other bits are random. So the primary key is a
    /// time index on both backends: the entries created in `[t0, t1)` are
    /// those with ids in `[v7_floor(t0), v7_floor(t1))` (the daily rollup,
    /// `store/rollup.rs`). Not `now_v7`'s shared counter: it may move a
    /// timestamp past the clock to stay monotonic, and the id must carry
    /// the entry's own time.
    pub(crate) fn at(at: Timestamp) -> EntryId {
        let micros = at.0.max(0);
        let (secs, sub) = (micros / 1_000_000, micros % 1_000_000);
        // Both are non-negative here; `sub` is below 10^6.
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, secs as u64, (sub * 1_000) as u32);
        EntryId(Uuid::new_v7(ts))
    }
}

/// The smallest UUIDv7 of the millisecond `at` falls in (version 7,
/// variant 10, every other bit zero): entries created at or after `at`'s
/// millisecond have ids at or above it. Times before the epoch are the
/// epoch, times past the 48-bit millisecond range its end.
pub(crate) fn v7_floor(at: Timestamp) -> Uuid {
    let ms = (at.0.max(0) / 1_000) as u128;
    let ms = ms.min((1 << 48) - 1);
    Uuid::from_u128((ms << 80) | (0x7 << 76) | (0b10 << 62))
}
uuid_id!(
    /// An API key id (UUID v7). Not secret.
    KeyId
);
uuid_id!(
    /// A hold id (UUID v7).
    HoldId
);

impl KeyId {
    pub(crate) fn new() -> KeyId {
        KeyId(Uuid::now_v7())
    }
}

impl HoldId {
    pub(crate) fn new() -> HoldId {
        HoldId(Uuid::now_v7())
    }
}

/// Microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-25T17:32:01.123456Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", sod / 3600, sod % 3600 / 60, sod % 60)
    }

    /// Days since the epoch (the UTC calendar day), for per-day tallies.
    pub fn day(self) -> i64 {
        self.0.div_euclid(DAY_MICROS)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Howard Hinnant's civil-to-days algorithm, the inverse of `civil_from_days`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a ledger entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    Purchase,
    Grant,
    Usage,
    Deduct,
    Refund,
    Reversal,
    /// Restores what one reversal removed (a dispute won, a refund that
    /// failed): not a purchase.
    Reinstatement,
    Adjustment,
    /// The unspent remainder of a grant (lot) that passed its `expires_at`.
    Expiry,
    /// A period's refill of an allowance (its grant).
    Allowance,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Purchase => "purchase",
            EntryKind::Grant => "grant",
            EntryKind::Usage => "usage",
            EntryKind::Deduct => "deduct",
            EntryKind::Refund => "refund",
            EntryKind::Reversal => "reversal",
            EntryKind::Reinstatement => "reinstatement",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Expiry => "expiry",
            EntryKind::Allowance => "allowance",
        }
    }

    pub fn parse(s: &str) -> Result<EntryKind> {
        Ok(match s {
            "purchase" => EntryKind::Purchase,
            "grant" => EntryKind::Grant,
            "usage" => EntryKind::Usage,
            "deduct" => EntryKind::Deduct,
            "refund" => EntryKind::Refund,
            "reversal" => EntryKind::Reversal,
            "reinstatement" => EntryKind::Reinstatement,
            "adjustment" => EntryKind::Adjustment,
            "expiry" => EntryKind::Expiry,
            "allowance" => EntryKind::Allowance,
            _ => return Err(Error::invalid(format!("unknown entry kind {:?}", truncate(s)))),
        })
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// One append-only ledger entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub id: EntryId,
    pub seq: i64,
    pub user_id: String,
    pub kind: EntryKind,
    pub amount: Credits,
    pub balance_after: Credits,
    pub idempotency_key: Option<String>,
    pub reference: Option<String>,
    pub api_key_id: Option<KeyId>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub model: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    /// A JSON object, at most 4 KiB serialized.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub created_at: Timestamp,
    /// True when an idempotent call returned this earlier result.
    pub replayed: bool,
    /// The member of the organisation `user_id` that spent (or was granted)
    /// this entry through its key or allowance; None otherwise.
    pub member_id: Option<String>,
    /// The organisation project of the key that spent this entry, at the
    /// charge (project budgets count by it).
    pub project: Option<String>,
    /// Of `input_tokens`, those read from and written to the provider's cache.
    pub cached_input_tokens: Option<i64>,
    pub cache_write_tokens: Option<i64>,
    /// The rates a usage entry's tokens were charged at (`audit` recomputes
    /// the charge from them); None for charges of a given amount.
    pub price: Option<ModelPrice>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Account {
    pub user_id: String,
    pub balance: Credits,
    pub held: Credits,
    /// What strict operations may still take: balance − held − min_balance.
    pub available: Credits,
    /// The floor of strict operations (≤ 0; 0 unless set).
    pub min_balance: Credits,
    pub lifetime_purchased: Credits,
    pub lifetime_used: Credits,
    pub active_keys: u32,
    pub first_key_issued: bool,
    /// None for a user the ledger has never seen.
    pub created_at: Option<Timestamp>,
    /// The live grants (lots) backing the balance, in draw-down order:
    /// those with credits remaining that have not expired. An allowance's
    /// refill that is due but not yet written is listed with `grant_id` 0.
    pub grants: Vec<Grant>,
    /// The organisation this account is a member of: its keys charge it.
    pub organisation: Option<String>,
    /// The account's auto top-up rule.
    pub auto_topup: Option<crate::topups::AutoTopup>,
    /// The top-ups requested in the current calendar month (UTC), oldest
    /// first, whatever their status: what the month's caps count.
    pub topups_this_month: Vec<crate::topups::Topup>,
}

/// A grant's category; promotional credits are drawn down before paid ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum GrantCategory {
    /// Drawn first.
    Promotional,
    Paid,
}

impl GrantCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantCategory::Promotional => "promotional",
            GrantCategory::Paid => "paid",
        }
    }

    pub fn parse(s: &str) -> Result<GrantCategory> {
        match s {
            "paid" => Ok(GrantCategory::Paid),
            "promotional" => Ok(GrantCategory::Promotional),
            _ => Err(Error::invalid(format!("grant category must be paid or promotional, got {:?}", truncate(s)))),
        }
    }
}

impl fmt::Display for GrantCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A grant (lot) id: a positive integer, assigned by the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId(pub i64);

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One grant (lot): the credits one entry added, and what of them is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub grant_id: GrantId,
    pub user_id: String,
    pub category: GrantCategory,
    /// Lower numbers are drawn first (within a category).
    pub priority: i32,
    /// What the source entry credited.
    pub amount: Credits,
    /// What is left; 0 once spent or expired.
    pub remaining: Credits,
    /// None: never expires.
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// The entry that created it; None for the opening lot of a ledger
    /// migrated from before grants existed.
    pub source_entry_id: Option<EntryId>,
    /// The payment id, for a grant bought through `record_payment`.
    pub payment_id: Option<String>,
    /// Only charges by this member of the organisation may draw it (an
    /// allowance for the member).
    pub member_id: Option<String>,
    /// Only charges through this key may draw it (an allowance for the key).
    pub api_key_id: Option<KeyId>,
    /// The allowance whose refill issued it.
    pub allowance_id: Option<i64>,
}

/// How the credits of `add_credits_with` / `record_payment_with` are granted.
/// `Default`: the kind's category (purchase, refund, adjustment: paid;
/// grant: promotional), priority 0, no expiry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantOptions {
    /// Must be later than the transaction's clock.
    pub expires_at: Option<Timestamp>,
    pub category: Option<GrantCategory>,
    /// In `MIN_GRANT_PRIORITY..=MAX_GRANT_PRIORITY`; lower is drawn first.
    pub priority: i32,
}

/// What `expire_grants` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpirySweep {
    /// Accounts whose due grants were expired or whose allowances refilled.
    pub accounts: u64,
    /// `expiry` entries written (one per expired grant).
    pub entries: u64,
    /// Credits removed from balances.
    pub credits: Credits,
    /// Allowance refills written (one per allowance and period).
    pub refills: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEligibility {
    pub allowed: bool,
    pub is_first_key: bool,
    pub required: Credits,
    pub available: Credits,
}

/// A freshly created key. The secret is shown once; `Debug` redacts it.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub secret: ApiKeySecret,
    pub key_id: KeyId,
    pub user_id: String,
    pub name: Option<String>,
    pub prefix: String,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub key_id: KeyId,
    pub user_id: String,
    pub name: Option<String>,
    /// None for keys imported by hash.
    pub prefix: Option<String>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub legacy: bool,
    /// When the key stops verifying (set at creation, later, or by a rotation's grace end).
    pub expires_at: Option<Timestamp>,
    /// A disabled key fails verification like an unknown one until enabled.
    pub disabled: bool,
    /// The key that replaced this one (`rotate_api_key`).
    pub rotated_to: Option<KeyId>,
    /// The key's spend cap per `spend_window`; None = no cap.
    pub spend_limit: Option<Credits>,
    pub spend_window: Option<SpendWindow>,
    /// Usage charged through the key in the current window (0 without a cap).
    pub spent_in_window: Credits,
    /// When the current window ends (None without a cap or for `lifetime`).
    pub window_resets_at: Option<Timestamp>,
    /// The organisation project the key belongs to.
    pub project: Option<String>,
}

/// The period of a key's spend cap. Windows are UTC calendar periods:
/// `daily` from 00:00, `weekly` from Monday 00:00, `monthly` from the 1st
/// 00:00; `lifetime` never resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpendWindow {
    Daily,
    Weekly,
    Monthly,
    Lifetime,
}

/// Microseconds in a UTC day (the spend windows, the daily rollup, `sql::utc_day`).
pub(crate) const DAY_MICROS: i64 = 86_400_000_000;

impl SpendWindow {
    pub fn as_str(self) -> &'static str {
        match self {
            SpendWindow::Daily => "daily",
            SpendWindow::Weekly => "weekly",
            SpendWindow::Monthly => "monthly",
            SpendWindow::Lifetime => "lifetime",
        }
    }

    pub fn parse(s: &str) -> Result<SpendWindow> {
        Ok(match s {
            "daily" => SpendWindow::Daily,
            "weekly" => SpendWindow::Weekly,
            "monthly" => SpendWindow::Monthly,
            "lifetime" => SpendWindow::Lifetime,
            _ => {
                return Err(Error::invalid(format!(
                    "window must be daily, weekly, monthly or lifetime, got {:?}",
                    truncate(s)
                )));
            }
        })
    }

    /// The window containing `now`: [start, end). `lifetime` is
    /// [i64::MIN, i64::MAX).
    pub fn bounds(self, now: Timestamp) -> (Timestamp, Timestamp) {
        let day = now.0.div_euclid(DAY_MICROS);
        let (start_day, end_day) = match self {
            SpendWindow::Lifetime => return (Timestamp(i64::MIN), Timestamp(i64::MAX)),
            SpendWindow::Daily => (day, day + 1),
            // Day 0 (1970-01-01) was a Thursday: Monday is 3 days later.
            SpendWindow::Weekly => {
                let start = day - (day - 4).rem_euclid(7);
                (start, start + 7)
            }
            SpendWindow::Monthly => {
                let (y, m, d) = civil_from_days(day);
                let start = day - i64::from(d) + 1;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (start, days_from_civil(ny, nm, 1))
            }
        };
        (Timestamp(start_day.saturating_mul(DAY_MICROS)), Timestamp(end_day.saturating_mul(DAY_MICROS)))
    }
}

impl fmt::Display for SpendWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub user_id: String,
    pub key_id: KeyId,
    /// The account's available credits.
    pub available: Credits,
    /// What the key's spend cap still allows in its window (limit − spent −
    /// the key's holds); None when the key has no cap.
    pub key_remaining: Option<Credits>,
    /// What the key owner's member budget still allows (None without one).
    pub member_remaining: Option<Credits>,
    /// What the key's project budget still allows (None without one).
    pub project_remaining: Option<Credits>,
}

impl Verification {
    /// What a call through this key may spend now: the smallest of the
    /// paying account's available credits, the key's remaining cap and the
    /// member's and project's remaining budgets.
    pub fn spendable(&self) -> Credits {
        self.limits().map(|(_, c)| c).min().unwrap_or(self.available)
    }

    /// Every limit that applies, the account's first.
    pub(crate) fn limits(&self) -> impl Iterator<Item = (crate::error::LimitSource, Credits)> + '_ {
        use crate::error::LimitSource::*;
        [
            (Account, Some(self.available)),
            (Key, self.key_remaining),
            (Member, self.member_remaining),
            (Project, self.project_remaining),
        ]
        .into_iter()
        .filter_map(|(s, c)| c.map(|c| (s, c)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageCharge {
    pub entry_id: EntryId,
    pub user_id: String,
    /// input + output tokens.
    pub tokens: i64,
    pub charged: Credits,
    /// Ledger balance after the charge.
    pub balance: Credits,
    /// True exactly when the balance after the charge is below zero.
    pub overdraft: bool,
    pub replayed: bool,
}

/// Where a hold stands: `Active` until settled (charged), released (freed
/// without a charge) or expired (its TTL passed unsettled). On a replayed
/// `reserve` it tells the host whether the hold still covers the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HoldStatus {
    Active,
    Settled,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Settled => "settled",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<HoldStatus> {
        Ok(match s {
            "active" => HoldStatus::Active,
            "settled" => HoldStatus::Settled,
            "released" => HoldStatus::Released,
            "expired" => HoldStatus::Expired,
            _ => return Err(Error::Internal(format!("unknown hold status {s:?} in the database"))),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub hold_id: HoldId,
    pub user_id: String,
    pub amount: Credits,
    pub expires_at: Timestamp,
    /// `Active` for a new hold; on a replay, where the first hold stands now.
    pub status: HoldStatus,
    pub replayed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditMismatch {
    pub user_id: String,
    /// `balance_mismatch`, `balance_after_chain`, `seq_gap`,
    /// `missing_account`, `grant_mismatch`, `grant_out_of_range`,
    /// `payment_over_reversed`, `reinstatement_mismatch`, `usage_charge` or
    /// `rollup` (a day's daily totals differ from its entries; `user_id`
    /// is then empty).
    pub problem: String,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    pub ok: bool,
    pub accounts_checked: u64,
    pub entries_checked: u64,
    pub mismatches: Vec<AuditMismatch>,
}

/// Business figures from the database (docs/reference.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub users: u64,
    pub paying_users: u64,
    pub users_attempted_key: u64,
    pub key_generation_attempts: u64,
    pub key_generation_successes: u64,
    /// paying users among users who attempted a key, as an exact fraction
    /// (numerator, denominator); 0/1 when none attempted.
    pub purchase_conversion: (u64, u64),
    pub credits_purchased: Credits,
    /// USD purchases minus reversals plus reinstatements, in cents.
    pub revenue_usd_minor: i64,
    pub revenue_per_paying_user_usd_minor: i64,
    /// The same per currency (upper-case ISO 4217 code → minor units), for
    /// every currency ever paid in.
    pub revenue_minor_by_currency: BTreeMap<String, i64>,
    pub credits_used: Credits,
    pub outstanding_balance: Credits,
    /// Credits held by active, unexpired holds (`reserve`) across the ledger.
    pub outstanding_holds: Credits,
    pub overdraft_receivable: Credits,
    /// Credits issued by allowance refills, and of those what was spent
    /// (issued − expired − still held by live allowance grants).
    pub allowance_issued: Credits,
    pub allowance_used: Credits,
    /// The ledger's schema version (the highest migration recorded in it).
    pub schema_version: i64,
    /// The newest schema version this library knows; above it, writes are refused.
    pub library_schema_version: i64,
}

impl Report {
    /// The entry kinds whose amounts `credits_purchased` sums: the one
    /// definition, also of `daily_flows`' `purchased` and an account's
    /// `lifetime_purchased` (`store/sql.rs`'s `kinds_sql` spells it in SQL).
    pub(crate) const PURCHASED_KINDS: [EntryKind; 1] = [EntryKind::Purchase];
    /// The entry kinds whose negated amounts `credits_used` sums: also of
    /// `daily_flows`' `used` and an account's `lifetime_used`.
    pub(crate) const USED_KINDS: [EntryKind; 2] = [EntryKind::Usage, EntryKind::Deduct];

    /// Whether the entry kind named `kind` is one of `kinds`.
    pub(crate) fn kind_in(kinds: &[EntryKind], kind: &str) -> bool {
        kinds.iter().any(|k| k.as_str() == kind)
    }

    /// The conversion rate as an exact decimal string with up to 6 places
    /// (rounded half-even), e.g. `0.5` or `0.333333`.
    pub fn purchase_conversion_rate(&self) -> String {
        let (n, d) = self.purchase_conversion;
        if d == 0 {
            return "0".into();
        }
        let scaled = (n as u128 * 1_000_000 * 2 + d as u128) / (2 * d as u128);
        Credits::from_micros(i64::try_from(scaled).unwrap_or(i64::MAX)).to_string()
    }
}

/// The schema version of a ledger against this library's
/// (`CreditManager::schema_status`; `creditgate migrate --status`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaStatus {
    /// The highest migration recorded in the database (0: no schema yet).
    pub database_version: i64,
    /// The newest migration this library knows.
    pub library_version: i64,
    /// This library's migrations not recorded in the database, ascending:
    /// `CreditManager::open` or `migrate` applies them.
    pub pending: Vec<i64>,
}

impl SchemaStatus {
    /// The database was migrated by a newer creditgate: this library
    /// refuses to write to it.
    pub fn newer_than_library(&self) -> bool {
        self.database_version > self.library_version
    }
}

/// Test helper: "YYYY-MM-DDTHH:MM" (more is ignored) in UTC.
#[cfg(test)]
pub(crate) fn utc(rfc: &str) -> Timestamp {
    let (y, m, d) = (rfc[0..4].parse().unwrap(), rfc[5..7].parse().unwrap(), rfc[8..10].parse().unwrap());
    let (hh, mm): (i64, i64) = (rfc[11..13].parse().unwrap(), rfc[14..16].parse().unwrap());
    Timestamp(days_from_civil(y, m, d) * DAY_MICROS + (hh * 3600 + mm * 60) * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp(1_700_000_000_123_456).to_rfc3339(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(Timestamp(951_782_400_000_000).to_rfc3339(), "2000-02-29T00:00:00.000000Z");
    }

    use super::utc as at;

    #[test]
    fn spend_windows_are_utc_calendar_periods() {
        let w = |win: SpendWindow, t: &str| {
            let (s, e) = win.bounds(at(t));
            (s.to_rfc3339(), e.to_rfc3339())
        };
        let z = |d: &str| format!("{d}T00:00:00.000000Z");
        // 2026-11-25 is a Wednesday.
        assert_eq!(w(SpendWindow::Daily, "2026-11-25T23:59"), (z("2026-11-25"), z("2026-11-26")));
        assert_eq!(w(SpendWindow::Daily, "2026-11-26T00:00"), (z("2026-11-26"), z("2026-11-27")));
        assert_eq!(w(SpendWindow::Weekly, "2026-11-25T12:00"), (z("2026-11-23"), z("2026-11-30")));
        assert_eq!(w(SpendWindow::Weekly, "2026-11-23T00:00"), (z("2026-11-23"), z("2026-11-30")));
        assert_eq!(w(SpendWindow::Weekly, "2026-11-22T23:59"), (z("2026-11-16"), z("2026-11-23")));
        assert_eq!(w(SpendWindow::Weekly, "1970-01-01T00:00"), (z("1969-12-29"), z("1970-01-05")));
        assert_eq!(w(SpendWindow::Monthly, "2026-12-31T23:59"), (z("2026-12-01"), z("2027-01-01")));
        assert_eq!(w(SpendWindow::Monthly, "2028-02-29T10:00"), (z("2028-02-01"), z("2028-03-01")));
        assert_eq!(w(SpendWindow::Monthly, "2026-03-01T00:00"), (z("2026-03-01"), z("2026-04-01")));
        assert_eq!(SpendWindow::Lifetime.bounds(at("2026-11-25T00:00")), (Timestamp(i64::MIN), Timestamp(i64::MAX)));
        for d in -1000..1000 {
            let (y, m, dd) = civil_from_days(d * 37);
            assert_eq!(days_from_civil(y, m, dd), d * 37);
        }
        for name in ["daily", "weekly", "monthly", "lifetime"] {
            assert_eq!(SpendWindow::parse(name).unwrap().as_str(), name);
        }
        assert!(SpendWindow::parse("hourly").is_err());
    }

    #[test]
    fn conversion_rate_is_exact_decimal() {
        let mut r = Report {
            users: 0,
            paying_users: 0,
            users_attempted_key: 0,
            key_generation_attempts: 0,
            key_generation_successes: 0,
            purchase_conversion: (1, 3),
            credits_purchased: Credits::ZERO,
            revenue_usd_minor: 0,
            revenue_per_paying_user_usd_minor: 0,
            revenue_minor_by_currency: BTreeMap::new(),
            credits_used: Credits::ZERO,
            allowance_issued: Credits::ZERO,
            allowance_used: Credits::ZERO,
            outstanding_balance: Credits::ZERO,
            outstanding_holds: Credits::ZERO,
            overdraft_receivable: Credits::ZERO,
            schema_version: 1,
            library_schema_version: 1,
        };
        assert_eq!(r.purchase_conversion_rate(), "0.333333");
        r.purchase_conversion = (1, 2);
        assert_eq!(r.purchase_conversion_rate(), "0.5");
        r.purchase_conversion = (0, 0);
        assert_eq!(r.purchase_conversion_rate(), "0");
    }
}
