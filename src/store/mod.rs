//! The storage boundary. The manager plans every operation against the
//! [`Tx`] trait (domain-level reads and conditional writes inside one
//! transaction); each backend implements `Tx` with the statements of
//! `sql.rs` (written once, translated per backend), reading rows through
//! `rows.rs`, and migrates with the table of `schema.rs`. Writes enter
//! through [`Store::write`], the single place where a later group-commit
//! writer can batch callers without changing them.

mod browse;
mod group;
mod orgs;
mod pool;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
mod pricing;
mod rollup;
mod rows;
mod schema;
pub(crate) mod sql;
pub(crate) mod sqlite;
mod topups;
mod verify_cache;
mod webhooks;

pub(crate) use rollup::{DAY_MICROS, DayKey, DaySums, DayTotals, ROLLUP_GRACE_MICROS, floor_day, out_of_range};
pub(crate) use webhooks::{Lease, WebhookRow};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{Event, NewEvent};
use crate::money::Credits;
pub(crate) use crate::types::HoldStatus;
use crate::types::{Entry, EntryId, Grant, GrantId, HoldId, KeyId, ModelPrice, SpendWindow, Timestamp};

/// A key row without its hash.
#[derive(Clone, Debug)]
pub(crate) struct KeyRow {
    pub id: KeyId,
    pub user_id: String,
    pub name: Option<String>,
    pub prefix: Option<String>,
    pub legacy: bool,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub disabled_at: Option<Timestamp>,
    pub rotated_to: Option<KeyId>,
    pub spend_limit: Option<Credits>,
    pub spend_window: Option<SpendWindow>,
    /// The key's spend counter: (window end, spent in that window).
    pub spend: Option<(Timestamp, Credits)>,
    /// The organisation the key's owner is a member of (it pays).
    pub org_id: Option<String>,
    /// The organisation project the key belongs to.
    pub project: Option<String>,
}

impl KeyRow {
    /// A new, enabled key without expiry or cap.
    pub(crate) fn new(user: &str, name: Option<&str>, prefix: Option<String>, legacy: bool, now: Timestamp) -> KeyRow {
        KeyRow {
            id: KeyId::new(),
            user_id: user.to_string(),
            name: name.map(str::to_string),
            prefix,
            legacy,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
            expires_at: None,
            disabled_at: None,
            rotated_to: None,
            spend_limit: None,
            spend_window: None,
            spend: None,
            org_id: None,
            project: None,
        }
    }

    /// The account the key's charges move: the owner's organisation, else
    /// the owner (`sql::PAYING`).
    pub(crate) fn paying(&self) -> &str {
        self.org_id.as_deref().unwrap_or(&self.user_id)
    }

    /// The member a charge through this key spends for: the owner, when an
    /// organisation pays.
    pub(crate) fn member(&self) -> Option<&str> {
        self.org_id.as_ref().map(|_| self.user_id.as_str())
    }

    /// Whose grants a charge through this key draws first.
    pub(crate) fn scope(&self) -> Scope<'_> {
        Scope { member: self.member(), key: Some(self.id) }
    }

    /// Verifies now: not revoked, not disabled, not expired.
    pub(crate) fn usable(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.disabled_at.is_none() && self.expires_at.is_none_or(|t| t > now)
    }

    /// Spent in the window containing `now` (0 when the counter is from an
    /// earlier window, or absent).
    pub(crate) fn spent_at(&self, now: Timestamp) -> Credits {
        match self.spend {
            Some((end, spent)) if end > now => spent,
            _ => Credits::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashKind {
    /// Our lookup hash of the secret (HMAC with the pepper, or SHA-256).
    Peppered,
    /// A plain SHA-256 imported from a host that kept only hashes.
    Sha256,
}

impl HashKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HashKind::Peppered => "peppered",
            HashKind::Sha256 => "sha256",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct HoldRow {
    pub id: HoldId,
    pub user_id: String,
    pub api_key_id: KeyId,
    pub amount: Credits,
    pub model: Option<String>,
    pub request_id: Option<String>,
    pub status: HoldStatus,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    /// The rates a hold of tokens was quoted at (its settlement charges
    /// them); None for a hold of credits.
    pub price: Option<ModelPrice>,
}

/// A balance move as the conditional update saw it: the account row's
/// balance and last seq before the update, and after it, and the account's
/// auto top-up threshold (None: no rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Applied {
    pub balance_before: Credits,
    pub balance_after: Credits,
    pub seq_before: i64,
    pub seq: i64,
    pub topup_threshold: Option<Credits>,
}

#[derive(Clone, Debug)]
pub(crate) struct AccountRow {
    pub balance: Credits,
    pub first_key_issued: bool,
    pub created_at: Timestamp,
    /// The floor of strict operations (≤ 0).
    pub min_balance: Credits,
    /// The earliest next refill of the account's allowances.
    pub refill_at: Option<Timestamp>,
}

/// Whose charge draws grants, for the draw-down order and the strict
/// checks (`sql::grant_order`, `sql::reserved_elsewhere`): the member of
/// the paying organisation and the key. The default: neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scope<'a> {
    pub member: Option<&'a str>,
    pub key: Option<KeyId>,
}

/// A member's or project's budget row (`sql::BUDGET_COLS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BudgetRow {
    pub scope: String,
    pub name: String,
    pub limit: Credits,
    pub window: SpendWindow,
    pub low_threshold: Option<Credits>,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub spent: Credits,
}

impl BudgetRow {
    /// Spent in the window containing `now`.
    pub(crate) fn spent_at(&self, now: Timestamp) -> Credits {
        if self.window_end > now { self.spent } else { Credits::ZERO }
    }
}

/// A parameter of the backend-neutral statements ([`Tx::query_rows`],
/// [`Tx::execute`]), bound by each backend with its own types.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    OptUuid(Option<uuid::Uuid>),
}

/// What verify reads of a key: the key, its account's available credits,
/// what its cap leaves (None without a cap), and its rate limits' counts
/// (None without rate limits).
#[derive(Clone, Debug)]
pub(crate) struct KeyStanding {
    pub key: KeyRow,
    pub available: Credits,
    pub key_remaining: Option<Credits>,
    pub rate: Option<RateCounts>,
    /// What the member's and the project's budgets leave (None without one).
    pub member_remaining: Option<Credits>,
    pub project_remaining: Option<Credits>,
    /// The paying account's next allowance refill (the verify cache keeps
    /// an answer until then), and whether it is due at the statement's
    /// clock: then a refill may be due that `available` does not count yet.
    pub refill_at: Option<Timestamp>,
    pub refill_due: bool,
    /// The paying account's auto top-up threshold (None: no rule).
    pub topup_threshold: Option<Credits>,
}

/// A key's rate limits and its counts in the window starting at `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateCounts {
    pub requests_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
    pub window: i64,
    pub tokens: i64,
}

impl RateCounts {
    /// Whether the tokens-per-minute limit is used up in `window`.
    pub(crate) fn tokens_used_up(&self, window: i64) -> bool {
        self.tokens_per_minute.is_some_and(|tpm| self.window == window && self.tokens >= tpm)
    }
}

/// The outcome of `Tx::take_requests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateCheck {
    /// The key has no rate limits.
    Unlimited,
    /// Counted.
    Allowed,
    /// Not counted: this limit is used up for the window.
    Limited(&'static str),
}

/// Which limit a refused request hit, from the window's counts.
pub(crate) fn exhausted_limit(requests: i64, rpm: Option<i64>) -> &'static str {
    if rpm.is_some_and(|rpm| requests >= rpm) { "requests_per_minute" } else { "tokens_per_minute" }
}

/// Counts over the whole ledger for `report()` (its sums of entries come
/// from the daily totals, `store/rollup.rs`).
#[derive(Clone, Debug, Default)]
pub(crate) struct LedgerFigures {
    pub users: u64,
    pub paying_users: u64,
    pub users_attempted_key: u64,
    pub paying_users_attempted_key: u64,
    pub key_generation_attempts: u64,
    pub key_generation_successes: u64,
}

/// Domain-level storage operations inside one transaction. Balance changes
/// happen only in [`Tx::apply`], a conditional update in the database.
pub(crate) trait Tx {
    /// The transaction's clock (the database server's where there is one).
    fn now(&mut self) -> Result<Timestamp>;

    /// Creates the account row if absent and locks it ([`Tx::lock_account`]).
    fn ensure_account(&mut self, user: &str, now: Timestamp) -> Result<()>;
    /// Locks `user`'s account row (when it exists) until the transaction
    /// ends, so the writes of one account are serialized across hosts: a
    /// no-op on SQLite, whose write transaction already holds the database.
    /// Nothing else locks an account: the manager calls this (or
    /// `ensure_account`, or `lock_and_entry_by_key`) before it reads what
    /// it must see committed by the account's other writers.
    fn lock_account(&mut self, user: &str) -> Result<()>;
    /// [`Tx::lock_account`], then [`Tx::entry_by_key`]: the first step of an
    /// idempotent write, so a same-key write racing from another host is seen
    /// (and replayed) rather than refused by a strict check. One round trip
    /// on PostgreSQL, which also reads ahead the first batch of `live_grants`.
    /// `scope` is the charge's, for the grants read ahead.
    fn lock_and_entry_by_key(&mut self, user: &str, key: &str, scope: Scope) -> Result<Option<Entry>> {
        let _ = scope;
        self.lock_account(user)?;
        self.entry_by_key(user, key)
    }
    fn account(&mut self, user: &str) -> Result<Option<AccountRow>>;
    /// Sum of active, unexpired holds.
    fn held(&mut self, user: &str, now: Timestamp) -> Result<Credits>;
    /// Adds `amount` to the balance and takes the next seq. With `strict`,
    /// only when the account's available credits (`sql::available`: balance
    /// − floor − active holds − grants due) cover it. Returns the account's
    /// balance and last seq before and after (the manager asserts after ==
    /// before + amount and seq == last + 1), or None when the condition or
    /// the i64 range refused it. The caller holds the account's lock
    /// (`ensure_account` or `lock_account`): on PostgreSQL the "before" row
    /// is the statement's snapshot, the row as it is only while locked.
    fn apply(&mut self, user: &str, amount: Credits, strict: bool, now: Timestamp) -> Result<Option<Applied>>;
    fn insert_entry(&mut self, e: &Entry, global_key: Option<&str>) -> Result<()>;
    fn entry_by_key(&mut self, user: &str, key: &str) -> Result<Option<Entry>>;
    fn entry_by_global_key(&mut self, key: &str) -> Result<Option<Entry>>;
    fn entry_by_id(&mut self, id: EntryId) -> Result<Option<Entry>>;
    /// (minor units, micro-credits) already reversed for a payment id, not
    /// counting reversals since reinstated. Takes no lock: the caller locks
    /// the payment's account first, so concurrent reversals see each other.
    fn reversed_total(&mut self, payment_id: &str) -> Result<(i64, Credits)>;
    fn entries(&mut self, user: &str, before_seq: Option<i64>, limit: u32) -> Result<Vec<Entry>>;
    /// (lifetime purchased, lifetime used) in micro-credits.
    fn lifetime(&mut self, user: &str) -> Result<(Credits, Credits)>;

    /// The key with this hash; with `only`, only a key stored with that kind.
    fn key_by_hash(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyRow>>;
    /// The key with this hash, its account's available credits now, what its
    /// cap leaves and its rate limits' counts: the verify hot path, one
    /// statement. Disabled and expired keys are not found.
    fn key_with_available(&mut self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyStanding>>;
    /// Sets (or clears) the time the key stops verifying.
    fn set_key_expiry(&mut self, id: KeyId, expires_at: Option<Timestamp>) -> Result<()>;
    /// Disables (Some) or enables (None); returns whether it changed.
    fn set_key_disabled(&mut self, id: KeyId, at: Option<Timestamp>) -> Result<bool>;
    /// Marks `id` as replaced by `to`, ending at `ends_at`.
    fn set_key_rotated(&mut self, id: KeyId, to: KeyId, ends_at: Timestamp) -> Result<()>;
    /// Sets (or clears, with None) the key's cap.
    fn set_key_limit(&mut self, id: KeyId, limit: Option<(Credits, SpendWindow)>) -> Result<()>;
    /// Replaces the key's spend counter.
    fn put_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, spent: Credits) -> Result<()>;
    /// Adds a charge to the key's counter for the window [start, end): a
    /// counter of an earlier window restarts; a charge for an earlier window
    /// than the counter's is not counted (it is closed). Saturates at i64::MAX.
    fn add_key_spend(&mut self, id: KeyId, start: Timestamp, end: Timestamp, amount: Credits) -> Result<()>;
    /// Usage charged through the key since `since` (inclusive), from the
    /// ledger: seeds a new cap's counter (not on the hot path).
    fn key_usage_since(&mut self, user: &str, id: KeyId, since: Timestamp) -> Result<Credits>;
    /// What strict operations may still take from `user` now
    /// (`sql::available`): balance − the account's floor (`min_balance` ≤ 0)
    /// − active holds − grants due to expire but not yet applied.
    fn available(&mut self, user: &str, now: Timestamp) -> Result<Credits>;

    /// Inserts a grant (its `grant_id` is ignored); returns the new id.
    fn insert_grant(&mut self, g: &Grant) -> Result<GrantId>;
    /// Up to `limit` of `user`'s grants with credits remaining. With
    /// `include_due`, those past `expires_at` at `now` come first (by
    /// expires_at, id); the others follow in the draw-down order of a charge
    /// in `scope` (`sql::grant_order`).
    fn live_grants(
        &mut self,
        user: &str,
        now: Timestamp,
        include_due: bool,
        limit: u32,
        scope: Scope,
    ) -> Result<Vec<Grant>>;
    /// The account's next allowance refill (`AccountRow::refill_at`);
    /// PostgreSQL reads it with the account's lock.
    fn refill_at(&mut self, user: &str) -> Result<Option<Timestamp>> {
        Ok(self.account(user)?.and_then(|a| a.refill_at))
    }
    /// Forgets what `refill_at` read with the lock (the allowances changed).
    fn refill_at_changed(&mut self, user: &str) {
        let _ = user;
    }
    /// The standing of key `id` at `now` (`sql::standing`), whatever its state.
    fn standing_by_id(&mut self, id: KeyId, now: Timestamp) -> Result<Option<KeyStanding>>;
    /// Runs a statement of `sql.rs`, handing each row to `f` (the
    /// backend-neutral path of `store/orgs.rs`).
    fn query_rows(
        &mut self,
        sql: &sql::Sql,
        params: &[Param],
        f: &mut dyn FnMut(&dyn rows::Columns) -> Result<()>,
    ) -> Result<()>;
    /// Runs a statement of `sql.rs`; the rows it changed.
    fn execute(&mut self, sql: &sql::Sql, params: &[Param]) -> Result<u64>;
    /// Takes `amount` from a grant's remainder if it has that much.
    fn take_from_grant(&mut self, id: GrantId, amount: Credits) -> Result<bool>;
    /// The grant a payment bought.
    fn grant_by_payment(&mut self, payment_id: &str) -> Result<Option<Grant>>;
    /// What `user`'s grants past `expires_at` at `now` still hold (not yet
    /// applied as expiry entries).
    fn due_grants(&mut self, user: &str, now: Timestamp) -> Result<Credits>;
    /// The same over all accounts (for `report()`).
    fn due_grants_total(&mut self, now: Timestamp) -> Result<Credits>;
    /// Up to `limit` users with grants due at `now`, ordered by user.
    fn users_with_due_grants(&mut self, now: Timestamp, limit: u32) -> Result<Vec<String>>;
    /// Every user with grants as (user, sum of remaining, grants whose
    /// remaining is outside 0..=amount), ordered by user.
    fn scan_grants(&mut self, f: &mut dyn FnMut(&str, i128, i64)) -> Result<()>;
    fn key_by_id(&mut self, id: KeyId) -> Result<Option<KeyRow>>;
    /// Keys neither revoked nor expired at `now` (disabled keys count: they may be enabled again).
    fn active_keys(&mut self, user: &str, now: Timestamp) -> Result<u32>;
    fn insert_key(&mut self, row: &KeyRow, hash: &str, kind: HashKind) -> Result<()>;
    fn set_first_key_issued(&mut self, user: &str) -> Result<()>;
    fn set_min_balance(&mut self, user: &str, floor: Credits) -> Result<()>;
    /// Revokes an active key; false when it was already revoked.
    fn revoke_key(&mut self, id: KeyId, now: Timestamp) -> Result<bool>;
    fn keys(&mut self, user: &str, limit: u32) -> Result<Vec<KeyRow>>;
    fn touch_keys(&mut self, used: &[(KeyId, Timestamp)]) -> Result<()>;
    fn tally_key_attempt(&mut self, user: &str, day: i64, success: bool) -> Result<()>;

    /// Marks active holds past their expiry as expired; returns how many.
    fn expire_holds(&mut self, user: &str, now: Timestamp) -> Result<u64>;
    fn active_holds(&mut self, user: &str, now: Timestamp) -> Result<u32>;
    /// Inserts the hold only when the account's available credits
    /// (`sql::available`) and its key's cap (`sql::key_remaining`) cover it.
    fn insert_hold_if_available(&mut self, hold: &HoldRow, now: Timestamp) -> Result<bool>;
    fn hold(&mut self, id: HoldId) -> Result<Option<HoldRow>>;
    fn hold_by_request(&mut self, user: &str, request_id: &str) -> Result<Option<HoldRow>>;
    /// Moves a hold from `from` to `to`; false when it was not in `from`.
    fn set_hold_status(&mut self, id: HoldId, from: HoldStatus, to: HoldStatus, entry: Option<EntryId>)
    -> Result<bool>;

    /// Model `model`'s price version in effect at `at`.
    fn price(&mut self, model: &str, at: Timestamp) -> Result<Option<ModelPrice>>;

    /// Every account as (user, balance, last_seq), ordered by user.
    fn scan_accounts(&mut self, f: &mut dyn FnMut(&str, i64, i64)) -> Result<()>;
    /// Every entry as (user, seq, amount, balance_after), ordered by user, seq.
    fn scan_entries(&mut self, f: &mut dyn FnMut(&str, i64, i64, i64)) -> Result<()>;
    fn figures(&mut self) -> Result<LedgerFigures>;
    /// Payments whose reversals net of reinstatements fall outside 0..=paid,
    /// and reinstatements that do not restore exactly their reversal, as
    /// (user, problem, detail) (`sql::PAYMENT_PROBLEMS`).
    fn payment_problems(&mut self) -> Result<Vec<(String, String, String)>>;

    /// Sets a key's rate limits (None: no limit of that kind; both None:
    /// none at all), keeping its current window's counts.
    fn set_rate_limit(&mut self, key: KeyId, rpm: Option<i64>, tpm: Option<i64>) -> Result<()>;
    /// Counts `n` requests of `key` in the minute starting at `window` when
    /// its limits allow all `n`; counts none otherwise.
    fn take_requests(&mut self, key: KeyId, window: i64, n: i64) -> Result<RateCheck>;
    /// Adds tokens used by `key` to the minute starting at `window` (a no-op
    /// for a key without rate limits).
    fn add_rate_tokens(&mut self, key: KeyId, window: i64, tokens: i64) -> Result<()>;
    /// Whether any key of the ledger has rate limits.
    fn has_rate_limits(&mut self) -> Result<bool>;

    /// Appends an outbox event; returns its id.
    fn insert_event(&mut self, e: &NewEvent) -> Result<i64>;
    /// Committed events after the one with id `after` (0: from the start),
    /// in commit order. An `after` that names no event: `InvalidArgument`.
    fn events(&mut self, after: i64, limit: u32) -> Result<Vec<Event>>;
    /// The id of the last event [`Tx::events`] returns when read to the
    /// end now (0: none): the cursor that receives only later commits.
    fn events_tail(&mut self) -> Result<i64>;
    /// Whether `user` has a purchase entry.
    fn has_purchase(&mut self, user: &str) -> Result<bool>;

    /// Runs a read-only query on the host application's own tables (for
    /// `import_users`); returns its first `columns` columns as text.
    fn host_rows(&mut self, sql: &str, columns: usize) -> Result<Vec<Vec<Option<String>>>>;
}

/// The backends. An enum rather than a trait object so `write` can stay
/// generic over the caller's result type.
// One per manager, behind its Arc: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Store {
    Sqlite(sqlite::SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresStore),
}

use schema::newer_schema;

impl Store {
    /// Opens the ledger and applies every pending migration.
    pub(crate) fn open(config: &Config) -> Result<Store> {
        Store::open_at(config, Some(i64::MAX))
    }

    /// Opens the ledger and applies the migrations up to version `up_to`;
    /// `None` only reads the schema version (nothing is created or changed).
    pub(crate) fn open_at(config: &Config, up_to: Option<i64>) -> Result<Store> {
        let url = config.database_url.as_str();
        if url.starts_with("sqlite:") {
            return Ok(Store::Sqlite(sqlite::SqliteStore::open(url, config, up_to)?));
        }
        if url.starts_with("postgresql://") || url.starts_with("postgres://") {
            #[cfg(feature = "postgres")]
            return Ok(Store::Postgres(postgres::PostgresStore::open(url, config, up_to)?));
            #[cfg(not(feature = "postgres"))]
            return Err(Error::invalid(
                "this build of creditgate has no PostgreSQL support (cargo feature `postgres`)",
            ));
        }
        Err(Error::invalid(format!(
            "DATABASE_URL must start with sqlite:, postgresql:// or postgres://, got {:?}",
            crate::types::truncate(&crate::config::redact_url(url))
        )))
    }

    /// Runs `f` in one write transaction, committed when `f` returns Ok.
    /// With `account`: `f` locks (at most) one account, named by `account`
    /// (any hash that is the same for every write on that account; e.g. of
    /// the API key charged): a backend that runs writes side by side may
    /// queue the writes on one account behind each other instead of letting
    /// them wait on its lock, and batch them.
    pub(crate) fn write_on<R: Send>(
        &self,
        account: Option<u64>,
        f: impl FnMut(&mut dyn Tx) -> Result<R> + Send,
    ) -> Result<R> {
        self.refuse_newer_schema()?;
        match self {
            Store::Sqlite(s) => {
                let _ = account;
                s.write(f)
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.write_on(account, f),
        }
    }

    /// Runs `f` on one consistent read snapshot.
    pub(crate) fn read<R>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        match self {
            Store::Sqlite(s) => s.read(f),
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.read(f),
        }
    }

    /// The verify lookup: [`Tx::key_with_available`], answered from
    /// SQLite's verify cache while nothing can have changed the answer.
    pub(crate) fn key_with_available(&self, hash: &str, only: Option<HashKind>) -> Result<Option<KeyStanding>> {
        match self {
            Store::Sqlite(s) => s.key_with_available(hash, only),
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.peek(|tx| tx.key_with_available(hash, only)),
        }
    }

    /// Applies every pending migration; the schema version before and after
    /// (0 before: no schema). Refuses a schema newer than this library.
    pub(crate) fn migrate(&self) -> Result<(i64, i64)> {
        let (before, after) = match self {
            Store::Sqlite(s) => s.migrate(i64::MAX)?,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.migrate(i64::MAX)?,
        };
        if after > self.latest_version() {
            return Err(newer_schema(after, self.latest_version()));
        }
        Ok((before, after))
    }

    /// The newest schema version this library knows for this backend.
    pub(crate) fn latest_version(&self) -> i64 {
        schema::LATEST_VERSION
    }

    /// The migrations `applied` still lacks (`schema::pending`), as
    /// versions; none when the schema is newer than this library.
    pub(crate) fn pending_versions(&self, applied: &[i64]) -> Result<Vec<i64>> {
        if applied.iter().any(|&v| v > schema::LATEST_VERSION) {
            return Ok(Vec::new());
        }
        Ok(schema::pending(applied)?.into_iter().map(|m| m.version).collect())
    }

    /// The schema versions recorded as applied, ascending; a read.
    pub(crate) fn applied_versions(&self) -> Result<Vec<i64>> {
        match self {
            Store::Sqlite(s) => s.applied_versions(),
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.applied_versions(),
        }
    }

    /// Every write's guard: a schema found newer than this library at open
    /// refuses it. Decided once at open (no query per write), so a process
    /// opened before a newer version migrated is not stopped by it: its
    /// statements still run, as migrations only add (docs/upgrading.md says
    /// when rolling that way is safe).
    fn refuse_newer_schema(&self) -> Result<()> {
        let (found, known) = (self.opened_from(), self.latest_version());
        if found > known { Err(newer_schema(found, known)) } else { Ok(()) }
    }

    /// The ledger's time when this process's clock is the ledger's (SQLite:
    /// every process on the file shares this machine's clock); None when
    /// the database server's clock is (PostgreSQL).
    pub(crate) fn local_now(&self) -> Option<Timestamp> {
        match self {
            Store::Sqlite(s) => Some(s.now()),
            #[cfg(feature = "postgres")]
            Store::Postgres(_) => None,
        }
    }

    /// The schema version found when the store was opened (0: it created it).
    pub(crate) fn opened_from(&self) -> i64 {
        match self {
            Store::Sqlite(s) => s.opened_from(),
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.opened_from(),
        }
    }

    /// A consistent copy of an SQLite ledger in a new file; PostgreSQL has
    /// its own tools for that.
    pub(crate) fn backup(&self, dest: &str) -> Result<u64> {
        match self {
            Store::Sqlite(s) => s.backup(dest),
            #[cfg(feature = "postgres")]
            Store::Postgres(_) => Err(Error::invalid(
                "backup copies SQLite ledgers; back PostgreSQL up with pg_dump or the provider's snapshots",
            )),
        }
    }

    pub(crate) fn location(&self) -> String {
        match self {
            Store::Sqlite(s) => s.location(),
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.location(),
        }
    }
}
