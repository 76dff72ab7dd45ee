//! The result objects of the operator's reads: `AccountSummary` and
//! `AccountPage` (`list_accounts`), `DayFlow` (`daily_flows`).

use super::{repr, to_dict};
use crate::convert::{datetime, dec, obj, opt_datetime};
use creditgate as cg;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

record!(
    /// One account of a `list_accounts` page: its balance as the account
    /// row holds it, its floor, what active holds hold, its active keys.
    AccountSummary { user_id, balance, min_balance, held, active_keys, created_at }
);

impl AccountSummary {
    fn new(py: Python<'_>, a: cg::AccountSummary) -> PyResult<AccountSummary> {
        Ok(AccountSummary {
            user_id: obj(py, a.user_id)?,
            balance: dec(py, a.balance)?,
            min_balance: dec(py, a.min_balance)?,
            held: dec(py, a.held)?,
            active_keys: obj(py, a.active_keys)?,
            created_at: opt_datetime(py, a.created_at)?,
        })
    }
}

record!(
    /// A page of `list_accounts`: `accounts` (a list of `AccountSummary`)
    /// and `total`, how many accounts match the filters.
    AccountPage { accounts, total }
);

impl AccountPage {
    pub fn new(py: Python<'_>, p: cg::AccountPage) -> PyResult<AccountPage> {
        let accounts = PyList::empty(py);
        for a in p.accounts {
            accounts.append(Py::new(py, AccountSummary::new(py, a)?)?)?;
        }
        Ok(AccountPage { accounts: accounts.into_any().unbind(), total: obj(py, p.total)? })
    }
}

record!(
    /// One UTC day of `daily_flows`: credits purchased and used as the
    /// report counts them, and the day's entries.
    DayFlow { day, purchased, used, entries }
);

impl DayFlow {
    pub fn list(py: Python<'_>, flows: Vec<cg::DayFlow>) -> PyResult<Vec<DayFlow>> {
        flows
            .into_iter()
            .map(|f| {
                Ok(DayFlow {
                    day: datetime(py, f.day)?,
                    purchased: dec(py, f.purchased)?,
                    used: dec(py, f.used)?,
                    entries: obj(py, f.entries)?,
                })
            })
            .collect()
    }
}
