//! `LocalCreditManager.daily_totals`: the ledger's entries per UTC day,
//! kind, model and currency (the core's daily rollup plus the live tail).

use super::LocalCreditManager;
use crate::convert;
use crate::types::DailyTotal;
use pyo3::prelude::*;

#[pymethods]
impl LocalCreditManager {
    /// Counts and exact sums of the entries per UTC day of their creation,
    /// kind, model and currency, for the days `[since, until)` touches
    /// (each whole), ordered by day, kind, model, currency. At most
    /// `MAX_TOTALS_DAYS` days.
    fn daily_totals(
        &self,
        py: Python<'_>,
        since: &Bound<'_, PyAny>,
        until: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<DailyTotal>> {
        self.counted(py, || {
            let since = convert::timestamp("since", since)?;
            let until = convert::timestamp("until", until)?;
            let rows = self.run(py, move |m| m.daily_totals(since, until))?;
            DailyTotal::list(py, rows)
        })
    }
}
