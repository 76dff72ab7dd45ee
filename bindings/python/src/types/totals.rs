//! `DailyTotal`: one row of `daily_totals` (docs/reference.md).

use super::{repr, to_dict};
use crate::convert::{datetime, dec, obj};
use creditgate as cg;
use pyo3::prelude::*;
use pyo3::types::PyDict;

record!(
    /// One UTC day's entries of one kind, model and currency: how many and
    /// their exact sums (`amount` signed as the entries are: usage negative);
    /// `day` is the UTC midnight starting the day.
    DailyTotal {
        day, kind, model, currency, entries, amount, amount_minor, input_tokens, output_tokens, cached_input_tokens,
        cache_write_tokens,
    }
);

impl DailyTotal {
    pub fn list(py: Python<'_>, rows: Vec<cg::DailyTotal>) -> PyResult<Vec<DailyTotal>> {
        rows.into_iter()
            .map(|t| {
                Ok(DailyTotal {
                    day: datetime(py, t.day)?,
                    kind: obj(py, t.kind.as_str())?,
                    model: obj(py, t.model)?,
                    currency: obj(py, t.currency)?,
                    entries: obj(py, t.entries)?,
                    amount: dec(py, t.amount)?,
                    amount_minor: obj(py, t.amount_minor)?,
                    input_tokens: obj(py, t.input_tokens)?,
                    output_tokens: obj(py, t.output_tokens)?,
                    cached_input_tokens: obj(py, t.cached_input_tokens)?,
                    cache_write_tokens: obj(py, t.cache_write_tokens)?,
                })
            })
            .collect()
    }
}
