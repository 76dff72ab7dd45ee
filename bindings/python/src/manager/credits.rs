//! `LocalCreditManager` methods of credits and payments: balances and floors,
//! grants and their expiry, purchases, reversals, and the ledger's entries
//! and outbox events.

use super::LocalCreditManager;
use super::args::{entry_kind, grant_options, opt_id};
use crate::convert::{self, Text, dec};
use crate::errors::invalid;
use crate::types::{Account, Entry, Event, ExpirySweep, ImportSummary};
use creditgate::{self as cg, EntryId, EntryOptions, limits};
use pyo3::prelude::*;
use pyo3::types::PyString;

#[pymethods]
impl LocalCreditManager {
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
            let limit = convert::opt_int("limit", limit)?.unwrap_or(i64::from(limits::DEFAULT_EXPIRE_LIMIT));
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
            let limit = convert::opt_u32("limit", limit)?.unwrap_or(limits::DEFAULT_PAGE_LIMIT);
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
            let limit = convert::opt_u32("limit", limit)?.unwrap_or(limits::DEFAULT_EVENTS_LIMIT);
            let events = self.run(py, move |m| m.events(after, limit))?;
            Event::list(py, events)
        })
    }
}
