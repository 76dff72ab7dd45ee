//! `LocalCreditManager` methods of auto top-up (docs/auto-topup.md).

use super::LocalCreditManager;
use crate::convert::{self, Text};
use crate::errors::invalid;
use crate::types::Topup;
use creditgate::{AutoTopup, TopupAmount, limits};
use pyo3::prelude::*;

#[pymethods]
impl LocalCreditManager {
    /// Sets `user_id`'s auto top-up rule: when its available balance
    /// crosses below `threshold`, request `amount` credits (or, with
    /// `target`, what takes it up to `target`: pass exactly one), at most
    /// `max_per_month` times and `monthly_cap` credits per calendar month
    /// (UTC). Returns the top-up requested at once when the account is
    /// already below the threshold, else None.
    #[pyo3(signature = (user_id, threshold, *, amount=None, target=None, max_per_month, monthly_cap))]
    fn set_auto_topup(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        threshold: &Bound<'_, PyAny>,
        amount: Option<&Bound<'_, PyAny>>,
        target: Option<&Bound<'_, PyAny>>,
        max_per_month: &Bound<'_, PyAny>,
        monthly_cap: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let threshold = convert::amount("threshold", threshold)?;
            let amount = match (convert::opt_amount("amount", amount)?, convert::opt_amount("target", target)?) {
                (Some(a), None) => TopupAmount::Fixed(a),
                (None, Some(t)) => TopupAmount::UpTo(t),
                _ => return Err(invalid(py, "pass exactly one of amount and target".into())),
            };
            let max_per_month = convert::opt_u32("max_per_month", Some(max_per_month))?.unwrap_or(0);
            let monthly_cap = convert::amount("monthly_cap", monthly_cap)?;
            let rule = AutoTopup { threshold, amount, max_per_month, monthly_cap };
            let t = self.run(py, move |m| m.set_auto_topup(&user, &rule))?;
            Topup::opt(py, t)
        })
    }

    /// Removes `user_id`'s rule; False when it had none.
    fn remove_auto_topup(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            self.run(py, move |m| m.remove_auto_topup(&user))
        })
    }

    /// `user_id`'s newest top-ups, newest first.
    #[pyo3(signature = (user_id, *, limit=None), text_signature = "($self, user_id, *, limit=50)")]
    fn topups(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Topup>> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let limit = convert::opt_u32("limit", limit)?.unwrap_or(limits::DEFAULT_PAGE_LIMIT);
            let ts = self.run(py, move |m| m.topups(&user, limit))?;
            Topup::list(py, ts)
        })
    }

    /// Records that a top-up's payment failed (idempotent); it still counts
    /// against the month's caps. A paid one raises `IdempotencyConflict`.
    fn record_topup_failure(&self, py: Python<'_>, topup_id: Text, reason: Text) -> PyResult<Topup> {
        self.counted(py, || {
            let id = topup_id.get(py, "topup_id")?;
            let reason = reason.get(py, "reason")?;
            let t = self.run(py, move |m| m.record_topup_failure(&id, &reason))?;
            Topup::new(py, t)
        })
    }
}
