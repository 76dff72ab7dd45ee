//! `LocalCreditManager` methods of usage analytics: summaries (as objects,
//! or the core's JSON and CSV) and account statements.

use super::LocalCreditManager;
use super::args::opt_id;
use crate::convert::{self, Text};
use crate::errors::to_py;
use crate::types::{Statement, UsageRow};
use creditgate::{self as cg, KeyId, UsageGroup, UsageQuery};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// The arguments of `usage_summary` and its JSON and CSV forms, as the
/// core's query; `group_by` names parsed by `UsageGroup::parse`.
fn usage_query(
    py: Python<'_>,
    user_id: Option<&Bound<'_, PyAny>>,
    key_id: Option<Text>,
    model: Option<Text>,
    since: Option<&Bound<'_, PyAny>>,
    until: Option<&Bound<'_, PyAny>>,
    group_by: Option<&Bound<'_, PyAny>>,
) -> PyResult<UsageQuery> {
    Ok(UsageQuery {
        user_id: convert::opt_user_id(user_id)?,
        api_key_id: opt_id(py, KeyId::parse, "key_id", key_id)?,
        model: convert::opt_text(py, "model", model)?,
        since: convert::opt_timestamp("since", since)?,
        until: convert::opt_timestamp("until", until)?,
        group_by: groups(py, group_by)?,
    })
}

/// A sequence of group names, or one `str` of comma-separated names
/// (`"day"`, `"day,model"`; never read as its letters).
fn groups(py: Python<'_>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<UsageGroup>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(Vec::new()) };
    let shape = || {
        PyTypeError::new_err(format!(
            "group_by must be a sequence of str such as (\"day\", \"model\") or a str such as \"day,model\", not {}",
            convert::type_name(obj)
        ))
    };
    let mut names = Vec::new();
    if obj.is_instance_of::<PyString>() {
        let text: Text = obj.extract()?;
        let text = text.get(py, "group_by")?;
        names.extend(text.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()));
    } else {
        for item in obj.try_iter().map_err(|_| shape())? {
            let name: Text = item?.extract()?;
            names.push(name.get(py, "group_by")?.to_string());
        }
    }
    names.iter().map(|n| UsageGroup::parse(n).map_err(|e| to_py(py, e))).collect()
}

#[pymethods]
impl LocalCreditManager {
    /// Requests, tokens and credits of usage entries, filtered and grouped.
    #[pyo3(
        signature = (*, user_id=None, key_id=None, model=None, since=None, until=None, group_by=None),
        text_signature = "($self, *, user_id=None, key_id=None, model=None, since=None, until=None, group_by=())"
    )]
    fn usage_summary(
        &self,
        py: Python<'_>,
        user_id: Option<&Bound<'_, PyAny>>,
        key_id: Option<Text>,
        model: Option<Text>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        group_by: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<UsageRow>> {
        self.counted(py, || {
            let q = usage_query(py, user_id, key_id, model, since, until, group_by)?;
            let rows = self.run(py, move |m| m.usage_summary(&q))?;
            UsageRow::list(py, rows)
        })
    }

    /// `usage_summary` as the core's JSON array.
    #[pyo3(
        signature = (*, user_id=None, key_id=None, model=None, since=None, until=None, group_by=None),
        text_signature = "($self, *, user_id=None, key_id=None, model=None, since=None, until=None, group_by=())"
    )]
    fn usage_summary_json(
        &self,
        py: Python<'_>,
        user_id: Option<&Bound<'_, PyAny>>,
        key_id: Option<Text>,
        model: Option<Text>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        group_by: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        self.counted(py, || {
            let q = usage_query(py, user_id, key_id, model, since, until, group_by)?;
            self.run(py, move |m| m.usage_summary(&q).map(|rows| cg::usage_rows_json(&q.group_by, &rows)))
        })
    }

    /// `usage_summary` as the core's CSV: the grouped columns, then the counts.
    #[pyo3(
        signature = (*, user_id=None, key_id=None, model=None, since=None, until=None, group_by=None),
        text_signature = "($self, *, user_id=None, key_id=None, model=None, since=None, until=None, group_by=())"
    )]
    fn usage_summary_csv(
        &self,
        py: Python<'_>,
        user_id: Option<&Bound<'_, PyAny>>,
        key_id: Option<Text>,
        model: Option<Text>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        group_by: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        self.counted(py, || {
            let q = usage_query(py, user_id, key_id, model, since, until, group_by)?;
            self.run(py, move |m| m.usage_summary(&q).map(|rows| cg::usage_rows_csv(&q.group_by, &rows)))
        })
    }

    /// `user_id`'s movements over `[since, until)` with its opening and
    /// closing balances: opening + lines = closing.
    fn statement(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        since: &Bound<'_, PyAny>,
        until: &Bound<'_, PyAny>,
    ) -> PyResult<Statement> {
        self.counted(py, || {
            let user = convert::user_id(user_id)?;
            let since = convert::timestamp("since", since)?;
            let until = convert::timestamp("until", until)?;
            let s = self.run(py, move |m| m.statement(&user, since, until))?;
            Statement::new(py, s)
        })
    }
}
