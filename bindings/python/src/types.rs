//! The result objects of docs/reference.md: small frozen classes whose attributes are
//! plain Python values (`str`, `int`, `bool`, `Decimal`, `datetime`, `None`),
//! converted once when the object is made (`Verification`, the hot path's,
//! converts each when read). `repr` shows every field that is
//! not `None`, except a secret; `to_dict()` gives the fields as a `dict`.

use crate::convert::{datetime, dec, dec_str, json_dict, obj, opt_datetime};
use creditgate as cg;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// Fields never shown by `repr`/`str`.
const HIDDEN_IN_REPR: &[&str] = &["secret"];

fn repr(py: Python<'_>, class: &str, fields: &[(&str, &Py<PyAny>)]) -> PyResult<String> {
    let mut parts = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        let value = value.bind(py);
        if value.is_none() || HIDDEN_IN_REPR.contains(name) {
            continue;
        }
        parts.push(format!("{name}={}", value.repr()?));
    }
    Ok(format!("{class}({})", parts.join(", ")))
}

fn to_dict<'py>(py: Python<'py>, fields: &[(&str, &Py<PyAny>)]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in fields {
        dict.set_item(*name, value.bind(py))?;
    }
    Ok(dict)
}

/// A frozen class with one read-only attribute per field, `__repr__` and
/// `to_dict`; extra methods go in the braces after the fields.
macro_rules! record {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* $(,)? } $({ $($extra:tt)* })?) => {
        $(#[$doc])*
        #[pyclass(module = "creditgate", frozen, get_all)]
        pub struct $name {
            $(pub $field: Py<PyAny>,)*
        }

        impl $name {
            fn fields(&self) -> Vec<(&'static str, &Py<PyAny>)> {
                vec![$((stringify!($field), &self.$field)),*]
            }
        }

        #[pymethods]
        impl $name {
            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                repr(py, stringify!($name), &self.fields())
            }

            /// The fields as a new `dict` (for JSON output and logging).
            fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
                to_dict(py, &self.fields())
            }

            $($($extra)*)?
        }
    };
}

// Prices, usage rows and statements (after `record!`, which they use).
mod browse;
mod pricing;
mod topups;
mod totals;
pub use browse::{AccountPage, AccountSummary, DayFlow};
pub use pricing::{ModelPrice, PriceVersion, Statement, StatementLine, UsageRow};
pub use topups::{AutoTopup, Topup};
pub use totals::DailyTotal;
// Webhook subscriptions, dead letters and delivery reports.
mod webhooks;
pub use webhooks::{DeadLetter, DeliveryReport, WebhookSubscription};

record!(
    /// One append-only ledger entry.
    Entry {
        id, seq, user_id, kind, amount, balance_after, idempotency_key, reference, api_key_id, input_tokens,
        output_tokens, model, amount_minor, currency, metadata, created_at, replayed, member_id, project,
        cached_input_tokens, cache_write_tokens, price,
    }
);

impl Entry {
    pub fn new(py: Python<'_>, e: cg::Entry) -> PyResult<Entry> {
        Ok(Entry {
            id: obj(py, e.id.to_string())?,
            seq: obj(py, e.seq)?,
            user_id: obj(py, e.user_id)?,
            kind: obj(py, e.kind.as_str())?,
            amount: dec(py, e.amount)?,
            balance_after: dec(py, e.balance_after)?,
            idempotency_key: obj(py, e.idempotency_key)?,
            reference: obj(py, e.reference)?,
            api_key_id: obj(py, e.api_key_id.map(|k| k.to_string()))?,
            input_tokens: obj(py, e.input_tokens)?,
            output_tokens: obj(py, e.output_tokens)?,
            model: obj(py, e.model)?,
            amount_minor: obj(py, e.amount_minor)?,
            currency: obj(py, e.currency)?,
            metadata: match &e.metadata {
                Some(m) => json_dict(py, m)?,
                None => py.None(),
            },
            created_at: datetime(py, e.created_at)?,
            replayed: obj(py, e.replayed)?,
            member_id: obj(py, e.member_id)?,
            project: obj(py, e.project)?,
            cached_input_tokens: obj(py, e.cached_input_tokens)?,
            cache_write_tokens: obj(py, e.cache_write_tokens)?,
            price: ModelPrice::opt(py, e.price)?,
        })
    }

    pub fn list(py: Python<'_>, entries: Vec<cg::Entry>) -> PyResult<Vec<Entry>> {
        entries.into_iter().map(|e| Entry::new(py, e)).collect()
    }
}

record!(
    /// An account: ledger balance, active holds and what is available; its
    /// live grants in draw-down order; its auto top-up rule and this
    /// month's top-ups.
    Account {
        user_id, balance, held, available, min_balance, lifetime_purchased, lifetime_used, active_keys,
        first_key_issued, created_at, grants, organisation, auto_topup, topups_this_month,
    }
);

record!(
    /// A grant (lot): the credits one entry added and what is left of them.
    /// Compared and hashed by value, so two `Account`s (and their
    /// `to_dict()`s) with the same grants are equal.
    Grant {
        grant_id, user_id, category, priority, amount, remaining, expires_at, created_at, source_entry_id,
        payment_id, member_id, api_key_id, allowance_id,
    }
    {
        fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
            let Ok(other) = other.cast::<Grant>() else { return Ok(false) };
            let other = other.get();
            for ((_, a), (_, b)) in self.fields().into_iter().zip(other.fields()) {
                if !a.bind(py).eq(b.bind(py))? {
                    return Ok(false);
                }
            }
            Ok(true)
        }

        fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
            let values: Vec<&Py<PyAny>> = self.fields().into_iter().map(|(_, v)| v).collect();
            pyo3::types::PyTuple::new(py, values)?.hash()
        }
    }
);

impl Grant {
    pub fn new(py: Python<'_>, g: cg::Grant) -> PyResult<Grant> {
        Ok(Grant {
            grant_id: obj(py, g.grant_id.0)?,
            user_id: obj(py, g.user_id)?,
            category: obj(py, g.category.as_str())?,
            priority: obj(py, g.priority)?,
            amount: dec(py, g.amount)?,
            remaining: dec(py, g.remaining)?,
            expires_at: opt_datetime(py, g.expires_at)?,
            created_at: datetime(py, g.created_at)?,
            source_entry_id: obj(py, g.source_entry_id.map(|e| e.to_string()))?,
            payment_id: obj(py, g.payment_id)?,
            member_id: obj(py, g.member_id)?,
            api_key_id: obj(py, g.api_key_id.map(|k| k.to_string()))?,
            allowance_id: obj(py, g.allowance_id)?,
        })
    }
}

record!(
    /// What `expire_grants()` did: accounts swept, `expiry` entries written,
    /// credits removed, allowance refills written.
    ExpirySweep { accounts, entries, credits, refills }
);

impl ExpirySweep {
    pub fn new(py: Python<'_>, s: cg::ExpirySweep) -> PyResult<ExpirySweep> {
        Ok(ExpirySweep {
            accounts: obj(py, s.accounts)?,
            entries: obj(py, s.entries)?,
            credits: dec(py, s.credits)?,
            refills: obj(py, s.refills)?,
        })
    }
}

impl Account {
    pub fn new(py: Python<'_>, a: cg::Account) -> PyResult<Account> {
        Ok(Account {
            user_id: obj(py, a.user_id)?,
            balance: dec(py, a.balance)?,
            held: dec(py, a.held)?,
            available: dec(py, a.available)?,
            min_balance: dec(py, a.min_balance)?,
            lifetime_purchased: dec(py, a.lifetime_purchased)?,
            lifetime_used: dec(py, a.lifetime_used)?,
            active_keys: obj(py, a.active_keys)?,
            first_key_issued: obj(py, a.first_key_issued)?,
            created_at: opt_datetime(py, a.created_at)?,
            grants: {
                let list = PyList::empty(py);
                for g in a.grants {
                    list.append(Py::new(py, Grant::new(py, g)?)?)?;
                }
                list.into_any().unbind()
            },
            organisation: obj(py, a.organisation)?,
            auto_topup: AutoTopup::opt(py, a.auto_topup)?,
            topups_this_month: Topup::py_list(py, a.topups_this_month)?,
        })
    }
}

record!(
    /// Whether a user may create an API key now; `bool()` is `allowed`.
    KeyEligibility { allowed, is_first_key, required, available }
    {
        fn __bool__(&self, py: Python<'_>) -> PyResult<bool> {
            self.allowed.bind(py).is_truthy()
        }
    }
);

impl KeyEligibility {
    pub fn new(py: Python<'_>, e: cg::KeyEligibility) -> PyResult<KeyEligibility> {
        Ok(KeyEligibility {
            allowed: obj(py, e.allowed)?,
            is_first_key: obj(py, e.is_first_key)?,
            required: dec(py, e.required)?,
            available: dec(py, e.available)?,
        })
    }
}

record!(
    /// A new API key. `secret` is shown once and never in `repr`/`str`.
    NewApiKey { secret, key_id, user_id, name, prefix, created_at }
);

impl NewApiKey {
    pub fn new(py: Python<'_>, k: cg::NewApiKey) -> PyResult<NewApiKey> {
        Ok(NewApiKey {
            secret: obj(py, k.secret.expose())?,
            key_id: obj(py, k.key_id.to_string())?,
            user_id: obj(py, k.user_id)?,
            name: obj(py, k.name)?,
            prefix: obj(py, k.prefix)?,
            created_at: datetime(py, k.created_at)?,
        })
    }
}

record!(
    /// An API key as listed: never its secret.
    ApiKeyInfo {
        key_id, user_id, name, prefix, created_at, last_used_at, revoked_at, legacy, expires_at, disabled,
        rotated_to, spend_limit, spend_window, spent_in_window, window_resets_at, project
    }
);

impl ApiKeyInfo {
    pub fn new(py: Python<'_>, k: cg::ApiKeyInfo) -> PyResult<ApiKeyInfo> {
        Ok(ApiKeyInfo {
            key_id: obj(py, k.key_id.to_string())?,
            user_id: obj(py, k.user_id)?,
            name: obj(py, k.name)?,
            prefix: obj(py, k.prefix)?,
            created_at: datetime(py, k.created_at)?,
            last_used_at: opt_datetime(py, k.last_used_at)?,
            revoked_at: opt_datetime(py, k.revoked_at)?,
            legacy: obj(py, k.legacy)?,
            expires_at: opt_datetime(py, k.expires_at)?,
            disabled: obj(py, k.disabled)?,
            rotated_to: obj(py, k.rotated_to.map(|id| id.to_string()))?,
            spend_limit: match k.spend_limit {
                Some(l) => dec(py, l)?,
                None => py.None(),
            },
            spend_window: obj(py, k.spend_window.map(|w| w.as_str()))?,
            spent_in_window: dec(py, k.spent_in_window)?,
            window_resets_at: opt_datetime(py, k.window_resets_at)?,
            project: obj(py, k.project)?,
        })
    }
}

/// A verified key: whose it is, what its account has available and what
/// its spend cap leaves (`key_remaining`, None without a cap). Verify is the
/// hot path, and most callers read one attribute or none: each attribute is
/// converted when read, not when the object is made.
#[pyclass(module = "creditgate", frozen)]
pub struct Verification(cg::Verification);

impl Verification {
    pub fn new(v: cg::Verification) -> Verification {
        Verification(v)
    }

    fn fields(&self, py: Python<'_>) -> PyResult<Vec<(&'static str, Py<PyAny>)>> {
        Ok(vec![
            ("user_id", obj(py, self.user_id())?),
            ("key_id", obj(py, self.key_id())?),
            ("available", self.available(py)?),
            ("key_remaining", self.key_remaining(py)?),
            ("member_remaining", self.member_remaining(py)?),
            ("project_remaining", self.project_remaining(py)?),
        ])
    }
}

#[pymethods]
impl Verification {
    #[getter]
    fn user_id(&self) -> &str {
        &self.0.user_id
    }

    #[getter]
    fn key_id(&self) -> String {
        self.0.key_id.to_string()
    }

    #[getter]
    fn available(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        dec(py, self.0.available)
    }

    #[getter]
    fn key_remaining(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.0.key_remaining.map_or_else(|| Ok(py.None()), |r| dec(py, r))
    }

    #[getter]
    fn member_remaining(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        opt_dec(py, self.0.member_remaining)
    }

    #[getter]
    fn project_remaining(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        opt_dec(py, self.0.project_remaining)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let fields = self.fields(py)?;
        repr(py, "Verification", &fields.iter().map(|(n, v)| (*n, v)).collect::<Vec<_>>())
    }

    /// The fields as a new `dict` (for JSON output and logging).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = self.fields(py)?;
        to_dict(py, &fields.iter().map(|(n, v)| (*n, v)).collect::<Vec<_>>())
    }
}

record!(
    /// A usage charge (`record_usage`, `settle`).
    UsageCharge { entry_id, user_id, tokens, charged, balance, overdraft, replayed }
);

impl UsageCharge {
    pub fn new(py: Python<'_>, c: cg::UsageCharge) -> PyResult<UsageCharge> {
        Ok(UsageCharge {
            entry_id: obj(py, c.entry_id.to_string())?,
            user_id: obj(py, c.user_id)?,
            tokens: obj(py, c.tokens)?,
            charged: dec(py, c.charged)?,
            balance: dec(py, c.balance)?,
            overdraft: obj(py, c.overdraft)?,
            replayed: obj(py, c.replayed)?,
        })
    }
}

record!(
    /// Credits held by `reserve` until `settle`, `release` or expiry.
    /// `status` is `"active"` for a new hold; on a replay (`replayed`), where
    /// the first hold stands now: `"active"`, `"settled"`, `"released"` or
    /// `"expired"` (only an active hold still covers a call).
    Hold { hold_id, user_id, amount, expires_at, status, replayed }
);

impl Hold {
    pub fn list(py: Python<'_>, holds: Vec<cg::Hold>) -> PyResult<Vec<Hold>> {
        holds.into_iter().map(|h| Hold::new(py, h)).collect()
    }

    pub fn new(py: Python<'_>, h: cg::Hold) -> PyResult<Hold> {
        Ok(Hold {
            hold_id: obj(py, h.hold_id.to_string())?,
            user_id: obj(py, h.user_id)?,
            amount: dec(py, h.amount)?,
            expires_at: datetime(py, h.expires_at)?,
            status: obj(py, h.status.as_str())?,
            replayed: obj(py, h.replayed)?,
        })
    }
}

record!(
    /// One problem found by `audit()`.
    AuditMismatch { user_id, problem, detail }
);

record!(
    /// The result of `audit()`: `ok` when every account adds up.
    AuditReport { ok, accounts_checked, entries_checked, mismatches }
);

impl AuditReport {
    pub fn new(py: Python<'_>, r: cg::AuditReport) -> PyResult<AuditReport> {
        let mismatches = PyList::empty(py);
        for m in r.mismatches {
            let m = AuditMismatch {
                user_id: obj(py, m.user_id)?,
                problem: obj(py, m.problem)?,
                detail: obj(py, m.detail)?,
            };
            mismatches.append(Py::new(py, m)?)?;
        }
        Ok(AuditReport {
            ok: obj(py, r.ok)?,
            accounts_checked: obj(py, r.accounts_checked)?,
            entries_checked: obj(py, r.entries_checked)?,
            mismatches: mismatches.into_any().unbind(),
        })
    }
}

record!(
    /// A process's metrics at one moment (`LocalCreditManager.metrics_snapshot()`):
    /// what `metrics_prometheus()` writes, as numbers. `counters`: exposition
    /// name -> (help, value), in exposition order; `errors`: error code ->
    /// count of `errors_total`; `histograms`: `HistogramSample`s.
    MetricsSnapshot { counters, errors_help, errors, histograms }
);

record!(
    /// One latency histogram of a `MetricsSnapshot`: `buckets` are
    /// (`le` label, cumulative count), ending with ("+Inf", count).
    HistogramSample { name, help, buckets, sum_micros }
);

impl MetricsSnapshot {
    pub fn new(py: Python<'_>, s: cg::MetricsSnapshot) -> PyResult<MetricsSnapshot> {
        let counters = PyDict::new(py);
        for c in s.counters {
            counters.set_item(c.name, (c.help, c.value))?;
        }
        let errors = PyDict::new(py);
        for (code, value) in s.errors {
            errors.set_item(code.as_str(), value)?;
        }
        let histograms = PyList::empty(py);
        for h in s.histograms {
            let sample = HistogramSample {
                name: obj(py, h.name)?,
                help: obj(py, h.help)?,
                buckets: obj(py, h.buckets)?,
                sum_micros: obj(py, h.sum_micros)?,
            };
            histograms.append(Py::new(py, sample)?)?;
        }
        Ok(MetricsSnapshot {
            counters: counters.into_any().unbind(),
            errors_help: obj(py, cg::ERRORS_HELP)?,
            errors: errors.into_any().unbind(),
            histograms: histograms.into_any().unbind(),
        })
    }
}

record!(
    /// Business figures from the database (docs/reference.md).
    Report {
        users, paying_users, users_attempted_key, key_generation_attempts, key_generation_successes,
        purchase_conversion_rate, credits_purchased, revenue_usd_minor, revenue_per_paying_user_usd_minor,
        revenue_minor_by_currency, credits_used, outstanding_balance, outstanding_holds, overdraft_receivable, allowance_issued,
        allowance_used, schema_version, library_schema_version,
    }
);

impl Report {
    pub fn new(py: Python<'_>, r: cg::Report) -> PyResult<Report> {
        Ok(Report {
            users: obj(py, r.users)?,
            paying_users: obj(py, r.paying_users)?,
            users_attempted_key: obj(py, r.users_attempted_key)?,
            key_generation_attempts: obj(py, r.key_generation_attempts)?,
            key_generation_successes: obj(py, r.key_generation_successes)?,
            purchase_conversion_rate: dec_str(py, &r.purchase_conversion_rate())?,
            credits_purchased: dec(py, r.credits_purchased)?,
            revenue_usd_minor: obj(py, r.revenue_usd_minor)?,
            revenue_per_paying_user_usd_minor: obj(py, r.revenue_per_paying_user_usd_minor)?,
            revenue_minor_by_currency: obj(py, r.revenue_minor_by_currency)?,
            credits_used: dec(py, r.credits_used)?,
            outstanding_balance: dec(py, r.outstanding_balance)?,
            outstanding_holds: dec(py, r.outstanding_holds)?,
            overdraft_receivable: dec(py, r.overdraft_receivable)?,
            allowance_issued: dec(py, r.allowance_issued)?,
            allowance_used: dec(py, r.allowance_used)?,
            schema_version: obj(py, r.schema_version)?,
            library_schema_version: obj(py, r.library_schema_version)?,
        })
    }
}

record!(
    /// A ledger's schema version against this library's
    /// (`LocalCreditManager.schema_status`): `pending` lists the migrations
    /// `migrate()` would apply.
    SchemaStatus { database_version, library_version, pending, newer_than_library }
);

impl SchemaStatus {
    pub fn new(py: Python<'_>, s: cg::SchemaStatus) -> PyResult<SchemaStatus> {
        Ok(SchemaStatus {
            database_version: obj(py, s.database_version)?,
            library_version: obj(py, s.library_version)?,
            newer_than_library: obj(py, s.newer_than_library())?,
            pending: obj(py, s.pending)?,
        })
    }
}

record!(
    /// What `LocalCreditManager.import_users` did (counts).
    ImportSummary { users, balances_imported, balances_already_imported, balances_skipped, keys }
);

impl ImportSummary {
    pub fn new(py: Python<'_>, s: cg::ImportSummary) -> PyResult<ImportSummary> {
        Ok(ImportSummary {
            users: obj(py, s.users)?,
            balances_imported: obj(py, s.balances_imported)?,
            balances_already_imported: obj(py, s.balances_already_imported)?,
            balances_skipped: obj(py, s.balances_skipped)?,
            keys: obj(py, s.keys)?,
        })
    }
}

record!(
    /// One outbox event (`events()`): `kind` names it, `data` holds its
    /// details, amounts as decimal strings.
    Event { id, kind, user_id, api_key_id, data, created_at }
);

impl Event {
    pub fn new(py: Python<'_>, e: &cg::Event) -> PyResult<Event> {
        Ok(Event {
            id: obj(py, e.id)?,
            kind: obj(py, e.kind.as_str())?,
            user_id: obj(py, e.user_id.as_str())?,
            api_key_id: obj(py, e.api_key_id.map(|k| k.to_string()))?,
            data: match &e.data {
                serde_json::Value::Object(m) => json_dict(py, m)?,
                _ => PyDict::new(py).into_any().unbind(),
            },
            created_at: datetime(py, e.created_at)?,
        })
    }

    pub fn list(py: Python<'_>, events: Vec<cg::Event>) -> PyResult<Vec<Event>> {
        events.iter().map(|e| Event::new(py, e)).collect()
    }
}

/// An optional amount: `Decimal` or `None`.
fn opt_dec(py: Python<'_>, c: Option<cg::Credits>) -> PyResult<Py<PyAny>> {
    c.map_or_else(|| Ok(py.None()), |c| dec(py, c))
}

record!(
    /// A member's or a project's budget as it stands: `spent` in the
    /// current window, `remaining` what verify and reserve still allow
    /// (limit - spent - active holds through its keys; may be negative).
    Budget { scope, name, limit, window, low_threshold, spent, remaining, resets_at }
);

impl Budget {
    fn opt(py: Python<'_>, b: Option<cg::Budget>) -> PyResult<Py<PyAny>> {
        let Some(b) = b else { return Ok(py.None()) };
        let budget = Budget {
            scope: obj(py, b.scope)?,
            name: obj(py, b.name)?,
            limit: dec(py, b.limit)?,
            window: obj(py, b.window.as_str())?,
            low_threshold: opt_dec(py, b.low_threshold)?,
            spent: dec(py, b.spent)?,
            remaining: dec(py, b.remaining)?,
            resets_at: opt_datetime(py, b.resets_at)?,
        };
        Ok(Py::new(py, budget)?.into_any())
    }
}

record!(
    /// A member of an organisation (`add_member`, `members`): its keys
    /// charge the organisation.
    Member { org_id, user_id, joined_at, budget }
);

impl Member {
    pub fn new(py: Python<'_>, m: cg::Member) -> PyResult<Member> {
        Ok(Member {
            org_id: obj(py, m.org_id)?,
            user_id: obj(py, m.user_id)?,
            joined_at: datetime(py, m.joined_at)?,
            budget: Budget::opt(py, m.budget)?,
        })
    }

    pub fn list(py: Python<'_>, members: Vec<cg::Member>) -> PyResult<Vec<Member>> {
        members.into_iter().map(|m| Member::new(py, m)).collect()
    }
}

record!(
    /// A project of an organisation: a named group of its keys (`keys`
    /// counts them, revoked ones included).
    Project { org_id, name, created_at, keys, budget }
);

impl Project {
    pub fn new(py: Python<'_>, p: cg::Project) -> PyResult<Project> {
        Ok(Project {
            org_id: obj(py, p.org_id)?,
            name: obj(py, p.name)?,
            created_at: datetime(py, p.created_at)?,
            keys: obj(py, p.keys)?,
            budget: Budget::opt(py, p.budget)?,
        })
    }

    pub fn list(py: Python<'_>, projects: Vec<cg::Project>) -> PyResult<Vec<Project>> {
        projects.into_iter().map(|p| Project::new(py, p)).collect()
    }
}

record!(
    /// What one member spent of its organisation's credits (`member_usage`).
    MemberUsage { member_id, requests, tokens, credits }
);

impl MemberUsage {
    pub fn list(py: Python<'_>, usage: Vec<cg::MemberUsage>) -> PyResult<Vec<MemberUsage>> {
        usage
            .into_iter()
            .map(|u| {
                Ok(MemberUsage {
                    member_id: obj(py, u.member_id)?,
                    requests: obj(py, u.requests)?,
                    tokens: obj(py, u.tokens)?,
                    credits: dec(py, u.credits)?,
                })
            })
            .collect()
    }
}

record!(
    /// An allowance: `amount` every `period` on `user_id`'s account, for
    /// the whole account or only one member (`member_id`) or key
    /// (`api_key_id`); `rollover_cap` None means rollover off.
    Allowance {
        allowance_id, user_id, member_id, api_key_id, amount, period, rollover_cap, next_refill_at, created_at,
    }
);

impl Allowance {
    pub fn new(py: Python<'_>, a: cg::Allowance) -> PyResult<Allowance> {
        Ok(Allowance {
            allowance_id: obj(py, a.allowance_id)?,
            user_id: obj(py, a.user_id)?,
            member_id: obj(py, a.member_id)?,
            api_key_id: obj(py, a.api_key_id.map(|k| k.to_string()))?,
            amount: dec(py, a.amount)?,
            period: obj(py, a.period.as_str())?,
            rollover_cap: opt_dec(py, a.rollover_cap)?,
            next_refill_at: datetime(py, a.next_refill_at)?,
            created_at: datetime(py, a.created_at)?,
        })
    }

    pub fn list(py: Python<'_>, allowances: Vec<cg::Allowance>) -> PyResult<Vec<Allowance>> {
        allowances.into_iter().map(|a| Allowance::new(py, a)).collect()
    }
}

/// Registers every result class on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Entry>()?;
    m.add_class::<Account>()?;
    m.add_class::<Grant>()?;
    m.add_class::<ExpirySweep>()?;
    m.add_class::<KeyEligibility>()?;
    m.add_class::<NewApiKey>()?;
    m.add_class::<ApiKeyInfo>()?;
    m.add_class::<Verification>()?;
    m.add_class::<UsageCharge>()?;
    m.add_class::<Hold>()?;
    m.add_class::<AuditMismatch>()?;
    m.add_class::<AuditReport>()?;
    m.add_class::<Report>()?;
    m.add_class::<ImportSummary>()?;
    m.add_class::<SchemaStatus>()?;
    m.add_class::<Event>()?;
    m.add_class::<MetricsSnapshot>()?;
    m.add_class::<HistogramSample>()?;
    m.add_class::<Budget>()?;
    m.add_class::<Member>()?;
    m.add_class::<Project>()?;
    m.add_class::<MemberUsage>()?;
    m.add_class::<Allowance>()?;
    m.add_class::<ModelPrice>()?;
    m.add_class::<PriceVersion>()?;
    m.add_class::<UsageRow>()?;
    m.add_class::<DailyTotal>()?;
    m.add_class::<StatementLine>()?;
    m.add_class::<Statement>()?;
    m.add_class::<AutoTopup>()?;
    m.add_class::<Topup>()?;
    m.add_class::<WebhookSubscription>()?;
    m.add_class::<DeadLetter>()?;
    m.add_class::<DeliveryReport>()?;
    m.add_class::<AccountSummary>()?;
    m.add_class::<AccountPage>()?;
    m.add_class::<DayFlow>()?;
    Ok(())
}
