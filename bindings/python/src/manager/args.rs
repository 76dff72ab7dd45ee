//! Argument conversions several `LocalCreditManager` methods share.

use crate::convert::{self, Text};
use crate::errors::{invalid, to_py};
use creditgate::{self as cg, EntryKind, GrantCategory, GrantOptions, limits};
use pyo3::prelude::*;

pub(crate) fn entry_kind(py: Python<'_>, kind: Text) -> PyResult<EntryKind> {
    EntryKind::parse(&kind.get(py, "kind")?).map_err(|e| to_py(py, e))
}

/// `expires_at` (aware datetime), `category` (`paid` | `promotional`) and
/// `priority` (int) of a credit's grant.
pub(crate) fn grant_options(
    py: Python<'_>,
    expires_at: Option<&Bound<'_, PyAny>>,
    category: Option<Text>,
    priority: Option<&Bound<'_, PyAny>>,
) -> PyResult<GrantOptions> {
    let expires_at = convert::opt_timestamp("expires_at", expires_at)?;
    let category = match convert::opt_text(py, "category", category)? {
        Some(c) => Some(GrantCategory::parse(&c).map_err(|e| to_py(py, e))?),
        None => None,
    };
    let priority = match convert::opt_int("priority", priority)? {
        Some(p) => i32::try_from(p).map_err(|_| invalid(py, format!("priority is out of range: {p}")))?,
        None => limits::DEFAULT_GRANT_PRIORITY,
    };
    Ok(GrantOptions { expires_at, category, priority })
}

pub(crate) fn parse_id<T>(py: Python<'_>, parse: fn(&str) -> cg::Result<T>, field: &str, s: Text) -> PyResult<T> {
    parse(&s.get(py, field)?).map_err(|e| to_py(py, crate::errors::named(field, e)))
}

pub(crate) fn opt_id<T>(
    py: Python<'_>,
    parse: fn(&str) -> cg::Result<T>,
    field: &str,
    s: Option<Text>,
) -> PyResult<Option<T>> {
    s.map(|s| parse_id(py, parse, field, s)).transpose()
}

/// `tokens=` alone is the input count; it cannot be combined with
/// `input_tokens`/`output_tokens`. A count not given is 0, but at least one
/// must be given: a forgotten count would give the call away (explicit 0 is
/// fine). `None` when none is given, for callers with another choice.
pub(crate) fn opt_token_counts(
    py: Python<'_>,
    tokens: Option<&Bound<'_, PyAny>>,
    input_tokens: Option<&Bound<'_, PyAny>>,
    output_tokens: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<(i64, i64)>> {
    let tokens = convert::opt_int("tokens", tokens)?;
    let input = convert::opt_int("input_tokens", input_tokens)?;
    let output = convert::opt_int("output_tokens", output_tokens)?;
    match (tokens, input, output) {
        (None, None, None) => Ok(None),
        (Some(t), None, None) => Ok(Some((t, 0))),
        (None, i, o) => Ok(Some((i.unwrap_or(0), o.unwrap_or(0)))),
        _ => Err(invalid(py, "pass tokens alone, or input_tokens and/or output_tokens, not both".into())),
    }
}

/// [`opt_token_counts`] where a count is required.
pub(crate) fn token_counts(
    py: Python<'_>,
    tokens: Option<&Bound<'_, PyAny>>,
    input_tokens: Option<&Bound<'_, PyAny>>,
    output_tokens: Option<&Bound<'_, PyAny>>,
) -> PyResult<(i64, i64)> {
    opt_token_counts(py, tokens, input_tokens, output_tokens)?.ok_or_else(|| {
        invalid(py, "no usage given: pass tokens, or input_tokens and/or output_tokens (0 is a valid count)".into())
    })
}
