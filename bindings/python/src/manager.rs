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
//!
//! The methods are grouped by concept, one `#[pymethods]` block per file
//! (pyo3's `multiple-pymethods`): this file holds the class, opening and
//! schema, and `acting_as`; `credits.rs`, `keys.rs`, `usage.rs`, `analytics.rs`, `orgs.rs`, `topups.rs`, `webhooks.rs`,
//! `browse.rs` (the operator's reads) and `admin.rs` the rest;
//! `args.rs` the argument conversions they share.

mod admin;
mod analytics;
mod args;
mod browse;
mod credits;
mod keys;
mod orgs;
mod topups;
mod totals;
mod usage;
mod webhooks;

use crate::convert::{self, Text};
use crate::errors::to_py;
use crate::types::SchemaStatus;
use creditgate::{self as cg, Config, CreditManager, Error};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::sync::{Arc, Mutex};

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
    /// Shared with the managers `acting_as` returns: one pool, reopened
    /// once after a fork for all of them.
    handle: Arc<Mutex<Handle>>,
    /// The operator this manager writes as (`acting_as`), already checked.
    operator: Option<String>,
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
        match &self.operator {
            Some(op) => handle.manager.acting_as(op),
            None => Ok(handle.manager.clone()),
        }
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

/// The settings of `LocalCreditManager(...)`, all optional: a setting not
/// given comes from the environment (`Config::from_env`), else its default
/// (`creditgate::limits`). Built field by field, never positionally.
#[derive(Default)]
struct Settings<'a, 'py> {
    database_url: Option<Text>,
    min_credits_api_key: Option<&'a Bound<'py, PyAny>>,
    credits_per_usd: Option<&'a Bound<'py, PyAny>>,
    credits_per_1k_tokens: Option<&'a Bound<'py, PyAny>>,
    api_key_prefix: Option<Text>,
    api_key_pepper: Option<Text>,
    max_active_keys_per_user: Option<&'a Bound<'py, PyAny>>,
    max_active_holds_per_user: Option<&'a Bound<'py, PyAny>>,
    currency_rates: Option<&'a Bound<'py, PyAny>>,
    webhook_key: Option<Text>,
    webhook_allowed_hosts: Option<&'a Bound<'py, PyAny>>,
}

impl Settings<'_, '_> {
    fn config(self, py: Python<'_>) -> PyResult<Config> {
        // The URL may hold a password and the pepper is a secret: errors never show them.
        let database_url = convert::opt_secret(py, "database_url", self.database_url)?;
        let api_key_prefix = convert::opt_text(py, "api_key_prefix", self.api_key_prefix)?;
        let api_key_pepper = convert::opt_secret(py, "api_key_pepper", self.api_key_pepper)?;
        let min_credits = convert::opt_amount("min_credits_api_key", self.min_credits_api_key)?;
        let per_usd = convert::opt_int("credits_per_usd", self.credits_per_usd)?;
        let per_1k = convert::opt_amount("credits_per_1k_tokens", self.credits_per_1k_tokens)?;
        let max_keys = convert::opt_u32("max_active_keys_per_user", self.max_active_keys_per_user)?;
        let max_holds = convert::opt_u32("max_active_holds_per_user", self.max_active_holds_per_user)?;
        let rates = convert::currency_rates(self.currency_rates)?;
        let webhook_key = convert::opt_secret(py, "webhook_key", self.webhook_key)?;
        let allowed_hosts = allowed_hosts(py, self.webhook_allowed_hosts)?;
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
            if let Some(v) = webhook_key {
                c = c.webhook_key(&v)?;
            }
            if let Some(v) = allowed_hosts {
                c = c.webhook_allowed_hosts(v)?;
            }
            Ok(c)
        };
        build().map_err(|e| to_py(py, e))
    }
}

/// `webhook_allowed_hosts`: host names, IP addresses or CIDRs, as `str`s
/// (a bare `str` is refused: it would be read one character at a time).
fn allowed_hosts(py: Python<'_>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<String>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(None) };
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "webhook_allowed_hosts must be a list of str, e.g. [\"127.0.0.1\"], not a str",
        ));
    }
    let mut out = Vec::new();
    let items = obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!("webhook_allowed_hosts must be a list of str, not {}", convert::type_name(obj)))
    })?;
    for item in items {
        let host: Text = item?.extract()?;
        out.push(host.get(py, "webhook_allowed_hosts")?);
        if out.len() > cg::limits::MAX_WEBHOOK_ALLOWED_HOSTS {
            let most = cg::limits::MAX_WEBHOOK_ALLOWED_HOSTS;
            return Err(crate::errors::invalid(py, format!("webhook_allowed_hosts lists more than {most} entries")));
        }
    }
    Ok(Some(out))
}

#[pymethods]
impl LocalCreditManager {
    #[new]
    #[pyo3(signature = (
        database_url=None, *, min_credits_api_key=None, credits_per_usd=None, credits_per_1k_tokens=None,
        api_key_prefix=None, api_key_pepper=None, max_active_keys_per_user=None, max_active_holds_per_user=None,
        currency_rates=None, webhook_key=None, webhook_allowed_hosts=None,
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
        webhook_key: Option<Text>,
        webhook_allowed_hosts: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let settings = Settings {
            database_url,
            min_credits_api_key,
            credits_per_usd,
            credits_per_1k_tokens,
            api_key_prefix,
            api_key_pepper,
            max_active_keys_per_user,
            max_active_holds_per_user,
            currency_rates,
            webhook_key,
            webhook_allowed_hosts,
        };
        let config = settings.config(py)?;
        let opened = config.clone();
        let manager = py.detach(move || CreditManager::open(opened)).map_err(|e| to_py(py, e))?;
        // docs/reference.md: the resolved location is logged on open (password redacted).
        py.import("logging")?
            .call_method1("getLogger", ("creditgate",))?
            .call_method1("info", ("opened ledger %s", manager.database_url()))?;
        let handle = Arc::new(Mutex::new(Handle { pid: std::process::id(), manager }));
        Ok(LocalCreditManager { config, handle, operator: None })
    }

    /// A manager on the same ledger (the same connections and counters)
    /// whose writes record `operator` in every entry's metadata and every
    /// event's data, in the same transaction.
    fn acting_as(&self, py: Python<'_>, operator: Text) -> PyResult<LocalCreditManager> {
        self.counted(py, || {
            let operator = operator.get(py, "operator")?;
            // Checked here, once: no storage work, so no need to reopen after a fork.
            let plain = self.handle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).manager.clone();
            plain.acting_as(&operator).map_err(|e| to_py(py, e))?;
            let handle = Arc::clone(&self.handle);
            Ok(LocalCreditManager { config: self.config.clone(), handle, operator: Some(operator) })
        })
    }

    /// The operator of a manager from `acting_as` (None: a plain manager).
    #[getter]
    fn operator(&self) -> Option<String> {
        self.operator.clone()
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
        let url = PyString::new(py, &self.database_url()).repr()?;
        Ok(match &self.operator {
            Some(op) => format!("LocalCreditManager(database_url={url}, operator={})", PyString::new(py, op).repr()?),
            None => format!("LocalCreditManager(database_url={url})"),
        })
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
        let config = Settings { database_url, ..Settings::default() }.config(py)?;
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
}
