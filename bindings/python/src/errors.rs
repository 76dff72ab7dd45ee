//! The exception classes of docs/reference.md, derived from `creditgate::ErrorCode`,
//! and the one place where a core `Error` becomes a Python exception.
//!
//! Classes are made at import with `type(name, bases, namespace)` because
//! abi3 below Python 3.12 cannot subclass `Exception` with a `#[pyclass]`,
//! and `InvalidArgument` must also be a `ValueError`. Every class carries
//! `code` and `status_code`; raised instances of `InsufficientCredits` carry
//! `required` and `available` (`Decimal`) and `limit_source` (`"account"`,
//! `"key"`, `"member"` or `"project"`), of `LimitReached` `limit`, of `RateLimited` `limit` and
//! `retry_after` (seconds).

use crate::convert::dec;
use creditgate::{Error, ErrorCode};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// The base class `CreditError` stands for `internal`.
const BASE: ErrorCode = ErrorCode::Internal;

static CLASSES: PyOnceLock<Vec<(ErrorCode, Py<PyType>)>> = PyOnceLock::new();
static VERIFICATION: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `verify_webhook`'s error: a subclass of `InvalidArgument` (code
/// `invalid_argument`), so a receiver can catch exactly a refused delivery.
const VERIFICATION_NAME: &str = "WebhookVerificationError";
const VERIFICATION_DOC: &str = "verify_webhook refused a delivery (400): a missing header, a bad secret, a timestamp \
     outside the tolerance, a signature mismatch or a body that is not JSON; the message says which. \
     A subclass of InvalidArgument.";

fn class_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InsufficientCredits => "InsufficientCredits",
        ErrorCode::InvalidApiKey => "InvalidApiKey",
        ErrorCode::LimitReached => "LimitReached",
        ErrorCode::NotFound => "NotFound",
        ErrorCode::IdempotencyConflict => "IdempotencyConflict",
        ErrorCode::InvalidArgument => "InvalidArgument",
        ErrorCode::Storage => "StorageError",
        ErrorCode::Internal => "CreditError",
        ErrorCode::RateLimited => "RateLimited",
    }
}

fn class_doc(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InsufficientCredits => {
            "Not enough available credits (402). `.required` and `.available` are Decimal credits; \
             `.limit_source` is \"account\", \"key\" (the API key's spend cap), \"member\" (the member's budget in its \
             organisation) or \"project\" (the key's project budget)."
        }
        ErrorCode::InvalidApiKey => "The API key is malformed, unknown or revoked (401).",
        ErrorCode::LimitReached => "A per-user limit is reached (403). `.limit` names the setting.",
        ErrorCode::NotFound => "No such payment, hold, key or entry (404).",
        ErrorCode::IdempotencyConflict => "The idempotency key was used with other parameters (409).",
        ErrorCode::InvalidArgument => "An argument is out of range or malformed (400). Also a ValueError.",
        ErrorCode::Storage => {
            "The database failed (503). The outcome of a write is unknown: retry with the same idempotency key."
        }
        ErrorCode::RateLimited => {
            "A per-key rate limit is used up for this minute (429). `.limit` names it \
             (requests_per_minute or tokens_per_minute); `.retry_after` is the whole seconds until the next minute."
        }
        ErrorCode::Internal => {
            "Base class of every creditgate error; raised itself for internal errors (500). \
             `.code` is the stable error code, `.status_code` its HTTP status."
        }
    }
}

fn make_class<'py>(py: Python<'py>, code: ErrorCode, bases: Bound<'py, PyTuple>) -> PyResult<Py<PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "creditgate")?;
    ns.set_item("__doc__", class_doc(code))?;
    ns.set_item("code", code.as_str())?;
    ns.set_item("status_code", code.http_status())?;
    let class = py.get_type::<PyType>().call1((class_name(code), bases, ns))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

fn classes(py: Python<'_>) -> PyResult<&Vec<(ErrorCode, Py<PyType>)>> {
    CLASSES.get_or_try_init(py, || {
        let base = make_class(py, BASE, PyTuple::new(py, [py.get_type::<PyException>()])?)?;
        let mut out = vec![(BASE, base.clone_ref(py))];
        for code in ErrorCode::ALL.into_iter().filter(|&c| c != BASE) {
            let bases = if code == ErrorCode::InvalidArgument {
                PyTuple::new(py, [base.bind(py).clone(), py.get_type::<PyValueError>()])?
            } else {
                PyTuple::new(py, [base.bind(py).clone()])?
            };
            out.push((code, make_class(py, code, bases)?));
        }
        Ok(out)
    })
}

fn class(py: Python<'_>, code: ErrorCode) -> PyResult<Bound<'_, PyType>> {
    let all = classes(py)?;
    let found = all.iter().find(|(c, _)| *c == code).or_else(|| all.iter().find(|(c, _)| *c == BASE));
    Ok(found.map(|(_, t)| t.bind(py).clone()).expect("the base class exists"))
}

/// The error code of a creditgate exception (the most specific class it is
/// an instance of); `None` for any other exception (e.g. a `TypeError`).
pub fn code_of(py: Python<'_>, e: &PyErr) -> Option<ErrorCode> {
    let all = classes(py).ok()?;
    let is = |code: &ErrorCode, t: &Py<PyType>| (*code != BASE && e.is_instance(py, t.bind(py))).then_some(*code);
    all.iter().find_map(|(code, t)| is(code, t)).or_else(|| {
        let base = all.iter().find(|(c, _)| *c == BASE)?;
        e.is_instance(py, base.1.bind(py)).then_some(BASE)
    })
}

fn verification_class(py: Python<'_>) -> PyResult<&Py<PyType>> {
    VERIFICATION.get_or_try_init(py, || {
        let ns = PyDict::new(py);
        ns.set_item("__module__", "creditgate")?;
        ns.set_item("__doc__", VERIFICATION_DOC)?;
        let bases = PyTuple::new(py, [class(py, ErrorCode::InvalidArgument)?])?;
        let class = py.get_type::<PyType>().call1((VERIFICATION_NAME, bases, ns))?;
        Ok(class.cast_into::<PyType>()?.unbind())
    })
}

/// Adds every exception class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for (code, class) in classes(m.py())? {
        m.add(class_name(*code), class.bind(m.py()))?;
    }
    m.add(VERIFICATION_NAME, verification_class(m.py())?.bind(m.py()))?;
    Ok(())
}

/// A refused webhook delivery (`verify_webhook`'s `InvalidArgument`) as
/// `WebhookVerificationError`; any other error as [`to_py`] makes it.
pub fn verification(py: Python<'_>, e: Error) -> PyErr {
    match (&e, verification_class(py)) {
        (Error::InvalidArgument(_), Ok(class)) => match class.bind(py).call1((e.to_string(),)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(failed) => failed,
        },
        _ => to_py(py, e),
    }
}

/// The Python exception for a core error: the class of its code, with the
/// core's message (which never holds a secret) and structured attributes.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    build(py, &e).unwrap_or_else(|failed| failed)
}

fn build(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let exc = class(py, e.code())?.call1((e.to_string(),))?;
    match e {
        Error::InsufficientCredits { required, available, limit_source } => {
            exc.setattr("required", dec(py, *required)?)?;
            exc.setattr("available", dec(py, *available)?)?;
            exc.setattr("limit_source", limit_source.as_str())?;
        }
        Error::LimitReached { limit, .. } => exc.setattr("limit", *limit)?,
        Error::RateLimited { limit, retry_after_seconds } => {
            exc.setattr("limit", *limit)?;
            exc.setattr("retry_after", *retry_after_seconds)?;
        }
        _ => {}
    }
    Ok(PyErr::from_value(exc))
}

/// A core error about the value of argument `field`, naming it when the
/// core's message does not (`before: EntryId is not a UUID: ...`).
pub fn named(field: &str, e: Error) -> Error {
    match e {
        Error::InvalidArgument(msg) if !msg.contains(field) => Error::InvalidArgument(format!("{field}: {msg}")),
        other => other,
    }
}

/// `InvalidArgument` for a bad value found while converting arguments.
pub fn invalid(py: Python<'_>, message: String) -> PyErr {
    to_py(py, Error::InvalidArgument(message))
}
