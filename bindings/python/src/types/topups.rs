//! The result objects of auto top-up (docs/auto-topup.md): `AutoTopup`, an
//! account's rule, and `Topup`, one requested top-up.

use super::{opt_dec, repr, to_dict};
use crate::convert::{datetime, dec, obj};
use creditgate as cg;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

record!(
    /// An account's auto top-up rule: when its available balance crosses
    /// below `threshold`, request `amount` (or what takes it up to
    /// `target`: exactly one is set), at most `max_per_month` times and
    /// `monthly_cap` credits per calendar month (UTC).
    AutoTopup { threshold, amount, target, max_per_month, monthly_cap }
);

impl AutoTopup {
    pub fn opt(py: Python<'_>, r: Option<cg::AutoTopup>) -> PyResult<Py<PyAny>> {
        let Some(r) = r else { return Ok(py.None()) };
        let (amount, target) = match r.amount {
            cg::TopupAmount::Fixed(a) => (Some(a), None),
            cg::TopupAmount::UpTo(t) => (None, Some(t)),
        };
        let rule = AutoTopup {
            threshold: dec(py, r.threshold)?,
            amount: opt_dec(py, amount)?,
            target: opt_dec(py, target)?,
            max_per_month: obj(py, r.max_per_month)?,
            monthly_cap: dec(py, r.monthly_cap)?,
        };
        Ok(Py::new(py, rule)?.into_any())
    }
}

record!(
    /// A top-up a rule requested: pay it with `record_payment` under `id`
    /// as the payment id. `status` is `requested`, `paid` or `failed`.
    Topup { id, user_id, amount, status, reason, entry_id, created_at, updated_at }
);

impl Topup {
    pub fn new(py: Python<'_>, t: cg::Topup) -> PyResult<Topup> {
        Ok(Topup {
            id: obj(py, t.id)?,
            user_id: obj(py, t.user_id)?,
            amount: dec(py, t.amount)?,
            status: obj(py, t.status.as_str())?,
            reason: obj(py, t.reason)?,
            entry_id: obj(py, t.entry_id.map(|e| e.to_string()))?,
            created_at: datetime(py, t.created_at)?,
            updated_at: datetime(py, t.updated_at)?,
        })
    }

    pub fn opt(py: Python<'_>, t: Option<cg::Topup>) -> PyResult<Py<PyAny>> {
        t.map_or_else(|| Ok(py.None()), |t| Ok(Py::new(py, Topup::new(py, t)?)?.into_any()))
    }

    pub fn list(py: Python<'_>, ts: Vec<cg::Topup>) -> PyResult<Vec<Topup>> {
        ts.into_iter().map(|t| Topup::new(py, t)).collect()
    }

    /// A `list` object (for `Account.topups_this_month`).
    pub fn py_list(py: Python<'_>, ts: Vec<cg::Topup>) -> PyResult<Py<PyAny>> {
        let list = PyList::empty(py);
        for t in ts {
            list.append(Py::new(py, Topup::new(py, t)?)?)?;
        }
        Ok(list.into_any().unbind())
    }
}
