//! `LocalCreditManager`: the facade (docs/reference.md) over `creditgate::CreditManager`.
//!
//! Each method converts its arguments (with the GIL), runs the core operation
//! with the GIL released (`py.detach`), then converts the result. No business
//! rule lives here: the core validates every value.
//!
//! Fork safety: a manager remembers the process id that opened its database.
//! Used in a forked child (a pre-fork server's worker), it opens a fresh
//! connection pool with the same settings on first use and abandons the
//! inherited one without closing it, so the child never touches the parent's
//! SQLite connections (closing them could disturb the parent's locks). An
//! in-memory database cannot follow a fork: using one in a child is a
//! `StorageError`. Process counters (`metrics()`) start at zero in the child.

use crate::convert::{self, Text, dec};
use crate::errors::{invalid, to_py};
use crate::types::{
    Account, ApiKeyInfo, AuditReport, Entry, Event, ExpirySweep, Hold, ImportSummary, KeyEligibility, NewApiKey,
    Report, SchemaStatus, UsageCharge, Verification,
};
use creditgate::{self as cg, Config, CreditManager, Credits, EntryKind, EntryOptions, Error};
use creditgate::{EntryId, GrantCategory, GrantOptions, HoldAmount, HoldId, KeyId, KeyRef, Settlement, Usage};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::Mutex;

/// What `database_url` shows for an in-memory SQLite database.
const MEMORY_URL: &str = "sqlite:///:memory:";

struct Handle {
    pid: u32,
    manager: CreditManager,
}

/// The prepaid-credit ledger. Thread-safe; the GIL is released during
/// storage work.
#[pyclass(name = "LocalCreditManager", module = "creditgate", frozen)]
pub struct LocalCreditManager {
    config: Config,
    handle: Mutex<Handle>,
}

impl LocalCreditManager {
    /// The manager of this process: reopened after a fork (see module docs).
    fn manager(&self) -> cg::Result<CreditManager> {
        let pid = std::process::id();
        let mut handle = self.handle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if handle.pid != pid {
            if handle.manager.database_url() == MEMORY_URL {
                return Err(Error::Storage(
                    "an in-memory database cannot be used after os.fork(): create the LocalCreditManager \
                     in the child process, or use a database file"
                        .into(),
                ));
            }
            let fresh = CreditManager::open(self.config.clone())?;
            // Never close the parent's connections from the child.
            std::mem::forget(std::mem::replace(&mut handle.manager, fresh));
            handle.pid = pid;
        }
        Ok(handle.manager.clone())
    }

    /// Runs one Python call (its conversions and its core call): an error
    /// the core did not count, such as a bad argument caught while
    /// converting, is counted here, so `errors_total` counts every error a
    /// caller gets once, by code.
    fn counted<T>(&self, py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
        CreditManager::begin_front_door_call();
        let r = f();
        if let Err(e) = &r
            && let Some(code) = crate::errors::code_of(py, e)
            && let Some(m) = self.opened_here()
        {
            m.count_front_door_error(code);
        }
        r
    }

    /// This process's manager if it has one already: never opens one (a
    /// forked child's first call may be a bad argument, which must not
    /// reopen the ledger with the GIL held just to count it).
    fn opened_here(&self) -> Option<CreditManager> {
        let handle = self.handle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (handle.pid == std::process::id()).then(|| handle.manager.clone())
    }

    /// Runs `f` on the manager with the GIL released.
    fn run<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&CreditManager) -> cg::Result<T> + Send,
    {
        py.detach(|| self.manager().and_then(|m| f(&m))).map_err(|e| to_py(py, e))
    }
}

fn entry_kind(py: Python<'_>, kind: Text) -> PyResult<EntryKind> {
    EntryKind::parse(&kind.get(py, "kind")?).map_err(|e| to_py(py, e))
}

/// `expires_at` (aware datetime), `category` (`paid` | `promotional`) and
/// `priority` (int) of a credit's grant.
fn grant_options(
    py: Python<'_>,
    expires_at: Option<&Bound<'_, PyAny>>,
    category: Option<Text>,
    priority: Option<&Bound<'_, PyAny>>,
) -> PyResult<GrantOptions> {
    let expires_at = convert::opt_timestamp("expires_at", expires_at)?;
    let category = match convert::opt_text(py, "category", category)? {
        Some(c) => Some(GrantCategory::parse(&c).map_err(|e| to_py(py, e))?),
        None => None,
    };
    let priority = match convert::opt_int("priority", priority)? {
        Some(p) => i32::try_from(p).map_err(|_| invalid(py, format!("priority is out of range: {p}")))?,
        None => 0,
    };
    Ok(GrantOptions { expires_at, category, priority })
}

fn parse_id<T>(py: Python<'_>, parse: fn(&str) -> cg::Result<T>, field: &str, s: Text) -> PyResult<T> {
    parse(&s.get(py, field)?).map_err(|e| to_py(py, crate::errors::named(field, e)))
}

fn opt_id<T>(py: Python<'_>, parse: fn(&str) -> cg::Result<T>, field: &str, s: Option<Text>) -> PyResult<Option<T>> {
    s.map(|s| parse_id(py, parse, field, s)).transpose()
}

/// `tokens=` alone is the input count; it cannot be combined with
/// `input_tokens`/`output_tokens`. A count not given is 0, but at least one
/// must be given: a forgotten count would give the call away (explicit 0 is
/// fine). `None` when none is given, for callers with another choice.
fn opt_token_counts(
    py: Python<'_>,
    tokens: Option<&Bound<'_, PyAny>>,
    input_tokens: Option<&Bound<'_, PyAny>>,
    output_tokens: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<(i64, i64)>> {
    let tokens = convert::opt_int("tokens", tokens)?;
    let input = convert::opt_int("input_tokens", input_tokens)?;
    let output = convert::opt_int("output_tokens", output_tokens)?;
    match (tokens, input, output) {
        (None, None, None) => Ok(None),
        (Some(t), None, None) => Ok(Some((t, 0))),
        (None, i, o) => Ok(Some((i.unwrap_or(0), o.unwrap_or(0)))),
        _ => Err(invalid(py, "pass tokens alone, or input_tokens and/or output_tokens, not both".into())),
    }
}

/// [`opt_token_counts`] where a count is required.
fn token_counts(
    py: Python<'_>,
    tokens: Option<&Bound<'_, PyAny>>,
    input_tokens: Option<&Bound<'_, PyAny>>,
    output_tokens: Option<&Bound<'_, PyAny>>,
) -> PyResult<(i64, i64)> {
    opt_token_counts(py, tokens, input_tokens, output_tokens)?.ok_or_else(|| {
        invalid(py, "no usage given: pass tokens, or input_tokens and/or output_tokens (0 is a valid count)".into())
    })
}

/// Settings: an argument, else the environment (`Config::from_env`), else
/// the default.
fn config(
    py: Python<'_>,
    database_url: Option<Text>,
    min_credits_api_key: Option<&Bound<'_, PyAny>>,
    credits_per_usd: Option<&Bound<'_, PyAny>>,
    credits_per_1k_tokens: Option<&Bound<'_, PyAny>>,
    api_key_prefix: Option<Text>,
    api_key_pepper: Option<Text>,
    max_active_keys_per_user: Option<&Bound<'_, PyAny>>,
    max_active_holds_per_user: Option<&Bound<'_, PyAny>>,
    currency_rates: Option<&Bound<'_, PyAny>>,
) -> PyResult<Config> {
    // The URL may hold a password and the pepper is a secret: errors never show them.
    let database_url = convert::opt_secret(py, "database_url", database_url)?;
    let api_key_prefix = convert::opt_text(py, "api_key_prefix", api_key_prefix)?;
    let api_key_pepper = convert::opt_secret(py, "api_key_pepper", api_key_pepper)?;
    let min_credits = convert::opt_amount("min_credits_api_key", min_credits_api_key)?;
    let per_usd = convert::opt_int("credits_per_usd", credits_per_usd)?;
    let per_1k = convert::opt_amount("credits_per_1k_tokens", credits_per_1k_tokens)?;
    let max_keys = convert::opt_u32("max_active_keys_per_user", max_active_keys_per_user)?;
    let max_holds = convert::opt_u32("max_active_holds_per_user", max_active_holds_per_user)?;
    let rates = convert::currency_rates(currency_rates)?;
    let build = || -> cg::Result<Config> {
        let mut c = Config::from_env()?;
        if let Some(v) = database_url {
            c = c.database_url(v);
        }
        if let Some(v) = min_credits {
            c = c.min_credits_api_key(v)?;
        }
        if let Some(v) = per_usd {
            c = c.credits_per_usd(v)?;
        }
        if let Some(v) = per_1k {
            c = c.credits_per_1k_tokens(v)?;
        }
        if let Some(v) = api_key_prefix {
            c = c.api_key_prefix(v)?;
        }
        if let Some(v) = api_key_pepper {
            c = c.api_key_pepper(v)?;
        }
        if let Some(v) = max_keys {
            c = c.max_active_keys_per_user(v)?;
        }
        if let Some(v) = max_holds {
            c = c.max_active_holds_per_user(v)?;
        }
        for (code, rate, exponent) in rates.iter().flatten() {
            c = c.currency_rate(code, rate, *exponent)?;
        }
        Ok(c)
    };
    build().map_err(|e| to_py(py, e))
}

#[pymethods]
impl LocalCreditManager {
    #[new]
    #[pyo3(signature = (
        database_url=None, *, min_credits_api_key=None, credits_per_usd=None, credits_per_1k_tokens=None,
        api_key_prefix=None, api_key_pepper=None, max_active_keys_per_user=None, max_active_holds_per_user=None,
        currency_rates=None,
    ))]
    fn new(
        py: Python<'_>,
        database_url: Option<Text>,
        min_credits_api_key: Option<&Bound<'_, PyAny>>,
        credits_per_usd: Option<&Bound<'_, PyAny>>,
        credits_per_1k_tokens: Option<&Bound<'_, PyAny>>,
        api_key_prefix: Option<Text>,
        api_key_pepper: Option<Text>,
        max_active_keys_per_user: Option<&Bound<'_, PyAny>>,
        max_active_holds_per_user: Option<&Bound<'_, PyAny>>,
        currency_rates: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let config = config(
            py,
            database_url,
            min_credits_api_key,
            credits_per_usd,
            credits_per_1k_tokens,
            api_key_prefix,
            api_key_pepper,
            max_active_keys_per_user,
            max_active_holds_per_user,
            currency_rates,
        )?;
        let opened = config.clone();
        let manager = py.detach(move || CreditManager::open(opened)).map_err(|e| to_py(py, e))?;
        // docs/reference.md: the resolved location is logged on open (password redacted).
        py.import("logging")?
            .call_method1("getLogger", ("creditgate",))?
            .call_method1("info", ("opened ledger %s", manager.database_url()))?;
        Ok(LocalCreditManager { config, handle: Mutex::new(Handle { pid: std::process::id(), manager }) })
    }

    /// The resolved database URL, password redacted.
    #[getter]
    fn database_url(&self) -> String {
        // No storage work: also fine in a forked child before it reopens.
        self.handle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).manager.database_url()
    }

    /// How many database connections the manager may open at once (1 for
    /// an in-memory database): the useful number of concurrent calls.
    #[getter]
    fn pool_size(&self) -> u32 {
        self.handle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).manager.pool_size()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let url = self.database_url();
        Ok(format!("LocalCreditManager(database_url={})", PyString::new(py, &url).repr()?))
    }

    fn migrate(&self, py: Python<'_>) -> PyResult<()> {
        self.counted(py, || self.run(py, |m| m.migrate()))
    }

    /// (the schema version this manager found when it opened the ledger, 0
    /// when the open created the schema; the version recorded now): a read.
    fn schema_versions(&self, py: Python<'_>) -> PyResult<(i64, i64)> {
        self.run(py, |m| m.schema_versions())
    }

    /// The schema version of the ledger at `database_url` (else
    /// `DATABASE_URL`) against this library's, without opening a manager:
    /// nothing is migrated or created (a missing SQLite file: `NotFound`).
    #[staticmethod]
    #[pyo3(signature = (database_url=None))]
    fn schema_status(py: Python<'_>, database_url: Option<Text>) -> PyResult<SchemaStatus> {
        let config = config(py, database_url, None, None, None, None, None, None, None, None)?;
        let status = py.detach(move || CreditManager::schema_status(config)).map_err(|e| to_py(py, e))?;
        SchemaStatus::new(py, status)
    }

    /// Copies an SQLite ledger into the new file `dest` (never overwritten)
    /// with SQLite's online backup API; returns the copy's size in bytes.
    fn backup(&self, py: Python<'_>, dest: &Bound<'_, PyAny>) -> PyResult<u64> {
        self.counted(py, || {
            let dest: Text =
                py.import("os")?.call_method1("fspath", (dest,)).and_then(|p| p.extract()).map_err(|_| {
                    PyTypeError::new_err(format!("dest must be a str or os.PathLike, not {}", convert::type_name(dest)))
                })?;
            let dest = dest.get(py, "dest")?;
            self.run(py, move |m| m.backup(&dest))
        })
    }

    /// Sets the account's floor for strict operations (`floor` <= 0).
    fn set_min_balance(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>, floor: &Bound<'_, PyAny>) -> PyResult<()> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let floor = convert::amount("floor", floor)?;
            self.run(py, move |m| m.set_min_balance(&user, floor))
        })
    }

    fn get_balance(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let balance = self.run(py, move |m| m.get_balance(&user))?;
            dec(py, balance)
        })
    }

    fn account(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<Account> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let account = self.run(py, move |m| m.account(&user))?;
            Account::new(py, account)
        })
    }

    #[pyo3(
        signature = (
            user_id, amount, *, kind="grant".into(), idempotency_key=None, reference=None, metadata=None,
            expires_at=None, category=None, priority=None,
        ),
        text_signature = "($self, user_id, amount, *, kind='grant', idempotency_key=None, reference=None, \
                          metadata=None, expires_at=None, category=None, priority=0)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn add_credits(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        amount: &Bound<'_, PyAny>,
        kind: Text,
        idempotency_key: Option<Text>,
        reference: Option<Text>,
        metadata: Option<&Bound<'_, PyAny>>,
        expires_at: Option<&Bound<'_, PyAny>>,
        category: Option<Text>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Entry> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let amount = convert::amount("amount", amount)?;
            let kind = entry_kind(py, kind)?;
            let idempotency_key = convert::opt_text(py, "idempotency_key", idempotency_key)?;
            let reference = convert::opt_text(py, "reference", reference)?;
            let metadata = convert::metadata(metadata)?;
            let grant = grant_options(py, expires_at, category, priority)?;
            let entry = self.run(py, move |m| {
                let opts = EntryOptions {
                    idempotency_key: idempotency_key.as_deref(),
                    reference: reference.as_deref(),
                    metadata: metadata.as_ref(),
                };
                m.add_credits_with(&user, amount, kind, &opts, &grant)
            })?;
            Entry::new(py, entry)
        })
    }

    /// `creditgate import-users` (docs/reference.md): a balance from the host's own
    /// table as an `adjustment` (or `purchase`) entry keyed `import:<user_id>`;
    /// importing again replays it.
    #[pyo3(
        signature = (user_id, balance, kind="adjustment".into()),
        text_signature = "($self, user_id, balance, kind='adjustment')"
    )]
    fn import_balance(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        balance: &Bound<'_, PyAny>,
        kind: Text,
    ) -> PyResult<Entry> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let balance = convert::amount("balance", balance)?;
            let kind = entry_kind(py, kind)?;
            let entry = self.run(py, move |m| m.import_balance(&user, balance, kind))?;
            Entry::new(py, entry)
        })
    }

    /// `creditgate import-users` (docs/reference.md): every balance of the host's own
    /// users table (in the ledger's database) as an entry keyed
    /// `import:<user_id>`, and with `keys_table` its API keys as legacy keys.
    /// Everything is read and checked before the first write; running it
    /// twice changes nothing.
    #[pyo3(
        signature = (
            *, table="users".into(), id_column="id".into(), balance_column="credit_balance".into(),
            kind="adjustment".into(), keys_table=None, key_user_column="user_id".into(), key_column="key".into(),
            key_format="plain".into(),
        ),
        text_signature = "($self, *, table='users', id_column='id', balance_column='credit_balance', \
                          kind='adjustment', keys_table=None, key_user_column='user_id', key_column='key', \
                          key_format='plain')"
    )]
    fn import_users(
        &self,
        py: Python<'_>,
        table: Text,
        id_column: Text,
        balance_column: Text,
        kind: Text,
        keys_table: Option<Text>,
        key_user_column: Text,
        key_column: Text,
        key_format: Text,
    ) -> PyResult<ImportSummary> {
        self.counted(py, || {
            let kind = entry_kind(py, kind)?;
            let format = match key_format.get(py, "key_format")?.as_str() {
                "plain" => cg::KeyFormat::Plain,
                "sha256" => cg::KeyFormat::Sha256,
                other => {
                    let shown = convert::short_repr(PyString::new(py, other).as_any());
                    return Err(invalid(py, format!("key_format must be 'plain' or 'sha256', got {shown}")));
                }
            };
            let keys = match convert::opt_text(py, "keys_table", keys_table)? {
                Some(table) => Some(cg::ImportKeys {
                    table,
                    user_column: key_user_column.get(py, "key_user_column")?,
                    key_column: key_column.get(py, "key_column")?,
                    format,
                }),
                None => None,
            };
            let spec = cg::ImportUsers {
                table: table.get(py, "table")?,
                id_column: id_column.get(py, "id_column")?,
                balance_column: balance_column.get(py, "balance_column")?,
                kind,
                keys,
            };
            let summary = self.run(py, move |m| m.import_users(&spec))?;
            ImportSummary::new(py, summary)
        })
    }

    #[pyo3(signature = (user_id, amount, *, idempotency_key=None, reference=None, metadata=None))]
    fn deduct_credits(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        amount: &Bound<'_, PyAny>,
        idempotency_key: Option<Text>,
        reference: Option<Text>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Entry> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let amount = convert::amount("amount", amount)?;
            let idempotency_key = convert::opt_text(py, "idempotency_key", idempotency_key)?;
            let reference = convert::opt_text(py, "reference", reference)?;
            let metadata = convert::metadata(metadata)?;
            let entry = self.run(py, move |m| {
                let opts = EntryOptions {
                    idempotency_key: idempotency_key.as_deref(),
                    reference: reference.as_deref(),
                    metadata: metadata.as_ref(),
                };
                m.deduct_credits(&user, amount, &opts)
            })?;
            Entry::new(py, entry)
        })
    }

    #[pyo3(
        signature = (user_id, payment_id, amount_minor, currency="USD".into(), *, expires_at=None, category=None, priority=None),
        text_signature = "($self, user_id, payment_id, amount_minor, currency='USD', *, expires_at=None, \
                          category=None, priority=0)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn record_payment(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        payment_id: Text,
        amount_minor: &Bound<'_, PyAny>,
        currency: Text,
        expires_at: Option<&Bound<'_, PyAny>>,
        category: Option<Text>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Entry> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let payment_id = payment_id.get(py, "payment_id")?;
            let amount_minor = convert::int("amount_minor", amount_minor)?;
            let currency = currency.get(py, "currency")?;
            let grant = grant_options(py, expires_at, category, priority)?;
            let entry =
                self.run(py, move |m| m.record_payment_with(&user, &payment_id, amount_minor, &currency, &grant))?;
            Entry::new(py, entry)
        })
    }

    /// Applies every due grant expiry of up to `limit` accounts (the
    /// `creditgate expire` sweep); call again while `accounts == limit`.
    #[pyo3(signature = (limit=None), text_signature = "($self, limit=1000)")]
    fn expire_grants(&self, py: Python<'_>, limit: Option<&Bound<'_, PyAny>>) -> PyResult<ExpirySweep> {
        self.counted(py, || {
            let limit = convert::opt_int("limit", limit)?.unwrap_or(1000);
            let limit = u32::try_from(limit).map_err(|_| invalid(py, format!("limit is out of range: {limit}")))?;
            let sweep = self.run(py, move |m| m.expire_grants(limit))?;
            ExpirySweep::new(py, sweep)
        })
    }

    #[pyo3(signature = (payment_id, amount_minor=None, reason=None, *, reversal_id=None))]
    fn reverse_payment(
        &self,
        py: Python<'_>,
        payment_id: Text,
        amount_minor: Option<&Bound<'_, PyAny>>,
        reason: Option<Text>,
        reversal_id: Option<Text>,
    ) -> PyResult<Entry> {
        self.counted(py, || {
            let payment_id = payment_id.get(py, "payment_id")?;
            let reason = convert::opt_text(py, "reason", reason)?;
            let reversal_id = convert::opt_text(py, "reversal_id", reversal_id)?;
            let amount_minor = convert::opt_int("amount_minor", amount_minor)?;
            let entry = self.run(py, move |m| {
                m.reverse_payment(&payment_id, amount_minor, reason.as_deref(), reversal_id.as_deref())
            })?;
            Entry::new(py, entry)
        })
    }

    /// Restores what the reversal `reversal_id` removed (a dispute won, a
    /// refund that failed), once; not a purchase.
    #[pyo3(signature = (reversal_id, reason=None))]
    fn reinstate_reversal(&self, py: Python<'_>, reversal_id: Text, reason: Option<Text>) -> PyResult<Entry> {
        self.counted(py, || {
            let reversal_id = reversal_id.get(py, "reversal_id")?;
            let reason = convert::opt_text(py, "reason", reason)?;
            let entry = self.run(py, move |m| m.reinstate_reversal(&reversal_id, reason.as_deref()))?;
            Entry::new(py, entry)
        })
    }

    /// Records an outbox event the host observed (only `payment.unmapped`);
    /// returns its id.
    #[pyo3(signature = (kind, data))]
    fn record_event(&self, py: Python<'_>, kind: Text, data: &Bound<'_, PyAny>) -> PyResult<i64> {
        self.counted(py, || {
            let name = kind.get(py, "kind")?;
            let Some(kind) = cg::HOST_EVENT_KINDS.iter().copied().find(|k| k.as_str() == name) else {
                return Err(invalid(py, format!("record_event takes kind \"payment.unmapped\", got {name:?}")));
            };
            let data = convert::metadata(Some(data))?.unwrap_or_default();
            self.run(py, move |m| m.record_event(kind, &data))
        })
    }

    #[pyo3(signature = (user_id, *, limit=None, before=None), text_signature = "($self, user_id, *, limit=50, before=None)")]
    fn transactions(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        limit: Option<&Bound<'_, PyAny>>,
        before: Option<Text>,
    ) -> PyResult<Vec<Entry>> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let limit = convert::opt_u32("limit", limit)?.unwrap_or(DEFAULT_PAGE_LIMIT);
            let before = opt_id(py, EntryId::parse, "before", before)?;
            let entries = self.run(py, move |m| m.transactions(&user, limit, before))?;
            Entry::list(py, entries)
        })
    }

    /// Outbox events committed after the event `after` (0: from the first), in
    /// commit order; resume with the id of the last event handled.
    #[pyo3(signature = (after=None, limit=None), text_signature = "($self, after=0, limit=100)")]
    fn events(
        &self,
        py: Python<'_>,
        after: Option<&Bound<'_, PyAny>>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Event>> {
        self.counted(py, || {
            let after = convert::opt_int("after", after)?.unwrap_or(0);
            let limit = convert::opt_u32("limit", limit)?.unwrap_or(DEFAULT_EVENTS_LIMIT);
            let events = self.run(py, move |m| m.events(after, limit))?;
            Event::list(py, events)
        })
    }

    /// Per-minute rate limits of a key, shared through the database; None
    /// lifts a limit. Over a limit, verify and reserve raise `RateLimited`.
    #[pyo3(signature = (key_id, *, requests_per_minute=None, tokens_per_minute=None))]
    fn set_rate_limit(
        &self,
        py: Python<'_>,
        key_id: Text,
        requests_per_minute: Option<&Bound<'_, PyAny>>,
        tokens_per_minute: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.counted(py, || {
            let key = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let rpm = convert::opt_u32("requests_per_minute", requests_per_minute)?;
            let tpm = convert::opt_int("tokens_per_minute", tokens_per_minute)?
                .map(|t| u64::try_from(t).map_err(|_| invalid(py, format!("tokens_per_minute is out of range: {t}"))))
                .transpose()?;
            self.run(py, move |m| m.set_rate_limit(key, rpm, tpm))
        })
    }

    fn can_generate_api_key(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<KeyEligibility> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let eligibility = self.run(py, move |m| m.can_generate_api_key(&user))?;
            KeyEligibility::new(py, eligibility)
        })
    }

    #[pyo3(signature = (user_id, name=None, *, expires_at=None))]
    fn create_api_key(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        name: Option<Text>,
        expires_at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<NewApiKey> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let name = convert::opt_text(py, "name", name)?;
            let expires_at = convert::opt_timestamp("expires_at", expires_at)?;
            let key = self.run(py, move |m| m.create_api_key_with(&user, name.as_deref(), expires_at))?;
            NewApiKey::new(py, key)
        })
    }

    /// Sets (a datetime) or clears (None) when the key stops verifying; a
    /// time in the past expires it now.
    #[pyo3(signature = (key_id, expires_at, *, user_id=None))]
    fn set_api_key_expiry(
        &self,
        py: Python<'_>,
        key_id: Text,
        expires_at: Option<&Bound<'_, PyAny>>,
        user_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let expires_at = convert::opt_timestamp("expires_at", expires_at)?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.set_api_key_expiry(key_id, expires_at, user.as_deref()))
        })
    }

    /// Disables a key: it fails verification like an unknown key until enabled.
    #[pyo3(signature = (key_id, *, user_id=None))]
    fn disable_api_key(&self, py: Python<'_>, key_id: Text, user_id: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.disable_api_key(key_id, user.as_deref()))
        })
    }

    /// Enables a disabled key again.
    #[pyo3(signature = (key_id, *, user_id=None))]
    fn enable_api_key(&self, py: Python<'_>, key_id: Text, user_id: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.enable_api_key(key_id, user.as_deref()))
        })
    }

    /// A new secret for the same user and name; the old key keeps working
    /// for `grace_seconds` (0..=30 days).
    #[pyo3(signature = (key_id, grace_seconds, *, user_id=None))]
    fn rotate_api_key(
        &self,
        py: Python<'_>,
        key_id: Text,
        grace_seconds: &Bound<'_, PyAny>,
        user_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<NewApiKey> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let grace = convert::int("grace_seconds", grace_seconds)?;
            let user = convert::opt_user_id(user_id)?;
            let key = self.run(py, move |m| m.rotate_api_key(key_id, grace, user.as_deref()))?;
            NewApiKey::new(py, key)
        })
    }

    /// Caps what the key may spend per window (`daily`, `weekly`,
    /// `monthly`, `lifetime`); `limit=None` removes the cap.
    #[pyo3(signature = (key_id, limit, window, *, user_id=None))]
    fn set_key_limit(
        &self,
        py: Python<'_>,
        key_id: Text,
        limit: Option<&Bound<'_, PyAny>>,
        window: Text,
        user_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let limit = convert::opt_amount("limit", limit)?;
            let window = window.get(py, "window")?;
            let window = cg::SpendWindow::parse(&window).map_err(|e| to_py(py, e))?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.set_key_limit(key_id, limit, window, user.as_deref()))
        })
    }

    #[pyo3(signature = (user_id, *, secret=None, secret_sha256=None, name=None))]
    fn import_api_key(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        secret: Option<Text>,
        secret_sha256: Option<Text>,
        name: Option<Text>,
    ) -> PyResult<ApiKeyInfo> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let secret = convert::opt_secret(py, "secret", secret)?;
            let secret_sha256 = convert::opt_secret(py, "secret_sha256", secret_sha256)?;
            let name = convert::opt_text(py, "name", name)?;
            let info = self.run(py, move |m| {
                m.import_api_key(&user, secret.as_deref(), secret_sha256.as_deref(), name.as_deref())
            })?;
            ApiKeyInfo::new(py, info)
        })
    }

    #[pyo3(signature = (key_id, *, user_id=None))]
    fn revoke_api_key(&self, py: Python<'_>, key_id: Text, user_id: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.counted(py, || {
            let key_id = parse_id(py, KeyId::parse, "key_id", key_id)?;
            let user = convert::opt_user_id(user_id)?;
            self.run(py, move |m| m.revoke_api_key(key_id, user.as_deref()))
        })
    }

    fn list_api_keys(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<Vec<ApiKeyInfo>> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let keys = self.run(py, move |m| m.list_api_keys(&user))?;
            keys.into_iter().map(|k| ApiKeyInfo::new(py, k)).collect()
        })
    }

    #[pyo3(signature = (api_key, min_credits=None), text_signature = "($self, api_key, min_credits=1)")]
    fn verify_api_key_credits(
        &self,
        py: Python<'_>,
        api_key: Text,
        min_credits: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Verification> {
        self.counted(py, || {
            let api_key = api_key.api_key(py, "api_key")?;
            let min_credits = convert::opt_amount("min_credits", min_credits)?.unwrap_or(ONE_CREDIT);
            let v = self.run(py, move |m| m.verify_api_key_credits(&api_key, min_credits))?;
            Ok(Verification::new(v))
        })
    }

    /// Checks the key, not the credits: `InvalidApiKey` for a malformed,
    /// unknown or revoked key, never `InsufficientCredits`.
    fn authenticate_api_key(&self, py: Python<'_>, api_key: Text) -> PyResult<Verification> {
        self.counted(py, || {
            let api_key = api_key.api_key(py, "api_key")?;
            let v = self.run(py, move |m| m.authenticate_api_key(&api_key))?;
            Ok(Verification::new(v))
        })
    }

    #[pyo3(signature = (
        api_key=None, *, key_id=None, tokens=None, input_tokens=None, output_tokens=None, model=None, request_id=None,
    ))]
    fn record_usage(
        &self,
        py: Python<'_>,
        api_key: Option<Text>,
        key_id: Option<Text>,
        tokens: Option<&Bound<'_, PyAny>>,
        input_tokens: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<&Bound<'_, PyAny>>,
        model: Option<Text>,
        request_id: Option<Text>,
    ) -> PyResult<UsageCharge> {
        self.counted(py, || {
            let api_key = convert::opt_api_key(py, "api_key", api_key)?;
            let model = convert::opt_text(py, "model", model)?;
            let request_id = convert::opt_text(py, "request_id", request_id)?;
            let (input_tokens, output_tokens) = token_counts(py, tokens, input_tokens, output_tokens)?;
            let key_id = opt_id(py, KeyId::parse, "key_id", key_id)?;
            if api_key.is_some() == key_id.is_some() {
                return Err(invalid(py, "pass exactly one of api_key and key_id".into()));
            }
            let charge = self.run(py, move |m| {
                let key = match (&api_key, key_id) {
                    (Some(secret), _) => KeyRef::Secret(secret),
                    (None, Some(id)) => KeyRef::Id(id),
                    (None, None) => unreachable!("checked above"),
                };
                let usage = Usage { input_tokens, output_tokens, model: model.as_deref() };
                m.record_usage(key, usage, request_id.as_deref())
            })?;
            UsageCharge::new(py, charge)
        })
    }

    #[pyo3(
        signature = (
            api_key, *, credits=None, tokens=None, input_tokens=None, output_tokens=None, model=None, ttl_seconds=None,
            request_id=None,
        ),
        text_signature = "($self, api_key, *, credits=None, tokens=None, input_tokens=None, output_tokens=None, \
                          model=None, ttl_seconds=600, request_id=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &self,
        py: Python<'_>,
        api_key: Text,
        credits: Option<&Bound<'_, PyAny>>,
        tokens: Option<&Bound<'_, PyAny>>,
        input_tokens: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<&Bound<'_, PyAny>>,
        model: Option<Text>,
        ttl_seconds: Option<&Bound<'_, PyAny>>,
        request_id: Option<Text>,
    ) -> PyResult<Hold> {
        self.counted(py, || {
            let api_key = api_key.api_key(py, "api_key")?;
            let model = convert::opt_text(py, "model", model)?;
            let request_id = convert::opt_text(py, "request_id", request_id)?;
            let credits = convert::opt_amount("credits", credits)?;
            // `tokens=` alone keeps its own name in errors (`HoldAmount::Tokens`).
            let only_tokens = tokens.is_some() && input_tokens.is_none() && output_tokens.is_none();
            let counts = opt_token_counts(py, tokens, input_tokens, output_tokens)?;
            let ttl_seconds = convert::opt_int("ttl_seconds", ttl_seconds)?.unwrap_or(DEFAULT_TTL_SECONDS);
            let (credits, (input_tokens, output_tokens)) = match (credits, counts) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        py,
                        "pass exactly one of credits and token counts (tokens, or input_tokens and/or output_tokens)"
                            .into(),
                    ));
                }
                (Some(_), None) if model.is_some() => {
                    return Err(invalid(py, "model prices tokens: pass it with tokens, not with credits".into()));
                }
                (credits, counts) => (credits, counts.unwrap_or_default()),
            };
            let hold = self.run(py, move |m| {
                let model = model.as_deref();
                let amount = match credits {
                    Some(c) => HoldAmount::Credits(c),
                    None if only_tokens => HoldAmount::Tokens { tokens: input_tokens, model },
                    None => HoldAmount::Usage(Usage { input_tokens, output_tokens, model }),
                };
                m.reserve(&api_key, amount, ttl_seconds, request_id.as_deref())
            })?;
            Hold::new(py, hold)
        })
    }

    #[pyo3(signature = (hold_id, *, credits=None, tokens=None, input_tokens=None, output_tokens=None, model=None))]
    fn settle(
        &self,
        py: Python<'_>,
        hold_id: Text,
        credits: Option<&Bound<'_, PyAny>>,
        tokens: Option<&Bound<'_, PyAny>>,
        input_tokens: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<&Bound<'_, PyAny>>,
        model: Option<Text>,
    ) -> PyResult<UsageCharge> {
        self.counted(py, || {
            let hold_id = parse_id(py, HoldId::parse, "hold_id", hold_id)?;
            let model = convert::opt_text(py, "model", model)?;
            let credits = convert::opt_amount("credits", credits)?;
            let any_tokens = [tokens, input_tokens, output_tokens].iter().any(|t| t.is_some_and(|t| !t.is_none()));
            if credits.is_some() && (any_tokens || model.is_some()) {
                return Err(invalid(py, "pass credits alone, or token counts (and model), not both".into()));
            }
            let counts = match credits {
                Some(_) => (0, 0),
                None => opt_token_counts(py, tokens, input_tokens, output_tokens)?.ok_or_else(|| {
                    invalid(py, "no usage given: pass credits, or tokens / input_tokens and/or output_tokens".into())
                })?,
            };
            let charge = self.run(py, move |m| {
                let settlement = match credits {
                    Some(c) => Settlement::Credits(c),
                    None => {
                        let (input_tokens, output_tokens) = counts;
                        Settlement::Tokens(Usage { input_tokens, output_tokens, model: model.as_deref() })
                    }
                };
                m.settle(hold_id, settlement)
            })?;
            UsageCharge::new(py, charge)
        })
    }

    fn release(&self, py: Python<'_>, hold_id: Text) -> PyResult<()> {
        self.counted(py, || {
            let hold_id = parse_id(py, HoldId::parse, "hold_id", hold_id)?;
            self.run(py, move |m| m.release(hold_id))
        })
    }

    fn set_model_price(
        &self,
        py: Python<'_>,
        model: Text,
        input_per_1k: &Bound<'_, PyAny>,
        output_per_1k: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.counted(py, || {
            let model = model.get(py, "model")?;
            let input = convert::amount("input_per_1k", input_per_1k)?;
            let output = convert::amount("output_per_1k", output_per_1k)?;
            self.run(py, move |m| m.set_model_price(&model, input, output))
        })
    }

    fn list_model_prices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.counted(py, || {
            let prices = self.run(py, |m| m.list_model_prices())?;
            let out = PyDict::new(py);
            for (model, p) in prices {
                out.set_item(model, (dec(py, p.input_per_1k)?, dec(py, p.output_per_1k)?))?;
            }
            Ok(out)
        })
    }

    fn audit(&self, py: Python<'_>) -> PyResult<AuditReport> {
        self.counted(py, || {
            let report = self.run(py, |m| m.audit())?;
            AuditReport::new(py, report)
        })
    }

    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.counted(py, || {
            let counters = self.run(py, |m| Ok(m.metrics()))?;
            let out = PyDict::new(py);
            for (name, value) in counters {
                out.set_item(name, value)?;
            }
            Ok(out)
        })
    }

    fn metrics_prometheus(&self, py: Python<'_>) -> PyResult<String> {
        self.counted(py, || self.run(py, |m| Ok(m.metrics_prometheus())))
    }

    fn report(&self, py: Python<'_>) -> PyResult<Report> {
        self.counted(py, || {
            let report = self.run(py, |m| m.report())?;
            Report::new(py, report)
        })
    }
}

/// docs/reference.md defaults, applied when an argument is omitted or `None`.
const DEFAULT_PAGE_LIMIT: u32 = 50;
const DEFAULT_EVENTS_LIMIT: u32 = 100;
const DEFAULT_TTL_SECONDS: i64 = 600;
const ONE_CREDIT: Credits = Credits::from_micros(1_000_000);
