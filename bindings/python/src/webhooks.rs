//! `verify_webhook`, for receivers: the core's check of a delivery's
//! signature and timestamp, with Python's types in and out.

use crate::convert::{self, Text, from_json};
use crate::errors::verification;
use creditgate::{self as cg, Timestamp, limits};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

/// The body exactly as received: `bytes`, `bytearray`, or a `str` (its UTF-8).
fn payload(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    if obj.is_instance_of::<PyString>() {
        let text: Text = obj.extract()?;
        return Ok(text.get(obj.py(), "payload")?.into_bytes());
    }
    Err(PyTypeError::new_err(format!("payload must be bytes or str, not {}", convert::type_name(obj))))
}

/// `headers`: a mapping (`dict`, a framework's headers object) or a
/// sequence of (name, value) pairs, both `str`.
fn headers(obj: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let shape = || {
        PyTypeError::new_err(format!(
            "headers must be a mapping or a sequence of (name, value) str pairs, not {}",
            convert::type_name(obj)
        ))
    };
    let pairs = if obj.hasattr("items")? { obj.call_method0("items")? } else { obj.clone() };
    let mut out = Vec::new();
    for item in pairs.try_iter().map_err(|_| shape())? {
        let (name, value): (Text, Text) = item?.extract().map_err(|_| shape())?;
        out.push((name.get(obj.py(), "headers")?, value.get(obj.py(), "headers")?));
    }
    Ok(out)
}

/// Checks a webhook delivery and returns its JSON body (the event) as a
/// `dict`; `WebhookVerificationError` says which check failed.
#[pyfunction]
#[pyo3(
    signature = (payload, headers, secret, *, tolerance_seconds=None, now=None),
    text_signature = "(payload, headers, secret, *, tolerance_seconds=300, now=None)"
)]
pub fn verify_webhook(
    py: Python<'_>,
    payload: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
    secret: Text,
    tolerance_seconds: Option<&Bound<'_, PyAny>>,
    now: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let body = self::payload(payload)?;
    let pairs = self::headers(headers)?;
    let secret = secret.secret(py, "secret")?;
    let tolerance =
        convert::opt_u32("tolerance_seconds", tolerance_seconds)?.unwrap_or(limits::DEFAULT_WEBHOOK_TOLERANCE_SECONDS);
    let now = convert::opt_timestamp("now", now)?.unwrap_or_else(Timestamp::now);
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let value =
        py.detach(|| cg::verify_webhook(&body, &borrowed, &secret, now, tolerance)).map_err(|e| verification(py, e))?;
    from_json(py, &value)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(verify_webhook, m)?)?;
    let kinds: Vec<&str> = cg::EventKind::ALL.iter().map(|k| k.as_str()).collect();
    m.add("EVENT_KINDS", pyo3::types::PyTuple::new(m.py(), kinds)?)?;
    Ok(())
}
