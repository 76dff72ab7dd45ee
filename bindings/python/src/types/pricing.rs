//! The result objects of prices and analytics (docs/pricing.md,
//! docs/analytics.md): `ModelPrice`, `PriceVersion`, `UsageRow`,
//! `StatementLine` and `Statement`, whose JSON and CSV forms are the core's.

use super::{opt_dec, repr, to_dict};
use crate::convert::{datetime, dec, obj};
use creditgate as cg;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

record!(
    /// A model's prices in credits per 1,000 tokens, and a fee per request.
    /// A cache price of None charges those tokens at `input_per_1k`.
    /// Compared and hashed by value, so two `Entry`s (and their
    /// `to_dict()`s) charged at the same rates are equal.
    ModelPrice { input_per_1k, output_per_1k, cached_input_per_1k, cache_write_per_1k, request_fee }
    {
        fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
            let Ok(other) = other.cast::<ModelPrice>() else { return Ok(false) };
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

impl ModelPrice {
    pub fn new(py: Python<'_>, p: cg::ModelPrice) -> PyResult<ModelPrice> {
        Ok(ModelPrice {
            input_per_1k: dec(py, p.input_per_1k)?,
            output_per_1k: dec(py, p.output_per_1k)?,
            cached_input_per_1k: opt_dec(py, p.cached_input_per_1k)?,
            cache_write_per_1k: opt_dec(py, p.cache_write_per_1k)?,
            request_fee: dec(py, p.request_fee)?,
        })
    }

    /// A `ModelPrice` object, or `None`.
    pub fn opt(py: Python<'_>, p: Option<cg::ModelPrice>) -> PyResult<Py<PyAny>> {
        match p {
            Some(p) => Ok(Py::new(py, ModelPrice::new(py, p)?)?.into_any()),
            None => Ok(py.None()),
        }
    }
}

record!(
    /// One version of a model's price: in effect from `effective_at` until
    /// the next version's; `set_at` is when it was set.
    PriceVersion { model, price, effective_at, set_at }
);

impl PriceVersion {
    pub fn new(py: Python<'_>, v: cg::PriceVersion) -> PyResult<PriceVersion> {
        Ok(PriceVersion {
            model: obj(py, v.model)?,
            price: ModelPrice::opt(py, Some(v.price))?,
            effective_at: datetime(py, v.effective_at)?,
            set_at: datetime(py, v.set_at)?,
        })
    }

    pub fn list(py: Python<'_>, versions: Vec<cg::PriceVersion>) -> PyResult<Vec<PriceVersion>> {
        versions.into_iter().map(|v| PriceVersion::new(py, v)).collect()
    }
}

record!(
    /// One group of a usage summary: the grouped fields are set, the
    /// others None; `day` is the UTC midnight starting the day.
    UsageRow {
        day, model, key_id, member_id, project, requests, input_tokens, output_tokens, cached_input_tokens,
        cache_write_tokens, credits,
    }
);

impl UsageRow {
    pub fn list(py: Python<'_>, rows: Vec<cg::UsageRow>) -> PyResult<Vec<UsageRow>> {
        rows.into_iter()
            .map(|r| {
                Ok(UsageRow {
                    day: r.day.map_or_else(|| Ok(py.None()), |d| datetime(py, d))?,
                    model: obj(py, r.model)?,
                    key_id: obj(py, r.api_key_id.map(|k| k.to_string()))?,
                    member_id: obj(py, r.member_id)?,
                    project: obj(py, r.project)?,
                    requests: obj(py, r.requests)?,
                    input_tokens: obj(py, r.input_tokens)?,
                    output_tokens: obj(py, r.output_tokens)?,
                    cached_input_tokens: obj(py, r.cached_input_tokens)?,
                    cache_write_tokens: obj(py, r.cache_write_tokens)?,
                    credits: dec(py, r.credits)?,
                })
            })
            .collect()
    }
}

record!(
    /// One line of a statement: a kind of movement, and for usage one model
    /// at one set of rates (`price`; None for charges of a given amount).
    StatementLine {
        kind, model, price, entries, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, amount,
    }
);

impl StatementLine {
    fn new(py: Python<'_>, l: &cg::StatementLine) -> PyResult<StatementLine> {
        Ok(StatementLine {
            kind: obj(py, l.kind.as_str())?,
            model: obj(py, l.model.clone())?,
            price: ModelPrice::opt(py, l.price)?,
            entries: obj(py, l.entries)?,
            input_tokens: obj(py, l.input_tokens)?,
            output_tokens: obj(py, l.output_tokens)?,
            cached_input_tokens: obj(py, l.cached_input_tokens)?,
            cache_write_tokens: obj(py, l.cache_write_tokens)?,
            amount: dec(py, l.amount)?,
        })
    }
}

/// An account's movements over `[since, until)`: `opening_balance` plus
/// every line's `amount` is `closing_balance`, exactly. `to_json()` and
/// `to_csv()` are the core's forms.
#[pyclass(module = "creditgate", frozen)]
pub struct Statement {
    #[pyo3(get)]
    user_id: Py<PyAny>,
    #[pyo3(get)]
    since: Py<PyAny>,
    #[pyo3(get)]
    until: Py<PyAny>,
    #[pyo3(get)]
    opening_balance: Py<PyAny>,
    #[pyo3(get)]
    closing_balance: Py<PyAny>,
    #[pyo3(get)]
    lines: Py<PyAny>,
    core: cg::Statement,
}

impl Statement {
    pub fn new(py: Python<'_>, s: cg::Statement) -> PyResult<Statement> {
        let lines = PyList::empty(py);
        for l in &s.lines {
            lines.append(Py::new(py, StatementLine::new(py, l)?)?)?;
        }
        Ok(Statement {
            user_id: obj(py, s.user_id.as_str())?,
            since: datetime(py, s.since)?,
            until: datetime(py, s.until)?,
            opening_balance: dec(py, s.opening_balance)?,
            closing_balance: dec(py, s.closing_balance)?,
            lines: lines.into_any().unbind(),
            core: s,
        })
    }

    fn fields(&self) -> Vec<(&'static str, &Py<PyAny>)> {
        vec![
            ("user_id", &self.user_id),
            ("since", &self.since),
            ("until", &self.until),
            ("opening_balance", &self.opening_balance),
            ("closing_balance", &self.closing_balance),
            ("lines", &self.lines),
        ]
    }
}

#[pymethods]
impl Statement {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        repr(py, "Statement", &self.fields())
    }

    /// The fields as a new `dict` (for JSON output and logging).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        to_dict(py, &self.fields())
    }

    /// The core's JSON: amounts as integer `*_micros`, RFC 3339 UTC times.
    fn to_json(&self) -> String {
        self.core.to_json()
    }

    /// The core's CSV: a header, an `opening` row, one row per line and a
    /// `closing` row; amounts in decimal credits.
    fn to_csv(&self) -> String {
        self.core.to_csv()
    }
}
