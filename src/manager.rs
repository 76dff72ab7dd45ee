//! `CreditManager`: the operations of docs/reference.md. Each operation validates its
//! input, then plans and applies its change against [`Tx`] inside one
//! transaction. Balances move only through `Tx::apply` (a conditional update).

use crate::config::{Config, CurrencyRate, redact_url};
use crate::error::{Error, ErrorCode, LimitSource, Result};
use crate::events::{Event, EventKind, MAX_EVENTS_PER_PAGE, NewEvent};
use crate::keys;
use crate::metrics::{Counter, Metrics};
use crate::money::{Credits, MAX_AMOUNT_MICROS};
use crate::store::{HashKind, HoldRow, HoldStatus, KeyRow, RateCheck, RateCounts, Store, Tx};
use crate::types::*;
use crate::validate;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

/// Optional fields of a credit or debit entry.
#[derive(Clone, Debug, Default)]
pub struct EntryOptions<'a> {
    pub idempotency_key: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub metadata: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// How a usage charge names its key.
#[derive(Clone, Copy)]
pub enum KeyRef<'a> {
    Secret(&'a str),
    Id(KeyId),
}

impl std::fmt::Debug for KeyRef<'_> {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRef::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeyRef::Id(id) => f.debug_tuple("Id").field(id).finish(),
        }
    }
}

/// Token counts of one call. `model: None` uses the default price.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage<'a> {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub model: Option<&'a str>,
}

/// What a hold reserves.
#[derive(Clone, Copy, Debug)]
pub enum HoldAmount<'a> {
    Credits(Credits),
    /// The price of this many input tokens of `model`: shorthand for
    /// `Usage` with no output tokens.
    Tokens {
        tokens: i64,
        model: Option<&'a str>,
    },
    /// A call's worst case, quoted exactly as its charge will be: input
    /// tokens at the model's input rate plus output tokens (e.g. the
    /// request's `max_tokens`) at its output rate, rounded up once.
    Usage(Usage<'a>),
}

/// What a settlement charges.
#[derive(Clone, Copy, Debug)]
pub enum Settlement<'a> {
    Credits(Credits),
    /// Tokens; a model of `None` means the hold's model.
    Tokens(Usage<'a>),
}

/// Most API keys a pending `last_used_at` batch remembers.
const MAX_PENDING_TOUCHES: usize = 10_000;

/// Grant priorities: lower is drawn first (within a category); default 0.
pub const MIN_GRANT_PRIORITY: i32 = -1000;
pub const MAX_GRANT_PRIORITY: i32 = 1000;
/// The furthest a grant's `expires_at` may lie: 100 years ahead.
pub const MAX_GRANT_LIFETIME_MICROS: i64 = 100 * 366 * 86_400 * 1_000_000;
/// Most grants `account()` lists (the first ones in draw-down order).
pub const MAX_LISTED_GRANTS: u32 = 1_000;
/// Most accounts one `expire_grants` call sweeps.
pub const MAX_EXPIRY_SWEEP: u32 = 10_000;
/// Grants one draw-down query fetches; a usage charge usually needs the first.
const GRANT_FETCH: u32 = 8;

/// How an entry moves grants (lots).
#[derive(Clone, Copy, Debug)]
enum Lots {
    /// A credit creates a grant; a debit draws grants down in order.
    Auto,
    /// A debit draws this grant (with this much remaining) first, then the
    /// others in order: a payment's reversal.
    FirstFrom(GrantId, Credits),
    /// The expiry of this grant's whole remainder.
    Expire(GrantId),
}

/// The grant a credit creates.
#[derive(Clone, Debug)]
struct GrantSpec {
    category: GrantCategory,
    priority: i32,
    expires_at: Option<Timestamp>,
    payment_id: Option<String>,
}

impl GrantSpec {
    /// The category of a kind's credits when the caller names none:
    /// `grant` is promotional; purchases, refunds and adjustments are paid.
    fn default_category(kind: EntryKind) -> GrantCategory {
        if kind == EntryKind::Grant { GrantCategory::Promotional } else { GrantCategory::Paid }
    }

    /// Validates the caller's options for a credit of `amount`.
    fn of(kind: EntryKind, amount: Credits, o: &GrantOptions) -> Result<Option<GrantSpec>> {
        if !(MIN_GRANT_PRIORITY..=MAX_GRANT_PRIORITY).contains(&o.priority) {
            return Err(Error::invalid(format!(
                "priority must be in {MIN_GRANT_PRIORITY}..={MAX_GRANT_PRIORITY}, got {}",
                o.priority
            )));
        }
        if amount <= Credits::ZERO {
            if *o != GrantOptions::default() {
                return Err(Error::invalid(
                    "expires_at, category and priority describe credits; a negative adjustment is a debit",
                ));
            }
            return Ok(None);
        }
        Ok(Some(GrantSpec {
            category: o.category.unwrap_or_else(|| GrantSpec::default_category(kind)),
            priority: o.priority,
            expires_at: o.expires_at,
            payment_id: None,
        }))
    }

    /// `expires_at` must lie in (now, now + 100 years].
    fn check(&self, now: Timestamp) -> Result<()> {
        if let Some(t) = self.expires_at
            && (t <= now || t.0 - now.0 > MAX_GRANT_LIFETIME_MICROS)
        {
            return Err(Error::invalid(format!(
                "expires_at must be after the ledger's clock ({now}) and at most 100 years ahead, got {t}"
            )));
        }
        Ok(())
    }
}

/// The prepaid-credit ledger. Cheap to clone, `Send + Sync`.
///
/// ```
/// use creditgate::{Config, CreditManager, Credits};
/// let m = CreditManager::open(Config::new().database_url("sqlite:///:memory:")).unwrap();
/// m.record_payment("alice", "pi_1", 500, "usd").unwrap();
/// assert_eq!(m.get_balance("alice").unwrap(), Credits::from_credits(5000).unwrap());
/// let key = m.create_api_key("alice", None).unwrap();
/// let v = m.verify_api_key_credits(key.secret.expose(), Credits::from_credits(1).unwrap()).unwrap();
/// assert_eq!(v.user_id, "alice");
/// ```
#[derive(Clone)]
pub struct CreditManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    metrics: Metrics,
    /// Verified keys whose `last_used_at` is written with the next write.
    touched: Mutex<HashMap<KeyId, Timestamp>>,
    /// Whether any key has rate limits, as last read (see `rate_limits_apply`).
    rate_limits_on: AtomicBool,
    /// When that was read (µs since the epoch; 0: never).
    rate_limits_read_at: AtomicI64,
    /// Requests this process counted in the database ahead of use (see
    /// `take_request`), per key.
    request_leases: Mutex<HashMap<KeyId, RequestLease>>,
}

/// Requests of one key counted in the database for the minute starting at
/// `window` under the limit `requests_per_minute`, `left` of them unused.
#[derive(Clone, Copy)]
struct RequestLease {
    window: i64,
    requests_per_minute: i64,
    left: i64,
}

impl RequestLease {
    /// Whether the leased requests may be used now: same minute, and the
    /// limit verify read is the one they were counted under (a minute's
    /// counts are never reset, see `store::sql::RATE_ROW_HAS_LIMITS`).
    fn holds_for(&self, rate: &RateCounts, window: i64) -> bool {
        self.window == window && rate.requests_per_minute == Some(self.requests_per_minute)
    }
}

/// The most requests a process counts ahead of use per key.
const MAX_REQUEST_LEASE: i64 = 256;
/// Keys with leased requests kept per process; past it, the leases are
/// dropped (their requests stay counted: only this process loses them).
const MAX_REQUEST_LEASES: usize = 4_096;

/// How long a process trusts its last reading of "does any key have rate
/// limits": a limit set by another process applies here within this time.
const RATE_LIMITS_RECHECK_MICROS: i64 = 1_000_000;
/// Rate-limit windows are whole UTC minutes.
const RATE_WINDOW_MICROS: i64 = 60_000_000;
/// The largest tokens-per-minute limit.
pub const MAX_TOKENS_PER_MINUTE: u64 = 1_000_000_000_000;

/// A usage charge, planned before it is applied.
struct Charge<'a> {
    user: &'a str,
    key_id: KeyId,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    model: Option<String>,
    amount: Credits,
    request_id: Option<String>,
}

/// An entry to append, before it has a seq and balance.
#[derive(Clone)]
struct Draft<'a> {
    user: &'a str,
    kind: EntryKind,
    amount: Credits,
    strict: bool,
    key: Option<String>,
    global_key: bool,
    reference: Option<String>,
    api_key_id: Option<KeyId>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    model: Option<String>,
    amount_minor: Option<i64>,
    currency: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The grant a credit creates; None: the kind's defaults.
    grant: Option<GrantSpec>,
    lots: Lots,
}

impl<'a> Draft<'a> {
    fn new(user: &'a str, kind: EntryKind, amount: Credits) -> Draft<'a> {
        Draft {
            user,
            kind,
            amount,
            strict: false,
            key: None,
            global_key: false,
            reference: None,
            api_key_id: None,
            input_tokens: None,
            output_tokens: None,
            model: None,
            amount_minor: None,
            currency: None,
            metadata: None,
            grant: None,
            lots: Lots::Auto,
        }
    }
}

fn replayed(mut e: Entry) -> Entry {
    e.replayed = true;
    e
}

/// A caller's own key reused with other parameters.
fn conflict(key: &str, existing: &Entry) -> Error {
    Error::IdempotencyConflict(format!(
        "key {:?} was already used for a {} of {} with other parameters",
        truncate(key),
        existing.kind,
        existing.amount
    ))
}

/// A global key (payment or reversal id) reused with other parameters; says
/// nothing of the entry, which may belong to another user.
fn global_conflict(key: &str) -> Error {
    Error::IdempotencyConflict(format!("{:?} was already used with another user, payment or amount", truncate(key)))
}

/// charge = ceil((in × in_price + out × out_price) / 1000) micro-credits.
fn price_tokens(input: i64, output: i64, p: ModelPrice) -> Result<Credits> {
    let total = i128::from(input) * i128::from(p.input_per_1k.micros())
        + i128::from(output) * i128::from(p.output_per_1k.micros());
    let micros = (total + 999) / 1000;
    if micros > i128::from(MAX_AMOUNT_MICROS) {
        return Err(Error::invalid(format!("usage of {input} + {output} tokens costs more than the largest amount")));
    }
    Ok(Credits::from_micros(micros as i64))
}

impl CreditManager {
    /// Opens (creating and migrating) the ledger named by `config`; logs its resolved
    /// location, password redacted, at info level (the `log` facade, target
    /// `creditgate`).
    pub fn open(config: Config) -> Result<CreditManager> {
        let store = Store::open(&config)?;
        let m = CreditManager {
            inner: Arc::new(Inner {
                config,
                store,
                metrics: Metrics::default(),
                touched: Mutex::new(HashMap::new()),
                rate_limits_on: AtomicBool::new(false),
                rate_limits_read_at: AtomicI64::new(0),
                request_leases: Mutex::new(HashMap::new()),
            }),
        };
        log::info!(target: "creditgate", "opened ledger {}", m.database_url());
        Ok(m)
    }

    /// `Config::from_env()` then `open`.
    pub fn open_env() -> Result<CreditManager> {
        CreditManager::open(Config::from_env()?)
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// How many database connections this manager may open at once: the
    /// configured pool size (`CREDITGATE_POOL_SIZE`, default 8), or 1 for an
    /// in-memory SQLite database. More concurrent callers than this queue
    /// for a connection.
    pub fn pool_size(&self) -> u32 {
        if self.database_url() == "sqlite:///:memory:" { 1 } else { self.inner.config.pool_size }
    }

    /// The resolved database URL, password redacted.
    pub fn database_url(&self) -> String {
        redact_url(&self.inner.store.location())
    }

    /// Copies an SQLite ledger into a new file at `dest` (never overwritten)
    /// with SQLite's online backup API, while the ledger stays in use; the
    /// copy is a consistent snapshot that passed `PRAGMA quick_check`.
    /// Returns its size in bytes. PostgreSQL ledgers: `InvalidArgument`.
    pub fn backup(&self, dest: &str) -> Result<u64> {
        if dest.is_empty() || dest.contains('\0') {
            return self.track(Err(Error::invalid("backup destination must be a file path without NUL")));
        }
        self.track(self.inner.store.backup(dest))
    }

    /// Applies the pending migrations (opening already does). A ledger whose
    /// schema is newer than this library: `Storage`, naming both versions,
    /// and nothing changes.
    pub fn migrate(&self) -> Result<()> {
        self.track(self.inner.store.migrate().map(|_| ()))
    }

    /// The schema version this manager found when it opened the ledger (0:
    /// the open created the schema) and the version recorded now; a read.
    pub fn schema_versions(&self) -> Result<(i64, i64)> {
        let now = self.inner.store.applied_versions().map(|v| v.last().copied().unwrap_or(0));
        self.track(now.map(|now| (self.inner.store.opened_from(), now)))
    }

    /// The schema version of the ledger named by `config` against this
    /// library's, without migrating or creating anything (an SQLite file
    /// that does not exist: `NotFound`). For `creditgate migrate --status`
    /// and deploy scripts: a read, so safe while the fleet runs.
    pub fn schema_status(config: Config) -> Result<SchemaStatus> {
        let store = Store::open_at(&config, None)?;
        let applied = store.applied_versions()?;
        let library_version = store.latest_version();
        let pending = (1..=library_version).filter(|v| !applied.contains(v)).collect();
        Ok(SchemaStatus { database_version: applied.last().copied().unwrap_or(0), library_version, pending })
    }

    /// For upgrade tests only: creates the ledger named by `config`, or
    /// migrates it, up to schema version `version` and no further, as an
    /// older creditgate left it. The current library's writes need the
    /// current schema: fill such a ledger with SQL of its own version.
    #[doc(hidden)]
    pub fn migrate_to_version(config: Config, version: i64) -> Result<()> {
        Store::open_at(&config, Some(version)).map(|_| ())
    }

    /// For front doors (the Python and C bindings), before converting a
    /// caller's arguments: starts the call whose errors
    /// [`count_front_door_error`](Self::count_front_door_error) counts.
    #[doc(hidden)]
    pub fn begin_front_door_call() {
        crate::metrics::begin_call();
    }

    /// For front doors: counts in `errors_total` an error the caller is
    /// about to get, unless the core counted it already in this call, so
    /// every error a front door returns is counted once (also a bad argument
    /// its own conversion caught).
    #[doc(hidden)]
    pub fn count_front_door_error(&self, code: ErrorCode) {
        self.inner.metrics.error_once(code);
    }

    fn track<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.inner.metrics.error(e.code());
        }
        r
    }

    fn count(&self, c: Counter) {
        self.inner.metrics.inc(c);
    }

    /// One write transaction; also flushes pending `last_used_at` updates.
    fn write<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        self.write_on(None, f)
    }

    /// `write` of an `f` that locks only one account, named by `account`
    /// (see `Store::write_on`); the flush of `last_used_at` never blocks.
    fn write_on<R: Send>(&self, account: Option<u64>, mut f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        let touched: Vec<(KeyId, Timestamp)> = {
            let mut t = self.inner.touched.lock();
            if t.is_empty() { Vec::new() } else { t.drain().collect() }
        };
        let r = self.inner.store.write_on(account, |tx| {
            if !touched.is_empty() {
                tx.touch_keys(&touched)?;
            }
            f(tx)
        });
        if r.is_err() && !touched.is_empty() {
            // The updates rolled back with the failed write: keep them for the next one.
            let mut t = self.inner.touched.lock();
            for (id, at) in touched {
                if let Some(latest) = t.get_mut(&id) {
                    *latest = (*latest).max(at);
                } else if t.len() < MAX_PENDING_TOUCHES {
                    t.insert(id, at);
                }
            }
        }
        r
    }

    fn read<R>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R>) -> Result<R> {
        self.inner.store.read(f)
    }

    /// A read-only query on the host's own tables, columns as text (for
    /// `import_users`, in `import.rs`).
    pub(crate) fn host_rows(&self, sql: &str, columns: usize) -> Result<Vec<Vec<Option<String>>>> {
        self.track(self.read(|tx| tx.host_rows(sql, columns)))
    }

    fn hash(&self, secret: &str) -> String {
        keys::lookup_hash(self.inner.config.api_key_pepper.as_ref(), secret)
    }

    fn default_price(&self) -> ModelPrice {
        let p = self.inner.config.credits_per_1k_tokens;
        ModelPrice { input_per_1k: p, output_per_1k: p }
    }

    fn price_of(&self, tx: &mut dyn Tx, model: Option<&str>) -> Result<ModelPrice> {
        match model {
            Some(m) => Ok(tx.price(m)?.unwrap_or_else(|| self.default_price())),
            None => Ok(self.default_price()),
        }
    }

    // ----- ledger core -------------------------------------------------

    /// Applies the account's due expiries, then the balance change, appends
    /// its entry and moves its grants. The only path by which a balance moves.
    fn append(&self, tx: &mut dyn Tx, now: Timestamp, d: Draft) -> Result<Entry> {
        if let Some(g) = &d.grant {
            g.check(now)?;
        }
        tx.ensure_account(d.user, now)?;
        let (live, _) = self.expire_due(tx, now, d.user)?;
        self.post(tx, now, d, live)
    }

    /// `append` after the expiries: `live` is the first batch of the
    /// account's live grants in draw-down order (saves the draw a query).
    fn post(&self, tx: &mut dyn Tx, now: Timestamp, mut d: Draft, live: Vec<Grant>) -> Result<Entry> {
        let moves = (d.kind, d.lots, d.grant.take());
        let Some((balance_after, seq)) = tx.apply(d.user, d.amount, d.strict, now)? else {
            let balance = tx.account(d.user)?.map_or(Credits::ZERO, |a| a.balance);
            if balance.checked_add(d.amount).is_err() {
                return Err(Error::invalid(format!("balance {balance} + {} is out of range", d.amount)));
            }
            return Err(Error::InsufficientCredits {
                required: d.amount.checked_neg()?,
                available: tx.available(d.user, now)?,
                limit_source: LimitSource::Account,
            });
        };
        let entry = Entry {
            id: EntryId::new(),
            seq,
            user_id: d.user.to_string(),
            kind: d.kind,
            amount: d.amount,
            balance_after,
            idempotency_key: d.key,
            reference: d.reference,
            api_key_id: d.api_key_id,
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
            model: d.model,
            amount_minor: d.amount_minor,
            currency: d.currency,
            metadata: d.metadata,
            created_at: now,
            replayed: false,
        };
        let global = if d.global_key { entry.idempotency_key.as_deref() } else { None };
        if entry.kind == EntryKind::Purchase && !tx.has_purchase(d.user)? {
            let data = serde_json::json!({ "entry_id": entry.id.to_string(), "amount": entry.amount.to_string() });
            self.emit(tx, now, d.user, None, EventKind::FirstPurchase, data)?;
        }
        tx.insert_entry(&entry, global)?;
        self.move_lots(tx, now, moves, &entry, live)?;
        self.balance_events(tx, &entry)?;
        Ok(entry)
    }

    /// Writes one outbox event in the caller's transaction.
    pub(crate) fn emit(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        user: &str,
        api_key_id: Option<KeyId>,
        kind: EventKind,
        data: serde_json::Value,
    ) -> Result<()> {
        debug_assert!(data.is_object(), "event data is a JSON object");
        tx.insert_event(&NewEvent { kind, user_id: user, api_key_id, data, created_at: now })?;
        Ok(())
    }

    /// The events a balance move fires: each low-balance threshold crossed
    /// downwards, and the move from ≥ 0 into overdraft.
    fn balance_events(&self, tx: &mut dyn Tx, e: &Entry) -> Result<()> {
        if !e.amount.is_negative() {
            return Ok(());
        }
        let after = e.balance_after;
        let before = after.checked_sub(e.amount)?;
        for &t in &self.inner.config.low_balance_thresholds {
            if before >= t && after < t {
                let data = serde_json::json!({
                    "threshold": t.to_string(), "balance": after.to_string(), "entry_id": e.id.to_string(),
                });
                self.emit(tx, e.created_at, &e.user_id, e.api_key_id, EventKind::BalanceLow, data)?;
            }
        }
        if !before.is_negative() && after.is_negative() {
            let data = serde_json::json!({ "balance": after.to_string(), "entry_id": e.id.to_string() });
            self.emit(tx, e.created_at, &e.user_id, e.api_key_id, EventKind::Overdraft, data)?;
        }
        Ok(())
    }

    /// Outbox events committed after the event with id `after` (0: from the
    /// first), in commit order, at most `limit` (1..=1000). Resume with the
    /// id of the last event handled.
    pub fn events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.track((|| {
            if after < 0 {
                return Err(Error::invalid(format!("events: after must be 0 or an event id, got {after}")));
            }
            if !(1..=MAX_EVENTS_PER_PAGE).contains(&limit) {
                return Err(Error::invalid(format!("events: limit must be in 1..={MAX_EVENTS_PER_PAGE}, got {limit}")));
            }
            self.read(|tx| tx.events(after, limit))
        })())
    }

    /// Keeps `sum(remaining) == max(balance, 0)`: a credit creates a grant
    /// holding what is left after repaying any debt; a debit draws grants
    /// down by what the balance loses above zero; an expiry empties its grant.
    fn move_lots(
        &self,
        tx: &mut dyn Tx,
        now: Timestamp,
        (kind, lots, grant): (EntryKind, Lots, Option<GrantSpec>),
        e: &Entry,
        live: Vec<Grant>,
    ) -> Result<()> {
        let backed = |b: Credits| b.max(Credits::ZERO);
        let was = backed(e.balance_after.checked_sub(e.amount)?);
        let is = backed(e.balance_after);
        let user = e.user_id.as_str();
        match lots {
            Lots::Expire(id) => take_grant(tx, user, id, e.amount.checked_neg()?),
            _ if e.amount > Credits::ZERO => {
                let spec = grant.unwrap_or(GrantSpec {
                    category: GrantSpec::default_category(kind),
                    priority: 0,
                    expires_at: None,
                    payment_id: None,
                });
                let g = Grant {
                    grant_id: GrantId(0),
                    user_id: e.user_id.clone(),
                    category: spec.category,
                    priority: spec.priority,
                    amount: e.amount,
                    remaining: is.checked_sub(was)?,
                    expires_at: spec.expires_at,
                    created_at: now,
                    source_entry_id: Some(e.id),
                    payment_id: spec.payment_id,
                };
                tx.insert_grant(&g).map(|_| ())
            }
            Lots::FirstFrom(id, has) => draw(tx, user, now, was.checked_sub(is)?, Some((id, has)), Vec::new()),
            Lots::Auto => draw(tx, user, now, was.checked_sub(is)?, None, live),
        }
    }

    /// Applies `user`'s due expiries (one `expiry` entry per grant past its
    /// `expires_at` with credits left, earliest expiry first). Returns the
    /// first live grants in draw-down order and what expired. The account
    /// must be locked (`ensure_account`).
    fn expire_due(&self, tx: &mut dyn Tx, now: Timestamp, user: &str) -> Result<(Vec<Grant>, ExpirySweep)> {
        let mut expired = ExpirySweep::default();
        loop {
            let batch = tx.live_grants(user, now, true, GRANT_FETCH)?;
            let full = batch.len() == GRANT_FETCH as usize;
            let mut live = Vec::with_capacity(batch.len());
            for g in batch {
                if g.expires_at.is_some_and(|t| t <= now) {
                    expired.entries += 1;
                    expired.credits = expired.credits.checked_add(g.remaining)?;
                    self.expire_grant(tx, now, g)?;
                } else {
                    live.push(g);
                }
            }
            // Due grants come first: once a live one shows, none is left.
            if !live.is_empty() || !full {
                expired.accounts = u64::from(expired.entries > 0);
                return Ok((live, expired));
            }
        }
    }

    /// The `expiry` entry of a grant's whole remainder.
    fn expire_grant(&self, tx: &mut dyn Tx, now: Timestamp, g: Grant) -> Result<Entry> {
        let mut d = Draft::new(&g.user_id, EntryKind::Expiry, g.remaining.checked_neg()?);
        d.lots = Lots::Expire(g.grant_id);
        d.reference = Some(format!("grant:{}", g.grant_id));
        let mut m = serde_json::Map::new();
        m.insert("grant_id".into(), serde_json::Value::from(g.grant_id.0));
        m.insert("category".into(), serde_json::Value::from(g.category.as_str()));
        if let Some(t) = g.expires_at {
            m.insert("expires_at".into(), serde_json::Value::from(t.to_rfc3339()));
        }
        d.metadata = Some(m);
        let e = self.post(tx, now, d, Vec::new())?;
        let data = serde_json::json!({
            "grant_id": g.grant_id.0,
            "amount": g.remaining.to_string(),
            "category": g.category.as_str(),
            "entry_id": e.id.to_string(),
        });
        self.emit(tx, now, &g.user_id, None, EventKind::GrantExpired, data)?;
        Ok(e)
    }

    /// Applies every due expiry of up to `limit` accounts (in
    /// 1..=`MAX_EXPIRY_SWEEP`), one transaction per account; reads and writes
    /// already never count an expired grant, so this only brings the entries
    /// (and `transactions`) up to date. Call it until `accounts < limit`.
    pub fn expire_grants(&self, limit: u32) -> Result<ExpirySweep> {
        self.track((|| {
            if !(1..=MAX_EXPIRY_SWEEP).contains(&limit) {
                return Err(Error::invalid(format!("limit must be in 1..={MAX_EXPIRY_SWEEP}, got {limit}")));
            }
            let users = self.read(|tx| {
                let now = tx.now()?;
                tx.users_with_due_grants(now, limit)
            })?;
            let mut sweep = ExpirySweep::default();
            for user in &users {
                let done = self.write(|tx| {
                    let now = tx.now()?;
                    tx.ensure_account(user, now)?;
                    Ok(self.expire_due(tx, now, user)?.1)
                })?;
                sweep.accounts += done.accounts;
                sweep.entries += done.entries;
                sweep.credits = sweep.credits.checked_add(done.credits)?;
            }
            Ok(sweep)
        })())
    }

    fn counts_entry(&self, e: &Entry) {
        if e.replayed {
            return;
        }
        if e.kind == EntryKind::Purchase {
            self.count(Counter::purchases_total);
            self.inner.metrics.add(Counter::credits_purchased_micros_total, e.amount.micros().unsigned_abs());
        }
    }

    // ----- balances and entries ------------------------------------------

    /// The ledger balance without grants past their expiry (whose `expiry`
    /// entries the next write or `expire_grants` appends).
    pub fn get_balance(&self, user: &str) -> Result<Credits> {
        self.track(validate::text("user_id", user).and_then(|u| {
            self.read(|tx| {
                let now = tx.now()?;
                let balance = tx.account(u)?.map_or(Credits::ZERO, |a| a.balance);
                balance.checked_sub(tx.due_grants(u, now)?)
            })
        }))
    }

    pub fn account(&self, user: &str) -> Result<Account> {
        self.track(validate::text("user_id", user).and_then(|u| {
            self.read(|tx| {
                let now = tx.now()?;
                let row = tx.account(u)?;
                let held = tx.held(u, now)?;
                let (lifetime_purchased, lifetime_used) = tx.lifetime(u)?;
                let balance = row.as_ref().map_or(Credits::ZERO, |a| a.balance).checked_sub(tx.due_grants(u, now)?)?;
                let min_balance = row.as_ref().map_or(Credits::ZERO, |a| a.min_balance);
                Ok(Account {
                    user_id: u.to_string(),
                    balance,
                    held,
                    available: balance.checked_sub(held)?.checked_sub(min_balance)?,
                    min_balance,
                    lifetime_purchased,
                    lifetime_used,
                    active_keys: tx.active_keys(u, now)?,
                    first_key_issued: row.as_ref().is_some_and(|a| a.first_key_issued),
                    created_at: row.map(|a| a.created_at),
                    grants: tx.live_grants(u, now, false, MAX_LISTED_GRANTS)?,
                })
            })
        }))
    }

    /// Sets the account's floor for strict operations: `floor` ≤ 0, so a
    /// trusted customer may run to −N on deducts, holds and key purchases
    /// (available = balance − held − floor). Usage may still go below it, as
    /// usage already happened. 0 (the default) restores the plain rule.
    pub fn set_min_balance(&self, user: &str, floor: Credits) -> Result<()> {
        self.track((|| {
            let user = validate::text("user_id", user)?;
            if floor > Credits::ZERO || floor.micros() < -MAX_AMOUNT_MICROS {
                return Err(Error::invalid(format!(
                    "min_balance (the floor) must be in -{}..=0, got {floor}",
                    Credits::from_micros(MAX_AMOUNT_MICROS)
                )));
            }
            self.write(|tx| {
                let now = tx.now()?;
                tx.ensure_account(user, now)?;
                tx.set_min_balance(user, floor)
            })
        })())
    }

    /// Credits an account. `kind`: purchase, grant, refund or adjustment
    /// (which may be negative, and then is strict). The credits form a grant
    /// with the kind's defaults (see [`add_credits_with`](Self::add_credits_with)).
    pub fn add_credits(&self, user: &str, amount: Credits, kind: EntryKind, opts: &EntryOptions) -> Result<Entry> {
        self.add_credits_with(user, amount, kind, opts, &GrantOptions::default())
    }

    /// `add_credits` with the grant's `expires_at`, `category` (default:
    /// promotional for `grant`, paid for the other kinds) and `priority`.
    /// A replay compares user, kind and amount only, as for `reference`.
    pub fn add_credits_with(
        &self,
        user: &str,
        amount: Credits,
        kind: EntryKind,
        opts: &EntryOptions,
        grant: &GrantOptions,
    ) -> Result<Entry> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            match kind {
                EntryKind::Purchase | EntryKind::Grant | EntryKind::Refund => {
                    amount.validate_positive("amount")?;
                }
                EntryKind::Adjustment => {
                    amount.validate_nonzero("adjustment")?;
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "add_credits kind must be purchase, grant, refund or adjustment, got {kind}"
                    )));
                }
            }
            let mut d = Draft::new(user, kind, amount);
            d.strict = amount.is_negative();
            d.key = validate::caller_key("idempotency_key", opts.idempotency_key)?.map(str::to_string);
            d.reference = validate::opt_text("reference", opts.reference)?.map(str::to_string);
            d.metadata = validate::metadata(opts.metadata)?;
            d.grant = GrantSpec::of(kind, amount, grant)?;
            self.append_idempotent(d)
        })();
        let r = self.track(r);
        if let Ok(e) = &r {
            self.counts_entry(e);
        }
        r
    }

    /// Carries a balance over from the host's own users table (docs/reference.md
    /// `import-users`): an `adjustment` (or `purchase`) entry keyed
    /// `import:<user_id>`, so importing twice changes nothing. Not strict: a
    /// negative balance is carried over as it was.
    pub fn import_balance(&self, user: &str, amount: Credits, kind: EntryKind) -> Result<Entry> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            match kind {
                EntryKind::Purchase => {
                    amount.validate_positive("amount")?;
                }
                EntryKind::Adjustment => {
                    amount.validate_nonzero("imported balance")?;
                }
                _ => {
                    return Err(Error::invalid(format!("import kind must be adjustment or purchase, got {kind}")));
                }
            }
            let mut d = Draft::new(user, kind, amount);
            d.key = Some(format!("import:{user}"));
            self.append_idempotent(d)
        })();
        let r = self.track(r);
        if let Ok(e) = &r {
            self.counts_entry(e);
        }
        r
    }

    /// Strict debit: `InsufficientCredits` when available < amount.
    pub fn deduct_credits(&self, user: &str, amount: Credits, opts: &EntryOptions) -> Result<Entry> {
        let start = Instant::now();
        let r = (|| {
            let user = validate::text("user_id", user)?;
            amount.validate_positive("amount")?;
            let mut d = Draft::new(user, EntryKind::Deduct, amount.checked_neg()?);
            d.strict = true;
            d.key = validate::caller_key("idempotency_key", opts.idempotency_key)?.map(str::to_string);
            d.reference = validate::opt_text("reference", opts.reference)?.map(str::to_string);
            d.metadata = validate::metadata(opts.metadata)?;
            self.append_idempotent(d)
        })();
        self.inner.metrics.charge_seconds.observe(start.elapsed());
        self.track(r)
    }

    /// Appends `d` unless its per-user key was already used: then replays
    /// (same kind and amount) or conflicts.
    fn append_idempotent(&self, d: Draft) -> Result<Entry> {
        self.write(|tx| {
            let now = tx.now()?;
            if let Some(k) = &d.key
                && let Some(e) = tx.lock_and_entry_by_key(d.user, k)?
            {
                return if e.kind == d.kind && e.amount == d.amount { Ok(replayed(e)) } else { Err(conflict(k, &e)) };
            }
            // Cloned so a backend may retry the transaction.
            self.append(tx, now, d.clone())
        })
    }

    /// The payment webhook path: `amount_minor` minor units of `currency`
    /// (any configured ISO 4217 code, any case; USD by default), credited at
    /// the currency's rate, rounded down to the micro-credit.
    pub fn record_payment(&self, user: &str, payment_id: &str, amount_minor: i64, currency: &str) -> Result<Entry> {
        self.record_payment_with(user, payment_id, amount_minor, currency, &GrantOptions::default())
    }

    /// `record_payment` with the grant's options (default category: paid).
    /// A replay compares user, amount and currency, not the grant options.
    pub fn record_payment_with(
        &self,
        user: &str,
        payment_id: &str,
        amount_minor: i64,
        currency: &str,
        grant: &GrantOptions,
    ) -> Result<Entry> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            let payment_id = validate::text("payment_id", payment_id)?;
            let (currency, rate) = self.currency(currency)?;
            if amount_minor <= 0 {
                return Err(Error::invalid(format!("amount_minor must be positive, got {amount_minor}")));
            }
            let credits = rate.credits_for(amount_minor)?;
            if credits <= Credits::ZERO {
                return Err(Error::invalid(format!(
                    "{amount_minor} minor units of {currency} buy less than one micro-credit"
                )));
            }
            let key = format!("payment:{payment_id}");
            let spec = GrantSpec::of(EntryKind::Purchase, credits, grant)?;
            self.write(|tx| {
                let now = tx.now()?;
                if let Some(e) = tx.entry_by_global_key(&key)? {
                    let same = e.user_id == user
                        && e.amount_minor == Some(amount_minor)
                        && e.currency.as_deref() == Some(currency.as_str());
                    return if same { Ok(replayed(e)) } else { Err(global_conflict(&key)) };
                }
                let mut d = Draft::new(user, EntryKind::Purchase, credits);
                d.key = Some(key.clone());
                d.global_key = true;
                d.reference = Some(payment_id.to_string());
                d.amount_minor = Some(amount_minor);
                d.currency = Some(currency.clone());
                d.grant = spec.clone().map(|g| GrantSpec { payment_id: Some(payment_id.to_string()), ..g });
                self.append(tx, now, d)
            })
        })();
        let r = self.track(r);
        if let Ok(e) = &r {
            self.counts_entry(e);
        }
        r
    }

    /// The upper-case code and rate of a configured currency.
    fn currency(&self, c: &str) -> Result<(String, CurrencyRate)> {
        match self.inner.config.rate_of(c) {
            Some((code, rate)) => Ok((code.to_string(), rate)),
            None => {
                let known: Vec<&str> = self.inner.config.currency_rates().keys().map(String::as_str).collect();
                Err(Error::invalid(format!(
                    "currency {:?} has no configured rate (configured: {})",
                    truncate(c),
                    known.join(", ")
                )))
            }
        }
    }

    /// A refund or chargeback: removes the credits a payment bought (all not
    /// yet reversed, or the part for `amount_minor`). Not strict.
    pub fn reverse_payment(
        &self,
        payment_id: &str,
        amount_minor: Option<i64>,
        reason: Option<&str>,
        reversal_id: Option<&str>,
    ) -> Result<Entry> {
        let r = (|| {
            let payment_id = validate::text("payment_id", payment_id)?;
            let reason = validate::opt_text("reason", reason)?;
            let reversal_id = validate::opt_text("reversal_id", reversal_id)?;
            if let Some(a) = amount_minor
                && a <= 0
            {
                return Err(Error::invalid(format!("amount_minor must be positive, got {a}")));
            }
            let key = format!("reversal:{}", reversal_id.unwrap_or(payment_id));
            self.write(|tx| {
                let now = tx.now()?;
                let purchase = tx
                    .entry_by_global_key(&format!("payment:{payment_id}"))?
                    .ok_or_else(|| Error::NotFound(format!("no payment with id {:?}", truncate(payment_id))))?;
                if let Some(e) = tx.entry_by_global_key(&key)? {
                    let same = e.reference.as_deref() == Some(payment_id)
                        && amount_minor.is_none_or(|a| e.amount_minor == Some(a));
                    return if same { Ok(replayed(e)) } else { Err(global_conflict(&key)) };
                }
                let paid_minor = purchase.amount_minor.unwrap_or(0);
                // Locked before summing, so concurrent partial reversals of
                // one payment (on any host) see each other.
                tx.lock_account(&purchase.user_id)?;
                let (reversed_minor, reversed) = tx.reversed_total(payment_id)?;
                let remaining_minor = paid_minor - reversed_minor;
                if remaining_minor <= 0 {
                    return Err(Error::invalid(format!(
                        "payment {:?} is already fully reversed",
                        truncate(payment_id)
                    )));
                }
                let part = amount_minor.unwrap_or(remaining_minor);
                if part > remaining_minor {
                    return Err(Error::invalid(format!(
                        "cannot reverse {part} minor units of payment {:?}: only {remaining_minor} remain",
                        truncate(payment_id)
                    )));
                }
                // The last part takes exactly what remains, so parts sum to the purchase.
                let credits = if part == remaining_minor {
                    purchase.amount.checked_sub(reversed)?
                } else {
                    let micros = i128::from(purchase.amount.micros()) * i128::from(part) / i128::from(paid_minor);
                    Credits::from_micros(micros as i64)
                };
                let user = purchase.user_id.clone();
                // The payment's own grant gives first, after due expiries.
                tx.ensure_account(&user, now)?;
                self.expire_due(tx, now, &user)?;
                let own = tx.grant_by_payment(payment_id)?;
                let mut m = serde_json::Map::new();
                if let Some(r) = reason {
                    m.insert("reason".into(), serde_json::Value::String(r.to_string()));
                }
                let mut d = Draft::new(&user, EntryKind::Reversal, credits.checked_neg()?);
                if let Some(g) = &own {
                    let from_grant = credits.min(g.remaining);
                    m.insert("grant_id".into(), serde_json::Value::from(g.grant_id.0));
                    m.insert("from_grant_micros".into(), serde_json::Value::from(from_grant.micros()));
                    let spent = credits.checked_sub(from_grant)?;
                    m.insert("already_spent_micros".into(), serde_json::Value::from(spent.micros()));
                    d.lots = Lots::FirstFrom(g.grant_id, g.remaining);
                }
                d.key = Some(key.clone());
                d.global_key = true;
                d.reference = Some(payment_id.to_string());
                d.amount_minor = Some(part);
                d.currency = purchase.currency.clone();
                d.metadata = if m.is_empty() { None } else { Some(m) };
                self.append(tx, now, d)
            })
        })();
        self.track(r)
    }

    /// Restores exactly what the reversal `reversal_id` removed (the id given
    /// to `reverse_payment`, or its payment id when it had none): a dispute
    /// won, a refund that failed. A `reinstatement` entry credits the user
    /// the reversal's credits and minor units back, once per reversal (a
    /// replay returns the same entry). It is not a purchase: purchases, the
    /// first-purchase event and lifetime purchased do not count it, while
    /// revenue does (the money came back). The payment may be reversed again
    /// afterwards, up to what it paid.
    pub fn reinstate_reversal(&self, reversal_id: &str, reason: Option<&str>) -> Result<Entry> {
        let r = (|| {
            let reversal_id = validate::text("reversal_id", reversal_id)?;
            let reason = validate::opt_text("reason", reason)?;
            let key = format!("reinstatement:{reversal_id}");
            self.write(|tx| {
                let now = tx.now()?;
                if let Some(e) = tx.entry_by_global_key(&key)? {
                    return Ok(replayed(e));
                }
                let reversal = tx
                    .entry_by_global_key(&format!("reversal:{reversal_id}"))?
                    .ok_or_else(|| Error::NotFound(format!("no reversal with id {:?}", truncate(reversal_id))))?;
                let mut d = Draft::new(&reversal.user_id, EntryKind::Reinstatement, reversal.amount.checked_neg()?);
                d.key = Some(key.clone());
                d.global_key = true;
                d.reference = reversal.reference.clone();
                d.amount_minor = reversal.amount_minor;
                d.currency = reversal.currency.clone();
                let mut m = serde_json::Map::new();
                m.insert("reversal_entry_id".into(), serde_json::Value::String(reversal.id.to_string()));
                if let Some(r) = reason {
                    m.insert("reason".into(), serde_json::Value::String(r.to_string()));
                }
                d.metadata = Some(m);
                self.append(tx, now, d)
            })
        })();
        self.track(r)
    }

    /// Records an outbox event the host observed itself; only the kinds of
    /// [`HOST_EVENT_KINDS`](crate::events::HOST_EVENT_KINDS) (today
    /// `payment.unmapped`, with an empty user id). `data` is a JSON object of
    /// at most `MAX_METADATA_BYTES`. Returns the event's id. Not idempotent:
    /// each call records one event.
    pub fn record_event(&self, kind: EventKind, data: &serde_json::Map<String, serde_json::Value>) -> Result<i64> {
        self.track((|| {
            if !crate::events::HOST_EVENT_KINDS.contains(&kind) {
                return Err(Error::invalid(format!(
                    "record_event takes payment.unmapped; {} is written by the ledger itself",
                    kind.as_str()
                )));
            }
            let data = validate::metadata(Some(data))?.unwrap_or_default();
            self.write(|tx| {
                let now = tx.now()?;
                let e = NewEvent { kind, user_id: "", api_key_id: None, data: data.clone().into(), created_at: now };
                tx.insert_event(&e)
            })
        })())
    }

    /// Newest first; `before` is an entry id cursor.
    pub fn transactions(&self, user: &str, limit: u32, before: Option<EntryId>) -> Result<Vec<Entry>> {
        self.track((|| {
            let user = validate::text("user_id", user)?;
            let limit = validate::page_limit(limit)?;
            self.read(|tx| {
                let before_seq = match before {
                    None => None,
                    Some(id) => match tx.entry_by_id(id)? {
                        Some(e) if e.user_id == user => Some(e.seq),
                        _ => return Err(Error::NotFound(format!("no entry {id} for user {:?}", truncate(user)))),
                    },
                };
                tx.entries(user, before_seq, limit)
            })
        })())
    }

    // ----- API keys ----------------------------------------------------------

    fn eligibility(&self, tx: &mut dyn Tx, user: &str, now: Timestamp) -> Result<KeyEligibility> {
        let available = tx.available(user, now)?;
        let is_first_key = !tx.account(user)?.is_some_and(|a| a.first_key_issued);
        let required =
            if is_first_key { self.inner.config.min_credits_api_key } else { Credits::from_micros(1_000_000) };
        Ok(KeyEligibility { allowed: available >= required, is_first_key, required, available })
    }

    pub fn can_generate_api_key(&self, user: &str) -> Result<KeyEligibility> {
        let r = validate::text("user_id", user).and_then(|u| {
            self.read(|tx| {
                let now = tx.now()?;
                self.eligibility(tx, u, now)
            })
        });
        if r.is_ok() {
            self.count(Counter::key_eligibility_checks_total);
        }
        self.track(r)
    }

    /// Creates a key when the credit rule allows it, checked in the insert's
    /// transaction. Every call is tallied as an attempt, also when denied.
    pub fn create_api_key(&self, user: &str, name: Option<&str>) -> Result<NewApiKey> {
        self.create_api_key_with(user, name, None)
    }

    /// `create_api_key` with an expiry: the key stops verifying at
    /// `expires_at`, which must be in the future.
    pub fn create_api_key_with(
        &self,
        user: &str,
        name: Option<&str>,
        expires_at: Option<Timestamp>,
    ) -> Result<NewApiKey> {
        self.count(Counter::key_generation_attempts_total);
        let r = (|| {
            let user = validate::text("user_id", user)?;
            let name = validate::opt_text("name", name)?;
            let expires_at = expires_at.map(validate::key_expiry).transpose()?;
            let secret = keys::generate(&self.inner.config.api_key_prefix)?;
            let hash = self.hash(secret.expose());
            let max = self.inner.config.max_active_keys_per_user;
            // The outer Result rolls back; the inner one commits the tally.
            let outcome = self.write(|tx| {
                let now = tx.now()?;
                tx.ensure_account(user, now)?;
                if let Some(t) = expires_at
                    && t <= now
                {
                    // Err, not Ok(Err): a bad argument rolls back and is not a key attempt.
                    return Err(Error::invalid(format!("expires_at must be in the future, got {t}")));
                }
                let active = tx.active_keys(user, now)?;
                if active >= max {
                    tx.tally_key_attempt(user, now.day(), false)?;
                    return Ok(Err(Error::LimitReached {
                        limit: "max_active_keys_per_user",
                        detail: format!("user {:?} has {active} active keys, the maximum is {max}", truncate(user)),
                    }));
                }
                let e = self.eligibility(tx, user, now)?;
                if !e.allowed {
                    tx.tally_key_attempt(user, now.day(), false)?;
                    return Ok(Err(Error::InsufficientCredits {
                        required: e.required,
                        available: e.available,
                        limit_source: LimitSource::Account,
                    }));
                }
                // Only now, once the key is granted: a refusal commits the
                // attempt's tally and nothing else (`available` above already
                // left out the due grants).
                self.expire_due(tx, now, user)?;
                let prefix = Some(keys::display_prefix(secret.expose(), false));
                let row = KeyRow { expires_at, ..KeyRow::new(user, name, prefix, false, now) };
                tx.insert_key(&row, &hash, HashKind::Peppered)?;
                let data = serde_json::json!({ "name": row.name, "first_key": e.is_first_key });
                self.emit(tx, now, user, Some(row.id), EventKind::KeyCreated, data)?;
                tx.set_first_key_issued(user)?;
                tx.tally_key_attempt(user, now.day(), true)?;
                Ok(Ok(row))
            });
            let row = outcome.and_then(|o| o).inspect_err(|e| {
                // A denial is the rule saying no; storage failures are neither.
                if matches!(e.code(), ErrorCode::LimitReached | ErrorCode::InsufficientCredits) {
                    self.count(Counter::key_generation_denied_total);
                }
            })?;
            self.count(Counter::key_generation_success_total);
            Ok(new_key(secret, row))
        })();
        self.track(r)
    }

    /// Registers a key issued before this library, without the credit gate.
    /// Importing the same key for the same user again returns it unchanged.
    pub fn import_api_key(
        &self,
        user: &str,
        secret: Option<&str>,
        secret_sha256: Option<&str>,
        name: Option<&str>,
    ) -> Result<ApiKeyInfo> {
        let r = (|| {
            let user = validate::text("user_id", user)?;
            let name = validate::opt_text("name", name)?;
            let (hash, kind, prefix) = match (secret, secret_sha256) {
                (Some(s), None) => {
                    keys::classify(&self.inner.config.api_key_prefix, s).map_err(|e| match e {
                        Error::InvalidApiKey(m) => Error::invalid(format!("legacy secret rejected: {m}")),
                        other => other,
                    })?;
                    (self.hash(s), HashKind::Peppered, Some(keys::display_prefix(s, true)))
                }
                (None, Some(h)) => {
                    keys::validate_sha256_hex(h)?;
                    (h.to_string(), HashKind::Sha256, None)
                }
                _ => return Err(Error::invalid("import_api_key needs exactly one of secret and secret_sha256")),
            };
            self.write(|tx| {
                let now = tx.now()?;
                if let Some(k) = tx.key_by_hash(&hash, None)? {
                    return if k.user_id == user {
                        Ok((k, now))
                    } else {
                        Err(Error::IdempotencyConflict("this key is already registered to another user".into()))
                    };
                }
                tx.ensure_account(user, now)?;
                let row = KeyRow::new(user, name, prefix.clone(), true, now);
                tx.insert_key(&row, &hash, kind)?;
                Ok((row, now))
            })
            .map(|(row, now)| key_info(row, now))
        })();
        self.track(r)
    }

    /// Revokes at once; with `user`, a key of another user is `NotFound`.
    pub fn revoke_api_key(&self, key_id: KeyId, user: Option<&str>) -> Result<()> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            self.write(|tx| {
                let now = tx.now()?;
                match tx.key_by_id(key_id)? {
                    Some(k) if user.is_none_or(|u| u == k.user_id) => {
                        if tx.revoke_key(key_id, now)? {
                            self.emit(tx, now, &k.user_id, Some(key_id), EventKind::KeyRevoked, serde_json::json!({}))?;
                        }
                        Ok(())
                    }
                    _ => Err(Error::NotFound(format!("no API key {key_id}"))),
                }
            })
        })();
        self.track(r)
    }

    /// The key `key_id` in a write, locking its account; with `user`, a key
    /// of another user is `NotFound`.
    fn owned_key(&self, tx: &mut dyn Tx, key_id: KeyId, user: Option<&str>, now: Timestamp) -> Result<KeyRow> {
        match tx.key_by_id(key_id)? {
            Some(k) if user.is_none_or(|u| u == k.user_id) => {
                tx.ensure_account(&k.user_id, now)?;
                // Reread under the account lock: what the caller decides on is current.
                tx.key_by_id(key_id)?.ok_or_else(|| Error::NotFound(format!("no API key {key_id}")))
            }
            _ => Err(Error::NotFound(format!("no API key {key_id}"))),
        }
    }

    /// Sets (Some) or clears (None) the time the key stops verifying. A
    /// time in the past expires the key now. With `user`, a key of another
    /// user is `NotFound`.
    pub fn set_api_key_expiry(&self, key_id: KeyId, expires_at: Option<Timestamp>, user: Option<&str>) -> Result<()> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            let expires_at = expires_at.map(validate::key_expiry).transpose()?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.owned_key(tx, key_id, user, now)?;
                tx.set_key_expiry(k.id, expires_at)?;
                let data = serde_json::json!({ "expires_at": expires_at.map(|t| t.to_rfc3339()) });
                self.emit(tx, now, &k.user_id, Some(k.id), EventKind::KeyExpirySet, data)
            })
        })();
        self.track(r)
    }

    /// Disables a key: it then fails verification and holds exactly like an
    /// unknown key, until `enable_api_key`. Usage and settlements through it
    /// are still charged (as for a revoked key). Disabling twice is a no-op.
    pub fn disable_api_key(&self, key_id: KeyId, user: Option<&str>) -> Result<()> {
        self.set_disabled(key_id, true, user)
    }

    /// Enables a disabled key again (a revoked or expired key stays dead).
    /// Enabling an enabled key is a no-op.
    pub fn enable_api_key(&self, key_id: KeyId, user: Option<&str>) -> Result<()> {
        self.set_disabled(key_id, false, user)
    }

    fn set_disabled(&self, key_id: KeyId, disabled: bool, user: Option<&str>) -> Result<()> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.owned_key(tx, key_id, user, now)?;
                // Only a change is an event: disabling twice records one.
                if tx.set_key_disabled(k.id, disabled.then_some(now))? {
                    let kind = if disabled { EventKind::KeyDisabled } else { EventKind::KeyEnabled };
                    self.emit(tx, now, &k.user_id, Some(k.id), kind, serde_json::json!({}))?;
                }
                Ok(())
            })
        })();
        self.track(r)
    }

    /// Replaces a usable key with a new secret for the same user and name;
    /// the old key keeps working for `grace_seconds` (0..=30 days; 0 ends it
    /// now) and then fails like an unknown key. The new key inherits the old
    /// one's expiry and spend cap, and the spend already counted in the
    /// current window. Not a key purchase: no credit rule, no
    /// `max_active_keys_per_user` check, not counted as a key generation.
    pub fn rotate_api_key(&self, key_id: KeyId, grace_seconds: i64, user: Option<&str>) -> Result<NewApiKey> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            if !(0..=validate::MAX_ROTATION_GRACE_SECONDS).contains(&grace_seconds) {
                return Err(Error::invalid(format!(
                    "grace_seconds must be in 0..={}, got {grace_seconds}",
                    validate::MAX_ROTATION_GRACE_SECONDS
                )));
            }
            let secret = keys::generate(&self.inner.config.api_key_prefix)?;
            let hash = self.hash(secret.expose());
            let row = self.write(|tx| {
                let now = tx.now()?;
                let old = self.owned_key(tx, key_id, user, now)?;
                if let Some(to) = old.rotated_to {
                    return Err(Error::invalid(format!("API key {key_id} was already rotated to {to}")));
                }
                if !old.usable(now) {
                    return Err(Error::invalid(format!(
                        "API key {key_id} is revoked, disabled or expired: only a usable key can be rotated"
                    )));
                }
                let prefix = Some(keys::display_prefix(secret.expose(), false));
                let new = KeyRow {
                    expires_at: old.expires_at,
                    spend_limit: old.spend_limit,
                    spend_window: old.spend_window,
                    ..KeyRow::new(&old.user_id, old.name.as_deref(), prefix, false, now)
                };
                tx.insert_key(&new, &hash, HashKind::Peppered)?;
                if old.spend_limit.is_some()
                    && let Some(window) = old.spend_window
                {
                    let (start, end) = window.bounds(now);
                    tx.put_key_spend(new.id, start, end, old.spent_at(now))?;
                }
                let grace_end = Timestamp(now.0.saturating_add(grace_seconds * 1_000_000));
                tx.set_key_rotated(old.id, new.id, grace_end)?;
                let ends = old.expires_at.map_or(grace_end, |t| t.min(grace_end));
                let data = serde_json::json!({
                    "old_key_id": old.id.to_string(), "new_key_id": new.id.to_string(), "grace_ends_at": ends.to_rfc3339(),
                });
                self.emit(tx, now, &old.user_id, Some(old.id), EventKind::KeyRotated, data)?;
                Ok(new)
            })?;
            Ok(new_key(secret, row))
        })();
        self.track(r)
    }

    /// Caps what the key may spend per `window` (UTC calendar periods, or
    /// lifetime): verification and holds through the key need limit − spent
    /// in the window − the key's active holds ≥ the amount, else
    /// `InsufficientCredits` with `limit_source` `key`. Usage is never
    /// refused by the cap but counts. `limit: None` removes the cap. Setting
    /// a cap counts the key's usage already charged in the current window.
    pub fn set_key_limit(
        &self,
        key_id: KeyId,
        limit: Option<Credits>,
        window: SpendWindow,
        user: Option<&str>,
    ) -> Result<()> {
        let r = (|| {
            let user = validate::opt_text("user_id", user)?;
            let limit = limit.map(|l| l.validate_threshold("limit")).transpose()?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.owned_key(tx, key_id, user, now)?;
                let spent = match limit {
                    None => {
                        tx.set_key_limit(k.id, None)?;
                        None
                    }
                    Some(limit) => {
                        tx.set_key_limit(k.id, Some((limit, window)))?;
                        // Seed the counter from the ledger: the hot path then only adds.
                        let (start, end) = window.bounds(now);
                        let spent = tx.key_usage_since(&k.user_id, k.id, start)?;
                        tx.put_key_spend(k.id, start, end, spent)?;
                        Some(spent)
                    }
                };
                let data = serde_json::json!({
                    "limit": limit.map(|l| l.to_string()),
                    "window": limit.map(|_| window.as_str()),
                    "spent_in_window": spent.map(|s| s.to_string()),
                });
                self.emit(tx, now, &k.user_id, Some(k.id), EventKind::KeyLimitSet, data)
            })
        })();
        self.track(r)
    }

    pub fn list_api_keys(&self, user: &str) -> Result<Vec<ApiKeyInfo>> {
        self.track(validate::text("user_id", user).and_then(|u| {
            let pending: HashMap<KeyId, Timestamp> = self.inner.touched.lock().clone();
            self.read(|tx| Ok((tx.keys(u, validate::MAX_LISTED_KEYS)?, tx.now()?))).map(|(rows, now)| {
                rows.into_iter()
                    .map(|mut k| {
                        if let Some(t) = pending.get(&k.id) {
                            k.last_used_at = k.last_used_at.max(Some(*t));
                        }
                        key_info(k, now)
                    })
                    .collect()
            })
        }))
    }

    /// Looks a presented secret up with `lookup`: by our hash, then (with a
    /// pepper) by the plain SHA-256 of keys imported by hash; else `InvalidApiKey`.
    fn lookup_secret<T>(
        &self,
        secret: &str,
        mut lookup: impl FnMut(&str, Option<HashKind>) -> Result<Option<T>>,
    ) -> Result<T> {
        keys::classify(&self.inner.config.api_key_prefix, secret)?;
        if let Some(found) = lookup(&self.hash(secret), None)? {
            return Ok(found);
        }
        if self.inner.config.api_key_pepper.is_some()
            && let Some(found) = lookup(&keys::sha256_hex(secret), Some(HashKind::Sha256))?
        {
            return Ok(found);
        }
        Err(Error::InvalidApiKey("unknown API key".into()))
    }

    fn find_key(&self, tx: &mut dyn Tx, secret: &str) -> Result<KeyRow> {
        self.lookup_secret(secret, |hash, only| tx.key_by_hash(hash, only))
    }

    fn key_ref(&self, tx: &mut dyn Tx, key: KeyRef) -> Result<KeyRow> {
        match key {
            KeyRef::Secret(s) => self.find_key(tx, s),
            KeyRef::Id(id) => tx.key_by_id(id)?.ok_or_else(|| Error::InvalidApiKey(format!("no API key with id {id}"))),
        }
    }

    /// Read-only check of a key and its account's available credits.
    pub fn verify_api_key_credits(&self, api_key: &str, min_credits: Credits) -> Result<Verification> {
        self.verify(api_key, Some(min_credits))
    }

    /// Checks the key only, not the credits: who it belongs to and what the
    /// account has available, which may be zero or negative (an overdrawn
    /// account). `InvalidApiKey` for malformed, unknown or revoked keys, exactly
    /// as [`verify_api_key_credits`](Self::verify_api_key_credits); never
    /// `InsufficientCredits`. For endpoints that must answer a valid key at any
    /// balance (e.g. a gateway's "my credits" page). Read-only, counted as a
    /// verification (`verify_ok_total`, `verify_invalid_key_total`).
    pub fn authenticate_api_key(&self, api_key: &str) -> Result<Verification> {
        self.verify(api_key, None)
    }

    /// The verify path; `min_credits: None` skips the credit check.
    fn verify(&self, api_key: &str, min_credits: Option<Credits>) -> Result<Verification> {
        let start = Instant::now();
        let r = (|| {
            if let Some(min) = min_credits {
                min.validate_threshold("min_credits")?;
            }
            let found = self.lookup_secret(api_key, |hash, only| self.inner.store.key_with_available(hash, only))?;
            let k = found.key;
            if k.revoked_at.is_some() {
                return Err(Error::InvalidApiKey(format!("API key {} is revoked", k.id)));
            }
            let v = Verification {
                user_id: k.user_id,
                key_id: k.id,
                available: found.available,
                key_remaining: found.key_remaining,
            };
            Ok((v, found.rate, Timestamp::now()))
        })();
        self.inner.metrics.verify_seconds.observe(start.elapsed());
        match r {
            Ok((v, rate, now)) if min_credits.is_none_or(|min| v.spendable() >= min) => {
                if min_credits.is_some()
                    && let Some(rate) = rate
                    && let Err(e) = self.take_request(v.key_id, rate)
                {
                    return self.track(Err(e));
                }
                self.count(Counter::verify_ok_total);
                let mut t = self.inner.touched.lock();
                if t.len() < MAX_PENDING_TOUCHES {
                    t.insert(v.key_id, now);
                }
                Ok(v)
            }
            Ok((v, _, _)) => {
                self.count(Counter::verify_insufficient_credits_total);
                let required = min_credits.unwrap_or(Credits::ZERO);
                self.track(Err(short(required, v.available, v.key_remaining)))
            }
            Err(e) => {
                if e.code() == ErrorCode::InvalidApiKey {
                    self.count(Counter::verify_invalid_key_total);
                }
                self.track(Err(e))
            }
        }
    }

    // ----- rate limits ---------------------------------------------------------

    /// Sets a key's rate limits, counted per UTC minute in the database (so
    /// shared by every process and host): at most `requests_per_minute`
    /// verified requests (`verify_api_key_credits`, `reserve`) and, once
    /// `tokens_per_minute` tokens were charged in a minute, no more requests
    /// that minute. None lifts that limit; both None lift all. Over a limit:
    /// `RateLimited` (429) with the seconds until the next minute.
    pub fn set_rate_limit(
        &self,
        key_id: KeyId,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u64>,
    ) -> Result<()> {
        let r = (|| {
            if requests_per_minute == Some(0) || tokens_per_minute == Some(0) {
                return Err(Error::invalid("rate limits must be at least 1 (None lifts a limit)"));
            }
            if let Some(t) = tokens_per_minute.filter(|&t| t > MAX_TOKENS_PER_MINUTE) {
                return Err(Error::invalid(format!(
                    "tokens_per_minute must be at most {MAX_TOKENS_PER_MINUTE}, got {t}"
                )));
            }
            let rpm = requests_per_minute.map(i64::from);
            let tpm = tokens_per_minute.map(|t| t as i64); // ≤ MAX_TOKENS_PER_MINUTE
            self.write(|tx| {
                if tx.key_by_id(key_id)?.is_none() {
                    return Err(Error::NotFound(format!("no API key {key_id}")));
                }
                tx.set_rate_limit(key_id, rpm, tpm)
            })?;
            if rpm.is_some() || tpm.is_some() {
                self.inner.rate_limits_on.store(true, Ordering::Relaxed);
            }
            Ok(())
        })();
        self.track(r)
    }

    /// Whether rate limits must be counted: any key of the ledger has them.
    /// Read at most once a second per process, so keys without limits cost
    /// nothing on the hot path.
    fn rate_limits_apply(&self) -> Result<bool> {
        let now = Timestamp::now().0;
        let read_at = self.inner.rate_limits_read_at.load(Ordering::Relaxed);
        if read_at != 0 && (0..RATE_LIMITS_RECHECK_MICROS).contains(&(now - read_at)) {
            return Ok(self.inner.rate_limits_on.load(Ordering::Relaxed));
        }
        let on = self.read(|tx| tx.has_rate_limits())?;
        self.inner.rate_limits_on.store(on, Ordering::Relaxed);
        self.inner.rate_limits_read_at.store(now, Ordering::Relaxed);
        Ok(on)
    }

    /// Counts a verified request against the key's rate limits, `rate` as
    /// verify read them (fresh, see `Store::key_with_available`).
    ///
    /// Where the ledger's clock is this machine's (SQLite), a process takes
    /// requests from the database in blocks (a lease of up to 1/16 of the
    /// limit, at most [`MAX_REQUEST_LEASE`], for the current minute) and
    /// counts them down in memory, so a verify rarely writes. Never more than
    /// the limit pass: every leased request is counted in the database when
    /// leased. Near the limit a process may be refused while another holds
    /// leased requests it has not used yet. The tokens limit is checked on
    /// verify's fresh counts at every request.
    fn take_request(&self, key: KeyId, rate: RateCounts) -> Result<()> {
        let Some(now) = self.inner.store.local_now() else {
            return self.take_requests(key, 1).map(|_| ());
        };
        let window = rate_window(now);
        if rate.tokens_used_up(window) {
            return counted_request(RateCheck::Limited("tokens_per_minute"), now);
        }
        let Some(rpm) = rate.requests_per_minute else { return Ok(()) };
        {
            let mut leases = self.inner.request_leases.lock();
            if let Some(l) = leases.get_mut(&key)
                && l.left > 0
                && l.holds_for(&rate, window)
            {
                l.left -= 1;
                return Ok(());
            }
        }
        let block = (rpm / 16).clamp(1, MAX_REQUEST_LEASE);
        let (window, taken) = self.take_requests(key, block)?;
        if taken > 1 {
            let mut leases = self.inner.request_leases.lock();
            if leases.len() >= MAX_REQUEST_LEASES {
                leases.clear();
            }
            let fresh = RequestLease { window, requests_per_minute: rpm, left: 0 };
            let lease = leases.entry(key).or_insert(fresh);
            if !(lease.window == window && lease.requests_per_minute == rpm) {
                *lease = fresh;
            }
            // Another thread may have leased a block meanwhile: keep both.
            lease.left += taken - 1;
        }
        Ok(())
    }

    /// Counts `block` requests of `key` in the current minute, or one when
    /// the block does not fit under the limit: (the minute, how many were
    /// counted). `RateLimited` when not even one fits.
    fn take_requests(&self, key: KeyId, block: i64) -> Result<(i64, i64)> {
        self.write(|tx| {
            let now = tx.now()?;
            let window = rate_window(now);
            if block > 1 && tx.take_requests(key, window, block)? == RateCheck::Allowed {
                return Ok((window, block));
            }
            counted_request(tx.take_requests(key, window, 1)?, now)?;
            Ok((window, 1))
        })
    }

    // ----- usage -------------------------------------------------------------

    fn check_usage(u: &Usage) -> Result<()> {
        validate::tokens("input_tokens", u.input_tokens)?;
        validate::tokens("output_tokens", u.output_tokens)?;
        validate::opt_text("model", u.model)?;
        Ok(())
    }

    /// Charges a call's usage. Never refused for balance: the balance may go
    /// negative (`overdraft`). Idempotent on `request_id`.
    pub fn record_usage(&self, key: KeyRef, usage: Usage, request_id: Option<&str>) -> Result<UsageCharge> {
        let start = Instant::now();
        let r = (|| {
            Self::check_usage(&usage)?;
            let request_id = validate::opt_text("request_id", request_id)?;
            let rate = self.rate_limits_apply()?;
            // A charge locks only its key's account.
            let mut h = std::hash::DefaultHasher::new();
            match key {
                KeyRef::Secret(s) => std::hash::Hash::hash(s, &mut h),
                KeyRef::Id(id) => std::hash::Hash::hash(&id.0, &mut h),
            }
            self.write_on(Some(std::hash::Hasher::finish(&h)), |tx| {
                let now = tx.now()?;
                let k = self.key_ref(tx, key)?;
                let price = self.price_of(tx, usage.model)?;
                let charge = Charge {
                    user: &k.user_id,
                    key_id: k.id,
                    input_tokens: Some(usage.input_tokens),
                    output_tokens: Some(usage.output_tokens),
                    model: usage.model.map(str::to_string),
                    amount: price_tokens(usage.input_tokens, usage.output_tokens, price)?,
                    request_id: request_id.map(str::to_string),
                };
                self.charge(tx, now, charge, rate)
            })
        })();
        self.inner.metrics.charge_seconds.observe(start.elapsed());
        self.finish_charge(r)
    }

    /// Appends a usage entry, or replays the one with the same request id.
    /// With `rate`, the tokens also count towards the key's tokens-per-minute limit.
    fn charge(&self, tx: &mut dyn Tx, now: Timestamp, c: Charge, rate: bool) -> Result<Entry> {
        let key = c.request_id.as_ref().map(|r| format!("usage:{r}"));
        if let Some(k) = &key
            && let Some(e) = tx.lock_and_entry_by_key(c.user, k)?
        {
            let same = e.kind == EntryKind::Usage
                && e.input_tokens == c.input_tokens
                && e.output_tokens == c.output_tokens
                && e.model == c.model
                && (c.input_tokens.is_some() || e.amount == c.amount.checked_neg()?);
            return if same { Ok(replayed(e)) } else { Err(conflict(k, &e)) };
        }
        let mut d = Draft::new(c.user, EntryKind::Usage, c.amount.checked_neg()?);
        d.key = key;
        d.api_key_id = Some(c.key_id);
        d.input_tokens = c.input_tokens;
        d.output_tokens = c.output_tokens;
        d.model = c.model;
        let tokens = c.input_tokens.unwrap_or(0).saturating_add(c.output_tokens.unwrap_or(0));
        let entry = self.append(tx, now, d)?;
        // Read after `append` locked the account: a cap set concurrently
        // either is seen here or (waiting for this commit) seeds from this entry.
        if c.amount > Credits::ZERO
            && let Some(k) = tx.key_by_id(c.key_id)?
            && k.spend_limit.is_some()
            && let Some(window) = k.spend_window
        {
            let (start, end) = window.bounds(now);
            tx.add_key_spend(k.id, start, end, c.amount)?;
        }
        if rate && tokens > 0 {
            tx.add_rate_tokens(c.key_id, rate_window(now), tokens)?;
        }
        Ok(entry)
    }

    fn finish_charge(&self, r: Result<Entry>) -> Result<UsageCharge> {
        let e = self.track(r)?;
        let tokens = e.input_tokens.unwrap_or(0) + e.output_tokens.unwrap_or(0);
        let charged = Credits::from_micros(-e.amount.micros());
        let overdraft = e.balance_after.is_negative();
        if !e.replayed {
            let m = &self.inner.metrics;
            m.inc(Counter::usage_charges_total);
            m.add(Counter::tokens_metered_total, tokens as u64);
            m.add(Counter::credits_charged_micros_total, charged.micros() as u64);
            if overdraft {
                m.inc(Counter::usage_overdrafts_total);
            }
        }
        Ok(UsageCharge {
            entry_id: e.id,
            user_id: e.user_id,
            tokens,
            charged,
            balance: e.balance_after,
            overdraft,
            replayed: e.replayed,
        })
    }

    // ----- holds -------------------------------------------------------------

    /// Holds credits against available (strict), for `ttl_seconds`.
    pub fn reserve(
        &self,
        api_key: &str,
        amount: HoldAmount,
        ttl_seconds: i64,
        request_id: Option<&str>,
    ) -> Result<Hold> {
        let r = (|| {
            if !(1..=validate::MAX_TTL_SECONDS).contains(&ttl_seconds) {
                return Err(Error::invalid(format!(
                    "ttl_seconds must be in 1..={}, got {ttl_seconds}",
                    validate::MAX_TTL_SECONDS
                )));
            }
            match amount {
                HoldAmount::Credits(c) => {
                    c.validate_positive("credits")?;
                }
                HoldAmount::Tokens { tokens, model } => {
                    validate::tokens("tokens", tokens)?;
                    validate::opt_text("model", model)?;
                }
                HoldAmount::Usage(u) => Self::check_usage(&u)?,
            }
            let request_id = validate::opt_text("request_id", request_id)?;
            let max = self.inner.config.max_active_holds_per_user;
            let rate = self.rate_limits_apply()?;
            self.write(|tx| {
                let now = tx.now()?;
                let k = self.find_key(tx, api_key)?;
                if k.revoked_at.is_some() {
                    return Err(Error::InvalidApiKey(format!("API key {} is revoked", k.id)));
                }
                if !k.usable(now) {
                    // Disabled or expired: the same answer as an unknown key.
                    return Err(Error::InvalidApiKey("unknown API key".into()));
                }
                let user = k.user_id.as_str();
                tx.ensure_account(user, now)?;
                self.expire_due(tx, now, user)?;
                let expired = tx.expire_holds(user, now)?;
                let (held_amount, model) = self.quote(tx, amount)?;
                if let Some(rid) = request_id
                    && let Some(h) = tx.hold_by_request(user, rid)?
                {
                    return if h.amount == held_amount {
                        Ok((hold_of(h, true), expired))
                    } else {
                        Err(Error::IdempotencyConflict(format!(
                            "request_id {:?} already holds {} (asked {held_amount})",
                            truncate(rid),
                            h.amount
                        )))
                    };
                }
                let active = tx.active_holds(user, now)?;
                if active >= max {
                    return Err(Error::LimitReached {
                        limit: "max_active_holds_per_user",
                        detail: format!("user {:?} has {active} active holds, the maximum is {max}", truncate(user)),
                    });
                }
                let row = HoldRow {
                    id: HoldId::new(),
                    user_id: user.to_string(),
                    api_key_id: k.id,
                    amount: held_amount,
                    model,
                    request_id: request_id.map(str::to_string),
                    status: HoldStatus::Active,
                    expires_at: Timestamp(now.0 + ttl_seconds * 1_000_000),
                };
                if !tx.insert_hold_if_available(&row, now)? {
                    let available = tx.available(user, now)?;
                    return Err(short(held_amount, available, tx.key_remaining(k.id, now)?));
                }
                // After the credit check (402 before 429, as for verify) and
                // after the replay check (a replay is not a new request). A
                // refusal rolls the hold back with the rest.
                if rate {
                    counted_request(tx.take_requests(k.id, rate_window(now), 1)?, now)?;
                }
                Ok((hold_of(row, false), expired))
            })
        })();
        let r = self.track(r);
        r.map(|(h, expired)| {
            self.inner.metrics.add(Counter::holds_expired_total, expired);
            if !h.replayed {
                self.count(Counter::holds_total);
            }
            h
        })
    }

    /// What a hold holds, and the model it prices: tokens are quoted by the
    /// same formula as their charge, and a hold is at least one micro-credit.
    fn quote(&self, tx: &mut dyn Tx, amount: HoldAmount<'_>) -> Result<(Credits, Option<String>)> {
        match amount {
            HoldAmount::Credits(c) => Ok((c, None)),
            HoldAmount::Tokens { tokens, model } => {
                self.quote(tx, HoldAmount::Usage(Usage { input_tokens: tokens, output_tokens: 0, model }))
            }
            HoldAmount::Usage(u) => {
                let p = self.price_of(tx, u.model)?;
                let amount = price_tokens(u.input_tokens, u.output_tokens, p)?.max(Credits::from_micros(1));
                Ok((amount, u.model.map(str::to_string)))
            }
        }
    }

    /// Charges a hold's actual usage exactly once and frees it; also after
    /// it expired or was released.
    pub fn settle(&self, hold_id: HoldId, settlement: Settlement) -> Result<UsageCharge> {
        let start = Instant::now();
        let r = (|| {
            match settlement {
                Settlement::Credits(c) => {
                    c.validate_threshold("credits")?;
                }
                Settlement::Tokens(u) => Self::check_usage(&u)?,
            }
            let rate = self.rate_limits_apply()?;
            self.write(|tx| {
                let now = tx.now()?;
                let h = tx.hold(hold_id)?.ok_or_else(|| Error::NotFound(format!("no hold {hold_id}")))?;
                tx.ensure_account(&h.user_id, now)?;
                let expired = tx.expire_holds(&h.user_id, now)?;
                let h = tx.hold(hold_id)?.ok_or_else(|| Error::NotFound(format!("no hold {hold_id}")))?;
                let charge = match settlement {
                    Settlement::Credits(c) => Charge {
                        user: &h.user_id,
                        key_id: h.api_key_id,
                        input_tokens: None,
                        output_tokens: None,
                        model: h.model.clone(),
                        amount: c,
                        request_id: None,
                    },
                    Settlement::Tokens(u) => {
                        let model = u.model.map(str::to_string).or_else(|| h.model.clone());
                        let price = self.price_of(tx, model.as_deref())?;
                        Charge {
                            user: &h.user_id,
                            key_id: h.api_key_id,
                            input_tokens: Some(u.input_tokens),
                            output_tokens: Some(u.output_tokens),
                            amount: price_tokens(u.input_tokens, u.output_tokens, price)?,
                            model,
                            request_id: None,
                        }
                    }
                };
                let request = h.request_id.clone().unwrap_or_else(|| h.id.to_string());
                let entry = self.charge(tx, now, Charge { request_id: Some(request), ..charge }, rate)?;
                let settled_now = h.status != HoldStatus::Settled;
                if settled_now && !tx.set_hold_status(h.id, h.status, HoldStatus::Settled, Some(entry.id))? {
                    return Err(Error::Internal(format!("hold {hold_id} changed status during settle")));
                }
                Ok((entry, expired, settled_now))
            })
        })();
        self.inner.metrics.charge_seconds.observe(start.elapsed());
        // finish_charge counts the error, if any.
        let r = r.map(|(entry, expired, settled_now)| {
            self.inner.metrics.add(Counter::holds_expired_total, expired);
            if settled_now {
                self.count(Counter::holds_settled_total);
            }
            entry
        });
        self.finish_charge(r)
    }

    /// Frees an active hold without charging; a no-op when already finished.
    pub fn release(&self, hold_id: HoldId) -> Result<()> {
        let r = self.write(|tx| {
            let now = tx.now()?;
            let h = tx.hold(hold_id)?.ok_or_else(|| Error::NotFound(format!("no hold {hold_id}")))?;
            tx.ensure_account(&h.user_id, now)?;
            let expired = tx.expire_holds(&h.user_id, now)?;
            let released = tx.set_hold_status(hold_id, HoldStatus::Active, HoldStatus::Released, None)?;
            Ok((expired, released))
        });
        self.track(r).map(|(expired, released)| {
            self.inner.metrics.add(Counter::holds_expired_total, expired);
            if released {
                self.count(Counter::holds_released_total);
            }
        })
    }

    // ----- prices ------------------------------------------------------------

    pub fn set_model_price(&self, model: &str, input_per_1k: Credits, output_per_1k: Credits) -> Result<()> {
        self.track((|| {
            let model = validate::text("model", model)?;
            let price = ModelPrice {
                input_per_1k: input_per_1k.validate_threshold("input_per_1k")?,
                output_per_1k: output_per_1k.validate_threshold("output_per_1k")?,
            };
            self.write(|tx| {
                let now = tx.now()?;
                tx.set_price(model, price, now)
            })
        })())
    }

    pub fn list_model_prices(&self) -> Result<BTreeMap<String, ModelPrice>> {
        self.track(self.read(|tx| tx.prices()).map(|v| v.into_iter().collect()))
    }

    // ----- audit, metrics, report ----------------------------------------

    /// Checks `balance == sum(amount)`, gap-free seqs and the
    /// `balance_after` chain for every account, the grants, and that each
    /// payment's reversals net of reinstatements stay within what it paid,
    /// on one snapshot. Never modifies data.
    pub fn audit(&self) -> Result<AuditReport> {
        self.track(self.read(|tx| {
            let mut accounts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            tx.scan_accounts(&mut |u, balance, last_seq| {
                accounts.insert(u.to_string(), (balance, last_seq));
            })?;
            let mut mismatches = Vec::new();
            let mut entries_checked = 0u64;
            // user → (running sum, last seq) from the entries.
            let mut walked: BTreeMap<String, (i128, i64)> = BTreeMap::new();
            tx.scan_entries(&mut |u, seq, amount, balance_after| {
                entries_checked += 1;
                if !walked.contains_key(u) {
                    walked.insert(u.to_string(), (0, 0));
                }
                let Some(w) = walked.get_mut(u) else { return };
                if seq != w.1 + 1 {
                    mismatches.push(mismatch(u, "seq_gap", format!("seq {seq} follows {}", w.1)));
                }
                w.0 += i128::from(amount);
                w.1 = seq;
                if w.0 != i128::from(balance_after) {
                    let detail =
                        format!("entry seq {seq} has balance_after {balance_after} micros, running sum is {}", w.0);
                    mismatches.push(mismatch(u, "balance_after_chain", detail));
                }
            })?;
            let accounts_checked = accounts.len() as u64;
            let balances = accounts.clone();
            for (u, (balance, last_seq)) in accounts {
                let (sum, seq) = walked.remove(&u).unwrap_or((0, 0));
                if i128::from(balance) != sum {
                    mismatches.push(mismatch(
                        &u,
                        "balance_mismatch",
                        format!("balance {balance} micros, sum of entries {sum}"),
                    ));
                }
                if last_seq != seq {
                    mismatches.push(mismatch(
                        &u,
                        "seq_gap",
                        format!("account last_seq {last_seq}, last entry seq {seq}"),
                    ));
                }
            }
            for u in walked.keys() {
                mismatches.push(mismatch(u, "missing_account", "entries without an account row".into()));
            }
            // Grants: sum(remaining) == max(balance, 0), each 0 <= remaining <= amount.
            let mut lots: BTreeMap<String, (i128, i64)> = BTreeMap::new();
            tx.scan_grants(&mut |u, sum, bad| {
                lots.insert(u.to_string(), (sum, bad));
            })?;
            for (u, (balance, _)) in &balances {
                let (sum, bad) = lots.remove(u).unwrap_or((0, 0));
                if sum != i128::from((*balance).max(0)) {
                    let detail = format!("grants hold {sum} micros, the balance is {balance}");
                    mismatches.push(mismatch(u, "grant_mismatch", detail));
                }
                if bad > 0 {
                    let detail = format!("{bad} grants have remaining outside 0..=amount");
                    mismatches.push(mismatch(u, "grant_out_of_range", detail));
                }
            }
            for u in lots.keys() {
                mismatches.push(mismatch(u, "grant_mismatch", "grants without an account row".into()));
            }
            // Payments: reversals net of reinstatements within 0..=paid; each
            // reinstatement restores exactly its reversal.
            for (u, problem, detail) in tx.payment_problems()? {
                mismatches.push(AuditMismatch { user_id: u, problem, detail });
            }
            Ok(AuditReport { ok: mismatches.is_empty(), accounts_checked, entries_checked, mismatches })
        }))
    }

    /// Counter name → value.
    pub fn metrics(&self) -> Vec<(&'static str, u64)> {
        self.inner.metrics.snapshot()
    }

    pub fn metrics_prometheus(&self) -> String {
        self.inner.metrics.prometheus()
    }

    pub fn report(&self) -> Result<Report> {
        let figures = self.read(|tx| {
            // Balances come from the same snapshot, through the audit's scan.
            let (mut outstanding, mut receivable) = (0i128, 0i128);
            tx.scan_accounts(&mut |_, balance, _| match balance {
                b if b > 0 => outstanding += i128::from(b),
                b => receivable -= i128::from(b),
            })?;
            // Grants past their expiry are gone from balances already.
            let now = tx.now()?;
            outstanding -= i128::from(tx.due_grants_total(now)?.micros());
            Ok((tx.figures()?, outstanding, receivable))
        });
        let schema_version = self.inner.store.applied_versions().map(|v| v.last().copied().unwrap_or(0));
        self.track(figures.and_then(|(f, outstanding, receivable)| {
            let credits = |v: i128, what: &str| {
                i64::try_from(v)
                    .map(Credits::from_micros)
                    .map_err(|_| Error::Internal(format!("{what} exceeds the 64-bit range")))
            };
            let mut by_currency = BTreeMap::new();
            for (currency, minor) in f.revenue_minor {
                let minor = i64::try_from(minor)
                    .map_err(|_| Error::Internal(format!("{currency} revenue exceeds the 64-bit range")))?;
                by_currency.insert(currency, minor);
            }
            let revenue = by_currency.get("USD").copied().unwrap_or(0);
            Ok(Report {
                users: f.users,
                paying_users: f.paying_users,
                users_attempted_key: f.users_attempted_key,
                key_generation_attempts: f.key_generation_attempts,
                key_generation_successes: f.key_generation_successes,
                purchase_conversion: (f.paying_users_attempted_key, f.users_attempted_key),
                credits_purchased: credits(f.credits_purchased_micros, "credits_purchased")?,
                revenue_usd_minor: revenue,
                revenue_per_paying_user_usd_minor: if f.paying_users == 0 {
                    0
                } else {
                    revenue / f.paying_users as i64
                },
                revenue_minor_by_currency: by_currency,
                credits_used: credits(f.credits_used_micros, "credits_used")?,
                outstanding_balance: credits(outstanding, "outstanding_balance")?,
                overdraft_receivable: credits(receivable, "overdraft_receivable")?,
                schema_version: schema_version?,
                library_schema_version: self.inner.store.latest_version(),
            })
        }))
    }
}

/// The start of the rate-limit window (UTC minute) holding `t`.
fn rate_window(t: Timestamp) -> i64 {
    t.0 - t.0.rem_euclid(RATE_WINDOW_MICROS)
}

/// `RateLimited` when the request was not counted, with the whole seconds
/// (1..=60) until the next window.
fn counted_request(check: RateCheck, now: Timestamp) -> Result<()> {
    match check {
        RateCheck::Limited(limit) => {
            let left = RATE_WINDOW_MICROS - now.0.rem_euclid(RATE_WINDOW_MICROS);
            let retry_after_seconds = u32::try_from((left + 999_999) / 1_000_000).unwrap_or(60).clamp(1, 60);
            Err(Error::RateLimited { limit, retry_after_seconds })
        }
        RateCheck::Allowed | RateCheck::Unlimited => Ok(()),
    }
}

/// Takes `amount` from grant `id`, which must hold it (the account is
/// locked, so nothing else moved it).
fn take_grant(tx: &mut dyn Tx, user: &str, id: GrantId, amount: Credits) -> Result<()> {
    if amount > Credits::ZERO && !tx.take_from_grant(id, amount)? {
        return Err(Error::Internal(format!(
            "grant {id} of user {:?} holds less than {amount}; run audit()",
            truncate(user)
        )));
    }
    Ok(())
}

/// Draws `left` from `user`'s live grants: `first` (a payment's own grant)
/// before all, then in draw-down order, starting with the prefetched `batch`.
fn draw(
    tx: &mut dyn Tx,
    user: &str,
    now: Timestamp,
    mut left: Credits,
    first: Option<(GrantId, Credits)>,
    mut batch: Vec<Grant>,
) -> Result<()> {
    if let Some((id, has)) = first {
        let take = left.min(has);
        take_grant(tx, user, id, take)?;
        left = left.checked_sub(take)?;
        batch.clear();
    }
    while left > Credits::ZERO {
        if batch.is_empty() {
            batch = tx.live_grants(user, now, false, GRANT_FETCH)?;
            if batch.is_empty() {
                return Err(Error::Internal(format!(
                    "the grants of user {:?} hold less than its balance; run audit()",
                    truncate(user)
                )));
            }
        }
        for g in batch.drain(..) {
            let take = left.min(g.remaining);
            take_grant(tx, user, g.grant_id, take)?;
            left = left.checked_sub(take)?;
            if left == Credits::ZERO {
                break;
            }
        }
    }
    Ok(())
}

/// The caller's copy of a key just created: its secret, shown once.
fn new_key(secret: keys::ApiKeySecret, row: KeyRow) -> NewApiKey {
    NewApiKey {
        secret,
        key_id: row.id,
        user_id: row.user_id,
        name: row.name,
        prefix: row.prefix.unwrap_or_default(),
        created_at: row.created_at,
    }
}

fn mismatch(user: &str, problem: &str, detail: String) -> AuditMismatch {
    AuditMismatch { user_id: user.to_string(), problem: problem.to_string(), detail }
}

/// `InsufficientCredits` naming the tighter of the two limits (the
/// account's on a tie).
fn short(required: Credits, available: Credits, key_remaining: Option<Credits>) -> Error {
    match key_remaining {
        Some(r) if r < available => {
            Error::InsufficientCredits { required, available: r, limit_source: LimitSource::Key }
        }
        _ => Error::InsufficientCredits { required, available, limit_source: LimitSource::Account },
    }
}

fn key_info(k: KeyRow, now: Timestamp) -> ApiKeyInfo {
    let capped = k.spend_limit.is_some();
    let window_resets_at = match k.spend_window {
        Some(w) if capped && w != SpendWindow::Lifetime => Some(w.bounds(now).1),
        _ => None,
    };
    ApiKeyInfo {
        key_id: k.id,
        user_id: k.user_id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: k.created_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
        legacy: k.legacy,
        expires_at: k.expires_at,
        disabled: k.disabled_at.is_some(),
        rotated_to: k.rotated_to,
        spend_limit: k.spend_limit,
        spend_window: if capped { k.spend_window } else { None },
        spent_in_window: if capped { k.spent_at(now) } else { Credits::ZERO },
        window_resets_at,
    }
}

fn hold_of(h: HoldRow, replayed: bool) -> Hold {
    Hold { hold_id: h.id, user_id: h.user_id, amount: h.amount, expires_at: h.expires_at, status: h.status, replayed }
}

impl std::fmt::Debug for CreditManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreditManager").field("database_url", &self.database_url()).finish()
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync + Clone>() {}
    is::<CreditManager>();
}
