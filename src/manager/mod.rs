//! `CreditManager`: the operations of docs/reference.md. Each operation validates its
//! input, then plans and applies its change against [`Tx`] inside one
//! transaction. Balances move only through `Tx::apply` (a conditional update),
//! called from one place: `posting.rs`.
//!
//! One file per concept: this facade (open, configuration, the write and
//! read plumbing); `posting` (where a balance moves); `credits` (credits,
//! payments, reversals); `grants`; `accounts` (balances, entries, events);
//! `api_keys`; `verify`; `usage` (charges and prices); `holds`; `rate`
//! (rate limits); `audit` (audit, metrics, report).

mod accounts;
mod allowances;
mod analytics;
mod api_keys;
mod audit;
mod browse;
mod credits;
mod delivery;
mod grants;
mod holds;
mod orgs;
mod posting;
mod rate;
mod rollup;
mod topups;
mod usage;
mod verify;
mod webhooks;

pub use credits::EntryOptions;
pub use holds::{HoldAmount, Settlement};
pub use usage::{KeyRef, Usage};

use crate::config::{Config, redact_url};
use crate::error::{Error, ErrorCode, Result};
use crate::keys;
use crate::metrics::{Counter, Metrics};
use crate::store::{Store, Tx};
use crate::types::*;
use parking_lot::Mutex;
use rate::RequestLease;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64};

/// Most API keys a pending `last_used_at` batch remembers.
pub(super) const MAX_PENDING_TOUCHES: usize = 10_000;

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
    /// The operator this handle writes as (`acting_as`): outside `Inner`,
    /// so handles of several operators share one pool and one set of metrics.
    actor: Option<Arc<str>>,
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

impl CreditManager {
    /// Opens (creating and migrating) the ledger named by `config`; logs its resolved
    /// location, password redacted, at info level (the `log` facade, target
    /// `creditgate`).
    pub fn open(mut config: Config) -> Result<CreditManager> {
        // Test mode may be forced on from outside, so a whole test suite runs checked.
        config.check_invariants |= std::env::var_os("CREDITGATE_CHECK_INVARIANTS").is_some_and(|v| v == "1");
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
            actor: None,
        };
        log::info!(target: "creditgate", "opened ledger {}", m.database_url());
        Ok(m)
    }

    /// `Config::from_env()` then `open`.
    pub fn open_env() -> Result<CreditManager> {
        CreditManager::open(Config::from_env()?)
    }

    /// A handle on the same ledger (the same pool and metrics) whose writes
    /// record `operator`: as `"operator"` in the data of every event they
    /// write and in the metadata of every entry they append (a caller's own
    /// `operator` key is overwritten), in the same transaction as the
    /// change. `operator`: 1..=`MAX_OPERATOR_BYTES` bytes of ASCII letters,
    /// digits, `.`, `_`, `-`, `@` and space, else `InvalidArgument`.
    pub fn acting_as(&self, operator: &str) -> Result<CreditManager> {
        let name = self.track(crate::browse::operator(operator))?;
        Ok(CreditManager { inner: Arc::clone(&self.inner), actor: Some(Arc::from(name)) })
    }

    /// The operator of an `acting_as` handle (None: a plain handle).
    pub fn operator(&self) -> Option<&str> {
        self.actor.as_deref()
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
        let pending = store.pending_versions(&applied)?;
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

impl std::fmt::Debug for CreditManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("CreditManager");
        d.field("database_url", &self.database_url());
        if let Some(op) = self.operator() {
            d.field("operator", &op);
        }
        d.finish()
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync + Clone>() {}
    is::<CreditManager>();
}
